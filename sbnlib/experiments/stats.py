"""Statistics for comparing selective BN (``sbn``) against traditional BN (``bn``) across seeds.

Pure numpy / scipy / pandas. Every comparison is *paired by seed*: run ``i`` of the treatment and
run ``i`` of the baseline share the seed, hence the initial weights and the batch order, so the
unit of analysis is the per-seed difference ``d_i = treatment_i - baseline_i``.

Per comparison (:func:`paired_comparison`):

* ``mean_diff = mean(d)`` with a percentile-bootstrap ``(1 - alpha)`` confidence interval
  (pairs are resampled with replacement, ``n_boot`` times, ``numpy.random.default_rng(seed)``);
* a two-sided Wilcoxon signed-rank test on ``d`` (the primary test; exact for small ``n``) and a
  two-sided paired t-test (secondary, reported for reference);
* Cohen's ``d_z = mean(d) / std(d, ddof=1)``.

Across a family of comparisons (one per batch size, :func:`compare_methods`) the p-values are
Holm-adjusted (:func:`holm`), and each comparison gets a verdict by the rule in
:data:`VERDICT_RULE`.

With ``n`` seeds and no ties or zero differences, the smallest two-sided Wilcoxon p-value is
``2 / 2**n`` (all signs agree): 0.0625 for 5 seeds, 0.0078 for 8, 0.00195 for 10. With few seeds
and a Holm correction over several batch sizes, "supported" may be unreachable whatever the
effect size; check this before reading "inconclusive" as "no effect".

Run-level stability metrics (:func:`sbnlib.experiments.metrics.run_metrics`) turn one result record of
:func:`sbnlib.experiments.train.train` into a flat row, so that a table of runs (one row per run, with
``method``, ``seed``, ``batch_size``) can be fed to :func:`compare_methods`,
:func:`accuracy_table`, :func:`summary_frame` and :func:`spread_comparison`.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st
from scipy.optimize import brentq

__all__ = [
    "VERDICT_RULE",
    "SUPPORTED",
    "CONTRADICTED",
    "INCONCLUSIVE",
    "WILCOXON_ZERO_METHOD",
    "PAIRED_FIELDS",
    "paired_comparison",
    "min_detectable_effect",
    "select_learning_rates",
    "holm",
    "verdict",
    "compare_methods",
    "summary_frame",
    "accuracy_table",
    "spread_comparison",
]

#: How the Wilcoxon test treats zero differences (ties between methods at one seed): "wilcox"
#: (scipy's default) discards them, so a seed where both methods score the same carries no
#: evidence either way, and ``n`` for the test is the number of non-zero differences.
WILCOXON_ZERO_METHOD = "wilcox"

#: The three verdicts of :func:`verdict`; every module compares with these names, never a literal.
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"

VERDICT_RULE = (
    "Claim: the treatment is better than the baseline. Let d = treatment - baseline per seed. "
    "'supported' if the Holm-adjusted Wilcoxon p-value is < alpha (default 0.05) AND the "
    "bootstrap (1 - alpha) confidence interval of mean(d) lies entirely on the better side of 0 "
    "(ci_low > 0 when higher is better, ci_high < 0 when lower is better). "
    "'contradicted' if the Holm-adjusted p-value is < alpha AND the interval lies entirely on "
    "the worse side of 0. "
    "'inconclusive' otherwise: p >= alpha, or the interval contains 0, or a value is missing (NaN)."
)

# Differences whose range is below this fraction of the largest |value| are treated as constant:
# that is floating-point rounding, not variation (e.g. (b + 0.05) - b is not exactly 0.05).
_REL_TOL = 1e-12

_NAN = float("nan")

#: Keys of the dict returned by :func:`paired_comparison`, in order.
PAIRED_FIELDS = ("n", "n_dropped", "mean_treatment", "mean_baseline", "std_treatment",
                 "std_baseline", "mean_diff", "std_diff", "ci_low", "ci_high", "p_wilcoxon", "p_ttest",
                 "effect_size_dz")


# ------------------------------------------------------------------------------------------------
# Paired comparison
# ------------------------------------------------------------------------------------------------

def _as_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per seed), got shape {a.shape}")
    return a


def _std1(x: np.ndarray) -> float:
    """Sample standard deviation (ddof=1); NaN for fewer than 2 values."""
    return float(np.std(x, ddof=1)) if x.size >= 2 else _NAN


def _bootstrap_ci(d: np.ndarray, n_boot: int, seed: int, alpha: float) -> tuple[float, float]:
    """Percentile bootstrap CI of ``mean(d)``.

    Draws an ``(n_boot, n)`` matrix of indices into ``d`` (pairs resampled with replacement) with
    ``numpy.random.default_rng(seed)``, takes the mean of every row, and returns the
    ``alpha/2`` and ``1 - alpha/2`` quantiles of those means (numpy's linear interpolation).
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    boot_means = d[idx].mean(axis=1)
    lo, hi = np.quantile(boot_means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_comparison(treatment, baseline, n_boot: int = 10000, seed: int = 0,
                      alpha: float = 0.05) -> dict:
    """Compare two methods over seeds, paired by index (index ``i`` = seed ``i`` in both).

    Pairs where either value is NaN are dropped (counted in ``n_dropped``); ``n`` is the number
    of pairs used and ``d = treatment - baseline`` over them.

    Returns a JSON-serialisable dict (plain floats/ints; undefined values are NaN):

    ``n``, ``n_dropped``
        pairs used / pairs dropped for a NaN.
    ``mean_treatment``, ``mean_baseline``, ``std_treatment``, ``std_baseline``
        over the used pairs; std is the sample std (ddof=1), NaN when ``n < 2``.
    ``std_diff``
        sample std of ``d`` (ddof=1), NaN when ``n < 2``.
    ``mean_diff``, ``ci_low``, ``ci_high``
        ``mean(d)`` and its percentile-bootstrap ``(1 - alpha)`` CI: ``n_boot`` resamples of the
        ``n`` pairs with replacement, ``numpy.random.default_rng(seed)``; same inputs and seed give
        the same interval. CI is NaN when ``n < 2`` (one pair says nothing about variability).
    ``p_wilcoxon``
        ``scipy.stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided",
        method="auto")``: zero differences are discarded; scipy computes the exact null
        distribution for up to 50 non-zero differences without ties (with ties or zeros: exact
        permutation up to 13, normal approximation above). All differences zero -> 1.0 (no
        evidence of any difference); ``n < 2`` -> NaN.
    ``p_ttest``
        ``scipy.stats.ttest_rel(treatment, baseline)``, two-sided. All differences zero -> 1.0;
        ``n < 2`` -> NaN; differences constant but non-zero (zero variance, up to rounding) ->
        NaN: the t statistic is undefined (infinite), report the Wilcoxon p instead.
    ``effect_size_dz``
        Cohen's ``d_z = mean(d) / std(d, ddof=1)``; NaN when ``n < 2`` or the differences are
        constant (zero variance, which includes all-zero).
    """
    t, b = _as_1d(treatment, "treatment"), _as_1d(baseline, "baseline")
    if t.shape != b.shape:
        raise ValueError(f"treatment and baseline must have the same length, got {t.size} and {b.size}")
    keep = ~(np.isnan(t) | np.isnan(b))
    t, b = t[keep], b[keep]
    n = int(t.size)
    d = t - b

    out = dict.fromkeys(PAIRED_FIELDS, _NAN)
    out.update(n=n, n_dropped=int((~keep).sum()), std_treatment=_std1(t), std_baseline=_std1(b), std_diff=_std1(d))
    if n:
        out.update(mean_treatment=float(t.mean()), mean_baseline=float(b.mean()),
                   mean_diff=float(d.mean()))
    if n < 2:
        return out

    out["ci_low"], out["ci_high"] = _bootstrap_ci(d, n_boot, seed, alpha)
    _paired_tests(t, b, d, out)
    return out


def _paired_tests(t: np.ndarray, b: np.ndarray, d: np.ndarray, out: dict) -> None:
    """Set ``p_wilcoxon``, ``p_ttest`` and ``effect_size_dz`` of :func:`paired_comparison` in ``out``
    (at least two pairs; left NaN where undefined)."""
    all_zero = bool(np.all(d == 0))
    scale = max(np.abs(t).max(), np.abs(b).max())
    constant = bool(np.ptp(d) <= _REL_TOL * scale)  # true for all-zero too

    if all_zero:
        out["p_wilcoxon"] = 1.0
        out["p_ttest"] = 1.0
    else:
        out["p_wilcoxon"] = float(_st.wilcoxon(d, zero_method=WILCOXON_ZERO_METHOD,
                                               alternative="two-sided", method="auto").pvalue)
        if not constant:
            out["p_ttest"] = float(_st.ttest_rel(t, b, alternative="two-sided").pvalue)
    if not constant:
        out["effect_size_dz"] = float(d.mean() / np.std(d, ddof=1))


# ------------------------------------------------------------------------------------------------
# Multiple comparisons and verdict
# ------------------------------------------------------------------------------------------------

def min_detectable_effect(std_diff: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The paired difference that ``n`` pairs with difference spread ``std_diff`` would detect with
    probability ``power`` in a two-sided paired t-test at level ``alpha``.

    Solves ``P(|T| > t_{1-alpha/2, n-1}) = power`` for ``delta``, with ``T`` noncentral t with
    ``n - 1`` degrees of freedom and noncentrality ``delta * sqrt(n) / std_diff`` (exact, not the
    normal approximation). NaN when ``n < 2`` or ``std_diff`` is not a positive finite number.
    Use ``alpha / m`` for a family of ``m`` Holm-adjusted tests (the first Holm step).
    """
    if n < 2 or not (np.isfinite(std_diff) and std_diff > 0):
        return _NAN

    df = n - 1
    crit = _st.t.ppf(1 - alpha / 2, df)

    def short(nc):  # power at noncentrality nc, minus the target; the far tail underflows (scipy: NaN) to 0
        return _st.nct.sf(crit, df, nc) + np.nan_to_num(_st.nct.cdf(-crit, df, nc)) - power

    nc = brentq(short, 0.0, 100.0)
    return float(nc * std_diff / np.sqrt(n))


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values.

    With the ``m`` non-NaN p-values sorted ascending, ``p_(1) <= ... <= p_(m)``::

        p_adj_(k) = min(1, max_{j <= k} (m - j + 1) * p_(j))

    returned in the input order. NaN entries stay NaN and do not count in ``m``. Rejecting
    ``p_adj < alpha`` is the Holm procedure at family-wise error rate ``alpha``. The running
    maximum makes the adjusted values monotone in the raw ones; ties get equal adjusted values.
    """
    p = _as_1d(pvalues, "pvalues")
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv, kind="stable")
    factors = m - np.arange(m)  # m, m-1, ..., 1
    adj_sorted = np.minimum(1.0, np.maximum.accumulate(factors * pv[order]))
    adj = np.empty(m)
    adj[order] = adj_sorted
    out[ok] = adj
    return out


def verdict(mean_diff, ci_low, ci_high, p_adj, alpha: float = 0.05,
            higher_is_better: bool = True) -> str:
    """``"supported"`` | ``"contradicted"`` | ``"inconclusive"`` for "treatment beats baseline".

    The rule (also in :data:`VERDICT_RULE`, for printing): significant (``p_adj < alpha``) AND the
    CI of ``mean(treatment - baseline)`` entirely on the better side of 0 -> supported; significant
    AND entirely on the worse side -> contradicted; anything else, including any NaN input ->
    inconclusive. ``mean_diff`` is only checked for being a number: the side is decided by the CI.
    """
    vals = (mean_diff, ci_low, ci_high, p_adj)
    if any(v is None or not math.isfinite(float(v)) for v in vals):
        return INCONCLUSIVE
    if not p_adj < alpha:
        return INCONCLUSIVE
    above, below = ci_low > 0, ci_high < 0
    better, worse = (above, below) if higher_is_better else (below, above)
    if better:
        return SUPPORTED
    if worse:
        return CONTRADICTED
    return INCONCLUSIVE


# ------------------------------------------------------------------------------------------------
# Tables of runs
# ------------------------------------------------------------------------------------------------

def _method_values(df: pd.DataFrame, method: str, metric: str) -> pd.Series:
    """Metric per seed for one method (within one ``by`` group); duplicated seeds are an error."""
    rows = df[df["method"] == method]
    if rows["seed"].duplicated().any():
        dup = sorted(rows.loc[rows["seed"].duplicated(), "seed"].unique().tolist())
        raise ValueError(f"method {method!r} has several rows for seed(s) {dup}; cannot pair by seed")
    return rows.set_index("seed")[metric].astype(float)


def compare_methods(df: pd.DataFrame, metric: str, treatment: str = "sbn", baseline: str = "bn",
                    by: str = "batch_size", higher_is_better: bool = True, n_boot: int = 10000,
                    seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Paired treatment-vs-baseline comparison of ``metric`` for every value of ``by``.

    ``df`` has one row per run with columns ``method``, ``seed``, ``by`` and ``metric``. For each
    ``by`` value (ascending) present for either method:

    1. treatment and baseline rows are paired on ``seed`` (inner join); seeds present for only one
       of the two methods are dropped and counted in ``n_unpaired``;
    2. :func:`paired_comparison` on the pairs (sorted by seed; pairs with a NaN metric are dropped
       there and counted in ``n_dropped``), bootstrap with the same ``seed`` for every group;
    3. across the ``by`` values, ``p_wilcoxon`` and ``p_ttest`` are Holm-adjusted (columns
       ``p_wilcoxon_holm``, ``p_ttest_holm``; groups with a NaN p-value do not count), and
       ``mde_80`` is the :func:`min_detectable_effect` of the pairs at ``alpha / m`` for the ``m``
       tests of the family (80% power);
    4. ``verdict`` from ``(mean_diff, ci_low, ci_high, p_wilcoxon_holm)`` by :data:`VERDICT_RULE`.

    Returns one row per ``by`` value: the ``by`` column, ``metric``, ``treatment``, ``baseline``,
    ``n_unpaired``, every field of :func:`paired_comparison`, the two Holm columns and ``verdict``.
    """
    missing = {"method", "seed", by, metric} - set(df.columns)
    if missing:
        raise ValueError(f"df lacks column(s) {sorted(missing)}")
    sub = df[df["method"].isin([treatment, baseline])]
    rows = []
    for value in sorted(sub[by].unique()):
        group = sub[sub[by] == value]
        t = _method_values(group, treatment, metric)
        b = _method_values(group, baseline, metric)
        seeds = sorted(set(t.index) & set(b.index))
        n_unpaired = len(set(t.index) ^ set(b.index))
        res = paired_comparison(t.loc[seeds].to_numpy(), b.loc[seeds].to_numpy(),
                                n_boot=n_boot, seed=seed, alpha=alpha)
        rows.append({by: value, "metric": metric, "treatment": treatment, "baseline": baseline,
                     "n_unpaired": n_unpaired, **res})
    out = pd.DataFrame(rows, columns=[by, "metric", "treatment", "baseline", "n_unpaired",
                                      *PAIRED_FIELDS])
    out["p_wilcoxon_holm"] = holm(out["p_wilcoxon"].to_numpy(dtype=float))
    out["p_ttest_holm"] = holm(out["p_ttest"].to_numpy(dtype=float))
    family = max(1, int(out["p_wilcoxon"].notna().sum()))  # how large a difference "inconclusive" can hide
    out["mde_80"] = [min_detectable_effect(r.std_diff, int(r.n), alpha / family) for r in out.itertuples(index=False)]
    out["verdict"] = [
        verdict(r.mean_diff, r.ci_low, r.ci_high, r.p_wilcoxon_holm, alpha=alpha,
                higher_is_better=higher_is_better)
        for r in out.itertuples(index=False)
    ]
    return out


def summary_frame(df: pd.DataFrame, methods: Optional[Sequence[str]] = None,
                  by: str = "batch_size", metric: str = "final_test_acc") -> pd.DataFrame:
    """Mean, sample std (ddof=1) and count of ``metric`` per ``(by, method)``, long format.

    Columns: ``by``, ``method``, ``mean``, ``std``, ``n`` (non-NaN values), ``n_missing`` (NaN
    values, e.g. diverged runs without a metric). ``methods`` fixes which methods and their order
    (default: all, sorted). NaN values are left out of mean and std; std is NaN for ``n < 2``.
    """
    methods = sorted(df["method"].unique()) if methods is None else list(methods)
    rows = []
    for value in sorted(df[by].unique()):
        for method in methods:
            x = df.loc[(df[by] == value) & (df["method"] == method), metric].astype(float).to_numpy()
            ok = x[~np.isnan(x)]
            rows.append({by: value, "method": method,
                         "mean": float(ok.mean()) if ok.size else _NAN,
                         "std": _std1(ok), "n": int(ok.size), "n_missing": int(x.size - ok.size)})
    return pd.DataFrame(rows, columns=[by, "method", "mean", "std", "n", "n_missing"])


def _percent(m: float, s: float) -> str:
    return f"{100 * m:.2f} ± {100 * s:.2f}"


def accuracy_table(df: pd.DataFrame, methods: Optional[Sequence[str]] = None,
                   by: str = "batch_size", metric: str = "final_test_acc",
                   fmt: Callable[[float, float], str] = _percent) -> pd.DataFrame:
    """Formatted "mean ± std" table: rows = ``by`` values (ascending), columns = ``methods``.

    Cells are ``fmt(mean, std)`` from :func:`summary_frame` (sample std, NaN values left out). The
    default ``fmt`` prints a [0, 1] accuracy in percent with 2 decimals, ``"98.12 ± 0.31"``; pass
    e.g. ``lambda m, s: f"{m:.4f} ± {s:.4f}"`` for other metrics. A cell with no values is
    ``"n/a"``; with one value the std part shows ``nan``.
    """
    s = summary_frame(df, methods, by, metric)
    s["cell"] = [fmt(r.mean, r.std) if r.n else "n/a" for r in s.itertuples(index=False)]
    methods = list(dict.fromkeys(s["method"]))  # keep the requested order
    table = s.pivot(index=by, columns="method", values="cell")[methods]
    table.columns.name = None
    return table


def spread_comparison(df: pd.DataFrame, treatment: str = "sbn", baseline: str = "bn",
                      by: str = "batch_size", metric: str = "final_test_acc", **kw) -> pd.DataFrame:
    """Is the treatment's result more stable across seeds than the baseline's?

    For each method and ``by`` value, every run's absolute deviation from that method's mean at
    that ``by`` value, ``|x_seed - mean_seeds(x)|`` (mean over all of the method's non-NaN runs
    there), is a per-seed measure of spread whose average is the mean absolute deviation. These
    deviations are then compared with :func:`compare_methods`, paired by seed, with
    ``higher_is_better=False``: "supported" means the treatment's runs sit closer to their own
    mean, i.e. smaller seed-to-seed spread. Absolute deviations (not squared) keep the unit of
    ``metric`` and are less dominated by a single outlying seed than a variance.

    The metric column of the returned frame is ``"absdev_" + metric``; ``kw`` goes to
    :func:`compare_methods` (``n_boot``, ``seed``, ``alpha``).
    """
    name = f"absdev_{metric}"
    sub = df[df["method"].isin([treatment, baseline])].copy()
    x = sub[metric].astype(float)
    sub[name] = (x - x.groupby([sub["method"], sub[by]]).transform("mean")).abs()
    return compare_methods(sub, name, treatment=treatment, baseline=baseline, by=by,
                           higher_is_better=False, **kw)


# ------------------------------------------------------------------------------------------------
# Learning-rate selection (on validation data only)
# ------------------------------------------------------------------------------------------------

def select_learning_rates(df: pd.DataFrame) -> pd.DataFrame:
    """Choose each method's peak learning rate per batch size from the tuning runs.

    ``df``: one row per tuning run with ``method``, ``batch_size``, ``lr``, ``seed`` and
    ``final_val_acc`` (validation accuracy after the last epoch). Per ``(method, batch_size, lr)``:
    mean and sample std of the validation accuracy over the tuning seeds (a diverged run counts as
    recorded; a missing value as 0). The chosen ``lr`` has the highest mean (ties: the smaller
    ``lr``). ``edge`` says whether the chosen value is the grid's ``"low"`` or ``"high"`` end (then
    the grid should widen), else ``""``. ``train_time_s``: the runs' summed ``wall_time_s`` (where
    recorded), what the selection cost. No test accuracy is read.
    """
    need = {"method", "batch_size", "lr", "seed", "final_val_acc"}
    if need - set(df.columns):
        raise ValueError(f"tuning runs lack column(s) {sorted(need - set(df.columns))}")
    d = df.assign(final_val_acc=df["final_val_acc"].astype(float).fillna(0.0))
    aggs = dict(val_acc_mean=("final_val_acc", "mean"), val_acc_std=("final_val_acc", "std"),
                n_seeds=("seed", "nunique"), n_diverged=("diverged", "sum") if "diverged" in d else ("seed", "size"))
    if "wall_time_s" in d:
        aggs["train_time_s"] = ("wall_time_s", "sum")
    t = d.groupby(["method", "batch_size", "lr"]).agg(**aggs).reset_index()
    if "diverged" not in d:
        t["n_diverged"] = 0
    if "train_time_s" in t:
        t["train_time_s"] = t["train_time_s"].round(1)
    t["chosen"], t["edge"] = False, ""
    for (_, _), g in t.groupby(["method", "batch_size"]):
        best = g.sort_values(["val_acc_mean", "lr"], ascending=[False, True]).index[0]
        t.loc[best, "chosen"] = True
        lo, hi = g["lr"].min(), g["lr"].max()
        t.loc[best, "edge"] = "low" if t.loc[best, "lr"] == lo else ("high" if t.loc[best, "lr"] == hi else "")
    return t


def chosen_learning_rates(selection: pd.DataFrame) -> dict:
    """``{(method, batch_size): lr}`` of the chosen rows of :func:`select_learning_rates`."""
    c = selection[selection["chosen"]]
    return {(str(m), int(b)): float(lr) for m, b, lr in zip(c["method"], c["batch_size"], c["lr"])}
