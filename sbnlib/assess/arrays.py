"""Arrays as a source (:class:`ArraySource`): an in-memory array or tensor, a ``.npy`` file or one
array of a ``.npz`` file, read with plain file reads (:func:`read_rows`), never loaded whole.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from .sources import SKIP_HINT, Block, Source, UserDataError, _safe_name


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

def _npz_key(path: Path, keys, key: Optional[str]) -> str:
    """The array to read among ``keys``: ``key``, else the only one or the only usual name."""
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
    return key


def _extract_npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, size: int):
    """A compressed member, extracted (streaming) to a temporary .npy that is memory-mapped;
    returns (array, temp dir). Its ``size`` is known from the header, so a member that would not
    fit (or a decompression bomb) is refused before."""
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
        return np.load(target, mmap_mode="r"), tmp
    except BaseException:  # a member refused or damaged: its temporary goes with it
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
        key = _npz_key(path, keys, key)
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
        arr, tmp = _extract_npz_member(zf, info, label, size)  # compressed: extracted, then mapped
        return arr, key, tmp


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
