"""Figures. Every function draws on a new matplotlib figure, saves it when given a path, returns it."""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .io import atomic_write_bytes

__all__ = ["plot_score_histograms"]


def _save(fig, path):
    """Save atomically (a crash never leaves half a PNG) and return the figure."""
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
        atomic_write_bytes(path, buf.getvalue())
    return fig


def plot_score_histograms(result: dict, path=None, title: str | None = None):
    """One histogram of batch scores per batch size, with the fitted threshold as a red line."""
    rows = result["batch_sizes"]
    cols = min(3, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, r in zip(axes.flat, rows):
        s = np.asarray(r["scores"])
        ax.hist(s, bins=min(60, max(10, s.size // 20)), color="#4c72b0", alpha=0.85)
        if np.isfinite(r["threshold"]):
            ax.axvline(r["threshold"], color="#c44e52", lw=2, label=f"threshold {r['threshold']:.3f}")
            ax.legend(fontsize=8, loc="upper right")
        ax.set_title(f"B={r['batch_size']}: {r['frac_needs_bn']:.0%} of {r['n_batches']} batches need BN", fontsize=9)
        ax.set_xlabel(f"{result['scorer']} score")
        ax.set_ylabel("batches")
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.suptitle(title or f"Batch heterogeneity ({result['scorer']}, threshold: {result['threshold_strategy']})")
    fig.tight_layout()
    return _save(fig, path)
