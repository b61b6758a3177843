"""What a training run is: its configuration (:class:`TrainConfig`, whose hash names the result
file), the methods, the scopes and the learning-rate schedule (:func:`lr_at`).

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
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Optional

from ..batches import SEED_MAX
from ..checks import check_int
from ..scoring import SCORERS
from ..threshold import STRATEGIES
from .models import MODELS


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
ENGINES = ("single", "packed")  # which trainer produced a record: train() or sbnlib.experiments.packed.train_packed
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
    engine: str = "single"  # "single": train(); "packed": packed.train_packed, the seeds of a configuration together

    def validate(self) -> "TrainConfig":
        def _int(name, lo=1, hi=2**31 - 1):  # a numpy integer is stored as an int (the hash is of JSON)
            setattr(self, name, check_int(getattr(self, name), name, lo, hi))

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
