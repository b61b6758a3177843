"""Image folders as a source (:class:`ImageFolderSource`): ``root/<class>/<image>``, any format
Pillow opens, converted to one channel count and size; links followed once, bad entries counted.
"""
from __future__ import annotations

import array
import os
import warnings
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from ..checks import is_int
from .sources import IMAGE_SIZE_MAX, SKIP_HINT, Block, Source, UserDataError, _safe_name, printable
from .streaming import release_free_memory

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


def _class_folders(root: Path, exts) -> List[str]:
    """The class folders of the image folder ``root``, sorted by name; an error says what to fix
    where there are none."""
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
    return classes


class ImageFolderSource(Source):
    """``root/<class>/<image>`` as ``torchvision.datasets.ImageFolder`` reads it (see the module doc)."""

    kind = "image folder"
    per_channel = True

    def __init__(self, root, image_size: int = 32, channels: Optional[int] = None, skip_bad: bool = False):
        root = Path(root)
        if not root.is_dir():
            raise UserDataError(f"{printable(root)} is not a folder")
        if not is_int(image_size) or not 1 <= image_size <= IMAGE_SIZE_MAX:
            raise UserDataError(f"image_size must be an integer in [1, {IMAGE_SIZE_MAX}], got {image_size!r}")
        if channels is not None and channels not in _MODES:
            raise UserDataError(f"channels must be one of {sorted(_MODES)}, got {channels!r}")
        self.root, self.path, self.name = root, str(root), _safe_name(root.resolve().name)
        self.image_size, self.skip_bad = image_size, skip_bad
        exts = set(image_extensions())
        classes = _class_folders(root, exts)
        self._index_classes(root, classes, exts)
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

    def _index_classes(self, root: Path, classes: List[str], exts) -> None:
        """Index the image files of every class folder (``files``, ``labels``), each real file once;
        empty class folders and links skipped are recorded as bad entries."""
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
