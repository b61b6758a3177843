"""What to do about it: the recommendation of a feasibility assessment, and the HTML report.

* :func:`benchmark_evidence`: the measured comparisons of selective BN with BN and its controls,
  read from a results folder (``outputs/``), nothing typed in;
* :func:`recommend` / :func:`add_recommendations`: per batch size, a plain-language recommendation
  with its reason and the evidence it rests on (the rule: :data:`RECOMMENDATION_RULE`);
* :func:`report_html` / :func:`write_html_report`: the self-contained HTML report (figures embedded).

The assessment itself (scores, threshold, fraction of batches that need BN) is :mod:`sbnlib.assess`.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from pathlib import Path
from typing import List

import numpy as np

from .report import EVIDENCE_SCHEMA, NOT_CONVERGED, read_status

__all__ = ["benchmark_evidence", "find_evidence_dir", "diff_pp", "recommend", "add_recommendations", "recommendation_lines",
           "report_figures", "report_html", "write_html_report", "RECOMMENDATION_RULE", "DATASET_TITLES"]


# ----------------------------------------------------------------------------------------------
# Evidence from the benchmark results, and the recommendation
# ----------------------------------------------------------------------------------------------

DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
                  "cifar100": "CIFAR-100", "mnist_fmnist_mix": "MNIST+Fashion-MNIST mix"}

CONTROLS = {"sbn vs random": "heterogeneity-selected batches against randomly selected ones at the same rate",
            "sbn vs gn": "selective BN against GroupNorm"}

RECOMMENDATION_RULE = (
    "The fraction of batches above the threshold says how often selective BN would normalise; it does not "
    "by itself say whether skipping BN on the other batches costs accuracy. The advice at each batch size "
    "therefore rests on the measured comparisons of selective BN with BN on the benchmark datasets at the "
    "same batch size (or the nearest one measured), claim C1 of the replication report: 'use BN' when "
    "selective BN was significantly less accurate than BN (C1 contradicted) on at least one benchmark and "
    "significantly more accurate on none; 'try selective BN' when it was significantly more accurate "
    "(C1 supported) on at least one and less accurate on none; 'compare both' when both happened; "
    "'no measured difference' when every comparison was inconclusive; 'no evidence' when no benchmark "
    "results were found. Every number quoted is read from the result files named in the report.")

_ACTIONS = {
    "use BN": "use standard BN, not selective BN",
    "try selective BN": "selective BN is worth a trial: compare it with BN on held-out data",
    "compare both": "the evidence is mixed: train with BN and with selective BN and compare",
    "no measured difference": "no measured accuracy difference: BN is the safe default",
    "no evidence": "no measured evidence either way: BN is the default",
}


def _title(d: str) -> str:
    return DATASET_TITLES.get(d, d)


def _join(names: List[str]) -> str:
    names = [_title(n) for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def plural(n: int, word: str) -> str:
    """``"1 batch"``, ``"2 batches"``, ``"1,000 epochs"``: a count with its noun in the right number."""
    count = f"{n:,}" if isinstance(n, int) else str(n)  # counts read from a results file may be text
    return f"{count} {word}" if n == 1 else f"{count} {word}{'es' if word.endswith(('s', 'sh', 'ch', 'x')) else 's'}"


#: fewer batches than this: the threshold is fitted on too few scores for the fraction to mean much
FEW_BATCHES = 10


def _pct(f: float) -> str:
    if f != f:
        return "n/a"
    if 0 < f < 0.1 or 0.9 < f < 1:
        return f"{100 * f:.1f}%"
    return f"{100 * f:.0f}%"


def find_evidence_dir(output_dir="auto") -> List[Path]:
    """Where to look for benchmark results: none for None, ``output_dir``, or for ``"auto"`` (the
    command line's default) ./outputs then the repository's."""
    if output_dir is None:
        return []
    if output_dir != "auto":
        return [Path(output_dir)]
    here = Path.cwd() / "outputs"
    repo = Path(__file__).resolve().parents[1] / "outputs"
    return [here] if here.resolve() == repo.resolve() else [here, repo]


def _read_evidence(path: Path) -> dict:
    """``evidence.json`` as written by :func:`sbnlib.report.write_evidence`; ValueError naming what is wrong."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"unreadable {path}: {type(e).__name__}: {e}") from None
    if not isinstance(rec, dict) or rec.get("schema") != EVIDENCE_SCHEMA:
        got = rec.get("schema") if isinstance(rec, dict) else type(rec).__name__
        raise ValueError(f"{path} has schema {got!r}; this sbnlib reads schema {EVIDENCE_SCHEMA} "
                         "(rerun the analysis to rewrite it)")
    rows = rec.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and _row_ok(r) for r in rows):
        raise ValueError(f"{path}: 'rows' must be a list of rows, each with an integer batch_size, a C1 verdict "
                         "and numbers (or null) for diff_pp and frac_normalized")
    return rec


def _row_ok(r: dict) -> bool:
    """The fields the advice computes with have the types the writer gives them."""
    numbers = [*(r.get("diff_pp") or {}).values(), r.get("frac_normalized")]
    return (isinstance(r.get("batch_size"), int) and isinstance(r.get("C1"), str)
            and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in numbers))


def benchmark_evidence(output_dir="auto") -> dict:
    """The measured evidence the recommendation rests on, read from a results folder (``outputs/``).

    Reads ``<dir>/<dataset>/evidence.json`` (:func:`sbnlib.report.evidence_record`: verdicts and
    numbers per batch size, written by the analysis) and, for a dataset without it,
    ``status.json`` (why it did not run). No rendered table is read. A dataset whose
    ``evidence.json`` is unreadable, of another schema or missing although it ran is left out and
    named in ``problems``. ``output_dir``: a folder, ``"auto"`` (:func:`find_evidence_dir`) or None
    (no evidence); ``available`` is False when no verdict was found.
    """
    ev = {"available": False, "dir": None, "looked_in": [], "rows": [], "datasets": {}, "not_run": {},
          "files": [], "problems": []}
    for d in find_evidence_dir(output_dir):
        ev["looked_in"].append(str(d))
        if any(d.glob("*/evidence.json")) or any(d.glob("*/status.json")):
            root = d
            break
    else:
        return ev
    ev["dir"] = str(root)
    order = list(DATASET_TITLES)
    names = sorted({p.parent.name for p in (*root.glob("*/evidence.json"), *root.glob("*/status.json"))},
                   key=lambda n: (order.index(n) if n in order else len(order), n))
    for name in names:
        path = root / name / "evidence.json"
        if not path.is_file():
            status = read_status(root / name)
            if status["status"] == "ok":  # it ran, but before evidence.json existed (or the file was lost)
                ev["problems"].append(f"{path} is missing although {name} ran; rerun its analysis to write it")
            else:
                ev["not_run"][name] = status["status"] + (": " + status["reason"].split(". ")[0][:160]
                                                          if status.get("reason") else "")
            continue
        try:
            rec = _read_evidence(path)
        except ValueError as e:
            ev["problems"].append(str(e))
            continue
        ev["files"].append(str(path))
        ev["datasets"][name] = {k: rec.get(k) for k in ("profile", "data_status", "n_train", "seeds", "epochs",
                                                        "methods", "numbers_produced")}
        ev["rows"].extend({"dataset": name, **r} for r in sorted(rec["rows"], key=lambda r: r["batch_size"]))
    ev["available"] = bool(ev["rows"])
    return ev


def _evidence_at(ev: dict, b: int):
    """Evidence rows at batch size ``b``, or at the nearest measured one (log scale); (rows, size)."""
    sizes = sorted({r["batch_size"] for r in ev.get("rows", [])})
    if not sizes:
        return [], None
    near = b if b in sizes else min(sizes, key=lambda s: (abs(math.log2(s) - math.log2(b)), s))
    return [r for r in ev["rows"] if r["batch_size"] == near], near


def diff_pp(row: dict, baseline: str = "bn"):
    """An evidence row's selective BN minus ``baseline`` accuracy difference (pp), or None if not measured."""
    return (row.get("diff_pp") or {}).get(baseline)


def _diff_range(rows) -> str:
    """'accuracy of selective BN minus BN: -8.3 to -5.8 pp', from each row's ``diff_pp["bn"]``."""
    have = [r for r in rows if diff_pp(r) is not None]
    if not have:
        return ""
    d = [diff_pp(r) for r in have]
    lo, hi = min(d), max(d)
    text = f"{lo:+.1f} pp" if lo == hi else f"{lo:+.1f} to {hi:+.1f} pp"
    if len(have) < len(rows):  # say whose numbers these are
        text = ", ".join(f"{diff_pp(r):+.1f} pp on {_title(r['dataset'])}" for r in have)
    return "accuracy of selective BN minus BN: " + text


def recommend(row: dict, ev: dict) -> dict:
    """The recommendation for one batch size's row of an assessment, with its reason and evidence."""
    b, f, nb, t = row["batch_size"], row["frac_needs_bn"], row["n_batches"], row["threshold"]
    if b == 1:
        headline = ("At batch size 1 every batch scores 0 (one sample cannot be heterogeneous), so no batch is "
                    "above the threshold: selective BN would never normalise, and BN itself is degenerate at B=1.")
    else:
        t_text = f"{t:.4g}" if np.isfinite(t) else str(t)
        headline = (f"At batch size {b}, {_pct(f)} of the {plural(nb, 'batch')} {'is' if nb == 1 else 'are'} heterogeneous "
                    f"(score above the threshold {t_text}): selective BN would normalise those and skip BN on "
                    f"{_pct(1 - f)} of steps.")
        if nb < FEW_BATCHES:  # the threshold is fitted on these very scores: with one, it is that score
            headline += (f" Warning: the threshold is fitted on only {plural(nb, 'score')}, so this fraction is "
                         f"{'0% by construction' if nb == 1 else 'degenerate'}; use more data or a smaller batch size.")
    rows, near = _evidence_at(ev, b)
    out = {"batch_size": b, "headline": headline, "evidence_batch_size": near, "evidence": rows}
    if not rows:
        where = f"looked in {', '.join(ev['looked_in'])}" if ev.get("looked_in") else "no results folder was given"
        out.update(action="no evidence", reason=(
            f"No benchmark results were found ({where}), so the evidence is unavailable: nothing measured "
            "says whether skipping BN on those batches helps or hurts accuracy."))
    else:
        at = f"B={near}" if near == b else f"B={near} (the nearest measured batch size; B={b} was not measured)"
        by = {v: [r["dataset"] for r in rows if r.get("C1") == v] for v in ("supported", "contradicted", "inconclusive")}
        sup, con, inc = by["supported"], by["contradicted"], by["inconclusive"]
        parts = []
        if con:
            rng = _diff_range([r for r in rows if r["dataset"] in con])
            parts.append(f"on {_join(con)} at {at} selective BN was significantly less accurate than BN "
                         f"(C1 contradicted{'; ' + rng if rng else ''})")
        if sup:
            rng = _diff_range([r for r in rows if r["dataset"] in sup])
            parts.append(f"on {_join(sup)} at {at} selective BN was significantly more accurate than BN "
                         f"(C1 supported{'; ' + rng if rng else ''})")
        if inc:
            rng = _diff_range([r for r in rows if r["dataset"] in inc])
            parts.append(f"on {_join(inc)} at {at} the difference was not significant "
                         f"(C1 inconclusive{'; ' + rng if rng else ''})")
        unconv = [r["dataset"] for r in rows if r.get("C1") == NOT_CONVERGED]
        if unconv:
            parts.append(f"on {_join(unconv)} at {at} BN had not reached its target accuracy, so that comparison "
                         f"is not counted ({NOT_CONVERGED})")
        action = ("compare both" if sup and con else "use BN" if con else "try selective BN" if sup
                  else "no measured difference")
        reason = "; ".join(parts)
        reason = reason[0].upper() + reason[1:] + "."
        for col, what in CONTROLS.items():
            got = {v: [r["dataset"] for r in rows if r.get(col) == v] for v in ("supported", "contradicted", "inconclusive")}
            if any(got.values()):
                told = "; ".join(f"{v} on {_join(ds)}" for v, ds in got.items() if ds)
                reason += f" {what[0].upper() + what[1:]}: {told}."
        fr = [100 * r["frac_normalized"] for r in rows if r.get("frac_normalized") is not None]
        if fr and b > 1:
            span = f"{min(fr):.0f}%" if round(min(fr)) == round(max(fr)) else f"{min(fr):.0f}-{max(fr):.0f}%"
            reason += f" On those benchmarks selective BN normalised {span} of the batches (here: {_pct(f)})."
        out.update(action=action, reason=reason)
    out["recommendation"] = f"Recommendation at B={b}: {_ACTIONS[out['action']]}."
    out["text"] = f"{out['headline']} {out['recommendation']} {out['reason']}"
    return out


def add_recommendations(result: dict, ev: dict) -> dict:
    """Add ``evidence``, ``recommendation_rule``, a ``summary`` and per-row ``recommendation`` to ``result``."""
    result["evidence"] = ev
    result["recommendation_rule"] = RECOMMENDATION_RULE
    for r in result["batch_sizes"]:
        r["recommendation"] = recommend(r, ev)
    acts = [r["recommendation"]["action"] for r in result["batch_sizes"]]
    sizes = [r["batch_size"] for r in result["batch_sizes"]]
    if len(set(acts)) == 1:
        which = "the requested batch size" if len(sizes) == 1 else "every requested batch size"
        summary = f"At {which} ({', '.join(map(str, sizes))}): {_ACTIONS[acts[0]]}."
    else:
        summary = " ".join(f"B={b}: {_ACTIONS[a]}." for b, a in zip(sizes, acts))
    prov = []
    for d, p in ev.get("datasets", {}).items():
        n_train = f"{p['n_train']:,}" if isinstance(p.get("n_train"), int) else p.get("n_train")
        bits = [f"{p['profile']} profile" if p.get("profile") else "", f"{n_train} training images" if n_train else "",
                plural(p["seeds"], "seed") if p.get("seeds") else "", plural(p["epochs"], "epoch") if p.get("epochs") else ""]
        prov.append(f"{_title(d)} ({', '.join(x for x in bits if x) or 'provenance not recorded'})")
    result["summary"] = summary
    result["evidence_note"] = (
        f"Evidence read from {ev['dir']}: " + "; ".join(prov) + "." if ev.get("available") else
        "Benchmark evidence unavailable: " + (f"no results found in {', '.join(ev['looked_in'])}." if ev.get("looked_in")
                                              else "no results folder was given."))
    if ev.get("not_run"):
        result["evidence_note"] += " No results for: " + "; ".join(
            f"{_title(d)} ({s.split(':')[0]})" for d, s in ev["not_run"].items()) + "."
    if ev.get("problems"):  # a dataset left out must not go unnoticed on the command line either
        result["evidence_note"] += " Left out: " + "; ".join(ev["problems"]) + "."
    return result


def recommendation_lines(result: dict) -> List[str]:
    """The recommendations as plain text lines (the CLI prints them)."""
    lines = [result.get("summary", "")]
    for r in result["batch_sizes"]:
        rec = r.get("recommendation")
        if rec:
            lines.append(f"- {rec['text']}")
    if result.get("evidence_note"):
        lines.append(result["evidence_note"])
    return [l for l in lines if l]


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
    from .plots import plot_benchmark_evidence, plot_frac_needs_bn, plot_score_histograms

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
    # the recommendation once, then per batch size the facts and the evidence it rests on
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
    p.append("<h2>Scores, thresholds and the fraction of batches that need BN</h2>")
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
        p.append("<p class='muted'>Read from: " + ", ".join(f"<code>{e(f)}</code>" for f in ev.get("files", [])) + "</p>")
    if ev.get("problems"):
        p.append("<p class='muted'>Problems reading the evidence: " + e("; ".join(ev["problems"])) + "</p>")
    p.append("<h2>Input</h2><div class='scroll'><table>" + "".join(
        f"<tr><th class='l'>{e(k)}</th><td class='l'>{e(v)}</td></tr>" for k, v in _input_rows(result)) + "</table></div>")
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
    from . import __version__

    stamp = (f", generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"
             + (f", {result['elapsed_s']:.1f} s" if result.get("elapsed_s") else "")) if stamped else ""
    p.append(f"<p class='muted'>sbnlib {e(__version__)}{e(stamp)}</p>")
    body = "\n".join(p)
    if fragment:
        return f"<div class='sbn-report'><style>{_CSS}</style>\n{body}\n</div>"
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Should I use BN on {e(name)}?</title><style>{_CSS}</style></head>\n"
            f"<body>\n{body}\n{_IMG_CHECK}\n</body></html>\n")


def write_html_report(result: dict, path, stamped: bool = True) -> Path:
    """Write :func:`report_html` to ``path`` atomically."""
    from .io import atomic_write_bytes

    # text from the data (paths, messages) may hold bytes that are not UTF-8: escaped, never a failure
    return atomic_write_bytes(path, report_html(result, stamped=stamped).encode("utf-8", "backslashreplace"))
