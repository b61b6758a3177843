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
"""
from __future__ import annotations

import array
import csv
import os
import re
import shutil
import struct
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch

__all__ = ["UserDataError", "ImageFolderSource", "ArraySource", "CsvSource", "open_source", "Scan", "scan",
           "standardize", "read_standardized", "standardize_array", "STATS_BLOCK_ELEMENTS", "image_extensions",
           "IMAGE_SIZE_MAX", "printable"]

#: pass 1 accumulates the statistics over blocks of about this many input values (8 MiB of float64)
STATS_BLOCK_ELEMENTS = 2**20
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


# ---- image folders ---------------------------------------------------------------------------

_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_ONE_BAND = ("1", "L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def image_extensions() -> Tuple[str, ...]:
    """File extensions of the image formats this Pillow can open (lower case, with the dot)."""
    from PIL import Image

    Image.init()
    return tuple(sorted(e for e, fmt in Image.registered_extensions().items() if fmt in Image.OPEN))


def _channels_of(img) -> int:
    """Channel count an image naturally has: 1 grey, 2 grey+alpha, 3 colour, 4 colour+alpha.

    Palette images count as colour (with alpha if they have transparency); CMYK, YCbCr, LAB and HSV
    count as colour and are converted to RGB.
    """
    m = img.mode
    if m in _ONE_BAND:
        return 1
    if m in ("LA", "La"):
        return 2
    if m in ("RGBA", "RGBa", "PA"):
        return 4
    if m == "P":
        return 4 if "transparency" in img.info else 3
    return 3


def _identity(path):
    """(device, inode) of what ``path`` leads to: the same for every link to one folder or file."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _open_image(path):
    """``PIL.Image.open`` that refuses, as an error, an image over Pillow's pixel limit
    (``Image.MAX_IMAGE_PIXELS``): Pillow only warns below twice the limit, and such an image would
    be decoded whole (a decompression bomb: a small file of gigabytes of pixels)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


class ImageFolderSource(Source):
    """``root/<class>/<image>`` as ``torchvision.datasets.ImageFolder`` reads it (see the module doc)."""

    kind = "image folder"
    per_channel = True

    def __init__(self, root, image_size: int = 32, channels: Optional[int] = None, skip_bad: bool = False):
        root = Path(root)
        if not root.is_dir():
            raise UserDataError(f"{printable(root)} is not a folder")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or not 1 <= image_size <= IMAGE_SIZE_MAX:
            raise UserDataError(f"image_size must be an integer in [1, {IMAGE_SIZE_MAX}], got {image_size!r}")
        if channels is not None and channels not in _MODES:
            raise UserDataError(f"channels must be one of {sorted(_MODES)}, got {channels!r}")
        self.root, self.path, self.name = root, str(root), _safe_name(root.resolve().name)
        self.image_size, self.skip_bad = image_size, skip_bad
        exts = set(image_extensions())
        try:
            with os.scandir(root) as it:
                top = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise UserDataError(f"{printable(root)}: cannot list the folder ({e.strerror}); fix its permissions") from None
        classes = [e.name for e in top if e.is_dir()]
        if not classes:
            n_flat = sum(1 for e in top if e.is_file() and os.path.splitext(e.name)[1].lower() in exts)
            hint = (f" (it holds {n_flat} images directly; move them into one sub-folder per class)" if n_flat else "")
            raise UserDataError(f"{printable(root)} has no class folders: an image folder is root/<class>/<image>{hint}")
        # the index: relative paths as fixed-width bytes, one array per class (a million paths as
        # Python objects would take ~60 MB more), class labels and each file's (device, inode)
        files, labels, self.empty_classes, self.n_ignored = [], [], [], 0
        self.bad_entries, self.links_skipped, inodes = [], {"count": 0, "examples": []}, array.array("Q")
        # the root and the class folders are walked (only) as such: a link to one of them is a link skipped
        seen_dirs = {_identity(root)} | {_identity(root / c) for c in classes}
        for ci, c in enumerate(classes):
            n_bad = len(self.bad_entries)
            keep = self._index(root / c, exts, seen_dirs, inodes)
            if keep:
                files.append(np.array(keep))
            labels.append(np.full(len(keep), ci, dtype=np.int32))
            if not keep and len(self.bad_entries) == n_bad:  # empty (an unreadable one is counted already)
                self._bad_entry(c + os.sep, "empty class folder",
                                f"empty class: {printable(root / c)} has no image files (extensions Pillow reads, "
                                f"e.g. .png .jpg .bmp .tif .webp); remove the folder or {SKIP_HINT}")
                self.empty_classes.append(c)
        if not files:
            raise UserDataError(f"{printable(root)} has no image files in its class folders {classes[:5]}")
        self.files, self.labels = np.concatenate(files), np.concatenate(labels)
        del files, labels
        # each real file once: a second link (or hard link) to a file already indexed is dropped
        _, first = np.unique(np.frombuffer(inodes, dtype=np.uint64).reshape(-1, 2), axis=0, return_index=True)
        del inodes
        if len(first) < len(self.files):
            once = np.zeros(len(self.files), bool)
            once[first] = True
            for f in self.files[~once]:
                self._link_skipped(os.fsdecode(f))
            self.files, self.labels = self.files[once], self.labels[once]
        release_free_memory()
        self.classes = classes
        self.class_counts = dict(zip(classes, np.bincount(self.labels, minlength=len(classes)).tolist()))
        self.n_items = len(self.files)
        self.channels, self.first = channels, None
        if channels is None:  # the first readable image fixes the channel count
            for i in range(self.n_items):
                try:
                    with _open_image(self._abs(i)) as img:
                        self.channels, self.first = _channels_of(img), (self._rel(i), img.mode)
                    break
                except Exception:  # unreadable: reported by pass 1
                    continue
            if self.channels is None:
                raise UserDataError(f"none of the {self.n_items} image files under {printable(root)} can be read by Pillow")
        self.item_shape = (self.channels, image_size, image_size)

    def _index(self, top: Path, exts, seen_dirs: set, inodes: array.array) -> List[bytes]:
        """The image files under the class folder ``top``, relative to the root, in sorted order;
        their (device, inode) pairs are appended to ``inodes`` in the same order.

        Links are followed, each real folder once (``seen_dirs``): a folder reached again (a loop,
        or a second link to it) is skipped and noted. A folder that cannot be listed, or a link
        that leads nowhere, is a bad entry (:meth:`_bad_entry`).
        """
        walked, stack = [], [top]
        while stack:
            d = stack.pop()
            rel = os.path.relpath(d, self.root)
            try:
                st = os.stat(d)
                if d is not top and (st.st_dev, st.st_ino) in seen_dirs:
                    self._link_skipped(rel + os.sep)
                    continue
                seen_dirs.add((st.st_dev, st.st_ino))
                with os.scandir(d) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as e:
                self._bad_entry(rel + os.sep, "unreadable folder", f"{printable(d)}: cannot list the folder "
                                f"({e.strerror}); fix its permissions or {SKIP_HINT}")
                continue
            names, ids = [], []
            for e in entries:
                try:
                    if e.is_dir():  # follows a link
                        stack.append(Path(e.path))
                        continue
                    if os.path.splitext(e.name)[1].lower() not in exts:
                        self.n_ignored += 1
                        continue
                    # a plain file's inode comes with the folder listing; only a link needs a stat
                    ids.append(_identity(e.path) if e.is_symlink() else (st.st_dev, e.inode()))
                    names.append(e.name)
                except OSError as err:  # a link that leads nowhere (or into a loop of links)
                    self._bad_entry(os.path.join(rel, e.name), "broken link", f"{printable(e.path)}: a link that leads "
                                    f"to no file ({err.strerror}); remove it or {SKIP_HINT}")
            walked.append((rel, names, ids))
        keep = []
        for rel, names, ids in sorted(walked, key=lambda w: w[0]):
            keep += [os.fsencode(os.path.join(rel, f)) for f in names]
            for dev, ino in ids:
                inodes.extend((dev, ino))
        return keep

    def _bad_entry(self, item: str, reason: str, message: str) -> None:
        """An entry of the folder that cannot be indexed: an error, or skipped and counted (``skip_bad``)."""
        if not self.skip_bad:
            raise UserDataError(message, reason)
        self.bad_entries.append((printable(item), reason, message))

    def _link_skipped(self, item: str) -> None:
        self.links_skipped["count"] += 1
        if len(self.links_skipped["examples"]) < 20:
            self.links_skipped["examples"].append(printable(item))

    def _rel(self, i) -> str:
        return os.fsdecode(self.files[i])

    def _abs(self, i) -> str:
        return os.path.join(self.path, self._rel(i))

    def info(self) -> dict:
        counts = [n for n in self.class_counts.values() if n]
        d = super().info()
        d.update(image_size=self.image_size, channels=self.channels, n_items=self.n_items,
                 n_classes=len(self.classes), images_per_class=[min(counts), max(counts)],
                 empty_classes=self.empty_classes, n_ignored_files=self.n_ignored, links_skipped=self.links_skipped,
                 channels_from=(f"first image {printable(self.first[0])} (mode {self.first[1]})" if self.first
                                else "channels option"),
                 resize=f"every image resized to {self.image_size}x{self.image_size} (bilinear, aspect ratio not kept)")
        n = self.links_skipped["count"]
        if n:
            d["notes"] = [f"{n} entr{'y' if n == 1 else 'ies'} of {printable(self.path)} skipped as reached a second time "
                          f"through a link (a loop, or two links to one folder or file), e.g. "
                          f"{', '.join(self.links_skipped['examples'][:3])}; each real file is read once"]
        return d

    def _load(self, i) -> np.ndarray:
        """Image ``i`` as float32 (C, S, S); raises UserDataError naming the file."""
        from PIL import Image

        where = printable(self._abs(i))  # the folder as the user gave it, then the image's path in it
        try:
            with _open_image(self._abs(i)) as img:
                img.load()
                c = _channels_of(img)
                if self.first is not None and c != self.channels:  # channel count fixed by the first image
                    raise UserDataError(
                        f"{where}: mixed channel counts: it has {c} (mode {img.mode}) but the first image "
                        f"{printable(os.path.join(self.path, self.first[0]))} has {self.channels} (mode {self.first[1]}); "
                        f"pass --channels {self.channels} or {c} to convert every image to that count, or {SKIP_HINT}",
                        reason="mixed channel counts")
                if self.channels == 1 and img.mode in _ONE_BAND and img.mode not in ("1", "L"):
                    img = img.convert("F")  # 16/32-bit grey: keep the depth
                elif img.mode != _MODES[self.channels]:
                    img = img.convert(_MODES[self.channels])
                if img.size != (self.image_size, self.image_size):
                    img = img.resize((self.image_size, self.image_size), Image.BILINEAR)
                a = np.asarray(img, dtype=np.float32)
            if not np.isfinite(a).all():  # a floating-point image (TIFF) with NaN or infinite pixels
                raise UserDataError(f"{where}: NaN or infinite pixel values; {SKIP_HINT}", reason="non-finite pixels")
        except UserDataError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise UserDataError(f"{where}: image too large ({e}); shrink it, or {SKIP_HINT}", reason="image too large") from None
        except Exception as e:  # PIL raises many types: UnidentifiedImageError, OSError (truncated), ...
            msg = str(e).replace(f"'{where}'", "").replace(where, "").replace("\n", " ").strip()
            raise UserDataError(f"{where}: unreadable image ({type(e).__name__}{': ' + msg if msg else ''}); {SKIP_HINT}",
                                reason="unreadable image") from None
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)

    def blocks(self, block_items: int) -> Iterator[Block]:
        for start in range(0, self.n_items, block_items):
            ids, xs, bad = [], [], []
            for i in range(start, min(start + block_items, self.n_items)):
                try:
                    xs.append(self._load(i))
                    ids.append(i)
                except UserDataError as e:
                    bad.append((printable(self._rel(i)), e.reason, str(e)))
            x = np.stack(xs) if xs else np.zeros((0, *self.item_shape), np.float32)
            yield np.array(ids, dtype=np.int64), x, bad

    def read(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), *self.item_shape), np.float32)
        for k, i in enumerate(ids):
            out[k] = self._load(int(i))
        return out


def read_rows(path, offset: int, row_shape, dtype: np.dtype, ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` of a C-ordered array of ``row_shape`` rows stored in ``path`` from byte ``offset``.

    One read per run of consecutive ids (a whole block in pass 1, mostly single rows in pass 2).
    """
    out = np.empty((len(ids), *row_shape), dtype)
    row = out[0].nbytes if len(ids) else 0
    if row == 0:
        return out
    buf = memoryview(out.reshape(len(ids), -1).view(np.uint8)).cast("B")
    starts = np.flatnonzero(np.diff(ids, prepend=ids[0] - 2) != 1)  # where a run of consecutive ids begins
    ends = np.append(starts[1:], len(ids))
    with open(path, "rb", buffering=0) as f:
        for a, b in zip(starts.tolist(), ends.tolist()):
            f.seek(offset + int(ids[a]) * row)
            view, got = buf[a * row:b * row], 0
            while got < len(view):  # a read may return less than asked
                n = f.readinto(view[got:])
                if not n:
                    raise UserDataError(f"{path}: the file is shorter than its header says (truncated?)")
                got += n
    return out


# ---- arrays ----------------------------------------------------------------------------------

def _npz_member(path: Path, key: Optional[str]):
    """One array of a .npz file, memory-mapped; returns (array, key, temp dir or None)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserDataError(f"{path.name}: not a readable .npz file ({e})") from None
    with zf:
        keys = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        if not keys:
            raise UserDataError(f"{path.name} holds no arrays")
        if key is None:
            common = [k for k in ("x", "X", "data", "features", "images", "x_train") if k in keys]
            if len(keys) == 1:
                key = keys[0]
            elif len(common) == 1:
                key = common[0]
            else:
                raise UserDataError(f"{path.name} holds {len(keys)} arrays ({', '.join(keys[:10])}); "
                                    "choose one with --array-key NAME")
        if key not in keys:
            raise UserDataError(f"{path.name} has no array {key!r}; it holds {', '.join(keys[:10])}")
        info, label = zf.getinfo(key + ".npy"), f"{path.name}[{key!r}]"
        try:
            with zf.open(info) as m:
                version = np.lib.format.read_magic(m)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(m)
                header_len = m.tell()
        except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as e:
            raise UserDataError(f"{label}: not a readable .npy member ({e}); save the array again") from None
        if dtype.hasobject:
            raise UserDataError(f"{label} is an object array; save numbers (e.g. float32)")
        size = header_len + int(np.prod(shape, dtype=object)) * dtype.itemsize  # Python ints: no overflow
        order = "F" if fortran else "C"
        if info.file_size != size:  # the zip's size and the array header's disagree: damaged or forged
            raise UserDataError(f"{label}: the member is {info.file_size:,} bytes but its header describes "
                                f"{size:,}; the file is damaged, save the array again")
        if info.compress_type == zipfile.ZIP_STORED:  # memory-map it in place
            with open(path, "rb") as f:
                f.seek(info.header_offset)
                local = f.read(30)
            n_name, n_extra = struct.unpack("<HH", local[26:30])
            offset = info.header_offset + 30 + n_name + n_extra + header_len
            if int(np.prod(shape)) == 0:
                return np.zeros(shape, dtype), key, None
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order), key, None
        # compressed: extracted (streaming) to a temporary .npy that is mapped; its size is known from
        # the header, so a member that would not fit (or a decompression bomb) is refused before
        tmp = tempfile.mkdtemp(prefix="sbn-npz-")
        try:
            free = shutil.disk_usage(tmp).free
            if size > free:
                raise UserDataError(f"{label}: extracting this compressed array needs {size:,} bytes in {tmp}, "
                                    f"{free:,} are free; store it uncompressed (np.savez, or a .npy file) or set TMPDIR")
            target = Path(tmp) / "member.npy"
            try:
                with zf.open(info) as m, open(target, "wb") as f:
                    shutil.copyfileobj(m, f, 1 << 22)  # zipfile stops at file_size and checks the CRC
            except (EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise UserDataError(f"{label}: the compressed data is damaged ({e}); save the array again") from None
            return np.load(target, mmap_mode="r"), key, tmp
        except BaseException:  # a member refused or damaged: its temporary goes with it
            shutil.rmtree(tmp, ignore_errors=True)
            raise


class ArraySource(Source):
    """An array ``(N, ...)``: in memory (numpy / torch), a ``.npy`` file or one array of a ``.npz``.

    Layout: 2-D ``(N, D)``: D features, standardised per feature. 3-D ``(N, H, W)``: one-channel
    images. 4-D: ``(N, C, H, W)``, or ``(N, H, W, C)`` when ``layout="nhwc"`` (``"auto"``: NHWC when
    axis 1 does not look like channels (more than 4 entries) but the last axis does); 5-D and more:
    channels on axis 1. Arrays of 3 or more axes are standardised per channel.
    """

    kind = "array"

    def __init__(self, data, array_key: Optional[str] = None, layout: str = "auto", name: Optional[str] = None):
        self._tmp = None
        try:
            self._open(data, array_key, layout, name)
        except BaseException:  # e.g. an extracted .npz member that is then refused: remove its temporary
            self.close()
            raise

    def _open(self, data, array_key, layout, name) -> None:
        if isinstance(data, (str, os.PathLike)):
            p = Path(data)
            self.path, self.name = str(p), _safe_name(p.stem)
            if p.suffix.lower() == ".npy":
                self.kind = ".npy file"
                try:
                    arr = np.load(p, mmap_mode="r", allow_pickle=False)
                except ValueError as e:
                    raise UserDataError(f"{p.name}: cannot be memory-mapped ({e}); save numbers (e.g. float32)") from None
                except OSError as e:
                    raise UserDataError(f"{p.name}: not a readable .npy file ({e})") from None
                self.array_key = None
            elif p.suffix.lower() == ".npz":
                self.kind = ".npz file"
                arr, self.array_key, self._tmp = _npz_member(p, array_key)
            else:
                raise UserDataError(f"{p.name}: unknown array format {p.suffix!r}; use .npy or .npz")
        else:
            if isinstance(data, torch.Tensor):
                data = data.detach().cpu().numpy()
            arr = np.asarray(data)
            self.kind, self.path, self.name, self.array_key = "in-memory array", None, name or "array", None
        label = self.name if self.path is None else Path(self.path).name
        if self.array_key:
            label += f"[{self.array_key!r}]"
        self.label = label
        if arr.dtype.hasobject or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise UserDataError(f"{label}: dtype {arr.dtype} is not numeric; save numbers (e.g. float32)")
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise UserDataError(f"{label}: complex values are not supported")
        if arr.ndim < 2 or arr.shape[0] == 0:
            raise UserDataError(f"{label}: expected shape (N, features...) with N >= 1, got {arr.shape}; "
                                "for one feature per sample reshape to (N, 1)")
        if 0 in arr.shape[1:]:
            raise UserDataError(f"{label}: items of shape {arr.shape[1:]} hold no values (an axis of length 0); "
                                "save an array of shape (N, features...) with every axis >= 1")
        if layout not in ("auto", "nchw", "nhwc"):
            raise UserDataError(f"layout must be auto, nchw or nhwc, got {layout!r}")
        self.nhwc = False
        if arr.ndim == 4:
            self.nhwc = layout == "nhwc" or (layout == "auto" and arr.shape[1] > 4 and arr.shape[-1] <= 4)
        elif layout == "nhwc":
            raise UserDataError(f"{label}: layout nhwc needs a 4-D array, got shape {arr.shape}")
        self.arr = arr
        self._file = None  # (path, offset, order) of a file-backed array, read with file reads: see _rows
        if isinstance(arr, np.memmap):
            self._file = (arr.filename, arr.offset, "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C")
        self.n_items = int(arr.shape[0])
        shape = tuple(int(s) for s in arr.shape[1:])
        if arr.ndim == 3:
            shape = (1, *shape)
        elif self.nhwc:
            shape = (shape[2], shape[0], shape[1])
        self.item_shape, self.per_channel = shape, arr.ndim >= 3

    def info(self) -> dict:
        d = super().info()
        d.update(n_items=self.n_items, array_shape=list(self.arr.shape), dtype=str(self.arr.dtype),
                 array_key=self.array_key,
                 layout={2: "(N, features)", 3: "(N, H, W), one channel"}.get(
                     self.arr.ndim, "(N, H, W, C) -> (N, C, H, W)" if self.nhwc else "(N, C, ...)"))
        return d

    def _convert(self, a: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # beyond float32's range becomes inf: reported by blocks()
            a = np.asarray(a, dtype=np.float32)
        if self.arr.ndim == 3:
            a = a[:, None]
        elif self.nhwc:
            a = a.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(a)

    def _where(self, row: int, a: np.ndarray) -> str:
        """'NaN at row 17, column 3' for a 2-D array, 'NaN at row 17 (element [17, 0, 4, 5])' otherwise."""
        with np.errstate(over="ignore"):
            bad = np.argwhere(~np.isfinite(np.asarray(a, dtype=np.float32)))[0]
        v = a[tuple(bad)]
        what = "NaN" if np.isnan(v) else "infinite value" if np.isinf(v) else "value beyond float32's range"
        pos = f"column {bad[0]}" if a.ndim == 1 else "element [" + ", ".join(str(i) for i in (row, *bad)) + "]"
        return f"{what} at row {row}, {pos}" if a.ndim == 1 else f"{what} at row {row} ({pos})"

    def _rows(self, sel) -> np.ndarray:
        """Rows ``sel`` (a slice, or an array of ids) of the array as stored (its dtype and layout).

        A file is read with plain reads, not through its memory map: the pages of a mapping count as
        resident memory of this process, and reading scattered rows through one maps whole blocks of
        the file around each (measured: ~300 KB per 12 KB row), which would defeat the chunking.
        """
        if self._file is None:
            return np.asarray(self.arr[sel])  # a view for a slice
        path, offset, order = self._file
        if order == "F":  # rare: rows are not contiguous on disk; a fresh mapping, dropped on return
            return np.asarray(np.memmap(path, self.arr.dtype, "r", offset, self.arr.shape, "F")[sel])
        ids = np.arange(sel.start, sel.stop) if isinstance(sel, slice) else sel
        return read_rows(path, offset, self.arr.shape[1:], self.arr.dtype, ids)

    def blocks(self, block_items: int) -> Iterator[Block]:
        floating = np.issubdtype(self.arr.dtype, np.floating)
        for start in range(0, self.n_items, block_items):
            stop = min(start + block_items, self.n_items)
            raw, ids = self._rows(slice(start, stop)), np.arange(start, stop, dtype=np.int64)
            x, bad = self._convert(raw), []
            if floating:  # NaN, inf, or a float64 beyond float32's range (inf once converted)
                ok = np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
                if not ok.all():
                    for r in np.flatnonzero(~ok):
                        where = self._where(start + int(r), raw[r])
                        bad.append((f"row {start + int(r)}", where.split(" at ")[0],
                                    f"{self.label}: {where}; remove, fill or rescale such values, or {SKIP_HINT}"))
                    ids, x = ids[ok], x[ok]
            yield ids, x, bad

    def read(self, ids: np.ndarray) -> np.ndarray:
        return self._convert(self._rows(np.asarray(ids, dtype=np.int64)))

    def close(self) -> None:
        self.arr = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


# ---- CSV -------------------------------------------------------------------------------------

def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _cell_ok(text: str) -> bool:
    """A number that float32 holds: not NaN, not infinite, not beyond float32's range."""
    try:
        return abs(float(text)) <= F32_MAX  # False for NaN
    except ValueError:
        return False


class CsvSource(Source):
    """A CSV file of numeric features, one row per item (see the module doc).

    ``header``: ``None`` detects it (the first row is a header when none of its cells is a number);
    ``label_column``: a column name (needs a header) or a 0-based index (negative counts from the
    end), dropped before scoring, its cells not checked. Delimiter: sniffed among ``, ; tab |``.
    Rows are reported as the file's line numbers (1-based, the header is line 1).
    """

    kind = "CSV file"
    per_channel = False

    def __init__(self, path, label_column=None, header: Optional[bool] = None):
        p = Path(path)
        self.path, self.name, self.fname = str(p), _safe_name(p.stem), p.name
        try:
            with open(p, newline="", encoding="utf-8-sig") as f:
                sample = f.read(1 << 16)
        except (OSError, UnicodeDecodeError) as e:
            raise UserDataError(f"{p.name}: cannot be read as text ({e})") from None
        try:
            self.dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        except csv.Error:
            self.dialect = csv.excel
        with open(p, newline="", encoding="utf-8-sig") as f:
            first = next((r for r in self._rows(csv.reader(f, self.dialect)) if any(c.strip() for c in r)), None)
        if first is None:
            raise UserDataError(f"{p.name} has no rows")
        self.n_cols = len(first)
        auto = header is None
        if auto:
            header = not any(_is_number(c) for c in first) or (isinstance(label_column, str) and label_column in first)
        self.header = bool(header)
        self.columns = [c.strip() for c in first] if self.header else [str(j) for j in range(self.n_cols)]
        self.header_how = ("detected (no number in the first row)" if auto and self.header
                           else "none detected (the first row has numbers)" if auto else "yes" if self.header else "no")
        drop = None
        if label_column is not None:
            lc = str(label_column).strip()
            if self.header and lc in self.columns:
                drop = self.columns.index(lc)
            elif re.fullmatch(r"-?\d+", lc):
                j = int(lc)
                if not -self.n_cols <= j < self.n_cols:
                    raise UserDataError(f"{p.name}: label column {j} is out of range; the file has {self.n_cols} columns")
                drop = j % self.n_cols
            else:
                have = f"columns: {', '.join(self.columns[:12])}" if self.header else "the file has no header"
                raise UserDataError(f"{p.name}: no column {lc!r} to use as the label column ({have}); "
                                    "give a column name or a 0-based index")
        self.label_column = None if drop is None else self.columns[drop]
        self.keep = [j for j in range(self.n_cols) if j != drop]
        if not self.keep:
            raise UserDataError(f"{p.name}: no feature columns left after dropping the label column")
        self.item_shape = (len(self.keep),)
        self._tmpdir = tempfile.mkdtemp(prefix="sbn-csv-")
        self._cache = Path(self._tmpdir) / "rows.f32"
        self.n_items = None
        with open(p, "rb") as f:  # for the progress bar: a cheap count of lines
            self.n_lines = sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 22), b""))

    def info(self) -> dict:
        d = super().info()
        d.update(n_items=self.n_items, n_columns=self.n_cols, header=self.header_how,
                 label_column=self.label_column, feature_columns=len(self.keep),
                 delimiter=repr(self.dialect.delimiter))
        return d

    def _cell_error(self, line: int, row_no: int, j: int, cell: str) -> Tuple[str, str]:
        col = f"column {j + 1} ({self.columns[j]!r})" if self.header else f"column {j + 1}"
        where = f"{self.fname} line {line} (data row {row_no}), {col}"
        if not cell.strip():
            return "empty cell", f"{where}: empty cell (missing value); fill or drop missing values, or {SKIP_HINT}"
        v = float(cell) if _is_number(cell) else None
        if v is None:
            return "non-numeric cell", (f"{where}: {cell!r} is not a number; drop the column (--label-column for one "
                                        f"label column) or {SKIP_HINT}")
        what = "NaN" if np.isnan(v) else "infinite value" if np.isinf(v) else "value beyond float32's range"
        return what, f"{where}: {what} ({cell.strip()[:40]!r}); remove, fill or rescale such values, or {SKIP_HINT}"

    def _rows(self, reader):
        """The reader's rows; a file that is not UTF-8 text or not CSV is one clear error."""
        try:
            yield from reader
        except UnicodeDecodeError as e:
            raise UserDataError(f"{self.fname} line {reader.line_num + 1}: not UTF-8 text ({e.reason}); "
                                "save the file as UTF-8") from None
        except csv.Error as e:
            raise UserDataError(f"{self.fname} line {reader.line_num}: not readable as CSV ({e})") from None

    def blocks(self, block_items: int) -> Iterator[Block]:
        rows, bad, n_good, row_no = [], [], 0, 0
        keep, n_cols = self.keep, self.n_cols
        with open(self.path, newline="", encoding="utf-8-sig") as f, open(self._cache, "wb") as cache:
            reader = csv.reader(f, self.dialect)
            skip_header = self.header
            for row in self._rows(reader):
                if not any(c.strip() for c in row):
                    continue  # blank line
                if skip_header:
                    skip_header = False
                    continue
                row_no += 1
                line = reader.line_num
                if len(row) != n_cols:
                    bad.append((f"line {line}", "wrong number of cells",
                                f"{self.fname} line {line} (data row {row_no}): {len(row)} cells, expected {n_cols} "
                                f"as in the first row; fix the row or {SKIP_HINT}"))
                    continue
                try:
                    vals = [float(row[j]) for j in keep]
                    ok = all(abs(v) <= F32_MAX for v in vals)  # False for NaN, +-inf and beyond float32
                except ValueError:
                    ok = False
                if not ok:
                    j = next(j for j in keep if not _cell_ok(row[j]))
                    reason, msg = self._cell_error(line, row_no, j, row[j])
                    bad.append((f"line {line}", reason, msg))
                    continue
                rows.append(vals)
                if len(rows) == block_items:
                    x = np.array(rows, dtype=np.float32)
                    cache.write(x.tobytes())
                    yield np.arange(n_good, n_good + len(rows), dtype=np.int64), x, bad
                    n_good, rows, bad = n_good + len(rows), [], []
            x = np.array(rows, dtype=np.float32).reshape(len(rows), len(keep))
            cache.write(x.tobytes())
            n_good += len(rows)
        self.n_items = n_good
        yield np.arange(n_good - len(rows), n_good, dtype=np.int64), x, bad

    def read(self, ids: np.ndarray) -> np.ndarray:
        if not self.n_items:
            raise UserDataError(f"{self.fname}: no usable rows")
        return read_rows(self._cache, 0, (len(self.keep),), np.dtype(np.float32), np.asarray(ids, dtype=np.int64))

    def close(self) -> None:
        shutil.rmtree(self._tmpdir, ignore_errors=True)


def open_source(data, *, image_size: int = 32, channels: Optional[int] = None, label_column=None,
                header: Optional[bool] = None, array_key: Optional[str] = None, layout: str = "auto",
                skip_bad: bool = False, name: Optional[str] = None) -> Source:
    """A source for ``data``: a folder (image folder), a ``.npy`` / ``.npz`` / ``.csv`` path, or an array / tensor."""
    if isinstance(data, Source):
        return data
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        if not p.exists():
            raise UserDataError(f"{p} does not exist")
        if p.is_dir():
            return ImageFolderSource(p, image_size=image_size, channels=channels, skip_bad=skip_bad)
        suffix = p.suffix.lower()
        if suffix in (".npy", ".npz"):
            return ArraySource(p, array_key=array_key, layout=layout)
        if suffix in (".csv", ".tsv", ".txt"):
            return CsvSource(p, label_column=label_column, header=header)
        raise UserDataError(f"{p.name}: unknown kind of data; give an image folder (root/<class>/<image>), "
                            "a .npy or .npz array file or a .csv file")
    return ArraySource(data, array_key=array_key, layout=layout, name=name)


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
    from tqdm.auto import tqdm

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
            import ctypes
            import ctypes.util

            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


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
