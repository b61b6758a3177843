"""A restricted unpickler for the CIFAR pickles: only the opcodes and globals a CIFAR file needs.
"""
from __future__ import annotations

import _codecs
import importlib
import mmap
import os
import pickle
import pickletools
from typing import Dict, Optional, Tuple

import numpy as np

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


class _StackModel:
    """The unpickler's stack as :func:`_check_pickle_ops` models it: entries ``[kind, depth]``
    (kind ``atom``, ``container``, ``global`` or ``object``), the MARK positions and the memo."""

    def __init__(self):
        self.stack, self.memo, self.marks = [], {}, []

    def pop_to_mark(self):
        """Pop the entries above the last MARK (and the MARK)."""
        if not self.marks:
            raise pickle.UnpicklingError("malformed pickle: a container without its MARK")
        items = self.stack[self.marks[-1]:]
        del self.stack[self.marks.pop():]
        return items

    def push(self, kind, items=()):
        """Push an entry; a container is one deeper than the deepest of its ``items``."""
        depth = 1 + max((e[1] for e in items), default=0) if kind == "container" else 0
        if depth > PICKLE_MAX_DEPTH:
            raise pickle.UnpicklingError(f"containers nested more than {PICKLE_MAX_DEPTH} deep")
        self.stack.append([kind, depth])

    def add_to_top(self, items):
        """Add ``items`` to the entry on top (APPEND, SETITEM, BUILD), deepening it."""
        if not self.stack:
            raise pickle.UnpicklingError("malformed pickle: nothing to add the items to")
        top = self.stack[-1]
        top[1] = max(top[1], 1 + max((e[1] for e in items), default=0))
        if top[1] > PICKLE_MAX_DEPTH:
            raise pickle.UnpicklingError(f"containers nested more than {PICKLE_MAX_DEPTH} deep")

    def pop(self, n):
        """Pop ``n`` entries, none of them below the last MARK."""
        if len(self.stack) - (self.marks[-1] if self.marks else 0) < n:
            raise pickle.UnpicklingError("malformed pickle: stack underflow")
        items = self.stack[len(self.stack) - n:]
        del self.stack[len(self.stack) - n:]
        return items


def _check_pickle_ops(f) -> None:
    """Walk the opcodes of the pickle in ``f`` (nothing is built) with a model of the unpickler's
    stack whose entries are ``[kind, depth]``; raise :class:`pickle.UnpicklingError` at the first
    thing a CIFAR pickle does not need (see above). The work is linear in the file's size."""
    m = _StackModel()
    for op, arg, _ in pickletools.genops(f):
        name = op.name
        if name in _ATOM_OPS:
            m.push("atom")
        elif name in _EMPTY_OPS:
            m.push("container")
        elif name == "MARK":
            m.marks.append(len(m.stack))
        elif name in ("LIST", "TUPLE", "DICT"):
            m.push("container", m.pop_to_mark())
        elif name in _TUPLE_N:
            m.push("container", m.pop(_TUPLE_N[name]))
        elif name in ("APPEND", "SETITEM"):
            m.add_to_top(m.pop(1 if name == "APPEND" else 2))
        elif name in ("APPENDS", "SETITEMS"):
            m.add_to_top(m.pop_to_mark())
        elif name == "GLOBAL":
            m.push("global")
        elif name == "STACK_GLOBAL":
            m.pop(2)
            m.push("global")
        elif name == "REDUCE":  # an allowed function (find_class) on its arguments: an array, a dtype, bytes
            _, args = m.pop(2)
            m.stack.append(["object", args[1]])
        elif name == "BUILD":
            m.add_to_top(m.pop(1))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if not m.stack:
                raise pickle.UnpicklingError("malformed pickle: nothing to memoize")
            m.memo[len(m.memo) if name == "MEMOIZE" else arg] = m.stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in m.memo:
                raise pickle.UnpicklingError(f"malformed pickle: memo entry {arg} read before it is written")
            if m.memo[arg][0] == "container":
                raise pickle.UnpicklingError("a container referenced twice (memo GET), which a CIFAR pickle never needs")
            m.stack.append(m.memo[arg])
        elif name == "POP":
            m.pop(1)
        elif name == "POP_MARK":
            m.pop_to_mark()
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
