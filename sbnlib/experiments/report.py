"""The cross-dataset report: the claim rules, the sentences that state the verdicts, the evidence
record (``evidence.json``) the advice of ``assess`` reads, and ``REPORT.md``.

Everything written here is computed from result records; nothing is typed in.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ..assess.evidence import EVIDENCE_SCHEMA, NOT_CONVERGED, read_status
from ..io import atomic_write_bytes
from . import stats
from .tables import BN_TARGETS, COLLAPSE_COLUMNS, STABILITY_METRICS, markdown_table

__all__ = ["C1_RULE", "C2_RULE", "collapse_sentences", "sanity_sentences", "verdict_sentences",
           "convergence_sentences", "readings_sentences", "ablation_sentences", "VERDICT_COLUMNS", "evidence_record",
           "write_report"]

C1_RULE = ("C1 (selective BN reaches better test accuracy than traditional BN), per batch size: "
           + stats.VERDICT_RULE)
C2_RULE = ("C2 (selective BN reduces BN transformations and makes training more stable), per batch size: "
           "'supported' when sbn normalises fewer batches than bn AND at least one stability metric "
           f"({', '.join(STABILITY_METRICS)}) is significantly better for sbn and none is significantly worse; "
           "'contradicted' when at least one is significantly worse and none significantly better; "
           "'inconclusive' otherwise. Each metric's verdict uses the rule of C1 with lower = better.")


def collapse_sentences(collapse: pd.DataFrame, dataset: str, batch_sizes: Optional[Sequence[int]] = None) -> List[str]:
    """:func:`collapse_table` in words for ``dataset``, one line per batch size (default: the
    smallest and the largest): how much of selective BN's test-accuracy gap to BN is already there
    on the training batches, and the training loss on its BN-on and BN-off steps."""
    c = collapse.rename(columns={v: k for k, v in COLLAPSE_COLUMNS.items()})
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


def verdict_sentences(verdicts: pd.DataFrame) -> List[str]:
    """The verdict table in words: per dataset and claim, how many batch sizes got each verdict."""
    claims = {"C1": "selective BN more accurate than BN", "C2": "selective BN more stable than BN",
              "sbn vs random": "heterogeneity-selected batches beat the random control at the same rate",
              "sbn vs gn": "selective BN more accurate than GroupNorm"}
    lines = []
    for d, grp in verdicts.groupby("dataset", sort=False):
        for col, text in claims.items():
            if col not in grp:
                continue
            counts = grp[col].value_counts()
            kinds = ("supported", "contradicted", "inconclusive", NOT_CONVERGED)
            told = ", ".join(f"{v} at {counts[v]}" for v in kinds if v in counts)
            sizes = {v: ", ".join(str(b) for b in grp.loc[grp[col] == v, "batch_size"]) for v in counts.index}
            detail = "; ".join(f"{v}: B = {sizes[v]}" for v in kinds if v in sizes)
            lines.append(f"- **{d}**, {col} ({text}): {told} of {len(grp)} batch sizes ({detail}).")
    return lines


def convergence_sentences(verdicts: pd.DataFrame, runs: Optional[Mapping[str, pd.DataFrame]] = None) -> List[str]:
    """Per dataset: did BN reach its target (:data:`BN_TARGETS`) at every batch size? (the verdict
    table's ``bn converged`` column). With the dataset's run rows (``runs``, as ``runs.csv``), a
    shortfall also says how far BN got there and elsewhere, its training accuracy and its last
    validation gain: whether BN was still learning, or stopped below the target at that batch size."""
    if "bn converged" not in verdicts:
        return []
    lines = []
    for d, grp in verdicts.groupby("dataset", sort=False):
        short = [int(b) for b, c in zip(grp.batch_size, grp["bn converged"]) if c == "no"]
        target = BN_TARGETS.get(d)
        if target is None:
            lines.append(f"- **{d}**: no BN target is set; see its convergence table for the validation gain.")
        elif short:
            lines.append(f"- **{d}**: BN fell short of its {100 * target:.1f}% target at B = "
                         f"{', '.join(map(str, short))} of {len(grp)} batch sizes; every verdict there reads "
                         f"*{NOT_CONVERGED}* and is not counted." + _shortfall(runs, d, short))
        else:
            lines.append(f"- **{d}**: BN reached its {100 * target:.1f}% target at every batch size ({len(grp)}).")
    return lines


def _shortfall(runs: Optional[Mapping[str, pd.DataFrame]], dataset: str, short: Sequence[int]) -> str:
    """`` BN there: ...`` from the dataset's ``bn`` rows (means over seeds), or "" without them."""
    df = None if runs is None else runs.get(dataset)
    if df is None or "method" not in df:
        return ""
    bn = df[df.method == "bn"].groupby("batch_size")[["final_test_acc", "final_train_acc", "val_gain_last2"]].mean()
    short = [b for b in short if b in bn.index]
    parts = [f"B={b}: test {100 * bn.final_test_acc[b]:.2f}%, training {100 * bn.final_train_acc[b]:.1f}%, "
             f"validation gain over the last two epochs {100 * bn.val_gain_last2[b]:+.2f} pp" for b in short]
    rest = bn.drop(index=short).final_test_acc
    span = sorted({f"{100 * rest.min():.2f}", f"{100 * rest.max():.2f}"}, key=float) if len(rest) else []
    other = f"; at the other batch sizes test {'-'.join(span)}%" if span else ""
    return f" BN (mean over seeds) at {'; '.join(parts)}{other}." if parts else ""


def readings_sentences(table: pd.DataFrame, dataset: str) -> List[str]:
    """A dataset's readings table (``readings.csv``) in words: per reading, the batch sizes where
    it beat BN and where it beat its random control (verdict ``supported``), or that it never did."""
    lines = []
    for name, grp in table.groupby(level=0, sort=False):
        sizes = grp.index.get_level_values(1)
        beat = {col: [str(b) for b, v in zip(sizes, grp[col]) if v == "supported"]
                for col in ("reading vs bn", "reading vs control") if col in grp}
        unconverged = [str(b) for b, v in zip(sizes, grp.get("reading vs bn", [])) if v == NOT_CONVERGED]
        counted = [str(b) for b in sizes if str(b) not in unconverged]
        said = [f"beats BN at B = {', '.join(beat['reading vs bn'])}" if beat.get("reading vs bn") else "never beats BN",
                (f"beats its random control at B = {', '.join(beat['reading vs control'])}"
                 if beat.get("reading vs control") else "never beats its random control")]
        skipped = f"; B = {', '.join(unconverged)}: *{NOT_CONVERGED}*, not counted" if unconverged else ""
        lines.append(f"- **{dataset}**, reading `{name}`: {' and '.join(said)} "
                     f"(of B = {', '.join(counted) or 'none'}{skipped}).")
    return lines


def ablation_sentences(table: pd.DataFrame, vs_random: pd.DataFrame, dataset: str) -> List[str]:
    """A dataset's ablation (``ablation.csv``, indexed by batch size and selection; ``ablation_vs_random.csv``)
    in words, one line per batch size: accuracy with every batch normalised (rate 1), with none (rate 0)
    and with the best scorer / threshold selection, then the verdicts of heterogeneity-selected against
    random batches at the same rate."""
    lines = []
    for b, grp in table.groupby(level=0):
        acc = grp.droplevel(0)
        chosen = acc[acc.index.str.contains(" / ")]
        parts = [f"rate {r} ({'every batch normalised' if r == '1' else 'none'}) {acc.loc[f'rate {r}', 'acc_mean']:.2f}%"
                 for r in ("1", "0") if f"rate {r}" in acc.index]
        if len(chosen):
            best = chosen.acc_mean.idxmax()
            parts.append(f"best scorer / threshold `{best}` {chosen.loc[best, 'acc_mean']:.2f}% "
                         f"(normalising {100 * chosen.loc[best, 'frac_normalized']:.0f}% of batches)")
        mine = vs_random[vs_random.batch_size == b]
        said = [f"{f'*{v}* (not counted)' if v == NOT_CONVERGED else v} at rate "
                f"{', '.join(f'{r:g}' for r in grp_v.threshold_rate)}"
                + ("" if v in ("inconclusive", NOT_CONVERGED) else
                   f" ({', '.join(f'{100 * d:+.2f} pp' for d in grp_v.mean_diff)})")
                for v, grp_v in mine.groupby("verdict", sort=False)]
        verdicts = "; ".join(said) if said else "no rate compared"
        lines.append(f"- **{dataset}**, B={b}: {', '.join(parts)}. Heterogeneity-selected vs random batches at the "
                     f"same rate: {verdicts}.")
    return lines


VERDICT_COLUMNS = ("C1", "C2", "sbn vs random", "sbn vs gn", "bn converged")


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


def write_report(output_root, datasets: Sequence[str], verdicts: pd.DataFrame, figures: List[str],
                 provenance: dict, sections: Sequence[str] = (), runs: Optional[Mapping[str, pd.DataFrame]] = None) -> Path:
    """``REPORT.md``: status of every dataset, the verdicts, ``sections`` (Markdown blocks, e.g. the
    sanity reference), each dataset's tables and figures."""
    root = Path(output_root)
    parts = ["# Selective batch normalization: replication report", "",
             "Generated by `./run_all.sh` from the result files; every number below is computed, none typed.",
             "", "## Datasets", "", "| dataset | status | detail |", "|---|---|---|"]
    for d in datasets:
        st = read_status(root / d)
        detail = st.get("reason") or (f"data: {st.get('data_status')}" if st.get("data_status") else "")
        parts.append(f"| {d} | {st['status']} | {str(detail).replace('|', '/')} |")
    parts += ["", "## Verdicts", "", C1_RULE, "", C2_RULE, ""]
    parts += [markdown_table(verdicts, index=False) if len(verdicts) else "_No dataset produced results._", ""]
    parts += verdict_sentences(verdicts) + [""]
    if runs is None:  # the datasets' run rows, unless the caller has read them already
        runs = {d: pd.read_csv(root / d / "runs.csv") for d in datasets if (root / d / "runs.csv").is_file()}
    converged = convergence_sentences(verdicts, runs)
    if converged:
        parts += ["### Did the BN baseline converge?", "", *converged, ""]
    for block in sections:
        parts += [block, ""]
    for d in datasets:
        st = read_status(root / d)
        if st["status"] != "ok":
            continue
        parts += [f"## {d}", ""]
        for name in ("feasibility_auroc", "accuracy", "stability", "inference", "collapse", "readings",
                     "ablation_vs_random", "ablation"):
            md = root / d / f"{name}.md"
            if md.exists():
                parts += [md.read_text().replace("## ", "### ", 1), ""]
        for fig in sorted((root / d).glob("*.png")):
            parts += [f"![{d} {fig.stem}]({d}/{fig.name})", ""]
    for fig in figures:
        parts += [f"![{Path(fig).stem}]({fig})", ""]
    parts += ["## Provenance", ""] + [f"- {k}: {v}" for k, v in provenance.items()] + [""]
    return atomic_write_bytes(root / "REPORT.md", "\n".join(parts).encode())
