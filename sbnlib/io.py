"""Crash-safe file output: write to a temporary file in the same folder, then rename.

A process killed between the two (SIGKILL, power loss) leaves the old file (or none) and a
temporary ``.<name>.<pid>-<random>.tmp`` beside it, never a partial ``<name>``; the next write of
``<name>`` (e.g. the resumed sweep recomputing that run) removes such leftovers, but never the
temporary of a writer that is still running (two runs writing one folder).
"""
from __future__ import annotations

import glob
import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_json", "ensure_writable_dir"]

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
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a killed earlier write
        part = stale.name[len(path.name) + 2:-4]  # "<pid>-<random>": no dots, else another file's
        if "." not in part and not _alive(part.split("-", 1)[0]):  # never a live writer's (a concurrent run)
            stale.unlink(missing_ok=True)
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
