"""Your own data for the feasibility assessment: image folders, ``.npy`` / ``.npz`` arrays, CSV files.

A *source* reads items (images, array rows, CSV rows) as float32 arrays of one fixed shape:

* :class:`ImageFolderSource`: ``root/<class>/<image>``, the layout ``torchvision.datasets.ImageFolder``
  reads (classes = the sorted sub-folders, images found recursively in each, in sorted order), any
  format Pillow opens. Every image is converted to the channel count of the first image (or
  ``channels``) and resized to ``image_size`` x ``image_size`` (bilinear; aspect ratio not kept).
  Symbolic links are followed, but each real folder and file is read once: a link back into a
  folder already walked (a loop), or a second link to a folder or file, is skipped and noted. A
  folder that cannot be listed and a link that leads nowhere are bad entries, like an unreadable
  image; so is an image over Pillow's pixel limit (a decompression bomb).
* :class:`ArraySource`: an in-memory array or tensor, a ``.npy`` file or one array of a ``.npz``
  file (in place when stored uncompressed, else extracted to a temporary ``.npy`` first), shape
  ``(N, ...)``. Files are opened as memory maps for their header, shape and dtype, and read with
  plain file reads (:func:`read_rows`).
* :class:`CsvSource`: numeric features, one row per item, optional header, a label column to drop.
  Pass 1 parses the file once into a temporary float32 file that pass 2 reads.

The assessment reads every source twice and never holds more than a chunk of it:

* pass 1, :func:`scan`: one streaming pass in storage order that finds the usable items (bad ones
  raise :class:`UserDataError`, or are skipped and counted with ``skip_bad``) and computes the mean
  and standard deviation used to standardise, per channel (images, arrays of 3 or more axes) or
  per feature (2-D arrays, CSV). The statistics are accumulated over blocks whose size depends on
  the item shape only, so they are the same however the data are held (in memory or on disk);
* pass 2, :func:`read_standardized`: the items at given positions, read and standardised.

Standardised inputs are ``(x - mean) / std`` with population statistics; a constant feature or
channel (std 0) is centred and left at 0.

The parts: :mod:`.sources` (the base :class:`Source`, errors, limits), :mod:`.images`,
:mod:`.arrays`, :mod:`.csvfile` (the readers), :mod:`.readers` (:func:`open_source`) and
:mod:`.streaming` (the two passes).
"""
from __future__ import annotations

import os
import re
from typing import Iterator, List, Optional, Tuple

import numpy as np

__all__ = ["UserDataError", "Source", "IMAGE_SIZE_MAX", "SKIP_HINT", "printable"]
#: the largest image_size: one 4-channel image of this size is 256 MiB of float32
IMAGE_SIZE_MAX = 4096
F32_MAX = float(np.finfo(np.float32).max)

SKIP_HINT = "pass --skip-bad to skip such items and count them in the report"


class UserDataError(ValueError):
    """The data cannot be read as given; the message names the file (and row / column) and the fix.

    ``reason`` is the kind of problem in a few words ("unreadable image", "NaN", ...), used to count
    skipped items by kind.
    """

    def __init__(self, message: str, reason: str = "bad data"):
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------

Block = Tuple[np.ndarray, np.ndarray, List[Tuple[str, str, str]]]  # (item ids, float32 items, [(item, reason, message)])


class Source:
    """Common interface. ``item_shape`` is the shape of one item as read; ``per_channel`` says whether
    the statistics are per channel (axis 0 of an item) or per feature (every element of an item)."""

    kind = "source"
    name = "data"
    path: Optional[str] = None
    item_shape: Tuple[int, ...] = ()
    per_channel = False
    n_items: Optional[int] = None  # None: known only after pass 1 (CSV)
    bad_entries: List[Tuple[str, str, str]] = []  # (entry, reason, message) skipped before pass 1 (skip_bad)

    def info(self) -> dict:
        return {"kind": self.kind, "name": self.name, "path": None if self.path is None else printable(self.path),
                "item_shape": list(self.item_shape),
                "standardisation": "per channel" if self.per_channel else "per feature"}

    def blocks(self, block_items: int) -> Iterator[Block]:
        raise NotImplementedError

    def read(self, ids: np.ndarray) -> np.ndarray:
        """Items ``ids`` (as yielded by :meth:`blocks`), float32 ``(len(ids), *item_shape)``."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "data"


def printable(path) -> str:
    """A path as text that can be written anywhere: bytes that are not UTF-8 (which Python keeps as
    unencodable surrogates) become ``\\xff`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")

