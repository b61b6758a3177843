"""Figures. Every function draws on a new matplotlib figure, saves it when given a path, returns it."""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .io import atomic_write_bytes

__all__ = ["plot_score_histograms", "plot_frac_needs_bn", "plot_benchmark_evidence", "plot_readings"]


def _save(fig, path):
    """Save atomically (a crash never leaves half a PNG) and return the figure."""
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
        atomic_write_bytes(path, buf.getvalue())
    return fig


def plot_score_histograms(result: dict, path=None, title: str | None = None):
    """One histogram of batch scores per batch size, with the fitted threshold as a red line."""
    from .advice import plural

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

    ``evidence`` is :func:`sbnlib.advice.benchmark_evidence`'s result (rows with ``sbn-bn diff (pp)``
    and ``sbn-bn 95% CI (pp)`` as read from each dataset's ``accuracy.csv``); ``batch_sizes``
    (the user's) are shaded grey.
    """
    import re

    from .advice import DATASET_TITLES, _title

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    by_ds = {}
    for r in evidence.get("rows", []):
        d = r.get("sbn-bn diff (pp)")
        if isinstance(d, (int, float)) and np.isfinite(d):
            ci = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", str(r.get("sbn-bn 95% CI (pp)", "")))][:2]
            by_ds.setdefault(r["dataset"], []).append((r["batch_size"], d, ci if len(ci) == 2 else [d, d]))
    sizes = sorted({b for v in by_ds.values() for b, _, _ in v} | {int(b) for b in batch_sizes if b >= 1})
    rank = list(DATASET_TITLES)
    order = sorted(by_ds.items(), key=lambda kv: (rank.index(kv[0]) if kv[0] in rank else len(rank), kv[0]))
    for i, (ds, pts) in enumerate(order):
        pts.sort()
        b = np.array([p[0] for p in pts], float) * (1 + 0.04 * (i - (len(by_ds) - 1) / 2))  # dodge
        d = np.array([p[1] for p in pts])
        lo = d - np.array([p[2][0] for p in pts])
        hi = np.array([p[2][1] for p in pts]) - d
        ax.errorbar(b, d, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], marker="o", ms=4, capsize=3, label=_title(ds))
    for b in batch_sizes:
        ax.axvspan(b / 1.15, b * 1.15, color="#999999", alpha=0.25, lw=0)
    ax.axhline(0, color="k", lw=0.8)
    if sizes:
        _batch_axis(ax, sizes)
    ax.set_ylabel("selective BN - BN accuracy (pp)")
    ax.grid(alpha=0.3)
    if by_ds:
        ax.legend(fontsize=8)
    ax.set_title(title or "Measured on the benchmarks: below 0 = selective BN less accurate than BN", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


_METHOD_COLORS = {"bn": "#4c72b0", "sbn": "#dd8452", "sbn_frozen": "#937860", "random": "#8c8c8c",
                  "gn": "#55a868", "none": "#c44e52"}


def _color(method: str) -> str:
    return _METHOD_COLORS.get(method, None)


def _mean_ci(values) -> tuple:
    """Mean and half-width of the 95% t-interval of the mean (0 for a single value)."""
    from scipy import stats as st

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.nan, np.nan
    if v.size == 1:
        return float(v[0]), 0.0
    return float(v.mean()), float(st.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))


def _batch_axis(ax, sizes):
    """Log-2 x axis with the batch sizes themselves as tick labels."""
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(int(b) for b in sizes)))
    ax.set_xticklabels([str(int(b)) for b in sorted(set(int(b) for b in sizes))])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("batch size")


def _by_batch(ax, df, metric, methods, scale=1.0):
    for m in methods:
        sub = df[df.method == m]
        if sub.empty:
            continue
        bs = sorted(sub.batch_size.unique())
        mc = [_mean_ci(sub[sub.batch_size == b][metric]) for b in bs]
        mean = np.array([a for a, _ in mc]) * scale
        half = np.array([h for _, h in mc]) * scale
        ax.errorbar(bs, mean, yerr=half, marker="o", ms=4, capsize=3, label=m, color=_color(m))
    _batch_axis(ax, df.batch_size.unique())
    ax.grid(alpha=0.3)


def plot_accuracy_vs_batch(df, methods, path=None, title=None):
    """Final test accuracy (mean and 95% CI over seeds) against batch size, one line per method."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _by_batch(ax, df, "final_test_acc", methods, scale=100)
    ax.set_ylabel("final test accuracy (%)")
    ax.legend(title="method")
    ax.set_title(title or "Test accuracy vs batch size (mean, 95% CI over seeds)")
    fig.tight_layout()
    return _save(fig, path)


def plot_stability(df, methods, metrics: dict, path=None, title=None):
    """One panel per stability metric against batch size (mean, 95% CI over seeds)."""
    n = len(metrics)
    fig, axes = plt.subplots(1, n, figsize=(4.3 * n, 3.6), squeeze=False)
    for ax, (metric, label) in zip(axes.flat, metrics.items()):
        _by_batch(ax, df, metric, methods)
        ax.set_title(label, fontsize=9)
    axes.flat[0].legend(title="method", fontsize=8)
    fig.suptitle(title or "Stability metrics (lower = more stable)")
    fig.tight_layout()
    return _save(fig, path)


def plot_learning_curves(results, methods, path=None, title=None):
    """Validation accuracy after every epoch (median over seeds), one panel per method, one line per
    batch size: has each method plateaued by the last epoch?"""
    methods = [m for m in methods if any(r["config"]["method"] == m for r in results)]
    sizes = sorted({r["config"]["batch_size"] for r in results})
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.2), squeeze=False, sharey=True)
    for ax, m in zip(axes.flat, methods):
        for k, b in enumerate(sizes):
            curves = [[e["val_acc"] for e in r["epochs"]] for r in results
                      if r["config"]["method"] == m and r["config"]["batch_size"] == b and r["status"] == "ok"]
            if not curves or curves[0][0] is None:
                continue
            med = 100 * np.median(np.asarray(curves, dtype=float), axis=0)
            ax.plot(np.arange(1, med.size + 1), med, marker=".", color=cmap(k / max(1, len(sizes) - 1)), label=f"B={b}")
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("validation accuracy (%)")
    axes.flat[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title or "Validation accuracy per epoch (median over seeds)")
    fig.tight_layout()
    return _save(fig, path)


def plot_loss_curves(results, batch_sizes, methods, path=None, title=None):
    """Training loss against the step (the record's chunk means, median over seeds), one panel per
    batch size."""
    n = len(batch_sizes)
    fig, axes = plt.subplots(1, n, figsize=(4.3 * n, 3.4), squeeze=False)
    for ax, b in zip(axes.flat, batch_sizes):
        for m in methods:
            runs = [r["steps"] for r in results if r["config"]["batch_size"] == b and r["config"]["method"] == m]
            if not runs:
                continue
            length = min(len(s["loss"]) for s in runs)  # a diverged run stops early
            stack = np.stack([np.asarray(s["loss"][:length], dtype=float) for s in runs])
            ax.plot(np.asarray(runs[0]["at"][:length]) + 1, np.nanmedian(stack, axis=0), label=m, color=_color(m), lw=1.2)
        ax.set_title(f"batch size {b}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("training loss (chunk mean)")
    axes.flat[0].legend(title="method", fontsize=8)
    fig.suptitle(title or "Training loss (median over seeds)")
    fig.tight_layout()
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


def plot_verdict_diffs(comparisons: dict, path=None, title=None):
    """sbn - bn accuracy difference (percentage points, 95% bootstrap CI) vs batch size, per dataset."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, c in comparisons.items():
        c = c[c["baseline"] == "bn"].sort_values("batch_size")
        if c.empty:
            continue
        y = 100 * c["mean_diff"].to_numpy()
        err = 100 * np.vstack([c["mean_diff"] - c["ci_low"], c["ci_high"] - c["mean_diff"]])
        ax.errorbar(c["batch_size"], y, yerr=err, marker="o", ms=4, capsize=3, label=name)
    ax.axhline(0, color="k", lw=0.8)
    sizes = sorted({int(b) for c in comparisons.values() for b in c["batch_size"]})
    if sizes:
        _batch_axis(ax, sizes)
    ax.set_ylabel("sbn - bn test accuracy (pp)")
    ax.grid(alpha=0.3)
    ax.legend(title="dataset")
    ax.set_title(title or "Selective BN minus BN, per dataset (mean, 95% bootstrap CI)")
    fig.tight_layout()
    return _save(fig, path)


def plot_ablation(df, path=None, title=None):
    """Per batch size: accuracy against the fraction of batches normalised, for the rate sweep of
    heterogeneity-selected batches, the random control at the same rates, and every scorer /
    threshold pair (one marker each). Means and 95% CIs over seeds."""
    sizes = sorted(df.batch_size.unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.0 * len(sizes), 4.2), squeeze=False)
    markers = "osD^v<>P*X"
    for ax, b in zip(axes.flat, sizes):
        sub = df[df.batch_size == b]
        for method, color, label in (("sbn", _color("sbn"), "heterogeneity, rate sweep"),
                                     ("random", _color("random"), "random control, same rates")):
            rs = sub[(sub.threshold == "rate") & (sub.method == method)]
            if method == "random":  # at rates 0 and 1 random makes sbn's decisions: share its end points
                ends = sub[(sub.threshold == "rate") & (sub.method == "sbn") & sub.threshold_rate.isin([0.0, 1.0])]
                rs = pd.concat([rs, ends])
            pts = [(g.frac_normalized.mean(), *_mean_ci(g.final_test_acc)) for _, g in rs.groupby("threshold_rate")]
            if pts:
                x, y, h = map(np.array, zip(*pts))
                ax.errorbar(x, 100 * y, yerr=100 * h, color=color, marker="o", ms=4, capsize=3, label=label)
        grid = sub[sub.threshold != "rate"]
        for i, (scorer, g_s) in enumerate(grid.groupby("scorer")):
            for strategy, g in g_s.groupby("threshold"):
                m, h = _mean_ci(g.final_test_acc)
                ax.errorbar(g.frac_normalized.mean(), 100 * m, yerr=100 * h, marker=markers[i % len(markers)],
                            ls="none", ms=6, capsize=2, alpha=0.8, label=f"{scorer} / {strategy}")
        ax.set_title(f"batch size {b}", fontsize=10)
        ax.set_xlabel("fraction of training batches normalised")
        ax.set_xlim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("final test accuracy (%)")
    axes.flat[-1].legend(fontsize=7, loc="best")
    fig.suptitle(title or "Accuracy vs fraction of batches normalised")
    fig.tight_layout()
    return _save(fig, path)


def plot_bn_vs_gn(frames: dict, path=None, title=None):
    """Sanity reference (Wu & He, 2018): BN's accuracy should fall as batches shrink while
    GroupNorm's stays flat. One panel per dataset with ``bn`` and ``gn`` runs (mean, 95% CI)."""
    names = [d for d, df in frames.items() if {"bn", "gn"} <= set(df.method)]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.8), squeeze=False)
    for ax, d in zip(axes.flat, names):
        _by_batch(ax, frames[d], "final_test_acc", ["bn", "gn"], scale=100)
        ax.set_title(d, fontsize=10)
    axes.flat[0].set_ylabel("final test accuracy (%)")
    axes.flat[0].legend(title="method")
    fig.suptitle(title or "Sanity reference: BN vs GroupNorm across batch sizes")
    fig.tight_layout()
    return _save(fig, path)


def plot_readings(comparisons: pd.DataFrame, path=None, title=None, baselines=("bn", "control")):
    """The readings as a forest plot: one panel per baseline (``bn``, the random control at the same
    rate), one row per reading, and per batch size the paired test-accuracy difference reading -
    baseline (percentage points) with its 95% bootstrap CI; a filled marker where the verdict is
    not inconclusive (Holm-adjusted Wilcoxon p < 0.05 and the CI on one side of 0).
    ``comparisons``: :func:`sbnlib.readings.readings_table`'s ``"comparisons"``."""
    names = list(dict.fromkeys(comparisons["reading"]))
    sizes = sorted({int(b) for b in comparisons["batch_size"]})
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(sizes)))
    fig, axes = plt.subplots(1, len(baselines), figsize=(5.2 * len(baselines), 0.45 * len(names) + 1.8),
                             sharey=True, squeeze=False)
    for ax, base in zip(axes.flat, baselines):
        c = comparisons[comparisons["baseline"] == base]
        for j, (b, color) in enumerate(zip(sizes, colors)):
            cb = c[c["batch_size"] == b].set_index("reading").reindex(names)
            y = np.arange(len(names)) + 0.6 * (j - (len(sizes) - 1) / 2) / max(1, len(sizes))  # dodge
            d = 100 * cb["mean_diff"].to_numpy(dtype=float)
            err = 100 * np.vstack([cb["mean_diff"] - cb["ci_low"], cb["ci_high"] - cb["mean_diff"]]).astype(float)
            decided = (cb["verdict"].fillna("inconclusive") != "inconclusive").to_numpy()
            ax.errorbar(d, y, xerr=np.nan_to_num(err), fmt="none", ecolor=color, capsize=2, lw=1)
            ax.scatter(d, y, marker="o", s=22, edgecolors=color, facecolors=[color if k else "white" for k in decided],
                       label=f"B={b}", zorder=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(f"reading - {'random control, same rate' if base == 'control' else base}", fontsize=10)
        ax.set_xlabel("test accuracy difference (pp)")
        ax.grid(alpha=0.3, axis="x")
    axes.flat[0].set_yticks(np.arange(len(names)))
    axes.flat[0].set_yticklabels(names)
    axes.flat[0].invert_yaxis()
    axes.flat[-1].legend(fontsize=7, loc="best", title="filled: verdict", title_fontsize=7)
    fig.suptitle(title or "Readings of selective BN: paired differences (mean, 95% bootstrap CI)")
    fig.tight_layout()
    return _save(fig, path)
