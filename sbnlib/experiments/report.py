"""The cross-dataset report: the claim rules, the sentences that state the verdicts, the evidence
record (``evidence.json``) the advice of ``assess`` reads, and ``REPORT.md``.

Everything written here is computed from result records; nothing is typed in.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

from ..assess.evidence import BUDGET_SENSITIVE, EVIDENCE_SCHEMA, _title, read_status
from ..io import atomic_write_bytes
from . import stats
from .results import DatasetResult, Win, wins_over_bn
from .stats import CONTRADICTED, INCONCLUSIVE, SUPPORTED
from .tables import STABILITY_METRICS

__all__ = ["C1_RULE", "C2_RULE", "MDE_RULE", "SMALL_B", "collapse_sentences", "sanity_sentences", "answer",
           "claim_sections", "VERDICT_COLUMNS", "evidence_record", "write_report", "write_dataset_report"]

C1_RULE = ("C1 (selective BN reaches better test accuracy than traditional BN), per batch size: "
           + stats.VERDICT_RULE)
MDE_RULE = ("MDE 80%: the mean paired difference these seeds would call significant (exact Wilcoxon at Holm's "
            "first-step level and a 95% bootstrap CI excluding 0) with 80% probability, for normal differences with "
            "the observed spread (simulation; sbnlib.experiments.stats).")
SMALL_B = 8  # "small batch sizes", where the paper says selective BN helps most: B <= SMALL_B

C2_RULE = ("C2 (selective BN reduces BN transformations and makes training more stable), per batch size: "
           "'supported' when sbn normalises fewer batches than bn AND at least one stability metric "
           f"({', '.join(STABILITY_METRICS)}) is significantly better for sbn and none is significantly worse; "
           "'contradicted' when at least one is significantly worse and none significantly better; "
           "'inconclusive' otherwise. Each metric's verdict uses the rule of C1 with lower = better.")


def collapse_sentences(collapse: pd.DataFrame, dataset: str, batch_sizes: Optional[Sequence[int]] = None) -> List[str]:
    """The collapse table (machine columns, :data:`sbnlib.experiments.tables.COLLAPSE_COLUMNS`' keys, with
    ``batch_size`` and ``method``) in words for ``dataset``, one line per batch size (default: the
    smallest and the largest): how much of selective BN's test-accuracy gap to BN is already there
    on the training batches, and the training loss on its BN-on and BN-off steps."""
    if not len(collapse):
        return []
    c = collapse.set_index(["batch_size", "method"])
    sizes = sorted({b for b, _ in c.index})
    lines = []
    for b in (batch_sizes if batch_sizes is not None else sorted({sizes[0], sizes[-1]})):
        if (b, "bn") not in c.index or (b, "sbn") not in c.index:
            continue
        bn, sbn = c.loc[(b, "bn")], c.loc[(b, "sbn")]
        parts = [f"- **{dataset}**, B={b}: accuracy bn - sbn is {bn.test_acc - sbn.test_acc:+.1f} pp on the test set "
                 f"and {bn.train_acc - sbn.train_acc:+.1f} pp on the training batches; sbn's last-epoch "
                 f"training loss is {sbn.loss_all:.3f} ({sbn.loss_on:.3f} on BN-on steps, {sbn.loss_off:.3f} on "
                 f"BN-off steps) against bn's {bn.loss_all:.3f}"]
        for m, label in (("random", "random (same rate)"), ("sbn_frozen", "sbn_frozen")):
            if (b, m) in c.index:
                parts.append(f"{label} {c.loc[(b, m)].loss_all:.3f}")
        lines.append(", ".join(parts) + ".")
    return lines


def sanity_sentences(sanity: pd.DataFrame) -> List[str]:
    """:func:`bn_vs_gn_sanity` in words, one line per dataset."""
    lines = []
    for row in sanity.to_dict("records"):
        seen = {"supported": "visible: BN loses significantly more than GroupNorm",
                "contradicted": "reversed: GroupNorm loses significantly more than BN",
                "inconclusive": "not established: the two drops do not differ significantly"}[row["BN drops more than GN"]]
        lines.append(f"- **{row['dataset']}**: from B={row['large B']} to B={row['small B']}, BN goes from "
                     f"{row['bn large (%)']:.1f}% to {row['bn small (%)']:.1f}% and GroupNorm from "
                     f"{row['gn large (%)']:.1f}% to {row['gn small (%)']:.1f}%; the small-batch pattern is {seen} "
                     f"(difference of drops {row['drop diff (pp)']:+.1f} pp, CI {row['95% CI (pp)']}, "
                     f"Wilcoxon p {row['p Wilcoxon']:.3g}).")
    return lines


VERDICT_COLUMNS = ("C1", "C1 budget", "C2", "sbn vs random", "sbn vs gn")


def _number(v, digits: int):
    """A finite number rounded to ``digits`` (the JSON stays readable and byte-stable), else None."""
    return round(float(v), digits) if v is not None and np.isfinite(v) else None


def evidence_record(dataset: str, provenance: dict, params: dict, seeds: int, verdicts: pd.DataFrame,
                    comparisons: pd.DataFrame, summary: pd.DataFrame, frac_normalized: pd.Series) -> dict:
    """One dataset's benchmark evidence as numbers: what ``evidence.json`` holds, and what the advice
    of ``assess`` reads (never the rendered tables, whose headers and cell formats may change).

    ``verdicts``: the verdict table (a row per ``batch_size``; the columns of :data:`VERDICT_COLUMNS`
    present, unconverged baselines already labelled); ``comparisons``, ``summary`` and
    ``frac_normalized``: those of :func:`accuracy_tables`; ``provenance``: :func:`make_provenance`'s;
    ``params``: the sweep's parameters. Units are in the key names: ``diff_pp`` and ``ci_pp``
    (sbn minus each baseline, percentage points, 95% bootstrap CI as ``[low, high]``), ``accuracy_pct``
    (each method's test accuracy mean and std over seeds, %), ``frac_normalized`` (a fraction, 0-1).
    A number that is not finite (a std over one seed) is ``null``.
    """
    comps = comparisons.to_dict(orient="records")
    rows = []
    for v in verdicts.to_dict(orient="records"):
        b = int(v["batch_size"])
        row = {"batch_size": b, **{c: v[c] for c in VERDICT_COLUMNS if isinstance(v.get(c), str)}}
        mine = [c for c in comps if c["batch_size"] == b]
        row["diff_pp"] = {c["baseline"]: _number(100 * c["mean_diff"], 4) for c in mine}
        row["ci_pp"] = {c["baseline"]: [_number(100 * c["ci_low"], 4), _number(100 * c["ci_high"], 4)] for c in mine}
        row["accuracy_pct"] = {s["method"]: {"mean": _number(100 * s["mean"], 4), "std": _number(100 * s["std"], 4)}
                               for s in summary[summary["batch_size"] == b].to_dict(orient="records") if s["n"]}
        row["frac_normalized"] = _number(frac_normalized.get(b, np.nan), 6)
        rows.append(row)
    return {"schema": EVIDENCE_SCHEMA, "dataset": dataset, "profile": provenance.get("profile"),
            "data_status": provenance.get("data_status"),
            "n_train": None if provenance.get("n_train") is None else int(provenance["n_train"]), "seeds": int(seeds),
            "epochs": params.get("epochs"), "methods": list(params.get("methods") or []),
            "numbers_produced": provenance.get("last run finished (UTC)"), "rows": rows}



# ----------------------------------------------------------------------------------------------
# REPORT.md: the answer first, one short section per claim, the detail per dataset
# ----------------------------------------------------------------------------------------------

def _span(values) -> str:
    v = sorted(float(x) for x in values)
    return "n/a" if not v else (f"{v[0]:+.2f} pp" if len(v) == 1 or v[0] == v[-1] else f"{v[0]:+.2f} to {v[-1]:+.2f} pp")


def _cells(results: Sequence[DatasetResult]) -> pd.DataFrame:
    """One row per judged (dataset, batch size): sbn - bn (pp), its verdict, the budget label, C2 and the controls."""
    rows = []
    for res in results:
        if not res.ok:
            continue
        bn = res.comparisons[res.comparisons.baseline == "bn"].set_index("batch_size")
        for v in res.verdicts.itertuples(index=False):
            b = int(v.batch_size)
            rows.append({"dataset": res.name, "batch_size": b,
                         "diff_pp": float(bn.mean_diff_pp.get(b, np.nan)) if len(bn) else np.nan,
                         "c1": v.c1, "c1_budget": v.c1_budget, "c2": v.c2,
                         "vs_random": getattr(v, "vs_random", None), "vs_gn": getattr(v, "vs_gn", None),
                         "better": res.n_better("sbn", "bn", b)})
    return pd.DataFrame(rows)


def _counted(cells: pd.DataFrame) -> pd.DataFrame:
    return cells[cells.c1_budget != BUDGET_SENSITIVE]


def _count(cells: pd.DataFrame, col: str, verdict: str) -> int:
    return int((cells[col] == verdict).sum()) if len(cells) else 0


def _win_line(w: Win) -> str:
    what = "selective BN (`sbn`)" if w.what == "sbn" else f"the `{w.what}` reading"
    seeds = f", better on {w.seeds_better[0]} of {w.seeds_better[1]} seeds" if w.seeds_better else ""
    line = (f"{what} on {_title(w.dataset)} at B={w.batch_size}: {w.diff_pp:+.2f} pp over BN "
            f"(95% CI [{w.ci_pp[0]:+.2f}, {w.ci_pp[1]:+.2f}], Holm p {w.p_holm:.3g}{seeds})")
    owed = []
    if w.vs_control_pp is not None:
        owed.append(f"{w.vs_control_pp:+.2f} pp against its random control (Holm p {w.p_control:.3g})")
    if w.vs_sbn_pp is not None:
        owed.append(f"{w.vs_sbn_pp:+.2f} pp against the default reading")
    if owed:
        line += "; " + ", ".join(owed)
    if w.checks:
        line += "; at twice the training, on validation: " + ", ".join(f"{k} {v:+.2f} pp" for k, v in w.checks.items())
    line += (f"; budget check: {w.budget}" + (f" ({w.budget_why})" if w.budget_why else "")) + "."
    return line


def answer(results: Sequence[DatasetResult]) -> List[str]:
    """The first screen of REPORT.md: the paper's question answered in a few sentences with numbers."""
    cells = _cells(results)
    if not len(cells):
        return ["**No dataset produced results**; see the table of datasets below."]
    n, counted = len(cells), _counted(cells)
    below = int((cells.diff_pp < 0).sum())
    small = cells[cells.batch_size <= SMALL_B]
    small_counted = _counted(small)
    names = ", ".join(_title(r.name) for r in results if r.ok)
    sensitive = cells[cells.c1_budget == BUDGET_SENSITIVE]
    supported = _count(counted, "c1", SUPPORTED)
    lead = ("**Selective BN does not beat BN here.**" if supported == 0 else
            f"**Selective BN beats BN in {supported} of {len(counted)} counted cells.**")
    all_seeds = int(sum(1 for b in cells.better if b is not None and b[0] == 0))
    lines = [
        f"{lead} Selective BN (`sbn`: BN only on the training batches whose heterogeneity score exceeds the "
        f"threshold) was compared with BN on {names}, at {cells.batch_size.nunique()} batch sizes, on paired seeds, "
        f"every method at its own learning rate chosen on validation data. It is below BN in {below} of {n} cells "
        f"(sbn - bn {_span(cells.diff_pp)}; below on every seed in {all_seeds}); "
        f"of the {len(counted)} verdicts that twice the training leaves standing, it is significantly worse in "
        f"{_count(counted, 'c1', CONTRADICTED)}, significantly better in {supported}, "
        f"inconclusive in {_count(counted, 'c1', INCONCLUSIVE)}.",
        "",
        f"**At the small batch sizes the paper's claim is about (B <= {SMALL_B}):** sbn - bn {_span(small.diff_pp)}; "
        f"significantly worse in {_count(small_counted, 'c1', CONTRADICTED)} and better in "
        f"{_count(small_counted, 'c1', SUPPORTED)} of {len(small_counted)} counted cells.",
    ]
    if len(sensitive):
        lines += ["", "**Budget-sensitive (shown, not counted):** " + "; ".join(
            f"{_title(r.dataset)} B={r.batch_size} ({r.c1}, {r.diff_pp:+.2f} pp)" for r in sensitive.itertuples())
            + ": twice the epochs moved the validation difference by more than the cell's MDE or flipped its sign "
              "(table *The budget check* below)."]
    wins = wins_over_bn(results)
    lines += ["", "**Significant wins over BN anywhere:** " + ("none." if not wins else "")]
    lines += [f"- {_win_line(w)}" for w in wins]
    lines += ["", f"**C2 (fewer BN transformations, more stable training):** supported in {_count(cells, 'c2', SUPPORTED)}, "
              f"contradicted in {_count(cells, 'c2', CONTRADICTED)}, inconclusive in {_count(cells, 'c2', INCONCLUSIVE)} "
              f"of {n} cells. **Is it heterogeneity that matters?** sbn against a random selection of as many batches: "
              f"better in {_count(cells, 'vs_random', SUPPORTED)}, worse in {_count(cells, 'vs_random', CONTRADICTED)}, "
              f"inconclusive in {_count(cells, 'vs_random', INCONCLUSIVE)}."]
    return lines


_MARK = {SUPPORTED: "better", CONTRADICTED: "worse", INCONCLUSIVE: "n.s."}


def _verdict_grid(cells: pd.DataFrame) -> str:
    """sbn - bn per dataset (rows) and batch size (columns): difference, verdict, budget mark."""
    sizes = sorted(cells.batch_size.unique())
    head = "| dataset | " + " | ".join(f"B={b}" for b in sizes) + " |"
    lines = [head, "|---" * (len(sizes) + 1) + "|"]
    for d, grp in cells.groupby("dataset", sort=False):
        by = {int(r.batch_size): r for r in grp.itertuples()}
        cell = [(f"{by[b].diff_pp:+.2f} {_MARK.get(by[b].c1, by[b].c1)}" + ("*" if by[b].c1_budget == BUDGET_SENSITIVE else ""))
                if b in by else "" for b in sizes]
        lines.append(f"| {_title(d)} | " + " | ".join(cell) + " |")
    return "\n".join(lines)


def claim_sections(results: Sequence[DatasetResult]) -> List[str]:
    """One short section per claim and check, from the typed results."""
    cells = _cells(results)
    ok = [r for r in results if r.ok]
    if not len(cells):
        return []
    out = ["## C1: is selective BN more accurate than BN?", "",
           "sbn - bn in test accuracy (pp, mean over the evaluation seeds) and the verdict (better / worse: "
           "significant; n.s.: not significant; * budget-sensitive, shown and not counted). " + C1_RULE + " " + MDE_RULE,
           "", _verdict_grid(cells), ""]
    out += ["## The budget check: would twice the training change a verdict?", "",
            "Every cell is judged; none is withheld for BN's accuracy. Instead `bn` and `sbn` (and every reading that "
            "beats BN, its random control and `none`) were retrained at twice the epochs on the tuning seeds at their "
            "selected learning rates, and read on the *validation* split. A verdict is budget-sensitive where the "
            "doubled budget flips the sign of the paired difference or moves it by more than the cell's MDE, or where "
            "either arm's learning rate lies at an open edge of the widened grid. Per dataset "
            "(`<dataset>/budget_check.csv`):", ""]
    for res in ok:
        if not len(res.budget):
            out.append(f"- **{_title(res.name)}**: not checked (no budget runs).")
            continue
        sens = res.budget[res.budget.budget == BUDGET_SENSITIVE]
        out.append(f"- **{_title(res.name)}**: sbn - bn on validation {_span(res.budget.diff_1x_pp)} at 1x, "
                   f"{_span(res.budget['diff_2x_pp'])} at 2x the epochs; "
                   + ("robust at every batch size." if not len(sens) else
                      "budget-sensitive at " + "; ".join(f"B={int(r.batch_size)} ({r.why})" for r in sens.itertuples()) + "."))
    out += ["", "## The recipe check: does BN reach its usual accuracy?", "",
            "BN's target accuracy with this CNN and recipe, on the validation split at BN's best batch size (a check "
            "of the training recipe; it gates no verdict):", ""]
    for res in ok:
        rc = res.recipe
        if rc.get("target_pct") is None:
            out.append(f"- **{_title(res.name)}**: no target set; BN reaches {rc.get('bn_val_acc_pct')}% on validation "
                       f"at B={rc.get('best_batch_size')}.")
        else:
            out.append(f"- **{_title(res.name)}**: BN reaches {rc['bn_val_acc_pct']:.2f}% on validation at its best "
                       f"batch size B={rc['best_batch_size']} (target {rc['target_pct']:.1f}%): "
                       f"{'met' if rc['met'] else 'NOT met'}.")
    out += ["", "## C2: fewer BN transformations, more stable training?", "", C2_RULE, ""]
    for res in ok:
        c2 = res.verdicts.c2.value_counts()
        said = ", ".join(f"{v} at {int(c2[v])}" for v in (SUPPORTED, CONTRADICTED, INCONCLUSIVE) if v in c2)
        out.append(f"- **{_title(res.name)}**: {said} of {len(res.verdicts)} batch sizes.")
    out += ["", "## Controls: heterogeneity or chance, and GroupNorm", "",
            "`sbn` against `random` (as many batches normalised, chosen at random) and against GroupNorm (`gn`), rule of C1:", ""]
    for res in ok:
        for col, what in (("vs_random", "sbn vs random"), ("vs_gn", "sbn vs gn")):
            if col in res.verdicts and res.verdicts[col].notna().any():
                v = res.verdicts
                out.append(f"- **{_title(res.name)}**, {what}: " + "; ".join(
                    f"{k}: B = {', '.join(str(int(b)) for b in v.batch_size[v[col] == k])}"
                    for k in (SUPPORTED, CONTRADICTED, INCONCLUSIVE) if (v[col] == k).any()) + ".")
    reads = [r for r in ok if len(r.readings)]
    if reads:
        out += ["", "## Every reading of the paper", "",
                "Where the selection acts, in which direction the score matters, what a skipped batch does "
                "(`sbnlib.experiments.readings.READINGS`). Per reading, the batch sizes where it is significantly better "
                "than BN and than its random control (rule of C1, Holm across batch sizes); the numbers are in each "
                "dataset's `readings` table.", ""]
        for res in reads:
            rd = res.readings
            for name, grp in rd.groupby("reading", sort=False):
                beat = {base: [str(int(b)) for b, v in zip(grp.batch_size, grp.verdict) if v == SUPPORTED]
                        for base in ("bn", "control")
                        for grp in [rd[(rd.reading == name) & (rd.baseline == base)]]}
                worse = [str(int(b)) for b, v in zip(grp[grp.baseline == "bn"].batch_size, grp[grp.baseline == "bn"].verdict)
                         if v == CONTRADICTED]
                out.append(f"- **{_title(res.name)}**, `{name}`: "
                           + (f"beats BN at B = {', '.join(beat['bn'])}" if beat["bn"] else "never beats BN")
                           + (f", worse than BN at B = {', '.join(worse)}" if worse else "")
                           + (f"; beats its random control at B = {', '.join(beat['control'])}." if beat["control"]
                              else "; never beats its random control."))
    abl = [r for r in ok if len(r.ablation)]
    if abl:
        out += ["", "## Heterogeneity or chance: the ablation", "",
                "Batches normalised in order of heterogeneity score against as many chosen at random, at each rate "
                "(`<dataset>/ablation_vs_random`), rule of C1 with Holm across rates:", ""]
        for res in abl:
            a = res.ablation
            for b, grp in a.groupby("batch_size"):
                said = "; ".join(f"{v} at rate {', '.join(f'{r:g}' for r in g.threshold_rate)}"
                                 + ("" if v == INCONCLUSIVE else f" ({', '.join(f'{d:+.2f} pp' for d in g.mean_diff_pp)})")
                                 for v, g in grp.groupby("verdict", sort=False))
                out.append(f"- **{_title(res.name)}**, B={int(b)}: {said}.")
    plans = [r for r in ok if len(r.plan_ordering)]
    if plans:
        out += ["", "## Does the score see the heterogeneity of the batches training uses?", "",
                "On a dataset whose sources are known, every batch of the evaluation seeds' batch plans, scored "
                "before training: the Spearman correlation of its score with its minority-source share (0: the score "
                "does not order the batches by how mixed they are), and in brackets the AUROC of batches with a "
                "minority share >= 25% against <= 5% where both occur (`<dataset>/feasibility_plan_*`). The AUROC of "
                "balanced half/half batches against pure ones, batches training never forms at B >= 8, is the "
                "second line of each dataset's `feasibility_auroc` table.", ""]
        for res in plans:
            po = res.plan_ordering
            for scorer in ("feature_std", "spectral_split"):
                mine = po[po.scorer == scorer].sort_values("batch_size")
                if len(mine):
                    said = ", ".join(f"B={int(r.batch_size)} {r.spearman:.2f}"
                                     + (f" ({r.auroc:.2f})" if pd.notna(r.auroc) else "") for r in mine.itertuples())
                    default = " (the default scorer)" if scorer == "feature_std" else ""
                    out.append(f"- **{_title(res.name)}**, `{scorer}`{default}: {said}.")
    coll = [line for r in ok for line in collapse_sentences(r.collapse, _title(r.name))]
    if coll:
        out += ["", "## Why selective BN loses accuracy", "",
                "Selective BN's accuracy gap to BN on its own training batches against the test set, and its training "
                "loss on the steps with BN on and off (each dataset's `collapse` table):", "", *coll]
    return out


def write_report(output_root, datasets: Sequence[str], results: Sequence[DatasetResult], figures: Sequence[str],
                 provenance: dict, sections: Sequence[str] = ()) -> Path:
    """``REPORT.md``: the answer on its first screen (with the answer figure and the verdict map), one
    short section per claim and check, ``sections`` (Markdown blocks: sanity reference, cost, ...),
    links to each dataset's own report (:func:`write_dataset_report`) and the provenance."""
    root = Path(output_root)
    parts = ["# Does selective BN beat BN? A replication of Alsobhi et al. (2023)", "", *answer(results), ""]
    for fig, what in (("summary_accuracy_diff.png", "sbn - bn per batch size"), ("summary_verdicts.png", "verdict map")):
        if fig in figures:
            parts += [f"![{what}]({fig})", ""]
    parts += ["Every number here is computed by `./run_all.sh` from the committed result files; none is typed. "
              "The details of each dataset are in its own report: "
              + ", ".join(f"[{_title(d)}]({d}/REPORT.md)" for d in datasets if (root / d / "REPORT.md").is_file()) + ".",
              "", *claim_sections(results), ""]
    for block in sections:
        parts += [block, ""]
    parts += ["## Datasets", "", "| dataset | status | detail |", "|---|---|---|"]
    for d in datasets:
        st = read_status(root / d)
        detail = st.get("reason") or (f"data: {st.get('data_status')}" if st.get("data_status") else "")
        parts.append(f"| {d} | {st['status']} | {str(detail).replace('|', '/')} |")
    parts += ["", "## Provenance", ""] + [f"- {k}: {v}" for k, v in provenance.items()] + [""]
    return atomic_write_bytes(root / "REPORT.md", "\n".join(parts).encode())


# the tables of a dataset's report, in reading order (those that exist)
DATASET_TABLES = ("verdicts", "accuracy", "budget_check", "convergence", "lr_selection", "stability", "stability_metrics",
                  "inference", "collapse", "readings", "readings_budget_check", "ablation_vs_random", "ablation",
                  "feasibility", "feasibility_plan_ordering", "feasibility_plan_auroc", "feasibility_auroc")


def write_dataset_report(output_root, dataset: str) -> Optional[Path]:
    """``<dataset>/REPORT.md``: the dataset's tables (their Markdown files, in :data:`DATASET_TABLES`' order)
    and figures, linked from the top-level report; None where the dataset did not run."""
    d = Path(output_root) / dataset
    if read_status(d).get("status") != "ok":
        return None
    parts = [f"# {_title(dataset)}: every table and figure", "", "[Back to the answer](../REPORT.md)", ""]
    for name in DATASET_TABLES:
        md = d / f"{name}.md"
        if md.is_file():
            parts += [md.read_text(), ""]
    parts += [f"![{fig.stem}]({fig.name})\n" for fig in sorted(d.glob("*.png"))]
    return atomic_write_bytes(d / "REPORT.md", "\n".join(parts).encode())
