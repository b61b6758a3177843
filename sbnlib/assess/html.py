"""The self-contained HTML report of an assessment (:func:`report_html`, :func:`write_html_report`):
inputs, the recommendation per batch size, the evidence and the figures, embedded.
"""
from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path
from typing import List

from .. import __version__
from ..io import atomic_write_bytes
from ..provenance import shown_path
from .advice import CONTROLS, RECOMMENDATION_RULE, _diff_range, _join, _pct, _title, add_recommendations
from .evidence import _evidence_at, benchmark_evidence, diff_pp
from .figures import plot_benchmark_evidence, plot_frac_needs_bn, plot_score_histograms

# ----------------------------------------------------------------------------------------------
# HTML report
# ----------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
  color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td{white-space:nowrap}td.l,th.l{text-align:left}td.w{text-align:left;min-width:14em;white-space:normal}
.scroll{overflow-x:auto;max-width:100%}
.summary{font-size:1.1em;background:#f6f8fa;border-left:4px solid #4c72b0;padding:.6em 1em}
.rec{border-left:4px solid #999;text-align:left;white-space:nowrap}
.rec.use-bn{border-left-color:#c44e52}.rec.try-selective-bn{border-left-color:#55a868}
.rec.compare-both,.rec.no-measured-difference,.rec.no-evidence{border-left-color:#dd8452}
.muted{color:#666;font-size:.9em}img{max-width:100%;height:auto;display:block;margin:.5em 0}
code{background:#f3f3f3;padding:0 .2em}
"""

_IMG_CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
  // does the page fit its window? (a wide table must scroll inside its container, not the page)
  var root = document.documentElement;
  document.body.setAttribute("data-page-width", root.scrollWidth + "/" + root.clientWidth);
});
</script>"""


def _png_b64(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def report_figures(result: dict) -> dict:
    """The report's figures as base64 PNG: score histograms, fraction per batch size, benchmark evidence."""

    name = _report_name(result)
    figs = {"Score distribution per batch size (red: the fitted threshold)":
            _png_b64(plot_score_histograms(result, title=f"{name}: batch heterogeneity "
                                           f"({result['scorer']}, threshold {result['threshold_strategy']})"))}
    if len(result["batch_sizes"]) > 1:
        figs["Fraction of batches that need BN, and the scores, per batch size"] = _png_b64(
            plot_frac_needs_bn(result, title=f"{name}: which batches need BN"))
    ev = result.get("evidence") or {}
    if any(diff_pp(r) is not None for r in ev.get("rows", [])):
        figs["Evidence: selective BN minus BN test accuracy on the benchmarks (95% CI); grey: your batch sizes"] = _png_b64(
            plot_benchmark_evidence(ev, [r["batch_size"] for r in result["batch_sizes"]]))
    return figs


def _report_name(result: dict) -> str:
    inp = result.get("input") or {}
    return inp.get("name") or _title(result.get("dataset", "")) or "your data"


def _input_rows(result: dict) -> List[tuple]:
    inp = result.get("input")
    if not inp:  # a benchmark dataset (sbnlib.assess.assess + load_dataset)
        prov = result.get("data") or {}
        return [("data", f"benchmark dataset {_title(result.get('dataset', '?'))} ({prov.get('status', '?')})"),
                ("items used", f"{result['n_samples']:,} training images"),
                ("standardisation", "per channel, with the dataset's mean and std")]
    rows = [("data", f"{inp['kind']}" + (f": {inp['path']}" if inp.get("path") else ""))]
    rows.append(("items used", f"{inp['n_used']:,} of {inp['n_items']:,}"))
    rows.append(("item shape", " x ".join(map(str, inp["item_shape"]))))
    for k, label in (("resize", "images"), ("channels_from", "channel count from"), ("n_classes", "classes"),
                     ("images_per_class", "images per class (min, max)"), ("n_ignored_files", "non-image files ignored"),
                     ("layout", "array layout"), ("array_key", "array key"), ("dtype", "dtype"),
                     ("header", "CSV header"), ("label_column", "label column dropped"), ("delimiter", "CSV delimiter"),
                     ("notes", "note")):
        if inp.get(k) not in (None, "", [], 0):
            rows.append((label, ", ".join(map(str, inp[k])) if isinstance(inp[k], list) else str(inp[k])))
    st = f"{inp['standardisation']}, with mean and std from a streaming first pass"
    if inp.get("n_constant"):
        st += f"; {inp['n_constant']} constant {'channels' if inp['standardisation'] == 'per channel' else 'features'} left at 0"
    rows.append(("standardisation", st))
    sk = result.get("skipped") or {}
    if sk.get("count"):
        rows.append(("skipped (--skip-bad)", f"{sk['count']}: " + ", ".join(f"{k} {v}" for k, v in sk["by_reason"].items())))
    return rows


def _verdicts_in_words(rows, col: str) -> str:
    """'contradicted on MNIST and CIFAR-10; inconclusive on Fashion-MNIST' for the evidence ``rows``' column ``col``."""
    by = {}
    for r in rows:
        if r.get(col):
            by.setdefault(r[col], []).append(r["dataset"])
    return "; ".join(f"{v} on {_join(ds)}" for v, ds in by.items())


def _table(head, rows) -> str:
    """An HTML table inside a container that scrolls sideways, so a wide table never widens the page.
    A cell is a value or ``(value, css class)``; every value is escaped."""
    def cell(c, tag):
        v, cls = c if isinstance(c, tuple) else (c, "")
        return (f"<{tag} class='{cls}'>" if cls else f"<{tag}>") + f"{html.escape(str(v))}</{tag}>"

    return ("<div class='scroll'><table><tr>" + "".join(cell(h, "th") for h in head) + "</tr>"
            + "".join("<tr>" + "".join(cell(c, "td") for c in r) + "</tr>" for r in rows) + "</table></div>")


def _num(v, fmt: str) -> str:
    return "" if v is None else fmt.format(v)


def _mean_std(acc) -> str:
    """``{"mean": 98.1, "std": 0.2}`` -> ``"98.10 ± 0.20"`` (a missing std, one seed: ``n/a``)."""
    return "" if not acc else f"{_num(acc.get('mean'), '{:.2f}') or 'n/a'} ± {_num(acc.get('std'), '{:.2f}') or 'n/a'}"


def _ci(ci) -> str:
    return "" if not ci or None in ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def report_html(result: dict, fragment: bool = False, stamped: bool = True) -> str:
    """The report as HTML; ``fragment`` gives the body only (for a notebook), else a whole page.
    ``stamped``: end with the time it was made and how long the assessment took (a committed
    report, which must not change when re-rendered from unchanged results, passes False).

    Self-contained: the figures are embedded as base64 PNG, nothing is fetched.
    """
    e = html.escape
    name = _report_name(result)
    if "summary" not in result:
        add_recommendations(result, result.get("evidence") or benchmark_evidence(None))
    p = _recommendation_section(result, name) + _scores_section(result) + _evidence_section(result)
    p += _input_and_rule_section(result)
    stamp = (f", generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
             + (f", {result['elapsed_s']:.1f} s" if result.get("elapsed_s") else "")) if stamped else ""
    p.append(f"<p class='muted'>sbnlib {e(__version__)}{e(stamp)}</p>")
    body = "\n".join(p)
    if fragment:
        return f"<div class='sbn-report'><style>{_CSS}</style>\n{body}\n</div>"
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Should I use BN on {e(name)}?</title><style>{_CSS}</style></head>\n"
            f"<body>\n{body}\n{_IMG_CHECK}\n</body></html>\n")


def _recommendation_section(result: dict, name: str) -> List[str]:
    """The recommendation once, then per batch size the facts and the evidence it rests on."""
    e = html.escape
    p = [f"<h1>Should I use BN on {e(name)}?</h1>", "<h2>Recommendation</h2>",
         f"<p class='summary' id='summary'>{e(result['summary'])} The table gives, per batch size, how many batches "
         "are heterogeneous and the benchmark verdicts (claim C1: is selective BN more accurate than BN?) that the "
         "advice rests on; the rule is at the end of the report.</p>"]
    rows = []
    for r in result["batch_sizes"]:
        rec = r["recommendation"]
        near = rec["evidence_batch_size"]
        rows.append([r["batch_size"], f"{r['n_batches']:,}", _pct(r["frac_needs_bn"]), "" if near is None else f"B={near}",
                     (_verdicts_in_words(rec["evidence"], "C1"), "w"), _diff_range(rec["evidence"]).partition(": ")[2],
                     (rec["action"], "rec " + rec["action"].replace(" ", "-").lower())])
    p.append(_table(["batch size", "batches", "heterogeneous (normalised)", "measured at", "C1 on the benchmarks",
                     "selective BN - BN (pp)", "advice"], rows))
    p.append(f"<p class='muted'>{e(result.get('evidence_note', ''))}</p>")
    return p


def _scores_section(result: dict) -> List[str]:
    """The scores, thresholds and fraction of batches that need BN per batch size, and the figures."""
    e = html.escape
    p = ["<h2>Scores, thresholds and the fraction of batches that need BN</h2>"]
    cols = [("batch size", "batch_size", "{}"), ("batches", "n_batches", "{:,}"), ("threshold", "threshold", "{:.4g}"),
            ("need BN", "frac_needs_bn", None), ("score mean", "score_mean", "{:.4g}"), ("score std", "score_std", "{:.4g}"),
            ("min", "score_min", "{:.4g}"), ("5%", "score_q05", "{:.4g}"), ("median", "score_q50", "{:.4g}"),
            ("95%", "score_q95", "{:.4g}"), ("max", "score_max", "{:.4g}")]
    cols = [c for c in cols if c[1] in result["batch_sizes"][0]]
    p.append(_table([c[0] for c in cols], [[_pct(r[k]) if fmt is None else fmt.format(r[k]) for _, k, fmt in cols]
                                           for r in result["batch_sizes"]]))
    for caption, b64 in report_figures(result).items():
        p.append(f"<figure><img alt='{e(caption)}' src='data:image/png;base64,{b64}'>"
                 f"<figcaption class='muted'>{e(caption)}</figcaption></figure>")
    return p


def _evidence_section(result: dict) -> List[str]:
    """The benchmark evidence at the batch sizes assessed (nearest measured), and problems reading it."""
    e = html.escape
    p = []
    ev = result.get("evidence") or {}
    if ev.get("rows"):
        p.append("<h2>Benchmark evidence at your batch sizes</h2>")
        sizes = sorted({_evidence_at(ev, r["batch_size"])[1] for r in result["batch_sizes"]})
        verdicts = [k for k in ("C1", "C2", *CONTROLS) if any(k in r for r in ev["rows"])]
        methods = sorted({m for r in ev["rows"] for m in r.get("accuracy_pct", {})}, key=lambda m: (m != "bn", m != "sbn", m))
        p.append(_table([("dataset", "l"), "B", *(f"acc. {m} (%)" for m in methods), *verdicts,
                         "sbn-bn diff (pp)", "sbn-bn 95% CI (pp)", "sbn batches normalised"],
                        [[(_title(r["dataset"]), "l"), r["batch_size"],
                          *(_mean_std(r.get("accuracy_pct", {}).get(m)) for m in methods), *(r.get(k, "") for k in verdicts),
                          _num(diff_pp(r), "{:+.2f}"), _ci((r.get("ci_pp") or {}).get("bn")),
                          _num(r.get("frac_normalized"), "{:.1%}")]
                         for r in ev["rows"] if r["batch_size"] in sizes]))
        files = ", ".join(f"<code>{e(shown_path(f))}</code>" for f in ev.get("files", []))
        p.append(f"<p class='muted'>Read from: {files}</p>")
    if ev.get("problems"):
        p.append("<p class='muted'>Problems reading the evidence: " + e("; ".join(ev["problems"])) + "</p>")
    return p


def _input_and_rule_section(result: dict) -> List[str]:
    """What was assessed (and what was skipped), and how the recommendation is made."""
    e = html.escape
    p = ["<h2>Input</h2><div class='scroll'><table>" + "".join(
        f"<tr><th class='l'>{e(k)}</th><td class='l'>{e(v)}</td></tr>" for k, v in _input_rows(result)) + "</table></div>"]
    sk = result.get("skipped") or {}
    if sk.get("examples"):
        p.append("<details><summary>Skipped items (first 20)</summary><ul>"
                 + "".join(f"<li>{e(x['reason'])}</li>" for x in sk["examples"]) + "</ul></details>")
    p.append("<h2>How the recommendation is made</h2>")
    p.append(f"<p>Every batch of a seeded batch plan (seed {result.get('seed', 0)}; the last N mod B items are "
             f"dropped) is scored by its feature heterogeneity (<code>{e(result['scorer'])}</code>, see "
             f"<code>sbnlib.scoring</code>); the threshold (<code>{e(result['threshold_strategy'])}</code>) is "
             "fitted on the scores and a batch needs BN when its score is above it.</p>")
    p.append(f"<p>{e(result.get('recommendation_rule', RECOMMENDATION_RULE))}</p>")
    return p


def write_html_report(result: dict, path, stamped: bool = True) -> Path:
    """Write :func:`report_html` to ``path`` atomically."""

    # text from the data (paths, messages) may hold bytes that are not UTF-8: escaped, never a failure
    return atomic_write_bytes(path, report_html(result, stamped=stamped).encode("utf-8", "backslashreplace"))
