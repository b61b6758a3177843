"""The budget check (issue 27): would a verdict survive twice the training?

A verdict compares methods trained for one budget (the profile's epochs). Where a method is still
improving when the budget ends, a longer run may close or open the gap, so every verdict is
checked against a run twice as long, on data that chooses nothing else:

* **arms**: ``bn`` and ``sbn`` at every batch size of the sweep, plus any other arm whose verdict
  would change the report's answer (a reading that beats BN, its random control, ``none``);
  :class:`Arm` names one;
* **runs**: each arm at the learning rate the selection chose for it (a reading takes its method's,
  as in :mod:`sbnlib.experiments.readings`), on the *tuning* seeds, at 1x the epochs (for the
  profile's own methods these are the selection's runs, read from ``<out>/tuning/``) and at
  :data:`FACTOR` x the epochs (``<out>/budget/``);
* **reading**: final *validation* accuracy only; the test set is not read.

:func:`budget_table` gives, per comparison and batch size, the paired difference (treatment -
baseline, mean over the tuning seeds, percentage points) at both budgets; :func:`label` decides
which verdicts are *budget-sensitive* (shown, not counted): the doubled budget flips the sign of
the difference or moves it by more than the comparison's MDE, or either arm's learning rate lies
at an open edge of the widened grid (``lr_selection``'s ``edge`` column).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ..assess.evidence import BUDGET_SENSITIVE
from . import readings as rd
from .config import TrainConfig
from .stats import SUPPORTED
from .sweep import experiment_configs, iter_results, load_result, result_path, run_configs

__all__ = ["FACTOR", "RUNS_DIR", "Arm", "MAIN_ARMS", "budget_configs", "train_budget", "budget_table", "label",
           "SENSITIVE", "ROBUST", "NOT_CHECKED", "win_arms", "win_pairs"]

FACTOR = 2  # the longer budget, in multiples of the profile's epochs
RUNS_DIR = "budget"  # under <out>/: the runs of the longer budget (and 1x runs the selection has not)
ROBUST, NOT_CHECKED = "robust", "not checked"
SENSITIVE = BUDGET_SENSITIVE  # shown, not counted


@dataclass(frozen=True)
class Arm:
    """One trained method of the check: ``label`` names it in the tables; ``method`` and
    ``overrides`` (TrainConfig fields, e.g. ``{"scope": "input_bare"}``) set it; ``lr_from`` is the
    method whose selected learning rate it takes (default: its own)."""

    label: str
    method: str
    overrides: Dict[str, object] = field(default_factory=dict)
    lr_from: Optional[str] = None

    @property
    def plain(self) -> bool:
        """A profile method as the sweep trains it: its 1x runs are the selection's."""
        return not self.overrides and self.lr_from is None


MAIN_ARMS = (Arm("bn", "bn"), Arm("sbn", "sbn"))


def _configs(dataset: str, params: dict, lr_for: Mapping, arm: Arm, batch_sizes: Sequence[int],
             epochs: int) -> List[TrainConfig]:
    lr = {(arm.method, b): lr_for[(arm.lr_from or arm.method, b)] for b in batch_sizes}
    return experiment_configs(dataset, dict(params, **arm.overrides, methods=[arm.method], batch_sizes=list(batch_sizes),
                                            seeds=params["tune_seeds"], epochs=epochs), lr)


def budget_configs(dataset: str, params: dict, lr_for: Mapping, arms: Iterable[Arm],
                   batch_sizes: Optional[Sequence[int]] = None) -> List[Tuple[Arm, int, List[TrainConfig]]]:
    """``(arm, factor, configs)`` for every arm at 1x and :data:`FACTOR` x the profile's epochs, on
    the tuning seeds, at ``batch_sizes`` (default: the sweep's)."""
    sizes = list(params["batch_sizes"] if batch_sizes is None else batch_sizes)
    return [(arm, f, _configs(dataset, params, lr_for, arm, sizes, f * int(params["epochs"])))
            for arm in arms for f in (1, FACTOR)]


def train_budget(out, dataset: str, params: dict, lr_for: Mapping, arms: Iterable[Arm] = MAIN_ARMS,
                 batch_sizes: Optional[Sequence[int]] = None, train: bool = True, **run_kw) -> pd.DataFrame:
    """Train the check's runs that have no result file (a plain arm's 1x runs are read from
    ``<out>/tuning/``, where the selection left them; the others go to ``<out>/budget/``); return
    one row per run (:func:`sbnlib.experiments.sweep.iter_results`) with ``arm`` and ``factor``.
    ``train=False`` trains nothing and returns the runs whose files exist (a cell without them
    reads "not checked"). ``run_kw`` goes to :func:`sbnlib.experiments.sweep.run_configs` (root,
    jobs, progress, ...)."""
    from pathlib import Path

    out, rows = Path(out), []
    where: Dict[Path, list] = {}  # one sweep per folder, so that the workers stay busy to its end
    for arm, factor, configs in budget_configs(dataset, params, lr_for, arms, batch_sizes):
        folder = out / ("tuning" if factor == 1 and arm.plain else RUNS_DIR)
        where.setdefault(folder, []).extend((arm, factor, c) for c in configs)
    for folder, items in where.items():  # the selection's folder first: cached, so the bar shows what is left
        configs = [c for _, _, c in items]
        if train:
            results = run_configs(configs, folder, desc=f"{dataset} budget check ({folder.name})", **run_kw)
        else:
            results = [load_result(result_path(folder, c), c) for c in configs]
        kept = [(item, r) for item, r in zip(items, results) if r is not None]
        rows += [dict(row, arm=arm.label, factor=factor)
                 for ((arm, factor, _), _r), row in zip(kept, iter_results([r for _, r in kept]))]
    return pd.DataFrame(rows)


def budget_table(runs: pd.DataFrame, comparisons: Sequence[Tuple[str, str]]) -> pd.DataFrame:
    """Per ``(treatment, baseline)`` arm pair and batch size: each arm's mean final validation
    accuracy (%) and the paired difference (pp, mean over the seeds both arms have) at 1x and
    :data:`FACTOR` x, and ``shift_pp`` = the change of that difference."""
    out = []
    if not len(runs):
        return pd.DataFrame(columns=["treatment", "baseline", "batch_size", "n_seeds", "diff_1x_pp",
                                     f"diff_{FACTOR}x_pp", "shift_pp"])
    for treatment, baseline in comparisons:
        for b in sorted(runs.batch_size.unique()):
            row = {"treatment": treatment, "baseline": baseline, "batch_size": int(b)}
            for f in (1, FACTOR):
                at = runs[(runs.batch_size == b) & (runs.factor == f)]
                t = at[at.arm == treatment].set_index("seed")["final_val_acc"]
                s = at[at.arm == baseline].set_index("seed")["final_val_acc"]
                seeds = sorted(set(t.index) & set(s.index))
                row[f"{treatment}_val_{f}x"] = round(100 * float(t.mean()), 2) if len(t) else np.nan
                row[f"{baseline}_val_{f}x"] = round(100 * float(s.mean()), 2) if len(s) else np.nan
                row[f"diff_{f}x_pp"] = (round(100 * float((t[seeds] - s[seeds]).mean()), 2) if seeds else np.nan)
                row["n_seeds"] = len(seeds)
            row["shift_pp"] = round(row[f"diff_{FACTOR}x_pp"] - row["diff_1x_pp"], 2)
            out.append(row)
    cols = ["treatment", "baseline", "batch_size", "n_seeds", "diff_1x_pp", f"diff_{FACTOR}x_pp", "shift_pp"]
    frame = pd.DataFrame(out)
    return frame[cols + [c for c in frame.columns if c not in cols]] if len(frame) else frame


def label(budget: pd.DataFrame, mde_pp: Mapping[Tuple[str, str, int], float],
          open_edges: Iterable[Tuple[str, int]] = ()) -> pd.DataFrame:
    """``budget`` with ``mde_pp`` (the comparison's MDE at that batch size, from the evaluation seeds,
    keyed ``(treatment, baseline, batch_size)``), ``budget`` (:data:`ROBUST`, :data:`SENSITIVE`, or
    :data:`NOT_CHECKED` where either budget has no runs) and ``why`` (empty when robust).
    ``open_edges``: ``(arm, batch_size)`` whose selected learning rate lies at an open edge of the
    values tried."""
    edges = {(a, int(b)) for a, b in open_edges}
    out = budget.copy()
    verdicts, whys, mdes = [], [], []
    for r in out.itertuples(index=False):
        mde = float(mde_pp.get((r.treatment, r.baseline, int(r.batch_size)), np.nan))
        d1, d2 = r.diff_1x_pp, getattr(r, f"diff_{FACTOR}x_pp")
        why = []
        if not (np.isfinite(d1) and np.isfinite(d2)):
            mdes.append(round(mde, 2) if np.isfinite(mde) else np.nan)
            verdicts.append(NOT_CHECKED)
            whys.append(f"no {FACTOR}x runs yet")
            continue
        if d1 * d2 < 0:  # opposite signs; a difference that leaves or reaches 0 is judged by the MDE
            why.append(f"the sign flips at {FACTOR}x ({d1:+.2f} -> {d2:+.2f} pp)")
        if np.isfinite(mde) and abs(d2 - d1) > mde:
            why.append(f"the difference moves {d2 - d1:+.2f} pp, more than the MDE {mde:.2f} pp")
        why += [f"{a}'s learning rate lies at an open edge" for a in (r.treatment, r.baseline)
                if (a, int(r.batch_size)) in edges]
        mdes.append(round(mde, 2) if np.isfinite(mde) else np.nan)
        verdicts.append(SENSITIVE if why else ROBUST)
        whys.append("; ".join(why))
    out["mde_pp"], out["budget"], out["why"] = mdes, verdicts, whys
    return out


def win_arms(comparisons: pd.DataFrame) -> Dict[Tuple[str, int], List[Arm]]:
    """Per ``(reading, batch size)`` of every significant win of a reading over ``bn``
    (``comparisons``: :func:`sbnlib.experiments.readings.readings_table`'s, typed), the arms that say
    what the win is owed to: the reading, its random control (``<reading> control``) and ``none``
    (the selection, or less normalisation?)."""
    if not len(comparisons):
        return {}
    wins = comparisons[(comparisons.baseline == "bn") & (comparisons.verdict == SUPPORTED)]
    out: Dict[Tuple[str, int], List[Arm]] = {}
    for name, b in sorted(set(zip(wins.reading, wins.batch_size.astype(int)))):
        r = rd.READINGS[name]
        out[(name, b)] = [Arm(name, r.method, dict(r.overrides), rd.LR_FROM.get(r.method)),
                          Arm(f"{name} control", r.control, dict(r.overrides), rd.LR_FROM.get(r.control)),
                          Arm("none", "none")]
    return out


def win_pairs(reading: str) -> List[Tuple[str, str]]:
    """The comparisons of a win's check: the reading against ``bn``, its control and ``none``, and
    ``none`` against ``bn``."""
    return [(reading, "bn"), (reading, f"{reading} control"), (reading, "none"), ("none", "bn")]
