"""Argument checks shared by every module: one definition of "an integer" and of "one of these".

An integer is a Python or numpy integer and never a bool (``True`` is an ``int`` to Python, but
``batch_size=True`` is a slip, not a batch size of 1). Every module tests integer arguments with
:func:`is_int` (or :func:`check_int`) and named choices with :func:`check_choice`, so that one
function does not accept what another rejects.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

__all__ = ["is_int", "check_int", "check_choice"]


def is_int(value) -> bool:
    """``value`` is an integer (``int`` or a numpy integer) and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value, name: str, lo: Optional[int] = None, hi: Optional[int] = None, error=ValueError) -> int:
    """``value`` as a Python ``int`` if it is an integer in ``[lo, hi]`` (either bound optional);
    else ``error`` naming ``name``, the range and the value given."""
    if not is_int(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = " and ".join(s for s in (f">= {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else "") if s)
        raise error(f"{name} must be an integer{' ' + bounds if bounds else ''}, got {value!r}")
    return int(value)


def check_choice(value, name: str, choices: Iterable, error=ValueError):
    """``value`` if it is one of ``choices``; else ``error`` listing them."""
    choices = list(choices)
    if value not in choices:
        raise error(f"unknown {name} {value!r}; choose one of {choices}")
    return value
