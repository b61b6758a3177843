"""Threshold classifier: split training batches into "needs BN" and "does not".

Pure functions on 1-D arrays of batch scores (numpy; torch tensors are accepted and converted).
A batch *needs BN* when its score is strictly above the threshold.

Strategies for :func:`fit_threshold`:

``mean`` (default)
    the mean score.
``median``
    the median score (about half the batches are normalised).
``quantile``
    the ``q``-quantile of the scores (numpy's linear interpolation): about ``1 - q`` of the
    batches are normalised.
``otsu``
    Otsu's split: the threshold between two consecutive sorted scores that maximises the
    between-class variance ``w0 * w1 * (mu0 - mu1)**2``; it is the midpoint of those two scores.
``rate``
    normalise the top ``rate`` fraction: ``k = round(rate * n)`` batches with the highest scores
    are above the threshold (the midpoint between the k-th and (k+1)-th highest scores; ``+inf``
    for k = 0, ``-inf`` for k = n). Ties at the cut normalise fewer than k batches.
"""
from __future__ import annotations

import numpy as np

__all__ = ["STRATEGIES", "fit_threshold", "classify_batches"]

STRATEGIES = ("mean", "median", "quantile", "otsu", "rate")


def _as_scores(scores) -> np.ndarray:
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D (one score per batch), got shape {s.shape}")
    if s.size == 0:
        raise ValueError("no scores: cannot fit a threshold on zero batches")
    if not np.all(np.isfinite(s)):
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"scores must be finite; score of batch {bad} is {s[bad]}")
    return s


def _otsu(s: np.ndarray) -> float:
    v = np.sort(s)
    n = v.size
    if v[0] == v[-1]:
        return float(v[0])  # one class only: nobody is above the threshold
    csum = np.cumsum(v)
    k = np.arange(1, n)  # split after k sorted values: classes v[:k], v[k:]
    w0, w1 = k / n, (n - k) / n
    mu0 = csum[:-1] / k
    mu1 = (csum[-1] - csum[:-1]) / (n - k)
    between = w0 * w1 * (mu0 - mu1) ** 2
    between[v[1:] == v[:-1]] = -np.inf  # a split between equal scores separates nothing
    best = int(np.argmax(between))
    return float((v[best] + v[best + 1]) / 2)


def _rate(s: np.ndarray, rate: float) -> float:
    n = s.size
    k = int(round(rate * n))
    if k <= 0:
        return float("inf")
    if k >= n:
        return float("-inf")
    desc = np.sort(s)[::-1]
    return float((desc[k - 1] + desc[k]) / 2)


def fit_threshold(scores, strategy: str = "mean", q: float | None = None, rate: float | None = None) -> float:
    """Fit a threshold on the scores of all training batches (see the module docstring)."""
    s = _as_scores(scores)
    if strategy == "mean":
        return float(s.mean())
    if strategy == "median":
        return float(np.median(s))
    if strategy == "quantile":
        if q is None or not (0.0 <= float(q) <= 1.0):
            raise ValueError(f"strategy 'quantile' needs q in [0, 1], got q={q!r}")
        return float(np.quantile(s, float(q)))
    if strategy == "otsu":
        return _otsu(s)
    if strategy == "rate":
        if rate is None or not (0.0 <= float(rate) <= 1.0):
            raise ValueError(f"strategy 'rate' needs rate in [0, 1], got rate={rate!r}")
        return _rate(s, float(rate))
    raise ValueError(f"unknown threshold strategy {strategy!r}; choose one of {list(STRATEGIES)}")


def classify_batches(scores, threshold: float) -> np.ndarray:
    """Boolean mask, one entry per batch: ``True`` where the batch needs BN (score > threshold)."""
    s = _as_scores(scores)
    t = float(threshold)
    if np.isnan(t):
        raise ValueError("threshold is NaN")
    return s > t
