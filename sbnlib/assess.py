"""The paper's early-stage feasibility assessment: score and classify batches, no training.

For each batch size, the training set is cut into a seeded batch plan, every batch is scored, a
threshold is fitted and the fraction of batches that *need BN* is reported.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import torch

from .data import make_batch_plan
from .scoring import score_batches
from .threshold import classify_batches, fit_threshold

__all__ = ["assess"]


def assess(
    x: torch.Tensor,
    batch_sizes: Iterable[int],
    scorer: str = "feature_std",
    threshold: str = "mean",
    q: Optional[float] = None,
    rate: Optional[float] = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Assess normalised inputs ``x`` (N, ...) at each batch size; JSON-serialisable result.

    ``result["batch_sizes"][i]`` holds ``batch_size``, ``n_batches``, ``threshold``,
    ``frac_needs_bn``, summary statistics of the scores and the scores themselves.
    """
    from tqdm.auto import tqdm

    batch_sizes = list(batch_sizes)
    if not batch_sizes:
        raise ValueError("no batch sizes given; pass at least one, e.g. 2 4 8 16 32 64")
    rows = []
    for b in tqdm(batch_sizes, desc="assess", unit="batch size", disable=not progress):
        plan = make_batch_plan(x.shape[0], b, seed=seed)
        scores = score_batches(x, b, scorer, order=plan)
        t = fit_threshold(scores, threshold, q=q, rate=rate)
        needs = classify_batches(scores, t)
        s = scores.numpy()
        rows.append({
            "batch_size": b,
            "n_batches": int(s.size),
            "threshold": float(t),
            "frac_needs_bn": float(needs.mean()),
            "n_needs_bn": int(needs.sum()),
            "score_mean": float(s.mean()),
            "score_std": float(s.std()),
            "score_min": float(s.min()),
            "score_max": float(s.max()),
            "scores": s.tolist(),
        })
    return {"scorer": scorer if isinstance(scorer, str) else getattr(scorer, "__name__", "custom"),
            "threshold_strategy": threshold, "q": q, "rate": rate, "seed": seed,
            "n_samples": int(x.shape[0]), "batch_sizes": rows}


def summary_table(result: dict) -> str:
    """Plain-text table of an :func:`assess` result, one line per batch size."""
    lines = [f"{'batch':>6} {'batches':>8} {'threshold':>10} {'needs BN':>9}  score mean ± std"]
    for r in result["batch_sizes"]:
        lines.append(f"{r['batch_size']:>6} {r['n_batches']:>8} {r['threshold']:>10.4f} "
                     f"{r['frac_needs_bn']:>8.1%}  {r['score_mean']:.4f} ± {r['score_std']:.4f}")
    return "\n".join(lines)


def domain_auroc(x: torch.Tensor, domain: torch.Tensor, batch_size: int, scorer="feature_std",
                 n_batches: int = 500, seed: int = 0) -> dict:
    """Does the scorer rank truly mixed batches above pure ones? (ground-truth check)

    ``domain`` (0/1 per sample) says which source each sample comes from. Build ``n_batches``
    *pure* batches (each all from one domain, the two domains alternating) and ``n_batches``
    *mixed* batches (``batch_size // 2`` samples from domain 0, the rest from domain 1), sampling
    without replacement within a batch, seeded. Returns the scores' AUROC for "mixed" vs "pure":
    the probability that a random mixed batch scores above a random pure one (ties count half),
    computed as the Mann-Whitney U statistic / (n_mixed * n_pure). 0.5 = no better than chance.
    """
    from scipy.stats import mannwhitneyu

    if batch_size < 2:
        raise ValueError("a mixed batch needs at least 2 samples; use batch_size >= 2")
    domain = torch.as_tensor(domain).long()
    pools = [torch.nonzero(domain == d).flatten() for d in (0, 1)]
    if any(len(p) < batch_size for p in pools):
        raise ValueError(f"each domain needs at least {batch_size} samples")
    g = torch.Generator().manual_seed(seed)

    def draw(pool, k):
        return pool[torch.randperm(len(pool), generator=g)[:k]]

    pure = torch.stack([draw(pools[i % 2], batch_size) for i in range(n_batches)])
    half = batch_size // 2
    mixed = torch.stack([torch.cat([draw(pools[0], half), draw(pools[1], batch_size - half)])
                         for _ in range(n_batches)])
    s_pure = score_batches(x, batch_size, scorer, order=pure).numpy()
    s_mixed = score_batches(x, batch_size, scorer, order=mixed).numpy()
    u = mannwhitneyu(s_mixed, s_pure, alternative="two-sided").statistic
    return {"batch_size": batch_size, "scorer": scorer if isinstance(scorer, str) else "custom",
            "auroc": float(u / (len(s_mixed) * len(s_pure))), "n_batches": n_batches,
            "score_mean_mixed": float(s_mixed.mean()), "score_mean_pure": float(s_pure.mean())}
