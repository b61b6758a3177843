"""Figures of an assessment: the score distributions, the fraction of batches that need BN, example
batches, and the benchmark evidence the recommendation rests on (read from
:func:`sbnlib.assess.evidence.benchmark_evidence`'s numbers). :func:`save_figure` writes any figure
atomically.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullLocator

from ..io import atomic_write_bytes
from .advice import plural
from .evidence import DATASET_TITLES, _title, diff_pp


def _batch_axis(ax, sizes):
    """Log-2 x axis with the batch sizes themselves as tick labels."""

    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(int(b) for b in sizes)))
    ax.set_xticklabels([str(int(b)) for b in sorted(set(int(b) for b in sizes))])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("batch size")


def _dodge(x, i: int, n: int, step: float = 0.04):
    """Shift series ``i`` of ``n`` sideways on a log x axis, so that error bars at one x do not overlap."""
    return np.asarray(x, dtype=float) * (1 + step * (i - (n - 1) / 2))


def _zero_line(ax, axis: str = "y"):
    """The reference of a difference plot: a line at 0 (no difference), kept inside the limits
    with a margin even when every difference lies on one side of it."""
    (ax.axhline if axis == "y" else ax.axvline)(0, color="k", lw=1.0, zorder=1.5)
    get, put = (ax.get_ylim, ax.set_ylim) if axis == "y" else (ax.get_xlim, ax.set_xlim)
    lo, hi = get()
    pad = 0.05 * (hi - lo)
    put(min(lo, -pad), max(hi, pad))


def _legend_outside(fig, axes, title=None, handles=None):
    """One legend for the figure, right of the panels, off the data. Its entries: ``handles``, else
    those of every panel (a method missing from one panel is still listed). ``_save`` crops to
    include it; call after ``tight_layout``."""
    if handles is None:
        handles = [h for ax in np.ravel(axes) for h in ax.get_legend_handles_labels()[0]]
    entries = {}
    for h in handles:
        entries.setdefault(h.get_label(), h)
    if entries:
        fig.legend(list(entries.values()), list(entries), title=title, loc="center left", bbox_to_anchor=(1.0, 0.5),
                   fontsize=8, title_fontsize=8, frameon=False)




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
        ax.set_title(f"B={r['batch_size']}: {r['frac_needs_bn']:.0%} of {plural(r['n_batches'], 'batch')} need BN", fontsize=9)
        ax.set_xlabel(f"{result['scorer']} score")
        ax.set_ylabel("batches")
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.suptitle(title or f"Batch heterogeneity ({result['scorer']}, threshold: {result['threshold_strategy']})")
    fig.tight_layout()
    return _save(fig, path)


def plot_benchmark_evidence(evidence: dict, batch_sizes=(), path=None, title=None):
    """Benchmark evidence: selective BN minus BN test accuracy (pp, 95% CI) per dataset and batch size.

    ``evidence`` is :func:`sbnlib.assess.evidence.benchmark_evidence`'s result (rows with ``diff_pp["bn"]``
    and ``ci_pp["bn"]`` as each dataset's ``evidence.json`` holds them); ``batch_sizes`` (the
    user's) are shaded grey. A row without a CI is drawn without error bars.
    """

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    by_ds = {}
    for r in evidence.get("rows", []):
        d = diff_pp(r)
        if d is not None:
            ci = (r.get("ci_pp") or {}).get("bn")
            by_ds.setdefault(r["dataset"], []).append((r["batch_size"], d, ci if ci and None not in ci else [d, d]))
    sizes = sorted({b for v in by_ds.values() for b, _, _ in v} | {int(b) for b in batch_sizes if b >= 1})
    rank = list(DATASET_TITLES)
    order = sorted(by_ds.items(), key=lambda kv: (rank.index(kv[0]) if kv[0] in rank else len(rank), kv[0]))
    for i, (ds, pts) in enumerate(order):
        pts.sort()
        b = _dodge([p[0] for p in pts], i, len(by_ds))
        d = np.array([p[1] for p in pts])
        lo = d - np.array([p[2][0] for p in pts])
        hi = np.array([p[2][1] for p in pts]) - d
        ax.errorbar(b, d, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], marker="o", ms=4, capsize=3, label=_title(ds))
    for b in batch_sizes:
        ax.axvspan(b / 1.15, b * 1.15, color="#999999", alpha=0.25, lw=0)
    if sizes:
        _batch_axis(ax, sizes)
    _zero_line(ax)
    ax.set_ylabel("selective BN - BN accuracy (pp)")
    ax.grid(alpha=0.3)
    ax.set_title(title or "Measured on the benchmarks: below 0 = selective BN less accurate than BN", fontsize=10)
    fig.tight_layout()
    _legend_outside(fig, ax, title="benchmark")
    return _save(fig, path)


def plot_frac_needs_bn(result: dict, path=None, title=None):
    """Fraction of batches that need BN, and the score distribution, against batch size."""
    rows = result["batch_sizes"]
    bs = [r["batch_size"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    a1.plot(bs, [100 * r["frac_needs_bn"] for r in rows], marker="o")
    _batch_axis(a1, bs)
    a1.set_ylim(0, 100)
    a1.set_ylabel("batches that need BN (%)")
    a1.grid(alpha=0.3)
    a2.boxplot([r["scores"] for r in rows], tick_labels=[str(b) for b in bs], showfliers=False)
    a2.plot(range(1, len(bs) + 1), [r["threshold"] for r in rows], "r_", ms=20, mew=2, label="threshold")
    a2.set_xlabel("batch size")
    a2.set_ylabel(f"{result['scorer']} score")
    a2.legend(fontsize=8)
    fig.suptitle(title or "Which batches need BN")
    fig.tight_layout()
    return _save(fig, path)


def plot_example_batches(images, scores, k: int = 2, path=None, title=None, max_images: int = 8):
    """The ``k`` most and least heterogeneous batches as image rows. ``images``: uint8 (n, B, C, H, W)."""
    order = np.argsort(np.asarray(scores))
    picks = [("most", i) for i in order[::-1][:k]] + [("least", i) for i in order[:k]]
    n_img = min(images.shape[1], max_images)
    fig, axes = plt.subplots(len(picks), n_img, figsize=(1.2 * n_img, 1.35 * len(picks)), squeeze=False)
    for row, (kind, i) in enumerate(picks):
        for j in range(n_img):
            ax = axes[row, j]
            img = images[i, j]
            img = img[0] if img.shape[0] == 1 else np.transpose(np.asarray(img), (1, 2, 0))
            ax.imshow(np.asarray(img), cmap="gray" if np.asarray(img).ndim == 2 else None, vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
        axes[row, 0].set_ylabel(f"{kind}\n{float(scores[i]):.3f}", fontsize=8)
    fig.suptitle(title or "Most and least heterogeneous batches (score at left)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
