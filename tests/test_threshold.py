"""Threshold strategies and the batch classifier (pure numpy)."""
import numpy as np
import pytest
import torch

from sbnlib import classify_batches, fit_threshold


def _otsu_bruteforce(s):
    best, best_t = -1.0, None
    v = np.sort(np.unique(s))
    for a, b in zip(v[:-1], v[1:]):
        t = (a + b) / 2
        lo, hi = s[s <= t], s[s > t]
        w0, w1 = lo.size / s.size, hi.size / s.size
        between = w0 * w1 * (lo.mean() - hi.mean()) ** 2
        if between > best:
            best, best_t = between, t
    return best_t


def test_mean_median_quantile():
    s = np.array([1.0, 2.0, 3.0, 10.0])
    assert fit_threshold(s) == pytest.approx(4.0)
    assert fit_threshold(s, "median") == pytest.approx(2.5)
    assert fit_threshold(s, "quantile", q=0.75) == pytest.approx(np.quantile(s, 0.75))
    assert classify_batches(s, fit_threshold(s)).tolist() == [False, False, False, True]


def test_otsu_separates_two_clusters_and_matches_bruteforce():
    rng = np.random.default_rng(0)
    s = np.concatenate([rng.normal(1, 0.1, 70), rng.normal(3, 0.2, 30)])
    t = fit_threshold(s, "otsu")
    assert 1.5 < t < 2.5
    assert classify_batches(s, t).sum() == 30
    for seed in range(5):
        r = np.random.default_rng(seed).gamma(2.0, size=57)
        assert fit_threshold(r, "otsu") == pytest.approx(_otsu_bruteforce(r))


def test_otsu_constant_scores_normalises_nothing():
    s = np.full(10, 0.7)
    assert not classify_batches(s, fit_threshold(s, "otsu")).any()


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_rate_normalises_exactly_the_top_fraction(rate):
    s = np.random.default_rng(1).random(200)
    mask = classify_batches(s, fit_threshold(s, "rate", rate=rate))
    k = round(rate * 200)
    assert mask.sum() == k
    if 0 < k < 200:
        assert s[mask].min() > s[~mask].max()


def test_accepts_torch_and_lists():
    assert fit_threshold(torch.tensor([1.0, 3.0])) == 2.0
    assert classify_batches([1, 2, 3], 2).tolist() == [False, False, True]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(strategy="mode"), "unknown threshold strategy 'mode'"),
        (dict(strategy="quantile"), "needs q in"),
        (dict(strategy="quantile", q=1.5), "needs q in"),
        (dict(strategy="rate", rate=-0.1), "needs rate in"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_threshold([1.0, 2.0], **kwargs)


def test_bad_scores():
    with pytest.raises(ValueError, match="no scores"):
        fit_threshold([])
    with pytest.raises(ValueError, match="batch 1 is nan"):
        fit_threshold([1.0, float("nan")])
    with pytest.raises(ValueError, match="1-D"):
        fit_threshold(np.ones((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        classify_batches([1.0], float("nan"))
