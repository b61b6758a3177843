"""Batch heterogeneity scorers.

A *scorer* maps one batch of inputs to one number, its feature heterogeneity. Scorers here are
written for many batches at once: they take a tensor of shape ``(n_batches, B, *feature_shape)``
and return ``(n_batches,)``, so :func:`score_batches` scores every batch of a batch plan without a
Python loop over batches.

All scorers use *population* statistics (divide by B, not B - 1). A batch of one sample therefore
has heterogeneity exactly 0 under every scorer: there is nothing to be heterogeneous with. This is
the defined behaviour for ``batch_size=1``, not an error.

Scores are meant to be computed on the same normalised input that the model sees
(``(x / 255 - mean) / std``, see :mod:`sbnlib.data`).

A *fitted* scorer (registered with ``fitted=True``) learns something about the training inputs
first, once, before training (still the paper's "pre-training processing"): its registered function
is a factory ``fit(x_train, seed=0) -> scorer``. :func:`fit_scorer` turns any scorer name into a
ready batch scorer (fitting where needed); :func:`score_batches` given a fitted scorer's name fits it
on the inputs it scores. To score other inputs (test batches) with the fit on the training inputs,
pass the fitted scorer itself: ``score_batches(x_test, b, fit_scorer(name, x_train))``.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Set

import torch

from .checks import is_int

__all__ = ["SCORERS", "FITTED", "register_scorer", "get_scorer", "fit_scorer", "score_batches", "batch_view"]

Scorer = Callable[[torch.Tensor], torch.Tensor]
SCORERS: Dict[str, Callable] = {}  # name -> scorer, or, for the names in FITTED, a factory fit(x_train, seed) -> scorer
FITTED: Set[str] = set()

_EPS = 1e-8


def register_scorer(name: str, fitted: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` under ``name`` in :data:`SCORERS`; with ``fitted=True`` ``fn`` is a
    factory ``fn(x_train, seed=0) -> scorer`` (see the module docstring)."""

    def deco(fn: Callable) -> Callable:
        if name in SCORERS:
            raise ValueError(f"scorer {name!r} is already registered")
        SCORERS[name] = fn
        if fitted:
            FITTED.add(name)
        return fn

    return deco


def get_scorer(name_or_fn) -> Scorer:
    if callable(name_or_fn):
        return name_or_fn
    try:
        return SCORERS[name_or_fn]
    except KeyError:
        raise ValueError(
            f"unknown scorer {name_or_fn!r}; choose one of {sorted(SCORERS)}"
        ) from None


def fit_scorer(name_or_fn, x: torch.Tensor, seed: int = 0) -> Scorer:
    """A batch scorer ready to use: a plain scorer (or a callable) as it is, a fitted scorer fitted
    on the inputs ``x`` ``(N, *feature_shape)`` with ``seed`` (deterministic)."""
    fn = get_scorer(name_or_fn)
    return fn(x, seed=seed) if isinstance(name_or_fn, str) and name_or_fn in FITTED else fn


def _pop_std(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Population standard deviation along ``dim``, two-pass.

    Same formula as ``x.std(dim, correction=0)``; written out because torch's reduction kernel is
    several times slower when ``dim`` is a short middle axis (a batch of 2..16 samples).
    """
    return (x - x.mean(dim, keepdim=True)).square_().mean(dim).sqrt_()


def _flat(batches: torch.Tensor) -> torch.Tensor:
    """(n, B, *F) -> (n, B, D) with D = prod(F)."""
    return batches.reshape(batches.shape[0], batches.shape[1], -1)


@register_scorer("feature_std")
def feature_std(batches: torch.Tensor) -> torch.Tensor:
    r"""Mean per-feature standard deviation (the project's default).

    For a batch :math:`x_{1..B} \in \mathbb{R}^D`:

    .. math:: s = \frac{1}{D} \sum_{d=1}^{D} \sqrt{\frac{1}{B} \sum_{i=1}^{B} (x_{id} - \bar x_d)^2}

    where :math:`\bar x_d` is the batch mean of feature :math:`d`.
    """
    return _pop_std(_flat(batches), dim=1).mean(dim=-1)


@register_scorer("channel_moments")
def channel_moments(batches: torch.Tensor) -> torch.Tensor:
    r"""Dispersion of per-sample channel means and standard deviations.

    For images :math:`x_i \in \mathbb{R}^{C \times H \times W}` let :math:`m_{ic}` and
    :math:`v_{ic}` be the mean and (population) standard deviation of channel :math:`c` of sample
    :math:`i` over its pixels. Then

    .. math:: s = \frac{1}{C} \sum_{c=1}^{C} \left[ \operatorname{sd}_i(m_{ic}) + \operatorname{sd}_i(v_{ic}) \right]

    with :math:`\operatorname{sd}_i` the population standard deviation across the B samples.
    It is large when samples differ in brightness or contrast, whatever their content. Inputs of
    shape ``(n, B, D)`` (no channel axis) are treated as one channel of D values.
    """
    n, b = batches.shape[:2]
    x = batches.reshape(n, b, batches.shape[2], -1) if batches.dim() >= 4 else batches.reshape(n, b, 1, -1)
    m = x.mean(dim=-1)  # (n, B, C)
    v = _pop_std(x, dim=-1)
    return (_pop_std(m, dim=1) + _pop_std(v, dim=1)).mean(dim=-1)


@register_scorer("pairwise_distance")
def pairwise_distance(batches: torch.Tensor) -> torch.Tensor:
    r"""Mean Euclidean distance between two samples of the batch, per unit feature.

    .. math:: s = \frac{1}{B^2} \sum_{i=1}^{B} \sum_{j=1}^{B} \frac{\lVert x_i - x_j \rVert_2}{\sqrt{D}}

    The sum runs over all ordered pairs including :math:`i = j` (whose distance is 0), the
    population form that makes a one-sample batch score 0 like the other scorers.
    """
    x = _flat(batches)
    d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")  # (n, B, B), exact
    return d.mean(dim=(1, 2)) / (x.shape[-1] ** 0.5)


@register_scorer("norm_cv")
def norm_cv(batches: torch.Tensor) -> torch.Tensor:
    r"""Coefficient of variation of the per-sample Euclidean norms.

    .. math:: s = \frac{\operatorname{sd}_i \lVert x_i \rVert_2}{\operatorname{mean}_i \lVert x_i \rVert_2 + \epsilon},
              \quad \epsilon = 10^{-8}

    Scale free: multiplying every input by a constant leaves it unchanged.
    """
    norms = _flat(batches).norm(dim=-1)  # (n, B)
    return _pop_std(norms, dim=1) / (norms.mean(dim=1) + _EPS)


def _kmeans(z: torch.Tensor, k: int, iters: int, g: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means on the rows of ``z`` from a k-means++ start drawn with ``g``; returns the
    centres of the clusters that kept members after ``iters`` rounds (empty ones are dropped)."""
    centres = z[torch.randint(z.shape[0], (1,), generator=g)]
    d2 = torch.cdist(z, centres).squeeze(1).square()
    for _ in range(k - 1):  # k-means++: the next centre is drawn with probability ~ squared distance
        new = z[torch.multinomial(d2 / d2.sum(), 1, generator=g)]
        centres = torch.cat([centres, new])
        d2 = torch.minimum(d2, torch.cdist(z, new).squeeze(1).square())
    for _ in range(iters):
        member = torch.cdist(z, centres).argmin(1)
        count = torch.bincount(member, minlength=k).to(z.dtype)
        sums = torch.zeros_like(centres).index_add_(0, member, z)
        # a centre that lost its members stays where it was (and is dropped at the end)
        centres = torch.where(count[:, None] > 0, sums / count.clamp_min(1)[:, None], centres)
    return centres[torch.bincount(torch.cdist(z, centres).argmin(1), minlength=k) > 0]


@register_scorer("spectral_split", fitted=True)
def spectral_split(x_train: torch.Tensor, seed: int = 0, components: int = 16, modes: int = 128,
                   max_fit: int = 10_000, iters: int = 25) -> Scorer:
    r"""Spread of the batch across the coarsest split of the training inputs' modes (fitted).

    A mixture of sources shows in the data as groups of modes that are well connected among
    themselves and weakly to each other; spectral clustering's first cut (the Fiedler vector of a
    neighbourhood graph, Shi & Malik 2000) finds that split without labels. Fitted once on the
    training inputs (at most ``max_fit`` of them, drawn with ``seed``):

    1. a ``components``-dimensional PCA of the flattened inputs (``torch.pca_lowrank``, seeded);
    2. ``modes`` k-means centres :math:`\mu_1..\mu_K` in that projection (k-means++ start, seeded);
    3. the modes' neighbourhood graph (the "competitive Hebbian rule" of topology-representing
       networks, Martinetz & Schulten 1994): :math:`A_{jk}` counts the inputs whose two nearest
       centres are :math:`j` and :math:`k` (symmetrised);
    4. :math:`\phi`, the second eigenvector :math:`v_2` of the normalised Laplacian
       :math:`I - D^{-1/2} A D^{-1/2}` (:math:`D` the degrees), as :math:`\phi_k = v_{2k} / \sqrt{D_{kk}}`,
       standardised to mean 0 and standard deviation 1 over the fitted inputs.

    A batch then scores the spread of its samples along that split, with :math:`c(x)` the index
    of the centre nearest to :math:`x`'s projection:

    .. math:: s = \sqrt{\frac{1}{B} \sum_{i=1}^{B} \left(\phi_{c(x_i)} - \frac{1}{B} \sum_{j=1}^{B} \phi_{c(x_j)}\right)^2}

    A batch from one side of the split scores near 0, a batch drawn from both sides near 1. The fit
    costs a few seconds on one core whatever the training-set size (it reads at most ``max_fit``
    inputs); ``modes`` is lowered to an eighth of the fitted inputs on small sets.
    """
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(x_train.shape[0], generator=g)[:max_fit]
    xs = x_train[pick].reshape(pick.numel(), -1).to(torch.float64)  # (n, D)
    mean = xs.mean(0)
    with torch.random.fork_rng(devices=[]):  # pca_lowrank draws from the global generator: seed it, then restore it
        torch.manual_seed(seed)
        _, _, basis = torch.pca_lowrank(xs - mean, q=min(components, *xs.shape), center=False, niter=4)
    z = (xs - mean) @ basis
    centres = _kmeans(z, max(2, min(modes, z.shape[0] // 8)), iters, g)
    k = centres.shape[0]
    near = torch.cdist(z, centres).topk(2, dim=1, largest=False).indices  # nearest and second-nearest centre
    adj = torch.zeros(k, k, dtype=torch.float64)
    adj.index_put_((near[:, 0], near[:, 1]), torch.ones(near.shape[0], dtype=torch.float64), accumulate=True)
    adj = adj + adj.T
    deg = adj.sum(1)  # > 0: every kept centre is the nearest one of some input
    lap = torch.eye(k, dtype=torch.float64) - adj / torch.sqrt(deg[:, None] * deg[None, :])
    phi = torch.linalg.eigh(lap).eigenvectors[:, 1] / deg.sqrt()  # eigenvalues ascending: [1] is the Fiedler vector
    on_fit = phi[near[:, 0]]
    phi = (phi - on_fit.mean()) / on_fit.std(correction=0).clamp_min(_EPS)

    def score(batches: torch.Tensor) -> torch.Tensor:
        zb = (_flat(batches) - mean) @ basis  # (n, B, components)
        mode = torch.cdist(zb.reshape(-1, zb.shape[-1]), centres).argmin(1)
        return _pop_std(phi[mode].reshape(zb.shape[:2]), dim=1)

    score.__name__ = "spectral_split"
    return score


def batch_view(x: torch.Tensor, batch_size: int, order: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Arrange ``x`` into full batches: ``(n_batches, batch_size, *x.shape[1:])``.

    ``order`` is either a permutation/selection of sample indices (1-D), read in order and cut into
    consecutive batches, or a batch plan of shape ``(n_batches, batch_size)`` as made by
    :func:`sbnlib.batches.make_batch_plan`. Without it, samples are taken in their stored order.
    A trailing partial batch (``len(order) % batch_size`` samples) is dropped, as in a batch plan.
    """
    return x[_batch_index(x.shape[0], batch_size, order)]


def _batch_index(n: int, batch_size: int, order: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The sample indices of :func:`batch_view`'s batches, ``(n_batches, batch_size)``."""
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    if order is None:
        order = torch.arange(n)
    order = torch.as_tensor(order, dtype=torch.long)
    if order.dim() == 2:
        if order.shape[1] != batch_size:
            raise ValueError(
                f"batch plan has batches of {order.shape[1]} samples but batch_size={batch_size}"
            )
        idx = order
    else:
        n_batches = order.numel() // batch_size
        if n_batches == 0:
            raise ValueError(
                f"batch_size={batch_size} is larger than the {order.numel()} samples available; "
                "use a smaller batch size or more samples"
            )
        idx = order[: n_batches * batch_size].reshape(n_batches, batch_size)
    return idx


def score_batches(
    x: torch.Tensor,
    batch_size: int,
    scorer="feature_std",
    order: Optional[torch.Tensor] = None,
    max_elements: int = 2**26,
) -> torch.Tensor:
    """Heterogeneity score of every batch of a batch plan, as a float64 tensor ``(n_batches,)``.

    ``x`` holds the (normalised) inputs, ``(N, *feature_shape)``; ``order`` is as in
    :func:`batch_view`. A fitted scorer named here is fitted on ``x`` (:func:`fit_scorer`). The
    scorer is applied to all batches at once; to bound memory, batches are processed in slices of
    about ``max_elements`` input values (a loop over slices of many batches, never over single
    batches). Scores are computed in float64 so that they do not depend
    on how batches are grouped into slices.
    """
    if x.dim() < 2:
        raise ValueError(f"x must have shape (N, features...), got {tuple(x.shape)}")
    idx = _batch_index(x.shape[0], batch_size, order)
    fn = fit_scorer(scorer, x)
    per_batch = batch_size * x[0].numel()
    step = max(1, max_elements // max(per_batch, 1))
    if fn is pairwise_distance:  # (B x B) distance matrices per batch
        step = max(1, max_elements // max(per_batch + batch_size * batch_size, 1))
    # each slice gathers its own samples, so x is never copied whole; the scores go straight into
    # one preallocated tensor, so no small results pile up between the slices' temporaries
    out = torch.empty(idx.shape[0], dtype=torch.float64)
    for i in range(0, idx.shape[0], step):
        out[i : i + step] = fn(x[idx[i : i + step]].to(torch.float64))
    return out
