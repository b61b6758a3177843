"""Seeded, class-stratified subsets and validation splits.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..checks import is_int
from .registry import DataWarning

# --------------------------------------------------------------------------------------------
# Subsampling, statistics, batch plans
# --------------------------------------------------------------------------------------------

def _check_count(n, what: str) -> int:
    if not is_int(n):
        raise ValueError(f"{what} must be a positive integer (or None for all), got {n!r}")
    if n <= 0:
        raise ValueError(f"{what} must be a positive integer (or None for all), got {n}")
    return int(n)


def stratified_subsample(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of a seeded, class-stratified subset of ``n`` samples, sorted ascending.

    Each class gets ``floor(n * count / N)`` samples; the remaining ones go, one each, to the
    classes with the largest fractional parts (ties: lower class index first). Within a class the
    first ``quota`` entries of a seeded permutation are taken. Class proportions are therefore
    kept to within one sample. ``n`` larger than ``len(labels)`` is clipped (with a
    :class:`DataWarning`) and all indices are returned.
    """
    n = _check_count(n, "n")
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(y.shape)}")
    total = y.shape[0]
    if n >= total:
        if n > total:
            warnings.warn(f"asked for {n} samples, only {total} are available; using {total}",
                          DataWarning, stacklevel=2)
        return torch.arange(total, dtype=torch.int64)
    classes, counts = np.unique(y, return_counts=True)
    quotas = (n * counts) // total
    remainders = (n * counts) % total  # exact integer fractional parts (times total)
    short = n - int(quotas.sum())
    order = sorted(range(len(classes)), key=lambda i: (-int(remainders[i]), i))
    quotas[order[:short]] += 1
    rng = np.random.default_rng(seed)
    chosen = []
    for c, q in zip(classes, quotas):
        members = np.flatnonzero(y == c)
        chosen.append(members[rng.permutation(members.shape[0])[:q]])
    return torch.from_numpy(np.sort(np.concatenate(chosen)).astype(np.int64))


def validation_split(labels: torch.Tensor, frac: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)``: a seeded, class-stratified validation split of ``frac`` of the
    samples (:func:`stratified_subsample`, ``round(frac * N)`` of them) and the rest, both sorted
    and disjoint. ``frac=0`` gives every index to training and an empty validation set. The
    split's seed is derived from ``seed`` so that it differs from the subset drawn with ``seed``."""
    n = int(labels.shape[0])
    n_val = int(round(frac * n))
    if n_val == 0:
        return torch.arange(n, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    val = stratified_subsample(labels, n_val, seed=seed + 0x7A11)
    keep = torch.ones(n, dtype=torch.bool)
    keep[val] = False
    return torch.nonzero(keep).flatten(), val


def _subsample_split(x: np.ndarray, y: np.ndarray, n: Optional[int], seed: int, split: str,
                     where: Path, warns: List[str]) -> Tuple[np.ndarray, np.ndarray]:
    avail = y.shape[0]
    if n is None or n == avail:
        return x, y
    if n > avail:
        warns.append(f"asked for {n} {split} images, the copy at {where} holds {avail}; using {avail}")
        return x, y
    idx = stratified_subsample(torch.from_numpy(y), n, seed).numpy()
    return x[idx], y[idx]
