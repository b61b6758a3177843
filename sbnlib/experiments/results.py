"""One dataset's results as typed data: what the report is rendered from.

Every field is read from a file the notebooks write as data, with machine column names
(``evidence.json``, ``comparisons_*.csv``, ``budget_check.csv``, ``readings_budget_check.csv``,
``runs.csv``, ``status.json``); no rendered table and no display string is read back.
Differences are in percentage points (``*_pp``) from here on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd

from ..assess.evidence import BUDGET_SENSITIVE, read_status
from ..io import read_json_object
from .stats import SUPPORTED

__all__ = ["DatasetResult", "load", "Win", "wins_over_bn", "VERDICT_KEYS"]

#: evidence.json's verdict keys -> the typed result's columns
VERDICT_KEYS = {"C1": "c1", "C1 budget": "c1_budget", "C2": "c2", "sbn vs random": "vs_random", "sbn vs gn": "vs_gn"}


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, comment="#") if path.is_file() else pd.DataFrame()


def _pp(frame: pd.DataFrame) -> pd.DataFrame:
    """A comparisons frame (fractions) with its differences in percentage points."""
    if not len(frame):
        return frame
    out = frame.copy()
    for c in ("mean_diff", "ci_low", "ci_high", "mde_80"):
        if c in out:
            out[f"{c}_pp"] = 100 * out[c]
    return out


@dataclass(frozen=True)
class DatasetResult:
    name: str
    status: dict
    verdicts: pd.DataFrame = field(default_factory=pd.DataFrame)  # per batch size: VERDICT_KEYS' columns
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)  # sbn vs each baseline, test accuracy
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # the evaluation sweep, one row per run
    budget: pd.DataFrame = field(default_factory=pd.DataFrame)  # the budget check of sbn vs bn
    recipe: dict = field(default_factory=dict)  # BN's target on validation at its best batch size
    collapse: pd.DataFrame = field(default_factory=pd.DataFrame)
    readings: pd.DataFrame = field(default_factory=pd.DataFrame)  # every reading vs bn / control / sbn
    readings_budget: pd.DataFrame = field(default_factory=pd.DataFrame)  # the budget check of readings' wins
    ablation: pd.DataFrame = field(default_factory=pd.DataFrame)  # heterogeneity vs random at the same rate
    plan_ordering: pd.DataFrame = field(default_factory=pd.DataFrame)  # how each scorer orders the plan's batches
    evidence: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status.get("status") == "ok" and len(self.verdicts) > 0

    def n_better(self, treatment: str, baseline: str, batch_size: int) -> Optional[tuple]:
        """``(seeds where treatment > baseline, seeds paired)`` on test accuracy, from the runs."""
        r = self.runs
        if not len(r):
            return None
        at = r[r.batch_size == batch_size].pivot_table(index="seed", columns="method", values="final_test_acc")
        if treatment not in at or baseline not in at:
            return None
        pair = at[[treatment, baseline]].dropna()
        return int((pair[treatment] > pair[baseline]).sum()), len(pair)


def load(output_dir, name: str) -> DatasetResult:
    """The typed result of dataset ``name`` under ``output_dir`` (empty frames where a study did not run)."""
    d = Path(output_dir) / name
    status = read_status(d)
    if status.get("status") != "ok" or not (d / "evidence.json").is_file():
        return DatasetResult(name, status)
    ev = read_json_object(d / "evidence.json", f"rerun notebooks/experiment.ipynb on {name}")
    verdicts = pd.DataFrame([{"batch_size": int(r["batch_size"]), **{v: r.get(k) for k, v in VERDICT_KEYS.items()}}
                             for r in ev.get("rows", [])])
    return DatasetResult(
        name=name, status=status, verdicts=verdicts, evidence=ev,
        comparisons=_pp(_csv(d / "comparisons_accuracy.csv")), runs=_csv(d / "runs.csv"),
        budget=_csv(d / "budget_check.csv"), recipe=dict(ev.get("recipe_check") or {}),
        collapse=pd.DataFrame(ev.get("collapse") or []),
        readings=_pp(_csv(d / "comparisons_readings.csv")), readings_budget=_csv(d / "readings_budget_check.csv"),
        ablation=_pp(_csv(d / "comparisons_ablation.csv")), plan_ordering=_plan_ordering(d))


def _plan_ordering(d: Path) -> pd.DataFrame:
    """``feasibility.json``'s ``plan_ordering`` rows (a dataset with known sources), else empty."""
    path = d / "feasibility.json"
    if not path.is_file():
        return pd.DataFrame()
    rows = (read_json_object(path, "rerun notebooks/feasibility.ipynb").get("plan_ordering") or {}).get("rows") or []
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Win:
    """A significant win over BN: where, by how much, and what it is owed to."""
    dataset: str
    what: str  # "sbn" or a reading's name
    batch_size: int
    diff_pp: float
    ci_pp: tuple
    p_holm: float
    vs_control_pp: Optional[float] = None  # the same selection against its random control
    p_control: Optional[float] = None
    vs_sbn_pp: Optional[float] = None
    budget: str = "not checked"
    budget_why: str = ""
    checks: Dict[str, float] = field(default_factory=dict)  # the budget check's differences at 2x (pp), by pair
    seeds_better: Optional[tuple] = None  # (seeds where it beat BN, seeds paired)

    @property
    def counted(self) -> bool:
        return self.budget != BUDGET_SENSITIVE


def _comparison(frame: pd.DataFrame, baseline: str, batch_size: int, reading: Optional[str] = None):
    sub = frame[(frame.baseline == baseline) & (frame.batch_size == batch_size)]
    if reading is not None:
        sub = sub[sub.reading == reading]
    return None if sub.empty else sub.iloc[0]


def wins_over_bn(results: Sequence[DatasetResult]) -> List[Win]:
    """Every significant win over BN anywhere: selective BN's (C1 supported) and every reading's."""
    wins = []
    for res in results:
        if not res.ok:
            continue
        for r in res.comparisons[(res.comparisons.baseline == "bn") & (res.comparisons.verdict == SUPPORTED)].itertuples():
            ctrl = _comparison(res.comparisons, "random", int(r.batch_size))
            check = res.budget[res.budget.batch_size == r.batch_size] if len(res.budget) else pd.DataFrame()
            wins.append(Win(res.name, "sbn", int(r.batch_size), r.mean_diff_pp, (r.ci_low_pp, r.ci_high_pp),
                            r.p_wilcoxon_holm, None if ctrl is None else ctrl.mean_diff_pp,
                            None if ctrl is None else ctrl.p_wilcoxon_holm,
                            budget=str(check.budget.iloc[0]) if len(check) else "not checked",
                            budget_why=str(check.why.iloc[0]) if len(check) and isinstance(check.why.iloc[0], str) else "",
                            seeds_better=_seeds(r)))
        if not len(res.readings):
            continue
        rd = res.readings
        for r in rd[(rd.baseline == "bn") & (rd.verdict == SUPPORTED) & (rd.reading != "identity")].itertuples():
            b = int(r.batch_size)
            ctrl, sbn = _comparison(rd, "control", b, r.reading), _comparison(rd, "sbn", b, r.reading)
            rb = res.readings_budget
            mine = rb[(rb.treatment == r.reading) & (rb.batch_size == b)] if len(rb) else pd.DataFrame()
            vs_bn = mine[mine.baseline == "bn"] if len(mine) else mine
            checks = {f"{t} - {s}": float(v) for t, s, v in
                      zip(rb.treatment, rb.baseline, rb["diff_2x_pp"])
                      if len(rb) and (t == r.reading or (t == "none" and s == "bn"))} if len(mine) else {}
            wins.append(Win(res.name, r.reading, b, r.mean_diff_pp, (r.ci_low_pp, r.ci_high_pp), r.p_wilcoxon_holm,
                            None if ctrl is None else ctrl.mean_diff_pp, None if ctrl is None else ctrl.p_wilcoxon_holm,
                            None if sbn is None else sbn.mean_diff_pp,
                            budget=str(vs_bn.budget.iloc[0]) if len(vs_bn) else "not checked",
                            budget_why=str(vs_bn.why.iloc[0]) if len(vs_bn) and isinstance(vs_bn.why.iloc[0], str) else "",
                            checks=checks, seeds_better=_seeds(r)))
    return wins


def _seeds(row) -> Optional[tuple]:
    """``(n_positive, n)`` of a comparison row, where the comparisons carry it."""
    pos = getattr(row, "n_positive", None)
    return None if pos is None or pd.isna(pos) else (int(pos), int(row.n))
