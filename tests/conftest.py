import os
from pathlib import Path

import pytest
import torch

from sbnlib.data import Dataset

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """The offline datasets: $SBN_SHARED_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("SBN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data():
    root = shared_data_root()
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip(f"offline datasets not found at {root} (set SBN_SHARED_DATA)")
    return root


def make_toy_dataset(n_train=240, n_test=120, channels=1, size=8, classes=4, seed=0) -> Dataset:
    """A small learnable image task held as a real :class:`sbnlib.data.Dataset`.

    Each class is a fixed random template; samples are the template plus noise, with per-sample
    brightness gains so that batches differ in heterogeneity.
    """
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, channels, size, size, generator=g)

    def split(n):
        y = torch.arange(n) % classes
        gain = 0.3 + 1.4 * torch.rand(n, 1, 1, 1, generator=g)
        x = templates[y] * gain + 0.15 * torch.randn(n, channels, size, size, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y.to(torch.int64)

    xtr, ytr = split(n_train)
    xte, yte = split(n_test)
    f = xtr.float() / 255
    mean = tuple(f.mean(dim=(0, 2, 3)).tolist())
    std = tuple(f.std(dim=(0, 2, 3), correction=0).tolist())
    return Dataset("toy", xtr, ytr, xte, yte, [f"c{i}" for i in range(classes)], mean, std,
                   {"dataset": "toy", "status": "synthetic", "verified": False})


@pytest.fixture(scope="session")
def toy():
    ds = make_toy_dataset()
    return ds, ds.normalize(ds.x_train), ds.normalize(ds.x_test)
