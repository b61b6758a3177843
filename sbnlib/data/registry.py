"""The datasets: their specifications (:data:`DATASETS`, :data:`DERIVED`), the :class:`Dataset`
record load_dataset returns, and the errors of the data layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

ENV_ROOT = "SBN_DATA_ROOT"
DEFAULT_ROOT = "data"
_HOW_TO_PROVIDE = (
    f"To provide them: set {ENV_ROOT}, or pass --data-root (command line, run_all.sh), data_root=... (notebooks) "
    f"or root=... (load_dataset) naming a folder that holds this layout, "
    "or pass download=True (needs internet; CLI: --download) to fetch them with torchvision."
)
_REFETCH = "Delete it and fetch the dataset again (download=True, needs internet) or copy a good file in its place."


class DataError(Exception):
    """A dataset cannot be loaded; the message names the problem and the fix."""


class DataWarning(UserWarning):
    """The data loaded, but not as asked or not verifiably the official release."""


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives under the data root and how to read it.

    ``kind`` is ``"idx"`` (``train_files`` / ``test_files`` = (images, labels)) or ``"cifar"``
    (``train_files`` = the pickled batches concatenated in order, ``test_files`` = one batch).
    """

    name: str
    kind: str
    layout: str  # folder below the root, in torchvision's layout
    torchvision_class: str  # torchvision.datasets.<this> downloads it and knows its md5s
    train_files: Tuple[str, ...]
    test_files: Tuple[str, ...]
    in_shape: Tuple[int, int, int]
    num_classes: int
    classes: Tuple[str, ...] = ()  # IDX datasets; CIFAR class names come from the meta file
    meta_file: Optional[str] = None
    label_key: str = "labels"  # CIFAR: which labels to use
    names_key: str = "label_names"  # CIFAR meta: which class names to use

    @property
    def all_files(self) -> Tuple[str, ...]:
        return self.train_files + self.test_files + ((self.meta_file,) if self.meta_file else ())


_IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

DATASETS: Dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", kind="idx", layout="MNIST/raw", torchvision_class="MNIST",
        train_files=_IDX_TRAIN, test_files=_IDX_TEST, in_shape=(1, 28, 28), num_classes=10,
        # the names torchvision.datasets.MNIST.classes uses
        classes=("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
                 "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine"),
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist", kind="idx", layout="FashionMNIST/raw", torchvision_class="FashionMNIST",
        train_files=_IDX_TRAIN, test_files=_IDX_TEST, in_shape=(1, 28, 28), num_classes=10,
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "cifar10": DatasetSpec(
        name="cifar10", kind="cifar", layout="cifar-10-batches-py", torchvision_class="CIFAR10",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_files=("test_batch",),
        in_shape=(3, 32, 32), num_classes=10, meta_file="batches.meta",
        label_key="labels", names_key="label_names",
    ),
    "cifar100": DatasetSpec(
        name="cifar100", kind="cifar", layout="cifar-100-python", torchvision_class="CIFAR100",
        train_files=("train",), test_files=("test",),
        in_shape=(3, 32, 32), num_classes=100, meta_file="meta",
        label_key="fine_labels", names_key="fine_label_names",
    ),
}


def dataset_names() -> List[str]:
    """Every name :func:`load_dataset` accepts: the file-backed datasets and the derived ones."""
    return sorted(DATASETS) + sorted(DERIVED)


def _get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    return DATASETS[name]


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    """One dataset in memory. Images are uint8 ``(N, C, H, W)``, labels int64 ``(N,)``.

    ``mean`` / ``std`` are the per-channel mean and population standard deviation of
    ``x_train / 255`` over the training images held (after any subsampling); :meth:`normalize`
    applies them.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: List[str]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    provenance: dict
    domain_train: Optional[torch.Tensor] = None  # source of each training sample, for derived mixes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_shape(self) -> Tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.x_train.shape[1:])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x / 255 - mean) / std`` per channel, as float32; ``x`` is uint8 ``(..., C, H, W)``."""
        if x.dtype != torch.uint8:
            raise ValueError(f"normalize expects uint8 images (as stored in the Dataset), got {x.dtype}; "
                             "pass the raw x_train / x_test (or a slice of them)")
        c = len(self.mean)
        if x.dim() < 3 or x.shape[-3] != c:
            raise ValueError(f"normalize expects images of shape (..., {c}, H, W), got {tuple(x.shape)}")
        mean = torch.tensor(self.mean, dtype=torch.float32).view(c, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(c, 1, 1)
        return (x.to(torch.float32) / 255.0 - mean) / std

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, train={tuple(self.x_train.shape)}, "
                f"test={tuple(self.x_test.shape)}, classes={self.num_classes}, "
                f"status={self.provenance.get('status')!r})")


# --------------------------------------------------------------------------------------------
# Derived datasets: deterministic transforms of the datasets above, registered like them
# --------------------------------------------------------------------------------------------

DERIVED: Dict[str, Callable[..., Dataset]] = {}


def register_derived(name: str):
    """Register ``fn(root, download, n_train, n_test, seed, progress) -> Dataset`` under ``name``."""

    def deco(fn):
        if name in DERIVED or name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DERIVED[name] = fn
        return fn

    return deco
