"""Statistics for comparing selective BN (``sbn``) against traditional BN (``bn``) across seeds.

Pure numpy / scipy / pandas. Every comparison is *paired by seed*: run ``i`` of the treatment and
run ``i`` of the baseline share the seed, hence the initial weights and the batch order, so the
unit of analysis is the per-seed difference ``d_i = treatment_i - baseline_i``.

Per comparison (:func:`paired_comparison`):

* optionally (``resolution``), ``d`` is first rounded to the nearest multiple of the metric's
  resolution: an accuracy over ``N`` images is a multiple of ``1 / N``, so its differences are
  too, but float subtraction leaves different last bits on equal differences (``0.9857 - 0.9841``
  is not bitwise ``0.9702 - 0.9686``) and would hide their ties from the rank test. After
  rounding, equal true differences are bitwise equal and ties are seen. Accuracy comparisons pass
  ``1 / n_test`` (:func:`accuracy_resolution`); continuous metrics pass nothing (no rounding);
* ``mean_diff = mean(d)`` with a percentile-bootstrap ``(1 - alpha)`` confidence interval
  (pairs are resampled with replacement, ``n_boot`` times, ``numpy.random.default_rng(seed)``);
* a two-sided Wilcoxon signed-rank test on ``d`` (the primary test, :func:`signed_rank_pvalue`):
  zero differences discarded, midranks for tied ``|d|``, and the *exact* null distribution of
  the positive-rank sum under the ``2**n`` equally likely sign assignments given those ranks (so
  exact with ties and zeros too), up to :data:`WILCOXON_EXACT_MAX_N` non-zero differences; the
  normal approximation with tie correction above. A two-sided paired t-test on the same ``d``
  (secondary, reported for reference);
* Cohen's ``d_z = mean(d) / std(d, ddof=1)``.

Across a family of comparisons (one per batch size, :func:`compare_methods`) the p-values are
Holm-adjusted (:func:`holm`), and each comparison gets a verdict by the rule in
:data:`VERDICT_RULE`. Each comparison also gets ``mde_80`` (:func:`rule_min_detectable_effect`):
the mean difference that the rule itself (exact Wilcoxon at Holm's first-step level ``alpha / m``
and the bootstrap CI excluding 0) would call significant with 80% probability, for normal
differences with the observed spread (simulation).

With ``n`` seeds and no ties or zero differences, the smallest two-sided Wilcoxon p-value is
``2 / 2**n`` (all signs agree): 0.0625 for 5 seeds, 0.0078 for 8, 0.00195 for 10 (ties can only
make it larger, zeros shrink ``n``). With few seeds and a Holm correction over several batch
sizes, "supported" may be unreachable whatever the effect size (``mde_80`` is then inf); check
this before reading "inconclusive" as "no effect".

Run-level stability metrics (:func:`sbnlib.experiments.metrics.run_metrics`) turn one result record of
:func:`sbnlib.experiments.train.train` into a flat row, so that a table of runs (one row per run, with
``method``, ``seed``, ``batch_size``) can be fed to :func:`compare_methods`,
:func:`accuracy_table`, :func:`summary_frame` and :func:`spread_comparison`.
"""
from __future__ import annotations

import functools
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
    "WILCOXON_EXACT_MAX_N",
    "paired_comparison",
    "signed_rank_pvalue",
    "accuracy_resolution",
    "min_detectable_effect",
    "rule_mde_factor",
    "rule_min_detectable_effect",
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

#: :func:`signed_rank_pvalue` computes the exact null distribution (ties and zeros included) up to
#: this many non-zero differences (2**50 sign assignments, counted exactly in int64 by a
#: convolution over the ranks: a few milliseconds), the normal approximation above.
WILCOXON_EXACT_MAX_N = 50

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
                 "effect_size_dz", "n_positive", "n_negative")


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


def _round_to_resolution(d: np.ndarray, resolution: Optional[float]) -> np.ndarray:
    """``d`` rounded to the nearest multiple of ``resolution`` (None: ``d`` unchanged).

    ``np.round(d / resolution) * resolution``: differences that are the same multiple ``k`` of
    the resolution come out as the same float ``k * resolution``, bitwise. A difference more than
    1e-6 resolutions away from a multiple is not float noise but a wrong resolution: ValueError.
    """
    if resolution is None:
        return d
    if not (math.isfinite(resolution) and resolution > 0):
        raise ValueError(f"resolution must be a positive number or None, got {resolution!r}")
    k = d / resolution
    kr = np.round(k)
    off = np.abs(k - kr)
    if off.size and off.max() > 1e-6:
        i = int(off.argmax())
        raise ValueError(f"difference {d[i]!r} is not a multiple of the resolution {resolution!r} "
                         f"({k[i]:.6f} resolutions): wrong resolution for this metric?")
    return kr * resolution


def paired_comparison(treatment, baseline, n_boot: int = 10000, seed: int = 0,
                      alpha: float = 0.05, resolution: Optional[float] = None) -> dict:
    """Compare two methods over seeds, paired by index (index ``i`` = seed ``i`` in both).

    Pairs where either value is NaN are dropped (counted in ``n_dropped``); ``n`` is the number
    of pairs used and ``d = treatment - baseline`` over them.

    ``resolution`` (default None: no rounding): the values are multiples of it (an accuracy over
    ``N`` images: ``1 / N``), so ``d`` is too up to float rounding; ``d`` is then replaced by
    ``np.round(d / resolution) * resolution`` before anything is computed from it (mean, std, CI,
    both tests, ``d_z``), so that equal true differences are bitwise equal and tie in the
    Wilcoxon ranks, and a true zero is exactly 0. This changes ``mean_diff`` and the CI only by
    float rounding. A difference more than 1e-6 resolutions from a multiple raises ValueError.

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
        :func:`signed_rank_pvalue` of ``d``: two-sided Wilcoxon signed-rank test, zero
        differences discarded (:data:`WILCOXON_ZERO_METHOD`), midranks for ties, exact null
        distribution over the sign assignments (ties and zeros included) up to
        :data:`WILCOXON_EXACT_MAX_N` non-zero differences, normal approximation above; equal to
        scipy's exact p-value where there are no ties or zeros. All differences zero -> 1.0 (no
        evidence of any difference); ``n < 2`` -> NaN.
    ``p_ttest``
        the paired t-test on ``d``: ``scipy.stats.ttest_1samp(d, 0)``, two-sided (without
        ``resolution`` the same as ``ttest_rel(treatment, baseline)``). All differences zero -> 1.0;
        ``n < 2`` -> NaN; differences constant but non-zero (zero variance, up to rounding) ->
        NaN: the t statistic is undefined (infinite), report the Wilcoxon p instead.
    ``effect_size_dz``
        Cohen's ``d_z = mean(d) / std(d, ddof=1)``; NaN when ``n < 2`` or the differences are
        constant (zero variance, which includes all-zero).
    ``n_positive``, ``n_negative``
        pairs where the treatment is above / below the baseline (``d > 0`` / ``d < 0``, after rounding).
    """
    t, b = _as_1d(treatment, "treatment"), _as_1d(baseline, "baseline")
    if t.shape != b.shape:
        raise ValueError(f"treatment and baseline must have the same length, got {t.size} and {b.size}")
    keep = ~(np.isnan(t) | np.isnan(b))
    t, b = t[keep], b[keep]
    n = int(t.size)
    d = _round_to_resolution(t - b, resolution)

    out = dict.fromkeys(PAIRED_FIELDS, _NAN)
    out.update(n=n, n_dropped=int((~keep).sum()), std_treatment=_std1(t), std_baseline=_std1(b), std_diff=_std1(d),
               n_positive=int((d > 0).sum()), n_negative=int((d < 0).sum()))
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
        out["p_wilcoxon"] = signed_rank_pvalue(d)
        if not constant:
            out["p_ttest"] = float(_st.ttest_1samp(d, 0.0, alternative="two-sided").pvalue)
    if not constant:
        out["effect_size_dz"] = float(d.mean() / np.std(d, ddof=1))


# ------------------------------------------------------------------------------------------------
# Exact Wilcoxon signed-rank test with ties and zeros
# ------------------------------------------------------------------------------------------------

def _signed_rank_null(r2: np.ndarray) -> np.ndarray:
    """Null distribution of the positive-rank sum for the (doubled, integer) ranks ``r2``.

    ``counts[s]`` = how many of the ``2**len(r2)`` sign assignments give a positive-rank sum of
    ``s`` (each rank is positive or negative with probability 1/2, independently): the
    convolution over the ranks of "add ``r`` or add 0", done as a dynamic programme over the sums,
    ``O(len(r2) * sum(r2))``. Exact in int64 for up to 62 ranks.
    """
    total = int(r2.sum())
    counts = np.zeros(total + 1, dtype=np.int64)
    counts[0] = 1
    top = 0  # the largest sum reachable so far
    for r in r2.tolist():
        counts[r:top + r + 1] += counts[:top + 1].copy()
        top += r
    return counts


def signed_rank_pvalue(d) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the differences ``d``, exact with ties and zeros.

    1. Zero differences are discarded (:data:`WILCOXON_ZERO_METHOD` ``"wilcox"``); ``n`` is the
       number left. Ties are exact float equality: round ``d`` to its resolution first (as
       :func:`paired_comparison` does) so that equal differences are bitwise equal.
    2. ``|d|`` is ranked 1..n with midranks for ties (``scipy.stats.rankdata``, "average"); the
       statistic is ``T = `` the sum of the ranks of the positive differences.
    3. Under the null (differences symmetric about 0) every one of the ``2**n`` sign assignments to
       these ranks is equally likely; for ``n <= WILCOXON_EXACT_MAX_N`` their distribution of
       ``T`` is counted exactly (:func:`_signed_rank_null`, doubled ranks so that midranks are
       integers) and ``p = min(1, 2 * min(P(T >= t_obs), P(T <= t_obs)))``. The distribution is
       symmetric about its mean ``sum(ranks) / 2``, so this equals ``P(|T - mean| >= |t_obs -
       mean|)``, the probability of a rank sum at least as far from the null mean as observed.
       Without ties or zeros it is scipy's exact p-value (``scipy.stats.wilcoxon(d,
       method="exact")``).
    4. Above ``WILCOXON_EXACT_MAX_N`` non-zero differences: the normal approximation, ``z = (T -
       n(n+1)/4) / sigma`` with ``sigma**2 = n(n+1)(2n+1)/24 - sum(t**3 - t)/48`` over the tie
       groups of sizes ``t``, no continuity correction, ``p = 2 * Phi(-|z|)`` (scipy's
       ``method="approx"``).

    No differences or all zero -> 1.0 (no evidence of any difference).
    """
    d = _as_1d(d, "d")
    if np.isnan(d).any():
        raise ValueError("d contains NaN; drop the pair first")
    d = d[d != 0]
    n = int(d.size)
    if n == 0:
        return 1.0
    ranks = _st.rankdata(np.abs(d))  # midranks: multiples of 1/2
    if n > WILCOXON_EXACT_MAX_N:
        t_obs = float(ranks[d > 0].sum())
        _, tie_sizes = np.unique(ranks, return_counts=True)
        var = n * (n + 1) * (2 * n + 1) / 24 - float((tie_sizes ** 3 - tie_sizes).sum()) / 48
        if var <= 0:
            return 1.0
        z = (t_obs - n * (n + 1) / 4) / math.sqrt(var)
        return float(min(1.0, 2 * _st.norm.sf(abs(z))))
    r2 = np.rint(2 * ranks).astype(np.int64)
    t2 = int(r2[d > 0].sum())
    counts = _signed_rank_null(r2)
    upper, lower = int(counts[t2:].sum()), int(counts[:t2 + 1].sum())
    return min(1.0, 2 * min(upper, lower) / 2 ** n)


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

    This is the t-test's MDE, a reference only: the verdicts use the exact Wilcoxon and the
    bootstrap CI, whose MDE (:func:`rule_min_detectable_effect`, the ``mde_80`` of
    :func:`compare_methods`) is larger with few seeds.
    """
    if n < 2 or not (np.isfinite(std_diff) and std_diff > 0):
        return _NAN

    df = n - 1
    crit = _st.t.ppf(1 - alpha / 2, df)

    def short(nc):  # power at noncentrality nc, minus the target; the far tail underflows (scipy: NaN) to 0
        return _st.nct.sf(crit, df, nc) + np.nan_to_num(_st.nct.cdf(-crit, df, nc)) - power

    nc = brentq(short, 0.0, 100.0)
    return float(nc * std_diff / np.sqrt(n))


#: The simulation behind :func:`rule_mde_factor`: ``MDE_N_SIM`` samples of ``n`` standard normal
#: differences, each with a percentile bootstrap of ``MDE_N_BOOT`` resamples (fresh resamples for
#: every block of ``_MDE_BLOCK`` samples), all drawn from ``numpy.random.default_rng(MDE_SEED)``.
#: Monte-Carlo error of the power at the returned factor: about sqrt(0.8 * 0.2 / MDE_N_SIM) = 0.004.
MDE_N_SIM, MDE_N_BOOT, MDE_SEED = 10000, 1000, 20270
_MDE_BLOCK = 1000


def _no_ties_upper_critical(n: int, level: float) -> Optional[int]:
    """The smallest positive-rank sum ``c`` (ranks 1..n, no ties or zeros) whose two-sided
    :func:`signed_rank_pvalue` is below ``level``; by symmetry ``T >= c`` or ``T <= n(n+1)/2 - c``
    is exactly the rejection region. None when no rank sum reaches the level."""
    total = n * (n + 1) // 2
    t = np.arange(total + 1)
    if n <= WILCOXON_EXACT_MAX_N:
        counts = _signed_rank_null(np.arange(1, n + 1, dtype=np.int64))
        upper = np.cumsum(counts[::-1])[::-1]  # P(T >= t) * 2**n
        lower = np.cumsum(counts)  # P(T <= t) * 2**n
        p = np.minimum(1.0, 2 * np.minimum(upper, lower) / 2.0 ** n)
    else:  # the normal approximation of signed_rank_pvalue (no ties)
        z = (t - total / 2) / math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
        p = np.minimum(1.0, 2 * _st.norm.sf(np.abs(z)))
    hits = np.flatnonzero((p < level) & (t > total / 2))
    return int(hits[0]) if hits.size else None


def _quantile_rows(x: np.ndarray, q: float) -> np.ndarray:
    """``np.quantile(x, q, axis=1)`` (linear interpolation) by partial sorting."""
    h = q * (x.shape[1] - 1)
    hi = min(int(math.floor(h)) + 1, x.shape[1] - 1)
    part = np.partition(x, hi, axis=1)  # one selection: the order statistic below is the max left of it
    below = part[:, :hi].max(axis=1) if hi else part[:, 0]
    lo = hi - 1 if hi else 0
    return below + (h - lo) * (part[:, hi] - below)


@functools.lru_cache(maxsize=None)
def rule_mde_factor(n: int, level: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """``k`` such that ``k * sd`` is the MDE of the verdict rule with ``n`` pairs (see
    :func:`rule_min_detectable_effect`); the rule's power depends on ``delta / sd`` only.

    Simulation (deterministic: ``MDE_SEED``; cached per argument tuple): ``MDE_N_SIM`` samples
    ``z`` of ``n`` standard normal differences. For a sample, shifting it by ``k`` gives:

    * exact Wilcoxon p < ``level``: the positive-rank sum of ``k + z`` is the number of positive
      Walsh averages ``(z_i + z_j) / 2 + k``, ``i <= j``, so it reaches the upper critical value
      ``c`` (:func:`_no_ties_upper_critical`) exactly when ``k`` exceeds minus the ``c``-th
      largest Walsh average (and lies in the lower region for ``k`` up to minus the
      ``(n(n+1)/2 - c + 1)``-th largest);
    * bootstrap CI above 0: the ``alpha/2`` percentile of the bootstrap means of ``k + z`` is
      ``k +`` that of ``z`` (``MDE_N_BOOT`` resamples), so it is above 0 exactly when ``k``
      exceeds minus that percentile.

    So every sample says "supported" on a union of intervals of ``k``, the power is the share of
    samples whose set holds ``k``, and the returned ``k`` is the smallest at which that share
    reaches ``power``: the bisection on ``k`` done exactly, by a sweep over the interval ends.
    inf when the Wilcoxon can never reach ``level`` with ``n`` pairs (``2 / 2**n >= level``
    without ties); NaN for ``n < 2``.
    """
    if n < 2:
        return _NAN
    c = _no_ties_upper_critical(n, level)
    if c is None:
        return math.inf
    total = n * (n + 1) // 2
    rng = np.random.default_rng([MDE_SEED, n])
    iu, ju = np.triu_indices(n)  # Walsh pairs i <= j
    block = max(1, min(_MDE_BLOCK, 2_000_000 // max(total, MDE_N_BOOT)))
    starts, ends = [], []
    for first in range(0, MDE_N_SIM, block):
        z = rng.standard_normal((min(block, MDE_N_SIM - first), n))
        idx = rng.integers(0, n, size=(MDE_N_BOOT, n))
        weights = np.zeros((MDE_N_BOOT, n))
        np.add.at(weights, (np.arange(MDE_N_BOOT)[:, None], idx), 1.0 / n)
        k_boot = -_quantile_rows(z @ weights.T, alpha / 2)  # CI above 0 iff k > k_boot
        walsh = np.partition((z[:, iu] + z[:, ju]) / 2, [total - c, c - 1], axis=1)
        k_upper = -walsh[:, total - c]  # T >= c iff k > k_upper
        k_lower = -walsh[:, c - 1]  # T <= total - c iff k <= k_lower
        starts += [np.maximum(k_boot, k_upper), k_boot[k_lower > k_boot]]
        ends += [np.full(z.shape[0], np.inf), k_lower[k_lower > k_boot]]
    lo, hi = np.concatenate(starts), np.concatenate(ends)  # supported on (lo, hi]
    pos = np.concatenate([lo, hi[np.isfinite(hi)]])
    step = np.concatenate([np.ones(lo.size), -np.ones(int(np.isfinite(hi).sum()))])
    order = np.lexsort((step, pos))  # at equal positions, leave before entering
    inside = np.cumsum(step[order])  # samples supported just above pos[order]
    need = math.ceil(power * MDE_N_SIM - 1e-9)
    reached = np.flatnonzero(inside >= need)
    return float(pos[order][reached[0]]) if reached.size else math.inf


def rule_min_detectable_effect(std_diff: float, n: int, level: float, alpha: float = 0.05,
                               power: float = 0.8) -> float:
    """The MDE of the verdict rule (:data:`VERDICT_RULE`) at Wilcoxon level ``level``.

    The smallest mean difference ``delta > 0`` such that, for ``n`` pairs whose differences are
    normal with mean ``delta`` and standard deviation ``std_diff``, the probability that the exact
    two-sided Wilcoxon p-value (:func:`signed_rank_pvalue`) is below ``level`` AND the percentile
    bootstrap ``(1 - alpha)`` CI of ``mean(d)`` lies above 0 is at least ``power``. Pass ``level =
    alpha / m`` for a Holm family of ``m`` tests (Holm's first, least demanding step for the
    smallest p-value). Differences are location-scale, so ``delta = rule_mde_factor(n, level,
    alpha, power) * std_diff`` (simulated, see :func:`rule_mde_factor`). inf when no sample of
    ``n`` pairs can reach ``level`` (e.g. ``2 / 2**n >= alpha / m``); NaN when ``n < 2`` or
    ``std_diff`` is not a positive finite number.
    """
    if n < 2 or not (np.isfinite(std_diff) and std_diff > 0):
        return _NAN
    return float(rule_mde_factor(int(n), float(level), float(alpha), float(power)) * std_diff)


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
                    seed: int = 0, alpha: float = 0.05, resolution: Optional[float] = None) -> pd.DataFrame:
    """Paired treatment-vs-baseline comparison of ``metric`` for every value of ``by``.

    ``df`` has one row per run with columns ``method``, ``seed``, ``by`` and ``metric``. For each
    ``by`` value (ascending) present for either method:

    1. treatment and baseline rows are paired on ``seed`` (inner join); seeds present for only one
       of the two methods are dropped and counted in ``n_unpaired``;
    2. :func:`paired_comparison` on the pairs (sorted by seed; pairs with a NaN metric are dropped
       there and counted in ``n_dropped``), bootstrap with the same ``seed`` for every group, the
       differences rounded to ``resolution`` (None: not rounded; accuracies:
       :func:`accuracy_resolution`);
    3. across the ``by`` values, ``p_wilcoxon`` and ``p_ttest`` are Holm-adjusted (columns
       ``p_wilcoxon_holm``, ``p_ttest_holm``; groups with a NaN p-value do not count), and
       ``mde_80`` is the :func:`rule_min_detectable_effect` of the pairs (``std_diff``, ``n``) at
       ``level = alpha / m`` for the ``m`` tests of the family: the mean difference that this
       rule would call significant with 80% probability (inf: unreachable with ``n`` pairs);
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
                                n_boot=n_boot, seed=seed, alpha=alpha, resolution=resolution)
        rows.append({by: value, "metric": metric, "treatment": treatment, "baseline": baseline,
                     "n_unpaired": n_unpaired, **res})
    out = pd.DataFrame(rows, columns=[by, "metric", "treatment", "baseline", "n_unpaired",
                                      *PAIRED_FIELDS])
    out["p_wilcoxon_holm"] = holm(out["p_wilcoxon"].to_numpy(dtype=float))
    out["p_ttest_holm"] = holm(out["p_ttest"].to_numpy(dtype=float))
    family = max(1, int(out["p_wilcoxon"].notna().sum()))  # how large a difference "inconclusive" can hide
    out["mde_80"] = [rule_min_detectable_effect(r.std_diff, int(r.n), alpha / family, alpha=alpha)
                     for r in out.itertuples(index=False)]
    out["verdict"] = [
        verdict(r.mean_diff, r.ci_low, r.ci_high, r.p_wilcoxon_holm, alpha=alpha,
                higher_is_better=higher_is_better)
        for r in out.itertuples(index=False)
    ]
    return out


def accuracy_resolution(df: pd.DataFrame, count: str = "n_test_eval") -> Optional[float]:
    """The resolution of an accuracy column of ``df``: ``1 / N`` for the ``N`` images each run
    was evaluated on (column ``count``: ``n_test_eval`` for test accuracy, ``n_val_eval`` for
    validation accuracy, both from :func:`sbnlib.experiments.sweep.iter_results`).

    None (no rounding) when ``df`` has no such column or it is NaN throughout (rows not made from
    result records). ValueError when the runs do not share one positive count: their accuracies
    then have no common resolution (or the comparison mixes evaluation sets).
    """
    if count not in df.columns:
        return None
    c = df[count].astype(float)
    if c.isna().all():
        return None
    values = sorted(set(c.dropna().tolist()))
    if c.isna().any() or len(values) != 1 or not values[0] > 0:
        raise ValueError(f"the runs compared do not share one evaluation set size {count!r}: "
                         f"{values}{' and missing values' if c.isna().any() else ''}")
    return 1.0 / values[0]


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
