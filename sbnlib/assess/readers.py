"""Which source reads your data: :func:`open_source` dispatches a folder, a ``.npy`` / ``.npz`` /
``.csv`` path or an array to its reader.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .arrays import ArraySource
from .csvfile import CsvSource
from .images import ImageFolderSource
from .sources import Source, UserDataError


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
