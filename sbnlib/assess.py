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
