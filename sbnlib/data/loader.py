"""load_dataset: the files of a dataset read, checked, subsampled and normalised into a Dataset.

:func:`load_dataset` reads the files that torchvision's downloaders write, with readers of our own
(:mod:`sbnlib.data.parsers`), records their provenance (:mod:`sbnlib.data.provenance`) and returns a
:class:`~sbnlib.data.registry.Dataset`; subsets are stratified and seeded (:mod:`sbnlib.data.subsample`).
Derived datasets (``mnist_fmnist_mix``) are built here from the file-backed ones.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from .files import _download, _locate, _missing_message, _resolve_root_with_source
from .parsers import _read_cifar_batch, _read_cifar_classes, _read_idx_split, _to_tensor
from .provenance import _verify
from .registry import DERIVED, DataError, Dataset, DataWarning, _get_spec, register_derived
from .subsample import _check_count, _subsample_split


def _channel_stats(x: torch.Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and population std of ``x / 255``, from exact integer pixel histograms."""
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).numpy().astype(np.int64)
        values = np.arange(256, dtype=np.int64)
        count, s, ss = int(hist.sum()), int(hist @ values), int(hist @ (values * values))
        if count == 0:
            raise DataError("cannot compute normalisation constants from an empty training split")
        means.append(s / count / 255.0)
        var = (ss * count - s * s) / (count * count) / 255.0 ** 2  # exact up to the final division
        stds.append(max(var, 0.0) ** 0.5)
    return tuple(means), tuple(stds)


def _find_files(spec, root: Path, source, download: bool, progress: bool) -> dict:
    """The dataset's files under ``root`` (downloaded first where missing and ``download``), by name."""
    found = _locate(spec, root)
    if any(p is None for p in found.values()):
        if not download:
            raise DataError(_missing_message(spec, root, source, found, root_missing=not root.is_dir()))
        _download(spec, root, progress)
        found = _locate(spec, root)
        if any(p is None for p in found.values()):
            raise DataError("after the download, " + _missing_message(spec, root, source, found, False))
    return found


def _read_files(spec, found: dict):
    """Read the found files: (x_train, y_train, x_test, y_test) as numpy arrays, and the class names."""
    if spec.kind == "idx":
        x_tr, y_tr = _read_idx_split(found[spec.train_files[0]], found[spec.train_files[1]], spec)
        x_te, y_te = _read_idx_split(found[spec.test_files[0]], found[spec.test_files[1]], spec)
        classes = list(spec.classes)
    else:
        classes = _read_cifar_classes(found[spec.meta_file], spec)
        parts = [_read_cifar_batch(found[f], spec) for f in spec.train_files]
        x_tr = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        y_tr = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        x_te, y_te = _read_cifar_batch(found[spec.test_files[0]], spec)
    return x_tr, y_tr, x_te, y_te, classes


def load_dataset(name: str, root: Union[str, os.PathLike, None] = None, download: bool = False,
                 n_train: Optional[int] = None, n_test: Optional[int] = None, seed: int = 0,
                 progress: bool = False) -> Dataset:
    """Load dataset ``name`` (a key of :data:`DATASETS`) from ``root`` (see :func:`resolve_root`).

    ``download=True`` fetches missing files with torchvision (needs internet); files already
    present are never re-fetched. ``n_train`` / ``n_test`` take seeded stratified subsets (None:
    all); more than a copy holds means all of it, with a warning. Raises :class:`DataError` with
    the problem and the fix when files are missing, truncated, corrupt or unsafe.
    """
    if name in DERIVED:
        return DERIVED[name](root=root, download=download, n_train=n_train, n_test=n_test, seed=seed,
                             progress=progress)
    spec = _get_spec(name)
    n_train = None if n_train is None else _check_count(n_train, "n_train")
    n_test = None if n_test is None else _check_count(n_test, "n_test")
    root, source = _resolve_root_with_source(root)

    found = _find_files(spec, root, source, download, progress)
    if progress:
        print(f"sbnlib.data: reading {spec.name} from {root / spec.layout}", file=sys.stderr)
    x_tr, y_tr, x_te, y_te, classes = _read_files(spec, found)

    files, verified, status, note, warns = _verify(spec, root, list(found.values()))
    n_train_avail, n_test_avail = int(y_tr.shape[0]), int(y_te.shape[0])
    where = Path(root.name) / spec.layout  # as the provenance names it: no machine's path (see _warn)
    x_tr, y_tr = _subsample_split(x_tr, y_tr, n_train, seed, "training", where, warns)
    x_te, y_te = _subsample_split(x_te, y_te, n_test, seed, "test", where, warns)

    x_train, y_train = _to_tensor(x_tr, torch.uint8), _to_tensor(y_tr, torch.int64)
    x_test, y_test = _to_tensor(x_te, torch.uint8), _to_tensor(y_te, torch.int64)
    mean, std = _channel_stats(x_train)
    provenance = {
        "dataset": spec.name,
        "root": str(root),
        "layout": spec.layout,
        "files": files,
        "verified": verified,
        "status": status,
        "note": note,
        "n_train_available": n_train_avail,
        "n_test_available": n_test_avail,
        "n_train": int(y_train.shape[0]),
        "n_test": int(y_test.shape[0]),
        "n_train_requested": n_train,
        "n_test_requested": n_test,
        "subsample_seed": int(seed),
        "warnings": list(warns),
    }
    _warn(warns, root)
    return Dataset(name=spec.name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   classes=classes, mean=mean, std=std, provenance=provenance)


def _warn(warns: List[str], root: Path) -> None:
    """Issue the provenance's warnings as :class:`DataWarning`; the provenance names the data root by
    its folder name (it goes into committed files), the user at run time is told its full path."""
    for w in warns:
        warnings.warn(f"{w} (data root: {root})", DataWarning, stacklevel=3)


@register_derived("mnist_fmnist_mix")
def mnist_fmnist_mix(root=None, download=False, n_train=None, n_test=None, seed=0, progress=False) -> Dataset:
    """Heterogeneity stress dataset: MNIST digits and Fashion-MNIST items in one 20-class task.

    Classes 0-9 are MNIST's digits, classes 10-19 Fashion-MNIST's items (``domain = label // 10``).
    The two domains differ strongly in pixel statistics (Fashion-MNIST images cover more of the
    frame, with more mid-grey), so a batch that mixes them is knowably more heterogeneous than a
    batch from one domain: the ground truth for checking a scorer (AUROC of mixed vs pure batches).
    Train/test splits are the concatenations of the two datasets' splits (120,000 / 20,000);
    ``n_train`` / ``n_test`` take stratified subsets over the 20 classes. Normalisation constants
    come from the combined training split. Provenance records both sources.
    """
    n_train = None if n_train is None else _check_count(n_train, "n_train")
    n_test = None if n_test is None else _check_count(n_test, "n_test")
    parts = [load_dataset(n, root=root, download=download, progress=progress) for n in ("mnist", "fashion_mnist")]
    x_tr = np.concatenate([p.x_train.numpy() for p in parts])
    y_tr = np.concatenate([parts[0].y_train.numpy(), parts[1].y_train.numpy() + 10])
    x_te = np.concatenate([p.x_test.numpy() for p in parts])
    y_te = np.concatenate([parts[0].y_test.numpy(), parts[1].y_test.numpy() + 10])
    warns: List[str] = [w for p in parts for w in p.provenance["warnings"]]
    root_path = Path(parts[0].provenance["root"])
    where = Path(root_path.name)
    x_tr, y_tr = _subsample_split(x_tr, y_tr, n_train, seed, "training", where, warns)
    x_te, y_te = _subsample_split(x_te, y_te, n_test, seed, "test", where, warns)
    x_train = torch.from_numpy(np.ascontiguousarray(x_tr))
    mean, std = _channel_stats(x_train)
    src = [p.provenance for p in parts]
    provenance = {
        "dataset": "mnist_fmnist_mix",
        "root": src[0]["root"],
        "layout": " + ".join(p["layout"] for p in src),
        "files": {k: v for p in src for k, v in p["files"].items()},
        "verified": all(p["verified"] for p in src),
        "status": src[0]["status"] if src[0]["status"] == src[1]["status"] else
        f"mnist: {src[0]['status']}; fashion_mnist: {src[1]['status']}",
        "note": "derived: MNIST (classes 0-9) + Fashion-MNIST (classes 10-19). " + src[0]["note"],
        "n_train_available": sum(p["n_train_available"] for p in src),
        "n_test_available": sum(p["n_test_available"] for p in src),
        "n_train": int(y_tr.shape[0]),
        "n_test": int(y_te.shape[0]),
        "n_train_requested": n_train,
        "n_test_requested": n_test,
        "subsample_seed": int(seed),
        "warnings": warns,
    }
    _warn(warns[sum(len(p["warnings"]) for p in src):], root_path)
    classes = [f"digit {c.split(' - ')[0]}" for c in parts[0].classes] + list(parts[1].classes)
    return Dataset(name="mnist_fmnist_mix", x_train=x_train, y_train=torch.from_numpy(y_tr.astype(np.int64)),
                   x_test=torch.from_numpy(np.ascontiguousarray(x_te)), y_test=torch.from_numpy(y_te.astype(np.int64)),
                   classes=classes, mean=mean, std=std, provenance=provenance,
                   domain_train=torch.from_numpy((y_tr // 10).astype(np.int64)))
