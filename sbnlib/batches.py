"""The batch plan: which samples form each training batch, fixed by a seed (the core's only data need).
"""
from __future__ import annotations

from typing import Optional

import torch

from .checks import is_int

#: seeds are integers in [0, SEED_MAX]: every generator seeded here (torch, numpy) takes them, and
#: result tables hold them as int64
SEED_MAX = 2**32 - 1


def make_batch_plan(n_samples: int, batch_size: int, seed: int, epoch: Optional[int] = None) -> torch.Tensor:
    """Which samples form each training batch: int64 ``(n_batches, batch_size)``.

    A seeded permutation of ``range(n_samples)`` cut into ``n_samples // batch_size`` full batches;
    the last ``n_samples % batch_size`` samples of the permutation are dropped (every batch has
    exactly ``batch_size`` samples, so batch statistics are comparable). With ``epoch`` the
    permutation seed becomes ``seed * 1_000_003 + epoch``, so batches are re-formed every epoch
    and reproducibly so.
    """
    if not is_int(n_samples) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if not is_int(batch_size):
        raise ValueError(f"batch_size must be an integer, got {batch_size!r}; pass e.g. batch_size=64")
    if not 1 <= batch_size <= n_samples:
        raise ValueError(f"batch_size={batch_size} is invalid for n_samples={n_samples}: it must be "
                         f"between 1 and {n_samples}; use a smaller batch size or more samples")
    if epoch is not None and (not is_int(epoch) or epoch < 0):
        raise ValueError(f"epoch must be an integer >= 0 or None, got {epoch!r}")
    s = int(seed) if epoch is None else int(seed) * 1_000_003 + int(epoch)
    g = torch.Generator().manual_seed(s % (1 << 64))
    perm = torch.randperm(int(n_samples), generator=g)
    n_batches = int(n_samples) // int(batch_size)
    return perm[: n_batches * batch_size].reshape(n_batches, int(batch_size)).to(torch.int64)
