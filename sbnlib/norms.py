"""The normalisation registry: every normalisation layer a model holds is made here, by name.

:func:`create_norm` looks the name up in :data:`NORM_LAYERS` (``none``, ``bn``, ``sbn``,
``sbn_frozen``, ``gn``); new normalisations are added with :func:`register_norm`, without touching
the models (the pattern of timm's ``layers/create_norm.py``).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict

from torch import nn

from .layers import SelectiveBatchNorm1d, SelectiveBatchNorm2d

# factory(num_channels, dims) -> nn.Module, where dims is 1 (N, C) or 2 (N, C, H, W)
NormFactory = Callable[[int, int], nn.Module]
NORM_LAYERS: Dict[str, NormFactory] = {}


def register_norm(name: str) -> Callable[[NormFactory], NormFactory]:
    def deco(fn: NormFactory) -> NormFactory:
        if name in NORM_LAYERS:
            raise ValueError(f"norm {name!r} is already registered")
        NORM_LAYERS[name] = fn
        return fn

    return deco


def create_norm(name: str, num_channels: int, dims: int = 2) -> nn.Module:
    """Normalisation layer ``name`` for ``num_channels`` channels of ``dims``-D features."""
    try:
        factory = NORM_LAYERS[name]
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; choose one of {sorted(NORM_LAYERS)}") from None
    return factory(num_channels, dims)


@register_norm("none")
def _none(num_channels: int, dims: int) -> nn.Module:
    return nn.Identity()


@register_norm("bn")
def _bn(num_channels: int, dims: int) -> nn.Module:
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(num_channels)


def _sbn(num_channels: int, dims: int, skip_mode: str) -> nn.Module:
    cls = SelectiveBatchNorm1d if dims == 1 else SelectiveBatchNorm2d
    return cls(num_channels, skip_mode=skip_mode)


register_norm("sbn")(partial(_sbn, skip_mode="identity"))
register_norm("sbn_frozen")(partial(_sbn, skip_mode="frozen"))


@register_norm("gn")
def _gn(num_channels: int, dims: int, max_groups: int = 8) -> nn.Module:
    """GroupNorm with the largest group count <= 8 that divides the channels (Wu & He, 2018)."""
    groups = max(g for g in range(1, max_groups + 1) if num_channels % g == 0)
    return nn.GroupNorm(groups, num_channels)
