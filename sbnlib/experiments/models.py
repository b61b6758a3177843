"""A small model family for the experiments: :class:`SmallCNN` and :class:`MLP`, built by name.

Models take ``norm="none" | "bn" | "sbn" | "sbn_frozen" | "gn"`` and nothing else changes: every
normalisation layer is made by :func:`sbnlib.norms.create_norm`.

``input_norm`` (same names; default ``"none"``) puts one more normalisation layer in front of the
network, on the input image's channels: BN as a preprocessing step of the input batch. With
``"none"`` nothing is added, so the model (its modules, parameters and initial weights) is exactly
the one without the option.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from torch import nn

from ..norms import NORM_LAYERS, create_norm

__all__ = ["MODELS", "build_model", "SmallCNN", "MLP"]


def _input_norm(name: str, in_channels: int) -> list:
    """The input normalisation layer as a list to splice into a model: empty for ``"none"``.
    It holds no random weights, so the layers after it start from the same weights either way."""
    return [] if name == "none" else [create_norm(name, in_channels, dims=2)]


class SmallCNN(nn.Module):
    """conv3x3 -> norm -> ReLU -> maxpool, once per width, then global average pool -> linear.

    For 1x28x28 (MNIST) and 3x32x32 (CIFAR) inputs alike. Convolutions before a normalisation
    layer keep their bias only when ``norm="none"`` (a bias before BN is redundant).

    Weights and activations are kept channels-last (NHWC in memory; shapes stay N, C, H, W):
    on this CPU that makes a training step 15-35% and an evaluation pass about 3x faster
    (``bench/bench_core.py``). Inputs may come in either layout.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (32, 64, 128), norm: str = "bn",
                 input_norm: str = "none"):
        super().__init__()
        layers, c = _input_norm(input_norm, in_channels), in_channels
        for w in widths:
            layers += [
                nn.Conv2d(c, w, 3, padding=1, bias=(norm == "none")),
                create_norm(norm, w, dims=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
        self.to(memory_format=torch.channels_last)

    def forward(self, x):
        return self.head(self.features(x.contiguous(memory_format=torch.channels_last)))


class MLP(nn.Module):
    """Flatten -> (linear -> norm -> ReLU) per hidden width -> linear; uses 1-D normalisation
    (the input normalisation, before the flatten, normalises the ``in_channels`` image channels)."""

    def __init__(self, in_features: int, num_classes: int, widths: Sequence[int] = (256, 128), norm: str = "bn",
                 input_norm: str = "none", in_channels: int = 1):
        super().__init__()
        layers, d = _input_norm(input_norm, in_channels) + [nn.Flatten()], in_features
        for w in widths:
            layers += [nn.Linear(d, w, bias=(norm == "none")), create_norm(norm, w, dims=1), nn.ReLU(inplace=True)]
            d = w
        layers.append(nn.Linear(d, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


MODELS = {
    "cnn_s": partial(SmallCNN, widths=(16, 32, 64)),
    "cnn": partial(SmallCNN, widths=(32, 64, 128)),
    "mlp": MLP,
}


def build_model(name: str, in_shape: Sequence[int], num_classes: int, norm: str = "bn",
                input_norm: str = "none") -> nn.Module:
    """Model ``name`` from :data:`MODELS` for inputs of shape ``in_shape`` = (C, H, W), with
    ``norm`` after every hidden layer and ``input_norm`` on the input channels."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    for n in (norm, input_norm):
        if n not in NORM_LAYERS:
            raise ValueError(f"unknown norm {n!r}; choose one of {sorted(NORM_LAYERS)}")
    if name == "mlp":
        d = 1
        for s in in_shape:
            d *= int(s)
        return MODELS[name](d, num_classes, norm=norm, input_norm=input_norm, in_channels=int(in_shape[0]))
    return MODELS[name](int(in_shape[0]), num_classes, norm=norm, input_norm=input_norm)
