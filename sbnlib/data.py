"""Datasets: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 from their standard on-disk layouts.

:func:`load_dataset` reads the files that torchvision's downloaders write, with readers of our own
(IDX parsed with numpy, CIFAR pickles through a restricted unpickler), and returns a
:class:`Dataset`: uint8 images ``(N, C, H, W)``, int64 labels, class names, per-channel
normalisation constants and a JSON-serialisable ``provenance`` record.

Where the files live (:func:`resolve_root`): the ``root`` argument, else the environment variable
``SBN_DATA_ROOT``, else ``./data``. Below the root, the layouts are torchvision's:

* ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (or the same names + ``.gz``),
  likewise ``FashionMNIST/raw/``;
* ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``;
* ``cifar-100-python/{train,test,meta}``.

Provenance. The md5 of every file read is recorded and compared with torchvision's reference
checksums (taken from ``torchvision.datasets.*``, never typed here):

* all files match: ``status="verified"``, ``verified=True``;
* some file differs (a re-packed or mirrored copy): the data still loads, but
  ``status="unverified copy"``, ``verified=False``, and a :class:`DataWarning` is issued and
  recorded in ``provenance["warnings"]``; results must be labelled as coming from that copy;
* uncompressed IDX files (torchvision only knows the md5s of the ``.gz`` archives):
  ``status="unchecked (no reference md5 for uncompressed IDX)"``, ``verified=False``. When the
  ``.gz`` archives are present they are the files read (and checked), so ``verified`` always
  describes the bytes actually loaded.

Subsets (``n_train`` / ``n_test``) are stratified and seeded (:func:`stratified_subsample`);
asking for more images than a copy holds uses all of them and says so in the provenance.
:func:`make_batch_plan` fixes, from a seed, which samples form each training batch.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib
import mmap
import os
import pickle
import pickletools
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "Dataset",
    "DataError",
    "DataWarning",
    "load_dataset",
    "validation_split",
    "resolve_root",
    "stratified_subsample",
    "make_batch_plan",
    "safe_pickle_load",
    "UnsafePickleError",
    "reference_md5s",
    "file_md5",
    "DERIVED",
    "register_derived",
    "dataset_names",
]

ENV_ROOT = "SBN_DATA_ROOT"
#: seeds are integers in [0, SEED_MAX]: every generator seeded here (torch, numpy) takes them, and
#: result tables hold them as int64
SEED_MAX = 2**32 - 1
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
# Root, checksums, references
# --------------------------------------------------------------------------------------------

def _resolve_root_with_source(root=None) -> Tuple[Path, str]:
    if root is not None:
        return Path(root).expanduser().resolve(), "the root argument"
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser().resolve(), f"${ENV_ROOT}"
    return Path(DEFAULT_ROOT).resolve(), f"the default ./{DEFAULT_ROOT} ({ENV_ROOT} is not set)"


def resolve_root(root: Union[str, os.PathLike, None] = None) -> Path:
    """The data root: ``root`` if given, else ``$SBN_DATA_ROOT``, else ``./data`` (absolute)."""
    return _resolve_root_with_source(root)[0]


_MD5_CACHE: Dict[Tuple[str, int, int], str] = {}


def _md5_uncached(path: Path, chunk_size: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def file_md5(path: Union[str, os.PathLike]) -> str:
    """md5 of a file, cached per process by (path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _MD5_CACHE:
        _MD5_CACHE[key] = _md5_uncached(p)
    return _MD5_CACHE[key]


def reference_md5s(name: str) -> Dict[str, str]:
    """Official md5s for dataset ``name`` as ``{file name in the layout folder: md5}``.

    Taken from torchvision's dataset classes (for MNIST / Fashion-MNIST these are the ``.gz``
    archives). Empty when torchvision cannot be imported.
    """
    spec = _get_spec(name)
    try:
        import torchvision.datasets as tvd
    except ImportError:
        return {}
    cls = getattr(tvd, spec.torchvision_class)
    if spec.kind == "idx":
        return {fname: md5 for fname, md5 in cls.resources}
    refs = {fname: md5 for fname, md5 in list(cls.train_list) + list(cls.test_list)}
    refs[cls.meta["filename"]] = cls.meta["md5"]
    return refs


# --------------------------------------------------------------------------------------------
# Restricted unpickler
# --------------------------------------------------------------------------------------------

class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global outside the allow-list; ``global_name`` names it."""

    def __init__(self, global_name: str):
        super().__init__(f"refused global {global_name}: not needed to rebuild numpy arrays")
        self.global_name = global_name


def _numpy_attr(submodule: str, name: str):
    """``numpy._core.<submodule>.<name>`` (numpy >= 2), else ``numpy.core.<submodule>.<name>``."""
    for mod in (f"numpy._core.{submodule}", f"numpy.core.{submodule}"):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {submodule}.{name}")


def _allowed_globals() -> Dict[Tuple[str, str], object]:
    import _codecs

    reconstruct = _numpy_attr("multiarray", "_reconstruct")
    scalar = _numpy_attr("multiarray", "scalar")
    frombuffer = _numpy_attr("numeric", "_frombuffer")
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): _codecs.encode}
    # numpy < 2 writes numpy.core.*, numpy >= 2 writes numpy._core.*; both name the same functions
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer  # pickle protocol 5
    return allowed


# What a CIFAR pickle needs, checked before anything is built (:func:`_check_pickle_ops`): every
# object is built once and nested a few levels deep (a dict of lists of strings; an array's state
# tuple holding a dtype's), and only globals and atoms (numbers, strings) are referenced twice. A
# container referenced twice (a memo GET) is how a tiny pickle turns into a structure of billions of
# elements (or a tuple whose hash takes forever) once converted, so it is refused, as are opcodes
# CIFAR never uses (sets, DUP, persistent ids, extension codes, old-style instances).
PICKLE_MAX_DEPTH = 8
_ATOM_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "NONE", "NEWTRUE", "NEWFALSE",
             "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
             "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
_EMPTY_OPS = {"EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE"}
_TUPLE_N = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_NO_STACK_OPS = {"PROTO", "FRAME", "STOP"}


def _check_pickle_ops(f) -> None:
    """Walk the opcodes of the pickle in ``f`` (nothing is built) with a model of the unpickler's
    stack whose entries are ``[kind, depth]``; raise :class:`pickle.UnpicklingError` at the first
    thing a CIFAR pickle does not need (see above). The work is linear in the file's size."""
    stack, memo, marks = [], {}, []

    def pop_to_mark():
        if not marks:
            raise pickle.UnpicklingError("malformed pickle: a container without its MARK")
        items = stack[marks[-1]:]
        del stack[marks.pop():]
        return items

    def push(kind, items=()):
        depth = 1 + max((e[1] for e in items), default=0) if kind == "container" else 0
        if depth > PICKLE_MAX_DEPTH:
            raise pickle.UnpicklingError(f"containers nested more than {PICKLE_MAX_DEPTH} deep")
        stack.append([kind, depth])

    def add_to_top(items):
        if not stack:
            raise pickle.UnpicklingError("malformed pickle: nothing to add the items to")
        top = stack[-1]
        top[1] = max(top[1], 1 + max((e[1] for e in items), default=0))
        if top[1] > PICKLE_MAX_DEPTH:
            raise pickle.UnpicklingError(f"containers nested more than {PICKLE_MAX_DEPTH} deep")

    def pop(n):
        if len(stack) - (marks[-1] if marks else 0) < n:
            raise pickle.UnpicklingError("malformed pickle: stack underflow")
        items = stack[len(stack) - n:]
        del stack[len(stack) - n:]
        return items

    for op, arg, _ in pickletools.genops(f):
        name = op.name
        if name in _ATOM_OPS:
            push("atom")
        elif name in _EMPTY_OPS:
            push("container")
        elif name == "MARK":
            marks.append(len(stack))
        elif name in ("LIST", "TUPLE", "DICT"):
            push("container", pop_to_mark())
        elif name in _TUPLE_N:
            push("container", pop(_TUPLE_N[name]))
        elif name in ("APPEND", "SETITEM"):
            add_to_top(pop(1 if name == "APPEND" else 2))
        elif name in ("APPENDS", "SETITEMS"):
            add_to_top(pop_to_mark())
        elif name == "GLOBAL":
            push("global")
        elif name == "STACK_GLOBAL":
            pop(2)
            push("global")
        elif name == "REDUCE":  # an allowed function (find_class) on its arguments: an array, a dtype, bytes
            _, args = pop(2)
            stack.append(["object", args[1]])
        elif name == "BUILD":
            add_to_top(pop(1))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if not stack:
                raise pickle.UnpicklingError("malformed pickle: nothing to memoize")
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in memo:
                raise pickle.UnpicklingError(f"malformed pickle: memo entry {arg} read before it is written")
            if memo[arg][0] == "container":
                raise pickle.UnpicklingError("a container referenced twice (memo GET), which a CIFAR pickle never needs")
            stack.append(memo[arg])
        elif name == "POP":
            pop(1)
        elif name == "POP_MARK":
            pop_to_mark()
        elif name not in _NO_STACK_OPS:
            raise pickle.UnpicklingError(f"opcode {name}, which a CIFAR pickle never needs")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays, builtin containers and strings, and nothing else."""

    _allowed: Optional[Dict[Tuple[str, str], object]] = None

    def find_class(self, module: str, name: str):
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return _RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{module}.{name}") from None


def safe_pickle_load(fileobj_or_path, encoding: str = "latin1"):
    """Unpickle with a restricted unpickler that only rebuilds numpy arrays and builtins.

    Any other global (``os.system``, ``builtins.eval``, ...) raises :class:`UnsafePickleError`
    (a :class:`pickle.UnpicklingError`) before it is called. The opcodes are checked first
    (:func:`_check_pickle_ops`): a pickle that nests or shares containers beyond what a CIFAR file
    needs raises :class:`pickle.UnpicklingError` before anything is built, so the work and memory
    are bounded by the file's size. A path is read through a memory map, whose reads never ask
    for more than the file holds (a forged length cannot allocate gigabytes).
    ``encoding="latin1"`` reads the python-2 pickles of the official CIFAR releases.
    """
    if isinstance(fileobj_or_path, (str, os.PathLike)):
        with open(fileobj_or_path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise EOFError("the file is empty")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return safe_pickle_load(m, encoding)
    start = fileobj_or_path.tell()
    _check_pickle_ops(fileobj_or_path)
    fileobj_or_path.seek(start)
    return _RestrictedUnpickler(fileobj_or_path, encoding=encoding).load()


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


# --------------------------------------------------------------------------------------------
# Locating and downloading files
# --------------------------------------------------------------------------------------------

def _locate(spec: DatasetSpec, root: Path) -> Dict[str, Optional[Path]]:
    """Each expected file name -> the path to read, or None when absent.

    For IDX files the ``.gz`` archive is preferred when present: it is the file torchvision has an
    md5 for, so what is verified is what is read.
    """
    folder = root / spec.layout
    found: Dict[str, Optional[Path]] = {}
    for fname in spec.all_files:
        candidates = [folder / (fname + ".gz"), folder / fname] if spec.kind == "idx" else [folder / fname]
        found[fname] = next((p for p in candidates if p.is_file()), None)
    return found


def _missing_message(spec: DatasetSpec, root: Path, source: str, found: Dict[str, Optional[Path]],
                     root_missing: bool) -> str:
    head = (f"data root {root} (from {source}) does not exist"
            if root_missing else f"{spec.name}: files missing under the data root {root} (from {source})")
    suffix = " (or the same name + .gz)" if spec.kind == "idx" else ""
    lines = [f"{head}. Expected these files{suffix}:"]
    for fname, p in found.items():
        lines.append(f"  {root / spec.layout / fname}{'' if p else '   <- missing'}")
    lines.append(_HOW_TO_PROVIDE)
    return "\n".join(lines)


def _download(spec: DatasetSpec, root: Path, progress: bool) -> None:
    """Fetch the official files with torchvision into ``root`` (its layout is ours)."""
    try:
        import torchvision.datasets as tvd
    except ImportError as e:
        raise DataError(f"download=True needs torchvision ({e}); install it or provide the files. "
                        f"{_HOW_TO_PROVIDE}") from None
    cls = getattr(tvd, spec.torchvision_class)
    if progress:
        print(f"sbnlib.data: downloading {spec.name} into {root} with torchvision.datasets."
              f"{spec.torchvision_class}", file=sys.stderr)
    try:
        root.mkdir(parents=True, exist_ok=True)
        cls(root=str(root), train=True, download=True)  # fetches both splits
    except Exception as e:
        raise DataError(f"downloading {spec.name} into {root} with torchvision.datasets."
                        f"{spec.torchvision_class} failed ({type(e).__name__}: {e}). This needs internet "
                        f"access; without it, copy the files in torchvision's layout under {root} "
                        f"or set {ENV_ROOT}.") from None


# --------------------------------------------------------------------------------------------
# Subsampling, statistics, batch plans
# --------------------------------------------------------------------------------------------

def _check_count(n, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{what} must be a positive integer (or None for all), got {n!r}")
    if n <= 0:
        raise ValueError(f"{what} must be a positive integer (or None for all), got {n}")
    return int(n)


def stratified_subsample(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of a seeded, class-stratified subset of ``n`` samples, sorted ascending.

    Each class gets ``floor(n * count / N)`` samples; the remaining ones go, one each, to the
    classes with the largest fractional parts (ties: lower class index first). Within a class the
    first ``quota`` entries of a seeded permutation are taken. Class proportions are therefore
    kept to within one sample. ``n`` larger than ``len(labels)`` is clipped (with a
    :class:`DataWarning`) and all indices are returned.
    """
    n = _check_count(n, "n")
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(y.shape)}")
    total = y.shape[0]
    if n >= total:
        if n > total:
            warnings.warn(f"asked for {n} samples, only {total} are available; using {total}",
                          DataWarning, stacklevel=2)
        return torch.arange(total, dtype=torch.int64)
    classes, counts = np.unique(y, return_counts=True)
    quotas = (n * counts) // total
    remainders = (n * counts) % total  # exact integer fractional parts (times total)
    short = n - int(quotas.sum())
    order = sorted(range(len(classes)), key=lambda i: (-int(remainders[i]), i))
    quotas[order[:short]] += 1
    rng = np.random.default_rng(seed)
    chosen = []
    for c, q in zip(classes, quotas):
        members = np.flatnonzero(y == c)
        chosen.append(members[rng.permutation(members.shape[0])[:q]])
    return torch.from_numpy(np.sort(np.concatenate(chosen)).astype(np.int64))


def validation_split(labels: torch.Tensor, frac: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)``: a seeded, class-stratified validation split of ``frac`` of the
    samples (:func:`stratified_subsample`, ``round(frac * N)`` of them) and the rest, both sorted
    and disjoint. ``frac=0`` gives every index to training and an empty validation set. The
    split's seed is derived from ``seed`` so that it differs from the subset drawn with ``seed``."""
    n = int(labels.shape[0])
    n_val = int(round(frac * n))
    if n_val == 0:
        return torch.arange(n, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    val = stratified_subsample(labels, n_val, seed=seed + 0x7A11)
    keep = torch.ones(n, dtype=torch.bool)
    keep[val] = False
    return torch.nonzero(keep).flatten(), val


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


def make_batch_plan(n_samples: int, batch_size: int, seed: int, epoch: Optional[int] = None) -> torch.Tensor:
    """Which samples form each training batch: int64 ``(n_batches, batch_size)``.

    A seeded permutation of ``range(n_samples)`` cut into ``n_samples // batch_size`` full batches;
    the last ``n_samples % batch_size`` samples of the permutation are dropped (every batch has
    exactly ``batch_size`` samples, so batch statistics are comparable). With ``epoch`` the
    permutation seed becomes ``seed * 1_000_003 + epoch``, so batches are re-formed every epoch
    and reproducibly so.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"batch_size must be an integer, got {batch_size!r}; pass e.g. batch_size=64")
    if not 1 <= batch_size <= n_samples:
        raise ValueError(f"batch_size={batch_size} is invalid for n_samples={n_samples}: it must be "
                         f"between 1 and {n_samples}; use a smaller batch size or more samples")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0):
        raise ValueError(f"epoch must be an integer >= 0 or None, got {epoch!r}")
    s = int(seed) if epoch is None else int(seed) * 1_000_003 + int(epoch)
    g = torch.Generator().manual_seed(s % (1 << 64))
    perm = torch.randperm(int(n_samples), generator=g)
    n_batches = int(n_samples) // int(batch_size)
    return perm[: n_batches * batch_size].reshape(n_batches, int(batch_size)).to(torch.int64)


# --------------------------------------------------------------------------------------------
# load_dataset
# --------------------------------------------------------------------------------------------

_UNCHECKED_IDX = "unchecked (no reference md5 for uncompressed IDX)"


def _verify(spec: DatasetSpec, root: Path, paths: Sequence[Path]) -> Tuple[dict, bool, str, str, List[str]]:
    """md5 every file; compare with the reference. Returns files, verified, status, note, warnings."""
    folder = root / spec.layout
    files = {p.relative_to(root).as_posix(): file_md5(p) for p in paths}
    # uncompressed IDX files have no reference: skip importing torchvision for nothing
    has_reference = spec.kind != "idx" or any(p.suffix == ".gz" for p in paths)
    refs = reference_md5s(spec.name) if has_reference else {}
    mismatched, unchecked = [], []
    for p in paths:
        ref = refs.get(p.name)
        if ref is None:
            unchecked.append(p.name)
        elif ref != files[p.relative_to(root).as_posix()]:
            mismatched.append(p.name)
    source = f"torchvision.datasets.{spec.torchvision_class}"
    if mismatched:
        msg = (f"{spec.name}: the copy at {folder} is not the official release: md5 of "
               f"{', '.join(mismatched)} differ from {source}'s reference; it loads, but results "
               f"must be labelled as coming from an unverified copy")
        return files, False, "unverified copy", msg, [msg]
    if unchecked:
        if spec.kind == "idx":
            note = (f"read from uncompressed IDX files ({', '.join(unchecked)}); {source} only has "
                    "reference md5s for the .gz archives, so these bytes could not be checked against "
                    "the official release (their layout and sizes were checked)")
            return files, False, _UNCHECKED_IDX, note, []
        note = f"no reference md5 available for {', '.join(unchecked)} (is torchvision installed?)"
        return files, False, "unchecked (no reference md5 available)", note, []
    return files, True, "verified", f"md5 of every file read matches {source}'s reference", []


def _subsample_split(x: np.ndarray, y: np.ndarray, n: Optional[int], seed: int, split: str,
                     where: Path, warns: List[str]) -> Tuple[np.ndarray, np.ndarray]:
    avail = y.shape[0]
    if n is None or n == avail:
        return x, y
    if n > avail:
        warns.append(f"asked for {n} {split} images, the copy at {where} holds {avail}; using {avail}")
        return x, y
    idx = stratified_subsample(torch.from_numpy(y), n, seed).numpy()
    return x[idx], y[idx]


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

    found = _locate(spec, root)
    if any(p is None for p in found.values()):
        if not download:
            raise DataError(_missing_message(spec, root, source, found, root_missing=not root.is_dir()))
        _download(spec, root, progress)
        found = _locate(spec, root)
        if any(p is None for p in found.values()):
            raise DataError("after the download, " + _missing_message(spec, root, source, found, False))

    if progress:
        print(f"sbnlib.data: reading {spec.name} from {root / spec.layout}", file=sys.stderr)
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

    files, verified, status, note, warns = _verify(spec, root, list(found.values()))
    n_train_avail, n_test_avail = int(y_tr.shape[0]), int(y_te.shape[0])
    where = root / spec.layout
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
    for w in warns:
        warnings.warn(w, DataWarning, stacklevel=2)
    return Dataset(name=spec.name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   classes=classes, mean=mean, std=std, provenance=provenance)


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
    where = Path(parts[0].provenance["root"])
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
    for w in warns[sum(len(p["warnings"]) for p in src):]:
        warnings.warn(w, DataWarning, stacklevel=2)
    classes = [f"digit {c.split(' - ')[0]}" for c in parts[0].classes] + list(parts[1].classes)
    return Dataset(name="mnist_fmnist_mix", x_train=x_train, y_train=torch.from_numpy(y_tr.astype(np.int64)),
                   x_test=torch.from_numpy(np.ascontiguousarray(x_te)), y_test=torch.from_numpy(y_te.astype(np.int64)),
                   classes=classes, mean=mean, std=std, provenance=provenance,
                   domain_train=torch.from_numpy((y_tr // 10).astype(np.int64)))
