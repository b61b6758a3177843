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
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .layers import SKIP_MODES, _SelectiveBatchNorm

__all__ = ["PackedLinear", "PackedBatchNorm", "PackedModel", "pack", "unpack", "pack_inputs", "seed_grad_norms"]

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

    def channel_mask(self, per_seed: Tensor, input: Tensor) -> Tensor:
        """A per-seed bool ``(S,)`` spread over the channels, shaped to broadcast against ``input``."""
        return per_seed.repeat_interleave(self.seed_features).view((1, -1) + (1,) * (input.dim() - 2))

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
        # F.batch_norm updates the running statistics it is given in place, so it gets copies and
        # only the normalised seeds' channels are copied back.
        ch = self.channel_mask(on, self.running_mean)
        mean, var = (None, None) if not self.track_running_stats else (
            self.running_mean.clone(), self.running_var.clone())
        normalised = F.batch_norm(input, mean, var, self.weight, self.bias, batch_stats, self.momentum, self.eps)
        if update:
            self.running_mean.copy_(torch.where(ch, mean, self.running_mean))
            self.running_var.copy_(torch.where(ch, var, self.running_var))
            self.num_batches_tracked += on
        return torch.where(self.channel_mask(on, input), normalised, skipped)

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
def unpack(packed: PackedModel, into: Sequence[nn.Module] | None = None) -> List[nn.Module]:
    """The S single models of ``packed`` (copies of its template, or the models ``into``, overwritten):
    weights, running statistics, ``num_batches_tracked`` and selective-BN counters."""
    s = packed.num_seeds
    models = list(into) if into is not None else [copy.deepcopy(packed.template) for _ in range(s)]
    state = packed.net.state_dict()
    shapes = {k: v.shape for k, v in packed.template.state_dict().items()}
    for i, m in enumerate(models):
        m.load_state_dict({k: v.reshape(s, *shapes[k])[i] for k, v in state.items()})
        for name, layer in m.named_modules():
            if isinstance(layer, _SelectiveBatchNorm):
                p = packed.net.get_submodule(name)
                layer.n_normalized, layer.n_skipped = int(p.n_normalized[i]), int(p.n_skipped[i])
    return models


def seed_grad_norms(params: Sequence[Tensor], num_seeds: int) -> Tensor:
    """Per seed, the global 2-norm of its own gradients, as ``torch.nn.utils.get_total_norm`` computes
    it for a single model (the norm of the per-tensor norms); parameters without a gradient are left out."""
    norms = [torch.linalg.vector_norm(p.grad.reshape(num_seeds, -1), dim=1) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms), dim=0)
