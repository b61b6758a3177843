"""Packed training: the S seeds of one configuration trained together as one wide model.

A sweep is many small runs that differ only in the seed. At small batch sizes a training step of
these small models is mostly per-operation overhead, so S seeds cost little more than one when
every operation of a step works on all S at once:

* convolutions become one grouped convolution (``groups=S``): seed ``s``'s input batch sits in
  channel block ``s`` of an ``(N, S*C, H, W)`` tensor and never meets another seed's channels;
* normalisation is per channel (BN) or per group of channels (GN), so BN over ``S*C`` channels is
  exactly S per-seed BNs and GN with ``S*G`` groups is S per-seed GNs (:class:`PackedBatchNorm`
  adds what is per seed on top: the selective switch, ``num_batches_tracked`` and the counters);
* a linear layer becomes S matrix products in one batched one (:class:`PackedLinear`);
* the loss is the *sum* over seeds of each seed's mean cross-entropy, so each seed's gradient is
  its own, and SGD (momentum, Nesterov and weight decay act elementwise) over the packed
  parameters is S independent optimizers.

Every packed tensor is the S single tensors stacked along a new first axis and flattened into the
existing first axis (``(S*out, in, k, k)`` for a convolution, ``(S,)`` for a scalar such as
``num_batches_tracked``), so :func:`pack` and :func:`unpack` are one rule applied to state dicts:
the single models keep being the reference, built exactly as the single-seed trainer builds them,
and evaluation, the shift probe and the inference policies run on the unpacked models.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..batches import make_batch_plan
from ..layers import SKIP_MODES, _SelectiveBatchNorm
from ..scoring import fit_scorer
from .config import METHODS, config_hash, lr_at
from .models import build_model
from .packed_sgd import _step_except, seed_grad_norms
from .probes import _ShiftProbe, switched_layers
from .records import StepLog, _epoch_record, finish_record
from .train import TrainingData, _progress, _selection, make_optimizer, training_data

# images per packed step (seeds x batch size) up to which packing pays on this CPU (cnn_s, MNIST):
# at B=32 two packed seeds were slower than two single runs (outputs/BENCH.md, section 5). It sets
# the size of the groups a sweep forms, and a packed run's last float bits may depend on that size
# (train_packed), so the committed runs hold only with this value: change it with a rerun.
PACK_IMAGES = 32

__all__ = ["PACK_IMAGES", "pack_size", "train_packed", "PackedLinear", "PackedBatchNorm", "PackedModel", "pack",
           "unpack", "pack_inputs", "seed_grad_norms"]

# modules without parameters or buffers: the packed network uses them as they are (they act per
# channel or per sample, so they never mix seeds)
_STATELESS = (nn.Identity, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Sequential)


class PackedLinear(nn.Module):
    """S independent ``nn.Linear(in_features, out_features)``: input ``(N, S*in)``, output ``(N, S*out)``.

    ``weight`` is ``(S*out, in)``: seed ``s``'s matrix is rows ``s*out .. (s+1)*out``, as a grouped
    convolution stores its groups.
    """

    def __init__(self, num_seeds: int, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.num_seeds, self.in_features, self.out_features = num_seeds, in_features, out_features
        kw = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(num_seeds * out_features, in_features, **kw))
        self.bias = nn.Parameter(torch.empty(num_seeds * out_features, **kw)) if bias else None

    def forward(self, input: Tensor) -> Tensor:
        s, i, o = self.num_seeds, self.in_features, self.out_features
        x = input.unflatten(1, (s, i)).transpose(0, 1)  # (S, N, in)
        w = self.weight.view(s, o, i).transpose(1, 2)  # (S, in, out)
        y = torch.bmm(x, w) if self.bias is None else torch.baddbmm(self.bias.view(s, 1, o), x, w)
        return y.transpose(0, 1).flatten(1)

    def extra_repr(self) -> str:
        return f"num_seeds={self.num_seeds}, in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class PackedBatchNorm(_BatchNorm):
    """S independent BN layers of ``num_features`` channels as one BN of ``S*num_features`` channels.

    Batch statistics are per channel, so the normalisation itself is plain ``F.batch_norm``. What is
    per seed on top, each a length-S tensor:

    * ``enabled`` (bool): for a selective layer (``skip_mode`` ``"identity"`` or ``"frozen"``),
      whether seed ``s``'s current batch is normalised; a skipped seed gets exactly what
      :class:`sbnlib.layers.SelectiveBatchNorm2d` does when disabled (its input unchanged, or its
      running statistics and affine applied), and its running statistics, ``num_batches_tracked``
      and counters are left untouched. A plain BN layer (``skip_mode=None``) normalises always.
    * ``num_batches_tracked`` (a buffer) and the counters ``n_normalized`` / ``n_skipped`` (plain
      attributes, as in the single layer; counted in training mode only).

    ``momentum=None`` (a cumulative average, whose factor depends on each seed's own count) is not
    supported: every layer the models create uses a fixed momentum.
    """

    def __init__(self, num_seeds: int, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_running_stats: bool = True, skip_mode: str | None = None,
                 device=None, dtype=None) -> None:
        if momentum is None:
            raise ValueError("PackedBatchNorm needs a fixed momentum (momentum=None averages per seed count)")
        if skip_mode not in (None,) + SKIP_MODES:
            raise ValueError(f"unknown skip_mode {skip_mode!r}; choose None or one of {list(SKIP_MODES)}")
        super().__init__(num_seeds * num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.num_seeds, self.seed_features, self.skip_mode = num_seeds, num_features, skip_mode
        if track_running_stats:  # one count per seed instead of _BatchNorm's scalar
            self.register_buffer("num_batches_tracked", torch.zeros(num_seeds, dtype=torch.long, device=device))
        self.enabled = torch.ones(num_seeds, dtype=torch.bool)
        self.n_normalized = torch.zeros(num_seeds, dtype=torch.long)
        self.n_skipped = torch.zeros(num_seeds, dtype=torch.long)

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2 or input.shape[1] != self.num_features:
            raise ValueError(f"expected input (N, {self.num_features}, ...), got {tuple(input.shape)}")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        on = self.enabled if self.skip_mode is not None else torch.ones_like(self.enabled)
        n_on = int(on.sum())
        if self.training:
            self.n_normalized += on
            self.n_skipped += ~on
        update = self.training and self.track_running_stats
        batch_stats = self.training or not self.track_running_stats
        if n_on == self.num_seeds:  # the common case: exactly nn.BatchNorm's forward
            if update:
                self.num_batches_tracked += 1
            return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                                batch_stats, self.momentum, self.eps)
        skipped = input if self.skip_mode == "identity" else F.batch_norm(
            input, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        if n_on == 0:
            return skipped
        # Mixed: normalise every channel, keep the skipped seeds' output and running statistics.
        # F.batch_norm updates the running statistics it is given in place, so it gets copies; the
        # buffers are then replaced, not overwritten ("frozen" saved them for its backward pass).
        ch = on.repeat_interleave(self.seed_features)
        mean, var = (None, None) if not self.track_running_stats else (
            self.running_mean.clone(), self.running_var.clone())
        normalised = F.batch_norm(input, mean, var, self.weight, self.bias, batch_stats, self.momentum, self.eps)
        if update:
            self.running_mean = torch.where(ch, mean, self.running_mean)
            self.running_var = torch.where(ch, var, self.running_var)
            self.num_batches_tracked += on
        return torch.where(ch.view((1, -1) + (1,) * (input.dim() - 2)), normalised, skipped)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_seeds={self.num_seeds}, skip_mode={self.skip_mode}"


def _packed_layer(m: nn.Module, s: int) -> nn.Module:
    """The packed counterpart of one single-seed layer, its tensors uninitialised (on ``meta``)."""
    meta = dict(device="meta")
    if isinstance(m, nn.Conv2d):
        return nn.Conv2d(s * m.in_channels, s * m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                         s * m.groups, m.bias is not None, m.padding_mode, **meta)
    if isinstance(m, nn.Linear):
        return PackedLinear(s, m.in_features, m.out_features, m.bias is not None, **meta)
    if isinstance(m, _BatchNorm):
        return PackedBatchNorm(s, m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
                               getattr(m, "skip_mode", None), **meta)
    if isinstance(m, nn.GroupNorm):
        return nn.GroupNorm(s * m.num_groups, s * m.num_channels, m.eps, m.affine, **meta)
    raise TypeError(f"cannot pack a {type(m).__name__}: packed layers exist for Conv2d, Linear, BatchNorm, "
                    "GroupNorm and stateless modules")


def _pack_children(module: nn.Module, s: int) -> None:
    for name, child in module.named_children():
        if isinstance(child, _STATELESS):
            _pack_children(child, s)
        else:
            setattr(module, name, _packed_layer(child, s))


class PackedModel(nn.Module):
    """S copies of one architecture as one network: input ``(N, S*C, H, W)`` (:func:`pack_inputs`),
    output ``(N, S, num_classes)``. ``template`` (not a submodule) is a single model of the same
    architecture, copied by :func:`unpack`."""

    def __init__(self, net: nn.Module, num_seeds: int, template: nn.Module) -> None:
        super().__init__()
        self.net, self.num_seeds = net, num_seeds
        self.__dict__["template"] = template  # outside the module tree: no parameters, no state_dict entry

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).unflatten(1, (self.num_seeds, -1))


def pack_inputs(x: Tensor) -> Tensor:
    """``(N, S, C, ...)`` (seed ``s``'s batch at ``[:, s]``) -> ``(N, S*C, ...)``, seed ``s`` in channel block ``s``."""
    return x.flatten(1, 2)


def pack(models: Sequence[nn.Module]) -> PackedModel:
    """One packed model from S single models of the same architecture (weights, running statistics,
    ``num_batches_tracked`` and selective-BN counters copied; training mode of the first)."""
    models = list(models)
    s, template = len(models), models[0]
    states = [m.state_dict() for m in models]
    if any(st.keys() != states[0].keys() or any(st[k].shape != states[0][k].shape for k in st) for st in states):
        raise ValueError("pack needs models of one architecture (same state_dict keys and shapes)")
    net = copy.deepcopy(template)
    _pack_children(net, s)
    net.to_empty(device="cpu")
    # seed axis first, then merged into the existing first axis (scalars become (S,))
    net.load_state_dict({k: torch.stack([st[k] for st in states]).flatten(0, 1) if v.dim() else
                         torch.stack([st[k] for st in states]) for k, v in states[0].items()})
    conv = next((m for m in template.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and conv.weight.is_contiguous(memory_format=torch.channels_last):
        net.to(memory_format=torch.channels_last)  # as the single models (SmallCNN keeps NHWC)
    for name, m in template.named_modules():
        if isinstance(m, _SelectiveBatchNorm):
            p = net.get_submodule(name)
            p.n_normalized = torch.tensor([mm.get_submodule(name).n_normalized for mm in models])
            p.n_skipped = torch.tensor([mm.get_submodule(name).n_skipped for mm in models])
    net.train(template.training)
    return PackedModel(net, s, copy.deepcopy(template))


@torch.no_grad()
def unpack(packed: PackedModel, into: Sequence[nn.Module] | None = None,
           seeds: Sequence[int] | None = None) -> List[nn.Module]:
    """Single models of the packed seeds ``seeds`` (positions, all by default): weights, running
    statistics, ``num_batches_tracked`` and selective-BN counters, loaded into the models ``into``
    (one per seed, overwritten) or into copies of the template."""
    s = packed.num_seeds
    seeds = range(s) if seeds is None else seeds
    models = list(into) if into is not None else [copy.deepcopy(packed.template) for _ in seeds]
    state = packed.net.state_dict()
    shapes = {k: v.shape for k, v in packed.template.state_dict().items()}
    for i, m in zip(seeds, models):
        m.load_state_dict({k: v.reshape(s, *shapes[k])[i] for k, v in state.items()})
        for name, layer in m.named_modules():
            if isinstance(layer, _SelectiveBatchNorm):
                p = packed.net.get_submodule(name)
                layer.n_normalized, layer.n_skipped = int(p.n_normalized[i]), int(p.n_skipped[i])
    return models


def pack_size(batch_size: int) -> int:
    """How many seeds of a configuration to pack together: as many as keep a packed step within
    :data:`PACK_IMAGES` images. Packing removes per-operation overhead, which dominates small
    batches; beyond that the packed activations outgrow the CPU caches and a packed step is
    slower than the single steps it replaces (``bench/bench_suite.py --only packed``)."""
    return max(1, PACK_IMAGES // batch_size)


def _check_group(cfgs: Sequence) -> None:
    """The configurations of one packed group differ in nothing but their seeds and learning rates."""

    if not cfgs:
        raise ValueError("train_packed needs at least one configuration")
    if any(c.engine != "packed" for c in cfgs):
        raise ValueError("train_packed trains configurations with engine='packed' (the records say which engine ran)")
    rest = [dataclasses.replace(c, seed=0, lr=0.0) for c in cfgs]
    if any(r != rest[0] for r in rest):
        raise ValueError("a packed group's configurations must differ only in the seed and the learning rate")
    runs = [(c.seed, c.lr) for c in cfgs]
    if len(set(runs)) != len(runs):
        raise ValueError(f"a packed group's (seed, learning rate) pairs must be distinct, got {runs}")


class _Seed:
    """What a single run keeps, for one seed of a packed group: its configuration, its single
    model (the packed seed's state is unpacked into it to evaluate and probe), plan, selection,
    step log, epoch lines, status and probe."""

    def __init__(self, cfg, model, plan, x_probe, total_steps):

        self.cfg, self.model, self.plan = cfg, model, plan
        self.log, self.epochs, self.status, self.diverged_at = StepLog(), [], "ok", None
        self.probe = _ShiftProbe(model, x_probe, total_steps, cfg.probe_points)
        self.needs_bn, self.sel_info, self.loss_sum = None, {}, 0.0

    def end_epoch(self, data, epoch: int, correct: int, steps: int, n_bn_layers: int) -> None:
        """Append the epoch line of its single model (unpacked beforehand) after ``steps`` steps."""
        self.epochs.append(_epoch_record(self.model, self.cfg, data, epoch, self.loss_sum, correct, steps,
                                         self.needs_bn if n_bn_layers else None, self.sel_info))


@dataclass
class _Group:
    """What the packed step loop touches: the seeds, the packed model (``forward`` is it or its
    compiled version) and its optimiser, the layers switched per step and the run's data."""

    runs: list  # one _Seed per packed seed, a ghost copy included
    packed: PackedModel
    forward: object
    opt: torch.optim.Optimizer
    params: list  # the trainable packed parameters, for the per-seed gradient norms
    sel_layers: list  # the packed layers switched on/off per step (the selection scope)
    identity_layers: list  # those of them that skip as identity and have affine parameters
    data: TrainingData
    scorer: object  # the batch scorer, fitted once (None where every batch is normalised)
    n_bn_layers: int
    n_batches: int
    total_steps: int
    dead: Tensor  # (S,) bool: seeds whose run has ended (diverged)


def _setup_group(cfgs: Sequence, data: TrainingData, compile: bool) -> _Group:
    """Build each seed's single model as its single run does, pack them, and set up the group."""
    first, x_train = cfgs[0], data.x_train
    if first.batch_size > x_train.shape[0]:
        raise ValueError(f"batch_size={first.batch_size} is larger than the {x_train.shape[0]} training "
                         f"samples of {first.dataset}; lower the batch size")
    singles = []
    for c in cfgs:
        torch.manual_seed(c.seed)  # each seed's initial weights exactly as its single run's
        norm, input_norm = c.norms
        singles.append(build_model(c.model, data.ds.in_shape, data.ds.num_classes, norm=norm, input_norm=input_norm))
    packed = pack(singles)
    forward = torch.compile(packed) if compile else packed
    opt = make_optimizer(first, packed.parameters())  # elementwise: S optimizers in one
    params = [p for p in packed.parameters() if p.requires_grad]
    # the packed counterparts of the layers a single run switches per step (the scope's)
    names = {id(m): name for name, m in singles[0].named_modules()}
    sel_layers = [packed.net.get_submodule(names[id(m)]) for m in switched_layers(singles[0], first.scope)]
    scorer = fit_scorer(first.scorer, x_train) if METHODS[first.method].selection != "all" else None
    identity_layers = [m for m in sel_layers if m.skip_mode == "identity" and m.affine]
    n_bn_layers = sum(1 for m in singles[0].modules() if isinstance(m, _BatchNorm))
    n_batches = x_train.shape[0] // first.batch_size
    total_steps = n_batches * first.epochs
    runs = [_Seed(c, m, make_batch_plan(x_train.shape[0], c.batch_size, seed=c.seed), x_train[:256], total_steps)
            for c, m in zip(cfgs, singles)]
    for r in runs:
        r.probe.maybe(0)
    return _Group(runs, packed, forward, opt, params, sel_layers, identity_layers, data, scorer, n_bn_layers,
                  n_batches, total_steps, torch.zeros(len(cfgs), dtype=torch.bool))


def _fill_group(cfgs: list, group: Sequence[str] | None) -> tuple:
    """The group to train ``cfgs`` in: ``(configurations, member hashes)``, both of the group's size.

    Without ``group`` the group is ``cfgs`` (a lone seed whose batch size packs is joined by a copy
    of itself, so it runs the kernels of a group). ``group`` is the member hashes of the group the
    runs were first trained in (a ghost slot repeats its group's first hash): ``cfgs`` are padded
    with copies of the first to its size, and their records list it."""
    hashes = [config_hash(c) for c in cfgs]
    if group is None:
        size = 2 if len(cfgs) == 1 and pack_size(cfgs[0].batch_size) > 1 else len(cfgs)
        group = hashes + hashes[:1] * (size - len(cfgs))
    elif len(group) < len(cfgs) or not set(hashes) <= set(group):
        raise ValueError(f"the configurations {hashes} are not members of the group {list(group)}")
    return cfgs + cfgs[:1] * (len(group) - len(cfgs)), list(group)


def train_packed(cfgs: Sequence, root=None, dataset=None, progress: bool = False, compile: bool = False,
                 group: Sequence[str] | None = None) -> List[dict]:
    """Train the seeds ``cfgs`` of one configuration (``engine="packed"``) as one packed model;
    one record per seed, in ``cfgs`` order, as :func:`sbnlib.experiments.train.train` writes it.

    Per seed, everything is what its single run has: initial weights (``torch.manual_seed(seed)``,
    then ``build_model``), batch plan, selection decisions, optimizer state, learning-rate
    schedule, per-step loss and gradient norm (its own parameters), BN decisions and counts, shift
    probe, evaluation. A seed whose loss or gradient norm is not finite ends there
    (``status="diverged"``), as its single run would, while the others go on. The numbers equal
    the single runs' up to float rounding (a grouped convolution sums in another order than a
    plain one). A seed's numbers do not depend on *which* seeds or learning rates are packed beside
    it, but they may depend on *how many*, in the last float bits: with S times the channels some
    of torch's CPU kernels sum in another order (measured on MNIST's 28x28 images: the loss's mean
    over the batch and the head's bias gradient at B=8 for S=2 against S=4, the convolution and BN
    gradients of the first blocks for S=16 against S=2). Each record therefore lists its group's
    members (``packed_group``, their configuration hashes, one per slot);
    ``group`` retrains runs whose files were lost in a group of the size they had, beside copies of
    the first (:func:`_fill_group`; :func:`sbnlib.experiments.sweep.run_configs` does this), so
    their records come back bitwise.
    ``wall_time_s`` and ``loop_time_s`` are the group's divided by its size.
    ``compile=True`` runs the training steps' forward pass through ``torch.compile`` (on this CPU
    it is slower, compile time aside: ``bench/bench_suite.py --only packed``).
    """
    cfgs = [c.validate() for c in cfgs]
    _check_group(cfgs)
    wanted = len(cfgs)
    cfgs, members = _fill_group(cfgs, group)  # ghost copies of the first, trained alongside and dropped
    first = cfgs[0]
    t0 = time.perf_counter()
    g = _setup_group(cfgs, training_data(first, root, dataset), compile)
    bar = _progress(first, g.total_steps, progress)
    loop_time = 0.0  # seconds in the step loops (with the probe's checkpoints; no selection or evaluation)
    for epoch in range(first.epochs):
        for r in g.runs:
            if first.reform_batches and epoch > 0:  # a new batch order every epoch, re-scored below
                r.plan = make_batch_plan(g.data.x_train.shape[0], r.cfg.batch_size, seed=r.cfg.seed, epoch=epoch)
            if epoch == 0 or first.reform_batches:  # the selection is made before the steps it governs
                r.needs_bn, r.sel_info = _selection(r.cfg, g.data.x_train, r.plan, epoch, g.scorer)
            r.loss_sum = 0.0
        t_loop = time.perf_counter()
        correct = _packed_epoch(g, epoch, bar)
        loop_time += time.perf_counter() - t_loop
        live = _unpack_live(g)
        for k in live:
            g.runs[k].end_epoch(g.data, epoch, int(correct[k]), g.n_batches, g.n_bn_layers)
        if not live:
            break
    bar.close()
    records = [finish_record(r.cfg, r.model, g.data, r.epochs, r.log, g.n_batches, r.status, r.diverged_at,
                             r.probe.record(), r.sel_info.get("threshold"), g.n_bn_layers, t0, loop_time / wanted,
                             scorer=g.scorer)
               for r in g.runs[:wanted]]
    for rec in records:  # the group's time, shared by its runs
        rec["wall_time_s"] = (time.perf_counter() - t0) / wanted
        # the group's members, one per slot: its size is the kernels' width, on which a seed's last
        # bits may depend, so a lost member is retrained at that width (run_configs)
        rec["packed_group"] = members
    return records


def _packed_epoch(g: _Group, epoch: int, bar) -> Tensor:
    """One pass over the seeds' batch plans, one packed step per batch; returns each seed's correct count
    (the pass ends early when every seed has diverged)."""
    plans = torch.stack([r.plan for r in g.runs], 1)  # (batches, S, B)
    needs = torch.from_numpy(np.stack([r.needs_bn for r in g.runs], 1))  # (batches, S)
    n = len(g.runs)
    correct = torch.zeros(n, dtype=torch.long)
    g.packed.train()
    for i in range(g.n_batches):
        step = epoch * g.n_batches + i
        lr = [lr_at(r.cfg, step, g.total_steps) for r in g.runs]  # each seed's schedule, at its own peak
        idx = plans[i].T  # (B, S): seed s's batch in column s
        on = needs[i]  # (S,): whether each seed's batch i is normalised, as decided before training
        for m in g.sel_layers:
            m.enabled = on
        out = g.forward(pack_inputs(g.data.x_train[idx]))  # (B, S, classes)
        yb = g.data.y_train[idx]
        # each seed's mean cross-entropy; their sum gives each seed its own gradient
        losses = F.cross_entropy(out.transpose(1, 2), yb, reduction="none").mean(0)
        g.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        lv, gv = losses.tolist(), seed_grad_norms(g.params, n).tolist()
        _log_step(g, epoch, i, lv, gv, on, lr, correct)
        if bool(g.dead.all()):
            break  # every seed's run has ended
        frozen = [(p, g.dead) for p in g.params] if bool(g.dead.any()) else []
        if g.identity_layers and 0 < int(on.sum()) < n:  # seeds that skipped an identity layer: no update there
            frozen += [(p, ~on | g.dead) for m in g.identity_layers for p in (m.weight, m.bias)]
        _step_except(g.opt, torch.tensor(lr, dtype=torch.float32), frozen, n)
        correct += (out.argmax(2) == yb).sum(0)
        for k, r in enumerate(g.runs):
            r.loss_sum += lv[k]
        if any(step + 1 in r.probe.at for r in g.runs):  # the probe's checkpoints fall on fixed global steps
            for k in _unpack_live(g):
                g.runs[k].probe.maybe(step + 1)
        bar.update(1)
    return correct


def _log_step(g: _Group, epoch: int, i: int, lv: list, gv: list, on: Tensor, lr: list, correct: Tensor) -> None:
    """Log step ``i`` of every seed still running; a seed whose loss or gradient norm is not finite ends."""
    for k, r in enumerate(g.runs):
        if g.dead[k]:
            continue
        r.log.add(lv[k], gv[k], bool(on[k]), lr[k])
        if not (math.isfinite(lv[k]) and math.isfinite(gv[k])):
            # the single run stops before this step's update: its model is the packed
            # seed's as it is now, and its last epoch ends here
            r.status, r.diverged_at = "diverged", len(r.log) - 1
            unpack(g.packed, into=[r.model], seeds=[k])
            r.end_epoch(g.data, epoch, int(correct[k]), i + 1, g.n_bn_layers)
            g.dead[k] = True


def _unpack_live(g: _Group) -> list:
    """Unpack the seeds still running into their single models; returns their positions."""
    live = [k for k in range(len(g.runs)) if not g.dead[k]]
    unpack(g.packed, into=[g.runs[k].model for k in live], seeds=live)
    return live
