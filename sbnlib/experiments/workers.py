"""Where a sweep's runs execute and when a sweep stops: worker processes that end with their parent,
a Dask client, and the stop condition that ends a sitting without losing the runs in flight
(:func:`sbnlib.experiments.sweep.run_configs` uses all three)."""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Optional

__all__ = ["DASK_CONNECT_TIMEOUT_S", "die_with_parent", "dask_client", "SweepStopped", "stop_condition"]

DASK_CONNECT_TIMEOUT_S = 10


def die_with_parent(parent: Optional[int] = None) -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux; elsewhere nothing).

    Sweep workers call it (and a notebook's kernel, whose parent is papermill), so that killing
    ``run_all.sh`` — even with SIGKILL — leaves no worker training on and writing result files.
    ``parent``: the pid the caller was started by (default: the current parent); if it is gone
    already (killed while this process was starting), this process ends now.
    """
    if not sys.platform.startswith("linux"):
        return
    expected = os.getppid() if parent is None else parent
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        return
    if expected == 1 or os.getppid() != expected:  # the parent died before the request: too late for it
        os.kill(os.getpid(), signal.SIGTERM)


def dask_client(scheduler):
    """``(client, owned)`` for a Dask scheduler address (``tcp://host:8786``) or a ``distributed.Client``;
    ``owned``: the caller opened it and closes it."""
    try:
        from distributed import Client
        from distributed.comm import resolve_address
    except ImportError:
        raise ImportError('running on a Dask cluster needs dask.distributed: pip install "sbnlib[cluster]"') from None
    if isinstance(scheduler, Client):
        return scheduler, False
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ValueError(f"scheduler must be a Dask scheduler address such as tcp://host:8786 or a "
                         f"distributed.Client, got {scheduler!r}")
    try:
        resolve_address(scheduler.strip())  # a malformed address or an unknown host fails here, at once
        return Client(scheduler.strip(), timeout=DASK_CONNECT_TIMEOUT_S), True
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot use the Dask scheduler at {scheduler!r}: {e}; give the address that "
                         "`dask scheduler` prints, e.g. tcp://host:8786") from None


class SweepStopped(Exception):
    """A sweep ended early because its ``stop`` condition held: ``finished`` runs have their result
    files (cached before or written now), ``left`` were not started."""

    def __init__(self, finished: int, left: int):
        super().__init__(f"stopped as asked: {finished} runs have their result files, {left} not started; "
                         "run the same command again to continue")
        self.finished, self.left = finished, left


def stop_condition(stop_file=None, minutes: Optional[float] = None) -> Callable[[], bool]:
    """A ``stop`` for :func:`run_configs`: true once ``stop_file`` exists or ``minutes`` have passed
    since this call, and from then on (so that deleting the file does not restart a drained sweep).
    Used to end a sitting without losing the runs in flight."""
    deadline = None if minutes is None else time.monotonic() + 60.0 * float(minutes)
    path = None if stop_file is None else Path(stop_file)
    stopped = False

    def stop() -> bool:
        nonlocal stopped
        stopped = stopped or (path is not None and path.exists()) or (
            deadline is not None and time.monotonic() >= deadline)
        return stopped

    return stop
