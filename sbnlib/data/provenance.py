"""Provenance of the files read: their md5, torchvision's reference checksums, and the verdict
(verified, unverified copy, unchecked) a result is labelled with.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from .registry import DatasetSpec, _get_spec

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
# load_dataset
# --------------------------------------------------------------------------------------------

_UNCHECKED_IDX = "unchecked (no reference md5 for uncompressed IDX)"


def _verify(spec: DatasetSpec, root: Path, paths: Sequence[Path]) -> Tuple[dict, bool, str, str, List[str]]:
    """md5 every file; compare with the reference. Returns files, verified, status, note, warnings
    (which name the copy by the data root's folder name, not by the machine's path: they are written
    into committed tables and reports)."""
    folder = Path(root.name) / spec.layout
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
