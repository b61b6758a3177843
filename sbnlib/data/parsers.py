"""Readers of the on-disk formats: IDX (MNIST, Fashion-MNIST) and the CIFAR pickles, with checks
that turn a corrupt or foreign file into one DataError naming the fix.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import List, Tuple, Union

import numpy as np
import torch

from .registry import _REFETCH, DataError, DatasetSpec
from .safe_pickle import UnsafePickleError, safe_pickle_load

# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def _read_bytes(path: Path) -> Union[bytes, bytearray]:
    """File content; ``.gz`` files are decompressed."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        buf = bytearray(path.stat().st_size)
        with open(path, "rb") as f:
            n = f.readinto(buf)
        return buf[:n] if n != len(buf) else buf
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}. The file is corrupt or truncated. {_REFETCH}") from None


def _read_idx(path: Path, magic: int, item_shape: Tuple[int, ...]) -> np.ndarray:
    """An IDX file of unsigned bytes as a numpy array, with its header checked against the size."""
    raw = _read_bytes(path)
    what = "images" if magic == _IDX_IMAGES_MAGIC else "labels"
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX {what} file: expected at least a 4-byte header, "
                        f"got {len(raw)} bytes. {_REFETCH}")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(f"{path}: wrong IDX magic number 0x{got:08x}, expected 0x{magic:08x} "
                        f"(uint8 {what}); the file is corrupt or not an IDX {what} file. {_REFETCH}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX {what} file: expected a {header}-byte header, "
                        f"got {len(raw)} bytes. {_REFETCH}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "corrupt"
        raise DataError(f"{path}: {kind} IDX {what} file: expected {expected} bytes "
                        f"({header}-byte header + {' x '.join(map(str, dims))} values), got {len(raw)}. "
                        f"{_REFETCH}")
    if dims[1:] != item_shape:
        expected_shape = "(N, " + ", ".join(map(str, item_shape)) + ")" if item_shape else "(N,)"
        raise DataError(f"{path}: IDX {what} of shape {dims}, expected {expected_shape}. {_REFETCH}")
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    return arr if arr.flags.writeable else arr.copy()


def _check_labels(labels: np.ndarray, n: int, num_classes: int, path: Path) -> None:
    if labels.shape != (n,):
        raise DataError(f"{path}: {labels.shape[0] if labels.ndim else 0} labels for {n} images; "
                        f"the files do not belong together or one is corrupt. {_REFETCH}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels must lie in [0, {num_classes}), found "
                        f"[{labels.min()}, {labels.max()}]; the file is corrupt. {_REFETCH}")


def _read_idx_split(images: Path, labels: Path, spec: DatasetSpec) -> Tuple[np.ndarray, np.ndarray]:
    x = _read_idx(images, _IDX_IMAGES_MAGIC, spec.in_shape[1:])
    y = _read_idx(labels, _IDX_LABELS_MAGIC, ()).astype(np.int64)
    _check_labels(y, x.shape[0], spec.num_classes, labels)
    return x.reshape(x.shape[0], *spec.in_shape), y


def _load_pickle(path: Path):
    """Unpickle ``path`` safely; every failure becomes a DataError naming the file."""
    try:
        obj = safe_pickle_load(path)
    except UnsafePickleError as e:
        raise DataError(f"refusing to load {path}: it references {e.global_name}, which a CIFAR "
                        f"pickle never needs; the file may be malicious or corrupt. {_REFETCH}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}. {_REFETCH}") from None
    except Exception as e:  # EOFError, UnpicklingError, ValueError ... from a truncated/corrupt file
        raise DataError(f"cannot unpickle {path} ({type(e).__name__}: {e}); the file is truncated "
                        f"or corrupt. {_REFETCH}") from None
    if isinstance(obj, dict):  # pickles written with bytes keys
        obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    else:
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}; "
                        f"not a CIFAR file. {_REFETCH}")
    return obj


def _read_cifar_batch(path: Path, spec: DatasetSpec) -> Tuple[np.ndarray, np.ndarray]:
    d = _load_pickle(path)
    missing = [k for k in ("data", spec.label_key) if k not in d]
    if missing:
        raise DataError(f"{path}: missing key(s) {missing} (found {sorted(map(str, d))}); "
                        f"not a {spec.layout} batch file. {_REFETCH}")
    data = d["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {desc}. {_REFETCH}")
    labels = np.asarray(d[spec.label_key])
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"{path}: {spec.label_key!r} must be a list of integers, got {labels.dtype} "
                        f"of shape {labels.shape}. {_REFETCH}")
    labels = labels.astype(np.int64)
    _check_labels(labels, data.shape[0], spec.num_classes, path)
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar_classes(path: Path, spec: DatasetSpec) -> List[str]:
    d = _load_pickle(path)
    names = d.get(spec.names_key)
    if not isinstance(names, (list, tuple)) or len(names) != spec.num_classes:
        raise DataError(f"{path}: expected {spec.names_key!r} with {spec.num_classes} class names, got "
                        f"{type(names).__name__ if names is None else len(names)}. {_REFETCH}")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def _to_tensor(arr: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    if not (arr.flags.writeable and arr.flags.c_contiguous):
        arr = np.array(arr, order="C")
    return torch.from_numpy(arr).to(dtype)
