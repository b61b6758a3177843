"""The readings of the paper, as configurations (issue 13).

The abstract leaves open where the selection acts, in which direction the score matters, what a
skipped batch does and what "feature heterogeneity" is (``../shared/PAPER.md``). Each reading is
one entry of :data:`READINGS`: a selective method, its random control at the same rate, and the
:class:`~sbnlib.experiments.config.TrainConfig` fields that set it. A claim is only called contradicted when
every reading has been tested.

* :func:`readings_configs`: ``bn`` plus every reading and its control, for a dataset, batch sizes
  and seeds, each method at the learning rate selected for it (:data:`LR_FROM` lends one to the
  methods that have none of their own);
* :func:`readings_table`: from the result rows (:func:`sbnlib.experiments.sweep.iter_results`), one row per
  reading and batch size: test accuracy of the reading, its control and ``bn``, the paired
  difference to ``bn``, to the control and to the default reading (bootstrap CI, Holm-adjusted
  Wilcoxon, verdict; :func:`sbnlib.experiments.tables.accuracy_tables`) and the fraction of batches normalised.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import pandas as pd

from .config import TrainConfig, config_hash
from .sweep import experiment_configs
from .tables import accuracy_tables

__all__ = ["Reading", "READINGS", "PLAN", "plan_for", "DEFAULT_READING", "BEST_SCORER", "READING_FIELDS", "LR_FROM",
           "base_fields", "readings_configs", "readings_table"]

# the scorer that ranks truly mixed batches above pure ones best, at every batch size. On balanced
# half/half vs pure batches (feasibility_auroc on mnist_fmnist_mix) it is near perfect: AUROC 0.98 at
# B=8 and 1.00 at B=32 (feature_std 0.67 and 0.62). On the batches training forms (the evaluation
# seeds' plans, feasibility_plan_ordering) the mixtures it must order are far milder and so is its
# lead: Spearman of score vs minority-source share 0.78 / 0.39 / 0.21 / 0.09 at B=2 / 8 / 32 / 128
# (feature_std 0.32 / 0.10 / 0.02 / 0.03); at B >= 32 no scorer orders the training batches by their
# mixture much better than chance.
BEST_SCORER = "spectral_split"

# the TrainConfig fields a reading may set; result rows carry them as columns (iter_results)
READING_FIELDS = ("scope", "scorer", "reform_batches")


@dataclass(frozen=True)
class Reading:
    method: str  # the selective method
    control: str  # the same selection's random control: as many batches, chosen at random
    text: str  # what the reading says, in one line
    overrides: Dict[str, object] = field(default_factory=dict)  # READING_FIELDS that set it


READINGS: Dict[str, Reading] = {
    "identity": Reading("sbn", "random", "every BN layer passes the low-score batches through unchanged "
                        "(the project's default reading)"),
    "frozen": Reading("sbn_frozen", "random_frozen", "every BN layer normalises the low-score batches with "
                      "its running statistics and keeps its affine transform"),
    "first": Reading("sbn", "random", "only the first BN layer is selective; the others always normalise",
                     {"scope": "first"}),
    "input": Reading("sbn", "random", "a BN on the input channels is the only selective layer; the inner BN "
                     "layers always normalise", {"scope": "input"}),
    "input_bare": Reading("sbn", "random", "a BN on the input channels is the only normalisation, and "
                          "selective", {"scope": "input_bare"}),
    "inverse": Reading("sbn_inverse", "random", "the least heterogeneous batches are normalised, as many as "
                       "sbn normalises (the direction of the score)"),
    "reformed": Reading("sbn", "random", "batches are re-formed and re-scored every epoch",
                        {"reform_batches": True}),
    "best_scorer": Reading("sbn", "random", f"the default reading with the {BEST_SCORER} scorer, which detects "
                           "mixtures of sources", {"scorer": BEST_SCORER}),
}
DEFAULT_READING = "identity"

# which batch sizes and seeds the readings run at, per profile: the small batch sizes and one large
# one, the profile's seeds (8 seeds, Holm over 4 batch sizes: 4 x 2/2^8 = 0.031 < 0.05); the
# batch sizes are the profile's, so that every method has a selected learning rate there
PLAN = {
    "smoke": dict(batch_sizes=[4], seeds=2),
    "quick": dict(batch_sizes=[8, 64], seeds=3),
    "cpu": dict(batch_sizes=[2, 4, 8, 128], seeds=8),
    "paper": dict(batch_sizes=[2, 4, 8, 128], seeds=10),
}


def plan_for(profile: str, sweep: dict) -> dict:
    """The :data:`PLAN` of ``profile`` for a dataset whose sweep is ``sweep``: its batch sizes that the
    sweep has (a dataset may train fewer: ``sbnlib.experiments.sweep.DATASET_PARAMS``), its seeds."""
    plan = dict(PLAN.get(profile, {}))
    if "batch_sizes" in plan:
        plan["batch_sizes"] = [b for b in plan["batch_sizes"] if b in sweep["batch_sizes"]]
    return plan


# a method without a learning rate of its own takes the one selected for this one (same batch size)
LR_FROM = {"sbn_inverse": "sbn", "random_frozen": "random"}


def _names(names: Optional[Sequence[str]]) -> List[str]:
    names = list(READINGS) if names is None else list(names)
    unknown = [n for n in names if n not in READINGS]
    if unknown or not names:
        raise ValueError(f"unknown or no reading(s) {unknown}; choose from {list(READINGS)}")
    return names


def base_fields(params: Mapping) -> dict:
    """The values of :data:`READING_FIELDS` in a sweep without overrides (``params``, else the
    :class:`~sbnlib.experiments.config.TrainConfig` defaults): what the default reading and ``bn`` run with."""
    return {f: params.get(f, getattr(TrainConfig, f)) for f in READING_FIELDS}


def readings_configs(dataset: str, params: dict, batch_sizes=None, seeds=None, lr_for: Optional[Mapping] = None,
                     names: Optional[Sequence[str]] = None) -> List[TrainConfig]:
    """``bn``, and every reading's method and control, at every batch size and seed (default: the
    sweep's), without duplicates (readings share runs: the default reading's control is also the
    inverse's). ``lr_for`` as in :func:`sbnlib.experiments.sweep.experiment_configs`; the methods of
    :data:`LR_FROM` take the rate selected for the method named there."""
    base = dict(params, **{k: v for k, v in (("batch_sizes", batch_sizes), ("seeds", seeds)) if v is not None})
    if lr_for is not None:  # lend the rates: (sbn_inverse, B) gets (sbn, B)'s, and so on
        lr_for = {**lr_for, **{(m, b): lr for (src, b), lr in lr_for.items() for m, s in LR_FROM.items() if s == src}}
    # bn, and none: a reading that beats bn may owe it to less normalisation rather than to its selection
    sizes = list(base["batch_sizes"])
    none = "none" in base.get("methods", []) and (lr_for is None or all(("none", b) in lr_for for b in sizes))
    configs = experiment_configs(dataset, dict(base, methods=["bn"] + (["none"] if none else [])), lr_for)
    for name in _names(names):
        r = READINGS[name]
        configs += experiment_configs(dataset, dict(base, methods=[r.method, r.control], **r.overrides), lr_for)
    return list({config_hash(c): c for c in configs}.values())


def _rows(df: pd.DataFrame, method: str, fields: Mapping, label: str) -> pd.DataFrame:
    """The runs of ``method`` whose reading fields equal ``fields``, their method relabelled ``label``."""
    keep = df["method"] == method
    for k, v in fields.items():
        keep &= df[k] == v
    return df[keep].assign(method=label)


def readings_table(df: pd.DataFrame, names: Optional[Sequence[str]] = None, base: Optional[Mapping] = None,
                   n_boot: int = 10000) -> Dict[str, pd.DataFrame]:
    """The readings table from result rows (one per run: ``method``, ``seed``, ``batch_size``,
    ``final_test_acc``, ``frac_normalized``, ``diverged`` and the :data:`READING_FIELDS`).

    Per reading (rows of the reading's method with its fields, ``base`` elsewhere, default
    :func:`base_fields` of the TrainConfig defaults), :func:`sbnlib.experiments.tables.accuracy_tables` with the
    reading as treatment (label ``reading``) against ``bn``, its random control (``control``) and,
    for the other readings, the default reading (``sbn``): mean ± std of each, paired differences
    with 95% bootstrap CIs, Holm-adjusted Wilcoxon p across batch sizes, verdicts, and the fraction
    of batches the reading normalised. Returns ``{"table": indexed by (reading, batch_size),
    "comparisons": the paired comparisons, long, with a reading column}``; readings without runs
    are left out.
    """
    base = base_fields({}) if base is None else dict(base)
    default = READINGS[DEFAULT_READING]
    tables, comps = [], []
    for name in _names(names):
        r = READINGS[name]
        fields = {**base, **r.overrides}
        parts = [_rows(df, "bn", base, "bn"), _rows(df, r.method, fields, "reading"),
                 _rows(df, r.control, fields, "control"), _rows(df, "none", base, "none")]
        if name != DEFAULT_READING:
            parts.append(_rows(df, default.method, {**base, **default.overrides}, "sbn"))
        sub = pd.concat(parts, ignore_index=True)
        if not (sub["method"] == "reading").any():
            continue
        acc = accuracy_tables(sub, ["reading", "control", "bn"], treatment="reading",
                              baselines=["bn", "control", "sbn", "none"], n_boot=n_boot)
        t = acc["accuracy"].rename(columns={"reading": "reading acc (%)", "control": "control acc (%)",
                                            "bn": "bn acc (%)", "C1 vs bn": "reading vs bn"})
        tables.append(t.assign(reading=name).set_index("reading", append=True).reorder_levels([1, 0]))
        comps.append(acc["comparisons"].assign(reading=name))
    if not tables:
        return {"table": pd.DataFrame(), "comparisons": pd.DataFrame()}
    return {"table": pd.concat(tables), "comparisons": pd.concat(comps, ignore_index=True)}
