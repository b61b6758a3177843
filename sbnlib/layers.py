"""Selective Batch Normalization.

:class:`SelectiveBatchNorm1d` / :class:`SelectiveBatchNorm2d` are drop-in replacements for
:class:`torch.nn.BatchNorm1d` / :class:`torch.nn.BatchNorm2d` with one extra switch, ``enabled``,
that says whether *the current training batch* is normalised. The decision is made before
training, per batch, by the threshold classifier (:mod:`sbnlib.threshold`); the trainer sets it
for every layer of a model with the :func:`selective_bn` context manager.

Semantics, spelled out:

* **training, enabled**: exactly ``nn.BatchNorm`` (this class calls its ``forward``): batch
  statistics normalise the input; running mean/var and ``num_batches_tracked`` are updated.
  Outputs, gradients and buffers are bitwise those of PyTorch's layer.
* **training, disabled** (the batch does not need BN), by ``skip_mode``:

  - ``"identity"`` (the paper's reading): the input passes through unchanged; no affine
    transform; running statistics and ``num_batches_tracked`` are left untouched.
  - ``"frozen"``: normalise with the current running statistics and apply the affine
    transform, without updating them (gradients still reach ``weight`` and ``bias``).

* **eval, enabled** (the default): exactly ``nn.BatchNorm`` in eval mode (running statistics
  when tracked).
* **eval, disabled**: the skip mode again (``"identity"`` passes the input through, ``"frozen"``
  normalises with the running statistics, which is what eval mode does anyway). This lets an
  inference policy skip BN on test batches too (see :mod:`sbnlib.experiments.train`); left at its default,
  a selective layer in eval mode is plain BN.

Each layer counts, in training mode only, how many batches it normalised (``n_normalized``) and
skipped (``n_skipped``): the paper's "internal variable transformations". The counters are plain
attributes, not buffers, so ``state_dict`` keys are exactly those of ``nn.BatchNorm`` and
checkpoints load both ways.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "SKIP_MODES",
    "SelectiveBatchNorm1d",
    "SelectiveBatchNorm2d",
    "SelectiveBatchNorm3d",
    "selective_bn",
    "convert_to_selective",
    "selective_layers",
    "bn_counts",
    "reset_bn_counts",
]

SKIP_MODES = ("identity", "frozen")


class _SelectiveBatchNorm(_BatchNorm):
    """Base class: ``_BatchNorm`` plus a per-batch on/off switch (see the module docstring)."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        skip_mode: str = "identity",
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        if skip_mode not in SKIP_MODES:
            raise ValueError(f"unknown skip_mode {skip_mode!r}; choose one of {list(SKIP_MODES)}")
        if skip_mode == "frozen" and not track_running_stats:
            raise ValueError(
                "skip_mode='frozen' normalises skipped batches with the running statistics, "
                "so it needs track_running_stats=True"
            )
        self.skip_mode = skip_mode
        self.enabled = True
        self.n_normalized = 0
        self.n_skipped = 0

    def forward(self, input: Tensor) -> Tensor:
        if self.enabled:
            if self.training:
                self.n_normalized += 1
            return super().forward(input)
        self._check_input_dim(input)
        if self.training:
            self.n_skipped += 1
        if self.skip_mode == "identity":
            return input
        return F.batch_norm(
            input, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, skip_mode={self.skip_mode}"


class SelectiveBatchNorm1d(_SelectiveBatchNorm):
    """Selective counterpart of :class:`torch.nn.BatchNorm1d`: input ``(N, C)`` or ``(N, C, L)``."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


class SelectiveBatchNorm2d(_SelectiveBatchNorm):
    """Selective counterpart of :class:`torch.nn.BatchNorm2d`: input ``(N, C, H, W)``."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")


class SelectiveBatchNorm3d(_SelectiveBatchNorm):
    """Selective counterpart of :class:`torch.nn.BatchNorm3d`: input ``(N, C, D, H, W)``."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 5:
            raise ValueError(f"expected 5D input (got {input.dim()}D input)")


_SELECTIVE_FOR = {
    nn.BatchNorm1d: SelectiveBatchNorm1d,
    nn.BatchNorm2d: SelectiveBatchNorm2d,
    nn.BatchNorm3d: SelectiveBatchNorm3d,
}


def selective_layers(model: nn.Module) -> Iterator[_SelectiveBatchNorm]:
    """Every selective BN layer of ``model``, in module order."""
    return (m for m in model.modules() if isinstance(m, _SelectiveBatchNorm))


@contextmanager
def selective_bn(model, enabled: bool):
    """Set the normalise/skip decision of every selective BN layer of ``model`` for one step.

    >>> with selective_bn(model, enabled=bool(needs_bn[step])):
    ...     loss = criterion(model(x), y)
    ...     loss.backward()

    The previous decisions are restored on exit. Layers are only *called* inside the forward pass,
    so the backward pass may run inside or outside the block with the same result. ``model`` may
    also be a list of the layers (``list(selective_layers(model))``), which a training loop can
    compute once instead of walking the modules at every step.
    """
    layers = list(selective_layers(model)) if isinstance(model, nn.Module) else list(model)
    previous = [layer.enabled for layer in layers]
    for layer in layers:
        layer.enabled = bool(enabled)
    try:
        yield model
    finally:
        for layer, was in zip(layers, previous):
            layer.enabled = was


def convert_to_selective(module: nn.Module, skip_mode: str = "identity") -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` of ``module`` with its selective counterpart.

    Like ``nn.SyncBatchNorm.convert_sync_batchnorm``: the new layers take the hyper-parameters,
    the affine parameters (the same ``Parameter`` objects, so an existing optimizer keeps working)
    and copies of the running statistics and ``num_batches_tracked``; training mode is kept.
    Returns the converted module (a new object when ``module`` itself is a BN layer).
    """
    out = module
    cls = _SELECTIVE_FOR.get(type(module))
    if cls is not None:
        out = cls(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            skip_mode=skip_mode,
        )
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        if module.track_running_stats:
            out.running_mean = module.running_mean.detach().clone()
            out.running_var = module.running_var.detach().clone()
            out.num_batches_tracked = module.num_batches_tracked.detach().clone()
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_to_selective(child, skip_mode))
    return out


def bn_counts(model: nn.Module) -> Dict[str, int]:
    """Totals over the selective layers of ``model``: batches normalised and skipped per layer.

    ``layer_batches_normalized`` / ``layer_batches_skipped`` sum over layers (one layer applied to
    one batch is one transformation); ``layers`` is the number of selective layers.
    """
    layers = list(selective_layers(model))
    return {
        "layers": len(layers),
        "layer_batches_normalized": sum(m.n_normalized for m in layers),
        "layer_batches_skipped": sum(m.n_skipped for m in layers),
    }


def reset_bn_counts(model: nn.Module) -> None:
    for m in selective_layers(model):
        m.n_normalized = 0
        m.n_skipped = 0
