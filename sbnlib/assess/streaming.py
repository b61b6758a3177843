"""The two streaming passes over a source: :func:`scan` (pass 1: usable items, per-channel or
per-feature mean and std, accumulated over blocks whose size depends on the item shape only) and
:func:`read_standardized` (pass 2: the items at given positions, standardised).
"""
from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .arrays import ArraySource
from .sources import Source, UserDataError, printable

#: pass 1 accumulates the statistics over blocks of about this many input values (8 MiB of float64)
STATS_BLOCK_ELEMENTS = 2**20


# --------------------------------------------------------------------------------------------
# Pass 1: usable items and statistics; pass 2: standardised items
# --------------------------------------------------------------------------------------------

@dataclass
class Scan:
    """Result of pass 1: which items are usable, and the statistics that standardise them."""

    ids: np.ndarray           # ids of the usable items, in storage order (what Source.read takes)
    mean: np.ndarray          # float64, per channel (C,) or per feature (item_shape)
    std: np.ndarray           # float64, population; 0 replaced by 1 (constant feature / channel)
    n_constant: int           # features / channels with std 0
    n_seen: int               # items looked at, usable or not
    skipped: dict = field(default_factory=dict)  # {"count", "by_reason", "examples"}

    @property
    def n(self) -> int:
        return int(self.ids.size)


def stats_block_items(item_shape) -> int:
    """Items per pass-1 block: depends on the item shape only, so the statistics do too."""
    return max(1, STATS_BLOCK_ELEMENTS // max(1, int(np.prod(item_shape))))


class _Moments:
    """Mean and sum of squared deviations, merged block by block (Chan et al.), in float64."""

    def __init__(self, per_channel: bool):
        self.axes_of = (lambda nd: (0, *range(2, nd))) if per_channel else (lambda nd: (0,))
        self.n, self.mean, self.m2 = 0, None, None

    def update(self, x: np.ndarray) -> None:
        if x.shape[0] == 0:
            return
        axes = self.axes_of(x.ndim)
        xd = x.astype(np.float64)
        nb = x.size // int(np.prod([x.shape[a] for a in range(x.ndim) if a not in axes]))
        mb = xd.mean(axis=axes, keepdims=True)
        xd -= mb
        m2b = np.square(xd, out=xd).sum(axis=axes)
        mb = mb.reshape(m2b.shape)
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta * delta * (self.n * nb / n)
        self.n = n


def scan(source: Source, skip_bad: bool = False, progress: bool = False) -> Scan:
    """Pass 1: read every item once, in storage order; return the usable ids and the statistics.

    A bad item (unreadable image, mixed channel count, NaN / infinite value, non-numeric or empty
    CSV cell, ragged CSV row) raises :class:`UserDataError` naming it, unless ``skip_bad``: then it
    is left out and counted in ``Scan.skipped``.
    """

    mom = _Moments(source.per_channel)
    ids, by_reason, examples, n_seen = [], {}, [], 0
    total = source.n_items if source.n_items is not None else getattr(source, "n_lines", None)
    bar = tqdm(total=total, desc=f"pass 1 of 2: reading {source.name} (mean/std)", unit="item",
               disable=not progress, mininterval=0.5)

    def count_bad(bad):
        for item, reason, message in bad:
            if not skip_bad:
                raise UserDataError(message, reason)
            by_reason[reason] = by_reason.get(reason, 0) + 1
            if len(examples) < 20:
                examples.append({"item": item, "reason": message})

    count_bad(source.bad_entries)  # found while indexing (folders, links): not items
    try:
        for block_ids, x, bad in source.blocks(stats_block_items(source.item_shape)):
            count_bad(bad)
            if x.shape[0] and not np.isfinite(x).all():  # the sources report these by name; a last guard
                r = int(np.flatnonzero(~np.isfinite(x.reshape(x.shape[0], -1)).all(1))[0])
                raise UserDataError(f"{printable(source.path or source.name)}: item {int(block_ids[r])} has "
                                    "non-finite values after conversion to float32")
            mom.update(x)
            ids.append(block_ids)
            n_seen += len(block_ids) + len(bad)
            bar.update(len(block_ids) + len(bad))
    finally:
        bar.close()
    ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    n_bad = sum(by_reason.values())
    if ids.size == 0:
        raise UserDataError(f"{source.name}: no usable items" + (f" ({n_bad} bad ones skipped)" if n_bad else ""))
    std = np.sqrt(mom.m2 / mom.n)
    n_constant = int((std == 0).sum())
    std = np.where(std == 0, 1.0, std)
    return Scan(ids=ids, mean=mom.mean, std=std, n_constant=n_constant, n_seen=n_seen,
                skipped={"count": n_bad, "by_reason": by_reason, "examples": examples})


_malloc_trim = None  # glibc's malloc_trim, looked up once (False where there is none)


def release_free_memory() -> None:
    """Hand memory freed by this process back to the operating system (glibc's ``malloc_trim``).

    Streaming frees blocks of a few MiB at a time while small results (the scores) stay allocated
    between them; glibc then keeps the freed blocks inside its heap, so the resident memory would
    creep up with the number of blocks read instead of staying at one chunk. Trimming after each
    chunk keeps it flat. A no-op where the C library has no ``malloc_trim`` (macOS, Windows, musl).
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


def _stat_view(v: np.ndarray, source: Source) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(v, dtype=np.float32))
    if source.per_channel:
        t = t.reshape(-1, *([1] * (len(source.item_shape) - 1)))
    return t


def standardize(x: np.ndarray, sc: Scan, source: Source, inplace: bool = False) -> torch.Tensor:
    """``(x - mean) / std`` as float32, elementwise (so the same for any chunk of items).

    With ``inplace`` a float32 ``x`` is overwritten (and returned as a tensor sharing its memory).
    """
    t = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if not inplace:
        return (t - _stat_view(sc.mean, source)) / _stat_view(sc.std, source)
    return t.sub_(_stat_view(sc.mean, source)).div_(_stat_view(sc.std, source))


def read_standardized(source: Source, sc: Scan, positions) -> torch.Tensor:
    """Pass 2: the usable items at ``positions`` (indices into ``sc.ids``), standardised, in that order.

    Items are read in storage order (sorted ids), a pass-1 block at a time, straight into their
    place in the result, which is then standardised in place: the memory used is the result plus
    one block.
    """
    ids = sc.ids[np.asarray(positions, dtype=np.int64)]
    order = np.argsort(ids, kind="stable")
    x = np.empty((len(ids), *source.item_shape), np.float32)
    step = stats_block_items(source.item_shape)
    for s in range(0, len(ids), step):
        rows = order[s:s + step]
        x[rows] = source.read(ids[rows])
    return standardize(x, sc, source, inplace=True)


def standardize_array(x, layout: str = "auto") -> torch.Tensor:
    """An in-memory array / tensor standardised exactly as :func:`sbnlib.assess.assess_data` does it."""
    src = ArraySource(x, layout=layout)
    sc = scan(src)
    return standardize(src.read(sc.ids), sc, src)
