"""A deterministic trainer that fits on a screen.

Data are held as tensors in memory and sliced into batches by a *batch plan* (no per-sample
loader). Before training, every batch of the plan is scored and classified once
(:mod:`sbnlib.scoring`, :mod:`sbnlib.threshold`); during training, step ``i`` runs with the
selective BN layers on or off as batch ``i`` was classified.

Methods (:data:`METHODS`) name a normalisation layer and a batch-selection rule:

======================  =============  =================================================
method                  norm           which training batches are normalised
======================  =============  =================================================
``none``                none           (no normalisation layers)
``bn``                  bn             all (traditional BN)
``sbn``                 sbn            heterogeneous ones (score > threshold); others skip
                                       BN as identity (the paper's reading)
``sbn_frozen``          sbn_frozen     as ``sbn``; skipped batches use running statistics
``random``              sbn            a seeded random subset of the same size as ``sbn``'s
                                       (the control: is it heterogeneity that matters?)
``random_frozen``       sbn_frozen     as ``random``; skipped batches use running statistics
                                       (the control of ``sbn_frozen``)
``sbn_inverse``         sbn            as many batches as ``sbn``, the *least* heterogeneous
                                       ones (the control for the direction of the score)
``gn``                  gn             all (GroupNorm, batch independent)
======================  =============  =================================================

The *scope* of a selective method (``TrainConfig.scope``, :data:`SCOPES`) says which layers the
per-batch decision switches: ``all`` (every BN layer, the default), ``first`` (only the first BN
layer; the others always normalise), ``input`` (a BN on the input channels is the only selective
layer; the inner layers always normalise) or ``input_bare`` (that input BN and no inner
normalisation). The layers that are not switched are selective layers left on, which is exactly
``nn.BatchNorm`` (:mod:`sbnlib.layers`), so every layer is counted the same way.

Same ``seed`` => same initial weights and the same batch order for every method (paired runs),
and bitwise-identical metrics on CPU for the same configuration.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from .data import SEED_MAX, load_dataset, make_batch_plan, validation_split
from .layers import bn_counts, selective_bn, selective_layers
from .models import MODELS, build_model
from .provenance import portable, produced
from .scoring import SCORERS, fit_scorer, score_batches
from .threshold import STRATEGIES, classify_batches, fit_threshold

__all__ = ["METHODS", "SCOPES", "TrainConfig", "train", "evaluate", "config_dict", "config_hash", "switched_layers"]


@dataclass(frozen=True)
class Method:
    norm: str
    selection: str  # "all" | "score" | "random" | "inverse" (see _selection)


METHODS = {
    "none": Method("none", "all"),
    "bn": Method("bn", "all"),
    "sbn": Method("sbn", "score"),
    "sbn_frozen": Method("sbn_frozen", "score"),
    "random": Method("sbn", "random"),
    "random_frozen": Method("sbn_frozen", "random"),
    "sbn_inverse": Method("sbn", "inverse"),
    "gn": Method("gn", "all"),
}


@dataclass(frozen=True)
class Scope:
    """Where a selective method's norm layers go, and which of them the per-batch decision switches."""

    input_layer: bool  # one on the input channels, in front of the network
    inner_layers: bool  # one after every hidden layer (False: no inner normalisation)
    switch_all: bool  # every selective layer is switched (False: only the first in module order,
    #                   which is the input layer where there is one)


SCOPES = {
    "all": Scope(input_layer=False, inner_layers=True, switch_all=True),
    "first": Scope(input_layer=False, inner_layers=True, switch_all=False),
    "input": Scope(input_layer=True, inner_layers=True, switch_all=False),
    "input_bare": Scope(input_layer=True, inner_layers=False, switch_all=False),
}


# learning-rate scaling rules: exponent of batch_size / lr_ref_batch
LR_SCALINGS = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}
ENGINES = ("single", "packed")  # which trainer produced a record: train() or sbnlib.packed.train_packed
SCHEDULES = ("constant", "warmup_cosine")
SCHEMA_VERSION = 2  # of the result record; records of another version are recomputed, never read
STEP_POINTS = 100  # per-step series are stored as this many chunk means (metrics use the full series)
# accepted ranges: a learning rate outside LR_RANGE overflows float32 updates or learns nothing; more
# epochs or threads than these are a typing slip, not a run anyone waits for
LR_RANGE = (1e-12, 100.0)
EPOCHS_MAX = 100_000
THREADS_MAX = 1024


def lr_at(cfg: "TrainConfig", step: int, total_steps: int) -> float:
    """The learning rate of (0-based) ``step`` out of ``total_steps``.

    ``constant``: ``cfg.effective_lr`` throughout. ``warmup_cosine``: a linear warm-up over the
    first ``w = round(warmup_frac * total_steps)`` steps, ``peak * (step + 1) / w``, then a cosine
    decay ``peak * (1 + cos(pi * (step - w) / (total_steps - w))) / 2`` that would reach 0 at step
    ``total_steps`` (so the last step still moves a little), with ``peak = cfg.effective_lr``.
    """
    peak = cfg.effective_lr
    if cfg.schedule == "constant":
        return peak
    warm = round(cfg.warmup_frac * total_steps)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))


@dataclass
class TrainConfig:
    """Everything that determines a training run's numbers (the data root does not)."""

    dataset: str = "mnist"
    method: str = "bn"
    batch_size: int = 32
    epochs: int = 1
    seed: int = 0
    model: str = "cnn_s"
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "constant"  # learning-rate schedule: see SCHEDULES and lr_at
    warmup_frac: float = 0.15  # warmup_cosine: fraction of all steps spent warming up linearly
    n_train: Optional[int] = None
    n_test: Optional[int] = None
    data_seed: int = 0
    val_frac: float = 0.0  # stratified validation split carved out of the n_train images (seeded by data_seed)
    scorer: str = "feature_std"
    threshold: str = "mean"
    threshold_q: Optional[float] = None
    threshold_rate: Optional[float] = None
    reform_batches: bool = False
    scope: str = "all"  # which BN layers a selective method switches (SCOPES); not in the hash while "all"
    lr_scaling: str = "none"
    lr_ref_batch: int = 32
    probe_points: int = 0
    eval_batch_size: int = 100  # evaluation chunk: numbers do not depend on it beyond float rounding; 100 is fastest here
    engine: str = "single"  # "single": train(); "packed": sbnlib.packed.train_packed, the seeds of a configuration together

    def validate(self) -> "TrainConfig":
        def _int(name, lo=1, hi=2**31 - 1):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer >= {lo} and <= {hi}, got {v!r}")

        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {sorted(METHODS)}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(MODELS)}")
        if self.scorer not in SCORERS:
            raise ValueError(f"unknown scorer {self.scorer!r}; choose one of {sorted(SCORERS)}")
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}; choose one of {list(SCOPES)}")
        if self.scope != "all" and METHODS[self.method].selection == "all":
            raise ValueError(f"scope={self.scope!r} needs a selective method, not {self.method!r}")
        if self.threshold not in STRATEGIES:
            raise ValueError(f"unknown threshold {self.threshold!r}; choose one of {list(STRATEGIES)}")
        if self.lr_scaling not in LR_SCALINGS:
            raise ValueError(f"unknown lr_scaling {self.lr_scaling!r}; choose one of {list(LR_SCALINGS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {list(SCHEDULES)}")
        for name, lo, hi in (("warmup_frac", 0.0, 1.0), ("val_frac", 0.0, 0.5)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v < hi):
                raise ValueError(f"{name} must be a number in [{lo}, {hi}), got {v!r}")
        if not isinstance(self.nesterov, bool):
            raise ValueError(f"nesterov must be true or false, got {self.nesterov!r}")
        if self.nesterov and not (self.optimizer == "sgd" and self.momentum > 0):
            raise ValueError("nesterov needs optimizer='sgd' with momentum > 0")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose 'sgd' or 'adam'")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {list(ENGINES)}")
        if self.engine == "packed" and self.optimizer != "sgd":  # Adam's step count is per tensor, not per seed
            raise ValueError("engine='packed' trains with optimizer='sgd'; use engine='single' for Adam")
        for name in ("batch_size", "eval_batch_size", "lr_ref_batch"):
            _int(name)
        _int("epochs", 1, EPOCHS_MAX)
        _int("probe_points", 0)
        _int("seed", 0, SEED_MAX)
        _int("data_seed", 0, SEED_MAX)
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                _int(name)
        if isinstance(self.lr, bool) or not (isinstance(self.lr, (int, float)) and LR_RANGE[0] <= self.lr <= LR_RANGE[1]):
            raise ValueError(f"lr must be a number in [{LR_RANGE[0]:g}, {LR_RANGE[1]:g}], got {self.lr!r}")
        if self.n_train is not None and self.batch_size > self.n_train:
            raise ValueError(
                f"batch_size={self.batch_size} is larger than n_train={self.n_train}: "
                "no full training batch can be formed; lower the batch size or raise n_train"
            )
        return self

    @property
    def norm(self) -> str:
        return METHODS[self.method].norm

    @property
    def norms(self) -> tuple:
        """``(norm, input_norm)`` of the run's model: the method's norm placed by the scope."""
        scope = SCOPES[self.scope]
        return (self.norm if scope.inner_layers else "none", self.norm if scope.input_layer else "none")

    @property
    def effective_lr(self) -> float:
        """``lr`` scaled by the batch size: ``lr * (batch_size / lr_ref_batch) ** power``."""
        return self.lr * (self.batch_size / self.lr_ref_batch) ** LR_SCALINGS[self.lr_scaling]


# fields added after results were stored: left out of the stored configuration and of its hash while
# they hold their default, so that every earlier configuration keeps its key and its result file
LATER_FIELDS = {"scope": "all", "engine": "single"}


def config_dict(cfg: TrainConfig) -> dict:
    """The configuration as stored in a result record (:data:`LATER_FIELDS` at their default left out)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if LATER_FIELDS.get(k, object()) != v}


def config_hash(cfg: TrainConfig) -> str:
    """Stable 16-hex-digit key of a configuration (for result files)."""
    blob = json.dumps(config_dict(cfg), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@lru_cache(maxsize=2)
def _prepared(name, root, n_train, n_test, data_seed):
    """Load a dataset once per process and normalise it to float tensors."""
    ds = load_dataset(name, root=root, n_train=n_train, n_test=n_test, seed=data_seed)
    return ds, ds.normalize(ds.x_train), ds.normalize(ds.x_test)


@dataclass
class TrainingData:
    """The tensors one run reads: training, validation (empty when ``val_frac=0``) and test."""

    ds: object  # sbnlib.data.Dataset: provenance, shapes, class count
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def training_data(cfg: "TrainConfig", root=None, dataset=None) -> TrainingData:
    """The data of a run: ``dataset`` (a tuple ``(Dataset, x_train_float, x_test_float)``) or the
    dataset loaded from ``root``; a stratified validation split of ``val_frac`` of the training
    images is held out (:func:`sbnlib.data.validation_split`), so no choice needs the test set."""
    ds, x_train, x_test = dataset or _prepared(cfg.dataset, None if root is None else str(root),
                                               cfg.n_train, cfg.n_test, cfg.data_seed)
    train_idx, val_idx = validation_split(ds.y_train, cfg.val_frac, seed=cfg.data_seed)
    return TrainingData(ds, x_train[train_idx], ds.y_train[train_idx], x_train[val_idx], ds.y_train[val_idx],
                        x_test, ds.y_test)


def make_optimizer(cfg: "TrainConfig", params) -> torch.optim.Optimizer:
    """The run's optimizer at ``cfg.effective_lr``; the schedule sets the rate of every step (:func:`lr_at`)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.effective_lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.effective_lr, weight_decay=cfg.weight_decay)


def switched_layers(model, scope: str = "all") -> list:
    """The selective layers of ``model`` that the per-batch decision switches under ``scope``
    (:data:`SCOPES`): all of them, or only the first in module order; the others stay on."""
    layers = list(selective_layers(model))
    return layers if SCOPES[scope].switch_all else layers[:1]


def _selection(cfg: TrainConfig, x: torch.Tensor, plan: torch.Tensor, epoch: int, scorer=None):
    """Decide, for every batch of the plan, whether BN runs; returns (mask, info).

    ``scorer``: the run's batch scorer (:func:`sbnlib.scoring.fit_scorer`), by default ``cfg.scorer``
    (a fitted scorer is then fitted on ``x``). Rules: ``score`` normalises the batches above the
    threshold; ``random`` as many at random positions; ``inverse`` as many, the lowest-scoring ones.
    """
    rule = METHODS[cfg.method].selection
    if rule == "all":
        return np.ones(plan.shape[0], dtype=bool), {}
    scores = score_batches(x, cfg.batch_size, cfg.scorer if scorer is None else scorer, order=plan)
    t = fit_threshold(scores, cfg.threshold, q=cfg.threshold_q, rate=cfg.threshold_rate)
    mask = classify_batches(scores, t)
    if rule == "random":  # same number of normalised batches, at random positions
        g = np.random.default_rng([cfg.seed, epoch, 0x5EED])
        mask = mask[g.permutation(mask.size)]
    elif rule == "inverse":  # same number of normalised batches, the least heterogeneous ones (ties: plan order)
        lowest = np.argsort(scores.numpy(), kind="stable")[: int(mask.sum())]
        mask = np.zeros_like(mask)
        mask[lowest] = True
    return mask, {"threshold": t, "score_mean": float(scores.mean()), "score_std": float(scores.std())}


_NORM_TYPES = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.Identity)


def _input_moments(model, x, select) -> list:
    """``(module, mean, var)`` per channel of the input of every module ``select`` accepts.

    One forward pass of ``x`` in eval mode, without gradients; the model's mode is restored and no
    state changes. Means and population variances are over the batch and spatial axes
    (``torch.var_mean`` in the activations' dtype, returned as float64).
    """
    moments, hooks = [], []

    def hook(m, inputs, _out):
        t = inputs[0]
        var, mean = torch.var_mean(t, dim=[0] + list(range(2, t.dim())), correction=0)
        moments.append((m, mean.double(), var.double()))

    for m in model.modules():
        if select(m):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return moments


def _standardised_shift(mu, sd, mu_ref, sd_ref) -> torch.Tensor:
    """Mean over channels of ``|mu - mu_ref| / sd_ref + |log(sd / sd_ref)|``: how far one
    per-channel distribution sits from a reference one, in units of the reference's spread."""
    return ((mu - mu_ref).abs() / sd_ref + (sd / sd_ref).log().abs()).mean()


class _ShiftProbe:
    """Internal-covariate-shift probe: how much the inputs of the normalisation layers move.

    At each checkpoint the model runs in eval mode (no state changes, no gradients) on a fixed
    probe batch; forward hooks record, for every normalisation slot (BN, selective BN, GroupNorm,
    or the ``nn.Identity`` that ``norm="none"`` puts there), the per-channel mean ``mu`` and
    standard deviation ``sd`` of its input. The shift between consecutive checkpoints is

        mean over slots and channels of  |mu_t - mu_{t-1}| / sd_{t-1}  +  |log(sd_t / sd_{t-1})|

    (with 1e-5 added to variances), i.e. how far each layer's input distribution moved, in units
    of its own spread. It is a probe in eval mode, not the training-time distribution.
    """

    def __init__(self, model, x_probe, total_steps: int, points: int):
        self.model, self.x = model, x_probe
        self.at = set(np.linspace(0, total_steps, points + 1).round().astype(int).tolist()) if points else set()
        self.steps, self.shift, self._last = [], [], None

    def maybe(self, step: int) -> None:
        if step not in self.at:
            return
        stats = [(mu, (var + 1e-5).sqrt())
                 for _, mu, var in _input_moments(self.model, self.x, lambda m: isinstance(m, _NORM_TYPES))]
        if self._last is not None:
            parts = [_standardised_shift(mu, sd, mu0, sd0) for (mu, sd), (mu0, sd0) in zip(stats, self._last)]
            self.steps.append(step)
            self.shift.append(float(torch.stack(parts).mean()) if parts else float("nan"))
        self._last = stats

    def record(self) -> dict:
        return {"step": self.steps, "shift": self.shift}


@torch.no_grad()
def evaluate(model, x, y, batch_size=1000):
    """(accuracy, mean cross-entropy) of ``model`` in eval mode on tensors ``x``, ``y``."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        loss += F.cross_entropy(out, yb, reduction="sum").item()
        correct += (out.argmax(1) == yb).sum().item()
    model.train(was_training)
    return correct / x.shape[0], loss / x.shape[0]


def _running_stat_drift(model, x_probe) -> float:
    """How far BN's running statistics are from the statistics they stand for at inference.

    In eval mode (the inference-time network), forward hooks take each BN layer's actual input
    on a probe set of training images; per channel, with ``mu``/``sd`` its mean/std and
    ``mu_r``/``sd_r`` the running ones: mean over layers and channels of
    ``|mu_r - mu| / sd + |log(sd_r / sd)|`` (variances + eps). 0 means the running statistics are
    exact; selective BN gathers them only from the batches it normalised.
    """
    def tracked_bn(m):
        return isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats

    parts = [_standardised_shift(m.running_mean.double(), (m.running_var.double() + m.eps).sqrt(),
                                 mu, (var + m.eps).sqrt())
             for m, mu, var in _input_moments(model, x_probe, tracked_bn)]
    return float(torch.stack(parts).mean())


def _inference_policies(model, cfg: "TrainConfig", x_test, y_test, threshold, scorer) -> dict:
    """Test accuracy of a selective-BN network under three inference policies.

    ``running``: standard eval, every test batch normalised with the running statistics;
    ``bypass``: BN skipped on every test batch (as the skipped training batches saw it);
    ``selected``: test batches of the training batch size (stored order, the last one partial)
    are scored (``scorer``: the run's, fitted on the training inputs) and thresholded like the
    training batches; only those above the training threshold are normalised (only for
    ``selection="score"`` methods). Skipping acts on the layers the scope switches.
    """
    layers = switched_layers(model, cfg.scope)
    out = {"running": evaluate(model, x_test, y_test, cfg.eval_batch_size)[0]}
    with selective_bn(layers, enabled=False):
        out["bypass"] = evaluate(model, x_test, y_test, cfg.eval_batch_size)[0]
    out["selected"], out["selected_frac_normalized"] = None, None
    if METHODS[cfg.method].selection == "score" and threshold is not None:
        b, n = cfg.batch_size, x_test.shape[0]
        scores = score_batches(x_test, b, scorer).tolist() if n >= b else []
        if n % b:
            scores.append(float(scorer(x_test[n - n % b:][None].double())[0]))
        needs = np.asarray(scores) > threshold
        correct = 0
        model.eval()
        with torch.no_grad():
            for i, start in enumerate(range(0, n, b)):
                with selective_bn(layers, enabled=bool(needs[i])):
                    correct += (model(x_test[start:start + b]).argmax(1) == y_test[start:start + b]).sum().item()
        out["selected"], out["selected_frac_normalized"] = correct / n, float(needs.mean())
    return out


class StepLog:
    """The per-step series of one run, kept in full while it trains.

    The record stores them compactly (:meth:`compact`: ``STEP_POINTS`` chunk means), while the
    stability metrics are computed from the full series at run time (:meth:`metrics`).
    """

    def __init__(self):
        self.loss, self.grad_norm, self.bn_on, self.lr = [], [], [], []

    def add(self, loss: float, grad_norm: float, bn_on: bool, lr: float) -> None:
        self.loss.append(loss)
        self.grad_norm.append(grad_norm)
        self.bn_on.append(bn_on)
        self.lr.append(lr)

    def __len__(self) -> int:
        return len(self.loss)

    def compact(self, points: int = STEP_POINTS) -> dict:
        """Means over ``points`` contiguous chunks of steps (``at``: each chunk's first step), the
        fraction of BN-on steps per chunk, and the learning rate at each chunk's first step."""
        n = len(self.loss)
        edges = np.unique(np.linspace(0, n, min(points, n) + 1).round().astype(int))
        def means(v):
            v = np.asarray(v, dtype=np.float64)
            return [float(f"{m:.6g}") for m in np.add.reduceat(v, edges[:-1]) / np.diff(edges)] if n else []
        return {"n": n, "at": edges[:-1].tolist(), "loss": means(self.loss), "grad_norm": means(self.grad_norm),
                "bn_on": means(self.bn_on), "lr": [float(f"{self.lr[i]:.6g}") for i in edges[:-1]]}

    def metrics(self, steps_per_epoch: int, diverged: bool) -> dict:
        """Stability metrics from the full series (None for a diverged run, whose series ends in
        NaN/inf), and the last epoch's training loss over all steps, BN-on and BN-off steps (None
        where there were no such steps)."""
        from .stats import grad_norm_cv, loss_volatility

        loss, on = np.asarray(self.loss, dtype=np.float64), np.asarray(self.bn_on, dtype=bool)
        last, last_on = loss[-steps_per_epoch:], on[-steps_per_epoch:]

        def value(v):  # undefined -> None (JSON null), so that a record equals its stored copy
            return None if v is None or not math.isfinite(v) else float(v)

        return {"loss_volatility": None if diverged else value(loss_volatility(loss)),
                "grad_norm_cv": None if diverged else value(grad_norm_cv(self.grad_norm)),
                "last_epoch_loss": value(last.mean()) if last.size else None,
                "last_epoch_loss_bn_on": value(last[last_on].mean()) if last_on.any() else None,
                "last_epoch_loss_bn_off": value(last[~last_on].mean()) if (~last_on).any() else None}


def train(cfg: TrainConfig, root=None, dataset=None, progress: bool = False) -> dict:
    """Run one training run; return its JSON-serialisable result record.

    ``dataset`` may be given as a tuple ``(Dataset, x_train_float, x_test_float)`` to reuse data
    already in memory; otherwise it is loaded from ``root`` (see :func:`sbnlib.data.load_dataset`).
    Validation accuracy is measured after every epoch, test accuracy once, at the end.
    A NaN/inf loss or gradient ends the run with ``status="diverged"`` instead of raising.
    """
    cfg.validate()
    t0 = time.perf_counter()
    data = training_data(cfg, root, dataset)
    x_train, y_train = data.x_train, data.y_train
    if cfg.batch_size > x_train.shape[0]:
        raise ValueError(
            f"batch_size={cfg.batch_size} is larger than the {x_train.shape[0]} training samples "
            f"of {cfg.dataset}; lower the batch size"
        )

    torch.manual_seed(cfg.seed)  # same seed => same initial weights for every method
    norm, input_norm = cfg.norms
    model = build_model(cfg.model, data.ds.in_shape, data.ds.num_classes, norm=norm, input_norm=input_norm)
    opt = make_optimizer(cfg, model.parameters())
    params = [p for p in model.parameters() if p.requires_grad]
    n_bn_layers = sum(1 for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))

    log, epochs, status, diverged_at = StepLog(), [], "ok", None
    plan = make_batch_plan(x_train.shape[0], cfg.batch_size, seed=cfg.seed)
    total_steps = plan.shape[0] * cfg.epochs
    probe = _ShiftProbe(model, x_train[:256], total_steps, cfg.probe_points)
    probe.maybe(0)
    sel_layers = switched_layers(model, cfg.scope)  # switched on/off per step
    # the batch scorer, fitted once on the training inputs where it needs fitting (pre-training work)
    scorer = fit_scorer(cfg.scorer, x_train) if METHODS[cfg.method].selection != "all" else None
    bar = _progress(cfg, total_steps, progress)
    loop_time = 0.0  # seconds in the step loops (with the probe's checkpoints; no selection or evaluation)
    for epoch in range(cfg.epochs):
        if cfg.reform_batches and epoch > 0:
            plan = make_batch_plan(x_train.shape[0], cfg.batch_size, seed=cfg.seed, epoch=epoch)
        if epoch == 0 or cfg.reform_batches:
            needs_bn, sel_info = _selection(cfg, x_train, plan, epoch, scorer)
        model.train()
        loss_sum, correct = 0.0, 0
        t_loop = time.perf_counter()
        for i in range(plan.shape[0]):
            lr = lr_at(cfg, len(log), total_steps)
            for group in opt.param_groups:  # the schedule's rate for this step
                group["lr"] = lr
            idx = plan[i]
            xb, yb = x_train[idx], y_train[idx]
            with selective_bn(sel_layers, enabled=bool(needs_bn[i])):
                out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            lv, gv = loss.item(), gnorm.item()
            log.add(lv, gv, bool(needs_bn[i]), lr)
            if not (math.isfinite(lv) and math.isfinite(gv)):
                status, diverged_at = "diverged", len(log) - 1
                break
            opt.step()
            probe.maybe(len(log))
            loss_sum += lv
            correct += (out.argmax(1) == yb).sum()  # a tensor: one .item() per epoch
            bar.update(1)
        loop_time += time.perf_counter() - t_loop
        epochs.append(_epoch_record(model, cfg, data, epoch, loss_sum, int(correct), i + 1,
                                    needs_bn if n_bn_layers else None, sel_info))
        bar.set_postfix(val_acc=f"{epochs[-1]['val_acc']:.3f}" if epochs[-1]["val_acc"] is not None else "-")
        if status == "diverged":
            break
    bar.close()
    return finish_record(cfg, model, data, epochs, log, plan.shape[0], status, diverged_at, probe.record(),
                         sel_info.get("threshold"), n_bn_layers, t0, loop_time, scorer=scorer)


def _epoch_record(model, cfg, data: TrainingData, epoch: int, loss_sum: float, correct: int, n_steps: int,
                  needs_bn, sel_info: dict) -> dict:
    """One epoch's line of the record: training loss and accuracy on the batches as trained, and
    validation accuracy and loss (None without a validation split)."""
    val_acc, val_loss = (evaluate(model, data.x_val, data.y_val, cfg.eval_batch_size)
                         if data.x_val.shape[0] else (None, None))
    return {"epoch": epoch, "train_loss": loss_sum / n_steps, "train_acc": correct / (n_steps * cfg.batch_size),
            "val_acc": val_acc, "val_loss": val_loss,
            "frac_normalized": float(np.mean(needs_bn)) if needs_bn is not None else 0.0, **sel_info}


def finish_record(cfg, model, data: TrainingData, epochs, log: StepLog, steps_per_epoch: int, status, diverged_at,
                  probe: dict, threshold, n_bn_layers: int, t0: float, loop_time: float, scorer=None) -> dict:
    """The result record of a trained model: final test accuracy (the only time the test set is
    read), inference policies, BN counts, compact step series and their metrics, provenance.
    ``scorer``: the run's batch scorer as fitted for training (None: fitted again here)."""
    test_acc, test_loss = evaluate(model, data.x_test, data.y_test, cfg.eval_batch_size)
    x_probe = data.x_train[:1000]
    inference = {"running_stats_drift": _running_stat_drift(model, x_probe) if n_bn_layers else None}
    if any(True for _ in selective_layers(model)):
        scorer = fit_scorer(cfg.scorer, data.x_train) if scorer is None else scorer
        inference.update(_inference_policies(model, cfg, data.x_test, data.y_test, threshold, scorer))
    n_on, n_steps = int(np.sum(log.bn_on)), len(log)
    counts = bn_counts(model)
    if counts["layers"] == 0:  # plain nn.BatchNorm (or none/gn): every layer ran on every batch
        counts = {"layers": n_bn_layers, "layer_batches_normalized": n_bn_layers * n_steps,
                  "layer_batches_skipped": 0}
    return {
        "schema_version": SCHEMA_VERSION,
        "config": config_dict(cfg),
        "config_hash": config_hash(cfg),
        "status": status,
        "diverged_at_step": diverged_at,
        "final_test_acc": test_acc,
        "final_test_loss": test_loss,
        "final_val_acc": epochs[-1]["val_acc"],
        "final_train_acc": epochs[-1]["train_acc"],
        "epochs": epochs,
        "steps": log.compact(),
        "metrics": log.metrics(steps_per_epoch, status == "diverged"),
        "probe": probe,
        "inference": inference,
        "bn": {**counts, "batches_normalized": n_on if n_bn_layers else 0,
               "batches_skipped": (n_steps - n_on) if n_bn_layers else 0,
               "frac_normalized": (n_on / n_steps) if (n_bn_layers and n_steps) else 0.0},
        "data": {**portable(data.ds.provenance), "n_train_used": int(data.x_train.shape[0]),
                 "n_val": int(data.x_val.shape[0])},
        "produced": produced(),  # the commit and time that made these numbers (tables quote it)
        "wall_time_s": time.perf_counter() - t0,
        "loop_time_s": loop_time,
        "versions": {"sbnlib": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }


def _progress(cfg: TrainConfig, total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, leave=False, unit="step",
                desc=f"{cfg.dataset} {cfg.method} B={cfg.batch_size} seed={cfg.seed}")
