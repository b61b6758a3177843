"""Scorers against slow per-batch reference implementations; batch plans; batch size 1."""
import itertools
import math

import numpy as np
import pytest
import torch

from sbnlib import score_batches
from sbnlib.scoring import SCORERS, batch_view, fit_scorer, register_scorer


def _ref(name, batch):
    """Loop-based reference for one batch: numpy float64, written from the docstring formulas."""
    b = np.asarray(batch, dtype=np.float64)
    B = b.shape[0]
    flat = b.reshape(B, -1)
    D = flat.shape[1]
    if name == "feature_std":
        return np.mean([np.sqrt(np.mean((flat[:, d] - flat[:, d].mean()) ** 2)) for d in range(D)])
    if name == "channel_moments":
        chans = b.reshape(B, b.shape[1], -1) if b.ndim >= 3 else flat[:, None, :]
        total = 0.0
        for c in range(chans.shape[1]):
            means = [chans[i, c].mean() for i in range(B)]
            stds = [chans[i, c].std() for i in range(B)]
            total += np.std(means) + np.std(stds)
        return total / chans.shape[1]
    if name == "pairwise_distance":
        dist = sum(math.dist(flat[i], flat[j]) for i, j in itertools.product(range(B), repeat=2))
        return dist / B**2 / math.sqrt(D)
    if name == "norm_cv":
        norms = np.array([math.sqrt(sum(v * v for v in flat[i])) for i in range(B)])
        return norms.std() / (norms.mean() + 1e-8)
    raise KeyError(name)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, 4, 5, generator=g)
    x[::3] *= 4  # some samples much brighter/contrastier than others
    x[1::4] += 2
    return x


def test_registry_has_at_least_four_documented_scorers():
    assert {"feature_std", "channel_moments", "pairwise_distance", "norm_cv"} <= set(SCORERS)
    for name, fn in SCORERS.items():
        assert fn.__doc__ and ".. math::" in fn.__doc__, f"{name} lacks its formula"


@pytest.mark.parametrize("name", ["feature_std", "channel_moments", "pairwise_distance", "norm_cv"])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 8])
def test_scorers_match_slow_reference(images, name, batch_size):
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(batch_size))
    got = score_batches(images, batch_size, name, order=order)
    n_batches = images.shape[0] // batch_size
    assert got.shape == (n_batches,) and got.dtype == torch.float64
    ref = [_ref(name, images[order[i * batch_size:(i + 1) * batch_size]].numpy()) for i in range(n_batches)]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(["feature_std", "channel_moments", "pairwise_distance", "norm_cv"]))
def test_batch_size_one_scores_zero(images, name):
    assert torch.equal(score_batches(images, 1, name), torch.zeros(images.shape[0], dtype=torch.float64))


def test_flat_inputs_are_supported(images):
    flat = images.reshape(40, -1)
    for name in SCORERS:
        s = score_batches(flat, 4, name)
        assert s.shape == (10,) and torch.isfinite(s).all()
    assert torch.allclose(score_batches(flat, 4, "feature_std"), score_batches(images, 4, "feature_std"))


def test_heterogeneous_batch_scores_higher():
    g = torch.Generator().manual_seed(0)
    same = torch.randn(1, 1, 6, 6, generator=g).repeat(8, 1, 1, 1) + 0.01 * torch.randn(8, 1, 6, 6, generator=g)
    mixed = torch.randn(8, 1, 6, 6, generator=g) * torch.linspace(0.1, 5, 8).view(8, 1, 1, 1)
    x = torch.cat([same, mixed])
    for name in SCORERS:
        s = score_batches(x, 8, name)
        assert s[1] > s[0], name


def test_plan_order_and_slicing_do_not_change_scores(images):
    plan = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:36].reshape(9, 4)
    full = score_batches(images, 4, "pairwise_distance", order=plan)
    tiny_slices = score_batches(images, 4, "pairwise_distance", order=plan, max_elements=1)
    assert torch.equal(full, tiny_slices)
    assert torch.equal(score_batches(images, 4, order=plan.flatten()), score_batches(images, 4, order=plan))


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_sliced_scoring_equals_scoring_the_gathered_batches(images, name):
    """score_batches gathers each slice's samples itself (never a copy of the whole input): for every
    scorer, any slice size gives exactly the scorer applied to batch_view's batches at once."""
    plan = torch.randperm(40, generator=torch.Generator().manual_seed(4))[:36].reshape(9, 4)
    direct = fit_scorer(name, images)(batch_view(images, 4, plan).to(torch.float64))  # fitted on the same inputs
    for max_elements in (1, 3 * 4 * 5 * 4 * 2 + 1, 2**26):
        assert torch.equal(score_batches(images, 4, name, order=plan, max_elements=max_elements), direct)


def test_trailing_partial_batch_is_dropped(images):
    assert batch_view(images, 7).shape == (5, 7, 3, 4, 5)
    assert score_batches(images, 7).shape == (5,)


def test_bad_batch_sizes_and_scorers(images):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            score_batches(images, bad)
    with pytest.raises(ValueError, match="larger than the 40 samples"):
        score_batches(images, 41)
    with pytest.raises(ValueError, match="unknown scorer 'nope'.*feature_std"):
        score_batches(images, 4, "nope")
    with pytest.raises(ValueError, match="batch plan has batches of 4"):
        score_batches(images, 5, order=torch.arange(40).reshape(10, 4))
    with pytest.raises(ValueError, match="already registered"):
        register_scorer("feature_std")(lambda b: b)


def test_callable_scorer_is_accepted(images):
    s = score_batches(images, 5, lambda b: b.reshape(b.shape[0], -1).amax(dim=1))
    assert torch.equal(s, images.reshape(8, -1).amax(dim=1).double())
