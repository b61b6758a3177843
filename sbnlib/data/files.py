"""Where a dataset's files are: the data root, the files expected, the message when they are
missing, and the download through torchvision.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from .registry import _HOW_TO_PROVIDE, DEFAULT_ROOT, ENV_ROOT, DataError, DatasetSpec

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
