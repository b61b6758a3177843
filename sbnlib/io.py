"""Crash-safe file output: write to a temporary file in the same folder, then rename.

A process killed between the two (SIGKILL, power loss) leaves the old file (or none) and a
temporary ``.<name>.<pid>-<random>.tmp`` beside it, never a partial ``<name>``; the next write of
``<name>`` (e.g. the resumed sweep recomputing that run) removes such leftovers, but never the
temporary of a writer that is still running (two runs writing one folder).

:func:`atomic_output_set` does the same for a set of files that belong together (a report's JSON,
PNG and HTML): all are written into a temporary folder beside them, and moved into place only when
every one of them was written, so a failed command leaves the earlier set as it was.

:func:`read_json_object` reads such a JSON object back; a file that is not one is a single
ValueError that names the file and what to do about it.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_output_set", "ensure_writable_dir", "read_json_object"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def ensure_writable_dir(path, option: str = "--out") -> Path:
    """Create ``path`` if needed; raise one clear error, naming ``option`` (what sets it), if it cannot be written."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create output directory {p}: {e.strerror}; choose another {option}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise OSError(f"output directory {p} is not writable; choose another {option} or fix its permissions")
    return p


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    _remove_stale(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_output_set(folder, name: str):
    """Write a set of files into ``folder`` all or nothing: yields an empty temporary folder
    ``.<name>.<pid>-<random>.tmp`` inside ``folder`` to write them into; when the block succeeds,
    each file is moved into ``folder`` (a rename in the same folder, which does not fail for want
    of space), else the temporary folder is removed and ``folder`` is left as it was."""
    folder = ensure_writable_dir(folder)
    _remove_stale(folder, name)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{name}.{os.getpid()}-", suffix=".tmp"))
    try:
        yield tmp
        for f in sorted(tmp.iterdir()):
            os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale(folder: Path, name: str) -> None:
    """Remove the temporaries (files or folders) of ``name`` left by killed earlier writes, never
    those of a writer that is still running (a concurrent run)."""
    for stale in folder.glob(f".{glob.escape(name)}.*.tmp"):
        part = stale.name[len(name) + 2:-4]  # "<pid>-<random>": no dots, else another file's
        if "." not in part and not _alive(part.split("-", 1)[0]):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _alive(pid: str) -> bool:
    """Is ``pid`` (the writer named in a temporary file's name) a running process of this machine?"""
    if not pid.isdigit():
        return False  # a temporary of an older naming: no writer to wait for
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # it exists (another user's), or cannot be asked: leave its file alone
    return True


def atomic_write_json(path, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def read_json_object(path, fix: str) -> dict:
    """The JSON object in ``path``; a file that cannot be read, is not JSON or holds another type is
    a ValueError that names it and says ``fix`` (what to do about it)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"unreadable {path} ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a JSON object; {fix}")
    return obj
