"""Figures of the experiments: accuracy and stability by batch size, learning and loss curves,
verdicts, the ablation, the readings and BN against GroupNorm. Each returns its figure and, given a
path, writes it atomically.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from scipy import stats as st

from ..assess.evidence import BUDGET_SENSITIVE
from ..assess.figures import _batch_axis, _dodge, _legend_outside, _save, _zero_line
from .stats import CONTRADICTED, INCONCLUSIVE, SUPPORTED

__all__ = ["plot_readings", "plot_verdict_heatmap", "plot_seed_accuracy"]


_METHOD_COLORS = {"bn": "#4c72b0", "sbn": "#dd8452", "sbn_frozen": "#937860", "random": "#8c8c8c",
                  "gn": "#55a868", "none": "#c44e52"}


def _color(method: str) -> str:
    return _METHOD_COLORS.get(method, None)


def _palette(methods) -> dict:
    """A colour per method: the suite's fixed colours, the default cycle for any other method."""
    spare = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    return {m: _color(m) or next(spare) for m in methods}


def _summary(values, how: str = "mean", bounds=(0.0, np.inf)) -> tuple:
    """(centre, low, high) of the finite ``values``.

    ``how="mean"``: the mean and its 95% t-interval; ``"median"``: the median and the interquartile
    range, for heavy-tailed metrics, where one blown-up seed would drag a mean (and its interval)
    anywhere. The interval is clipped to ``bounds``, the range the quantity can take (accuracy
    0-1, the stability metrics >= 0), so a bar never claims a negative volatility.
    """

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.nan, np.nan, np.nan
    if how == "median":
        centre, lo, hi = np.percentile(v, [50, 25, 75])
    else:
        centre = v.mean()
        half = st.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0
        lo, hi = centre - half, centre + half
    return float(centre), float(max(lo, bounds[0])), float(min(hi, bounds[1]))


def _split_diverged(df):
    """(runs that finished, runs that diverged). A diverged run ends in NaN/inf: its stability
    metrics are NaN and its accuracy is that of a broken network, so figures leave it out of every
    summary and say how many they left out instead."""
    div = df["diverged"].astype(bool) if "diverged" in df else pd.Series(False, index=df.index)
    return df[~div], df[div]


def _diverged_note(batch_sizes, left_out: bool = True) -> str:
    """' (2 diverged at B=64, 128: left out)' for the label of a method whose runs at ``batch_sizes``
    (one entry per diverged run) diverged; '' when none did."""
    sizes = [int(b) for b in batch_sizes]
    if not sizes:
        return ""
    return f" ({len(sizes)} diverged at B={', '.join(map(str, sorted(set(sizes))))}{': left out' if left_out else ''})"


def _log_if_heavy_tailed(ax, span: float = 30.0):
    """Switch the y axis to log scale when what is drawn (bars included) spans more than ``span``x:
    on a linear axis one blown-up configuration would flatten every other line to zero."""

    lo, hi = ax.dataLim.y0, ax.dataLim.y1
    if np.isfinite(lo) and np.isfinite(hi) and lo > 0 and hi / lo > span:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.1, 1, 10 rather than 10^-1
        ax.yaxis.set_major_formatter(plain)
        if hi / lo < 100:  # under two decades the decades alone are too few ticks: label 2 and 5 too
            ax.yaxis.set_minor_locator(LogLocator(subs=(2, 5)))
            ax.yaxis.set_minor_formatter(plain)
        else:
            ax.yaxis.set_minor_formatter(NullFormatter())


def _by_batch(ax, df, metric, methods, scale=1.0, how="mean", bounds=(0.0, np.inf)):
    """One line per method: ``metric`` per batch size (``_summary``), diverged runs left out and
    counted in the label."""
    ok, div = _split_diverged(df)
    colors = _palette(methods)
    for i, m in enumerate(methods):
        sub, label = ok[ok.method == m], m + _diverged_note(div[div.method == m].batch_size)
        if sub.empty:  # every run diverged: the label still says so
            if label != m:
                ax.plot([], [], marker="o", color=colors[m], label=label)
            continue
        bs = sorted(sub.batch_size.unique())
        c, lo, hi = (scale * np.array(v) for v in zip(*[_summary(sub[sub.batch_size == b][metric], how, bounds)
                                                        for b in bs]))
        ax.errorbar(_dodge(bs, i, len(methods), 0.02), c, yerr=[c - lo, hi - c], marker="o", ms=4, capsize=3,
                    label=label, color=colors[m])
    _batch_axis(ax, df.batch_size.unique())
    ax.grid(alpha=0.3)


def plot_accuracy_vs_batch(df, methods, path=None, title=None):
    """Final test accuracy (mean and 95% CI over seeds, within 0-100%) against batch size, one line
    per method; diverged runs left out and counted in the legend (their seeds: :func:`plot_seed_accuracy`)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _by_batch(ax, df, "final_test_acc", methods, scale=100, bounds=(0.0, 1.0))
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(title or "Test accuracy vs batch size (mean, 95% CI over seeds)", fontsize=10)
    fig.tight_layout()
    _legend_outside(fig, ax, title="method")
    return _save(fig, path)


def plot_stability(df, methods, metrics: dict, path=None, title=None):
    """One panel per stability metric against batch size: median and interquartile range over seeds.

    The metrics are heavy-tailed (one seed whose loss blows up reaches a volatility of 1e21), so
    the median and quartiles summarise them, and a panel whose values span more than a factor of 30
    is drawn on a log scale. Diverged runs have no metric: they are left out and counted in the legend.
    """
    n = len(metrics)
    fig, axes = plt.subplots(1, n, figsize=(4.3 * n, 3.6), squeeze=False)
    for ax, (metric, label) in zip(axes.flat, metrics.items()):
        _by_batch(ax, df, metric, methods, how="median")
        _log_if_heavy_tailed(ax)
        ax.set_title(label, fontsize=9)
        ax.set_ylabel(label.split(" (")[0] + (" (log scale)" if ax.get_yscale() == "log" else ""), fontsize=9)
    fig.suptitle(title or "Stability metrics (lower = more stable)")
    fig.tight_layout()
    _legend_outside(fig, axes, title="method (median, IQR over seeds)")
    return _save(fig, path)


def plot_learning_curves(results, methods, path=None, title=None):
    """Validation accuracy after every epoch (median over seeds), one panel per method, one line per
    batch size: has each method plateaued by the last epoch? Diverged runs are left out, counted in
    the panel title."""
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
        ax.set_title(m + _diverged_note([r["config"]["batch_size"] for r in results
                                         if r["config"]["method"] == m and r["status"] == "diverged"]), fontsize=8)
        _label_panel(ax, "epoch", "validation accuracy (%)")
    return _finish(fig, axes, title or "Validation accuracy per epoch (median over seeds)", "batch size", path)


def plot_loss_curves(results, batch_sizes, methods, path=None, title=None):
    """Training loss against the step (the record's chunk means, median over seeds), one panel per
    batch size. A diverged run stops early and would cut every seed's curve short: it is left
    out and counted in the legend."""
    n = len(batch_sizes)
    fig, axes = plt.subplots(1, n, figsize=(4.3 * n, 3.4), squeeze=False)
    for ax, b in zip(axes.flat, batch_sizes):
        for m in methods:
            mine = [r for r in results if r["config"]["batch_size"] == b and r["config"]["method"] == m]
            runs = [r["steps"] for r in mine if r["status"] != "diverged"]
            if not runs:
                continue
            length = min(len(s["loss"]) for s in runs)
            stack = np.stack([np.asarray(s["loss"][:length], dtype=float) for s in runs])
            label = m + _diverged_note([b for r in mine if r["status"] == "diverged"])
            ax.plot(np.asarray(runs[0]["at"][:length]) + 1, np.nanmedian(stack, axis=0), label=label, color=_color(m), lw=1.2)
        ax.set_title(f"batch size {b}", fontsize=9)
        ax.set_yscale("log")
        _label_panel(ax, "step", "training loss (chunk mean, log)")
    return _finish(fig, axes, title or "Training loss (median over seeds)", "method", path)


def _label_panel(ax, xlabel: str, ylabel: str) -> None:
    """Axis labels on every panel, and a light grid."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _finish(fig, axes, title: str, legend_title: str, path):
    """The figure's title, a legend outside the panels, and the file (or the figure when no path)."""
    fig.suptitle(title)
    fig.tight_layout()
    _legend_outside(fig, axes, title=legend_title)
    return _save(fig, path)


def plot_verdict_diffs(comparisons: dict, path=None, title=None):
    """sbn - bn accuracy difference (percentage points, 95% bootstrap CI) vs batch size, per dataset,
    with the line of no difference always in view."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (name, c) in enumerate(comparisons.items()):
        c = c[c["baseline"] == "bn"].sort_values("batch_size")
        if c.empty:
            continue
        y = 100 * c["mean_diff"].to_numpy()
        err = 100 * np.vstack([c["mean_diff"] - c["ci_low"], c["ci_high"] - c["mean_diff"]])
        ax.errorbar(_dodge(c["batch_size"], i, len(comparisons)), y, yerr=err, marker="o", ms=4, capsize=3, label=name)
    sizes = sorted({int(b) for c in comparisons.values() for b in c["batch_size"]})
    if sizes:
        _batch_axis(ax, sizes)
    _zero_line(ax)
    ax.set_ylabel("sbn - bn test accuracy (pp)")
    ax.grid(alpha=0.3)
    ax.set_title(title or "Selective BN minus BN, per dataset (mean, 95% bootstrap CI)\nbelow 0: selective BN less accurate",
                 fontsize=10)
    fig.tight_layout()
    _legend_outside(fig, ax, title="dataset")
    return _save(fig, path)


def plot_ablation(df, path=None, title=None):
    """Per batch size: accuracy against the fraction of batches normalised, for the rate sweep of
    heterogeneity-selected batches, the random control at the same rates, and every scorer /
    threshold pair (marker: scorer, colour: threshold strategy). Means and 95% CIs over seeds;
    diverged runs left out and counted in the panel title."""

    ok, div = _split_diverged(df)
    sizes = sorted(df.batch_size.unique())
    sweeps = (("sbn", "heterogeneity, rate sweep"), ("random", "random control, same rates"))
    scorers = sorted(ok.loc[ok.threshold != "rate", "scorer"].unique())
    strategies = sorted(ok.loc[ok.threshold != "rate", "threshold"].unique())
    markers = dict(zip(scorers, "osD^v<>P*X" * 3))
    colors = dict(zip(strategies, plt.get_cmap("tab10")(np.arange(len(strategies)) % 10 + 2)))
    acc = (0.0, 1.0)
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 4.0), squeeze=False, sharey=True)
    for ax, b in zip(axes.flat, sizes):
        sub = ok[ok.batch_size == b]
        for method, label in sweeps:
            rs = sub[(sub.threshold == "rate") & (sub.method == method)]
            if method == "random":  # at rates 0 and 1 random makes sbn's decisions: share its end points
                ends = sub[(sub.threshold == "rate") & (sub.method == "sbn") & sub.threshold_rate.isin([0.0, 1.0])]
                rs = pd.concat([rs, ends])
            pts = [(g.frac_normalized.mean(), *_summary(g.final_test_acc, bounds=acc)) for _, g in rs.groupby("threshold_rate")]
            if pts:
                x, y, lo, hi = map(np.array, zip(*pts))
                ax.errorbar(x, 100 * y, yerr=100 * np.array([y - lo, hi - y]), color=_color(method), marker="o", ms=4,
                            capsize=3, label=label, zorder=3)
        for (scorer, strategy), g in sub[sub.threshold != "rate"].groupby(["scorer", "threshold"]):
            y, lo, hi = _summary(g.final_test_acc, bounds=acc)
            ax.errorbar(g.frac_normalized.mean(), 100 * y, yerr=[[100 * (y - lo)], [100 * (hi - y)]], ls="none",
                        marker=markers[scorer], color=colors[strategy], ms=6, capsize=2, alpha=0.8, elinewidth=0.8)
        n_div = int((div.batch_size == b).sum())
        ax.set_title(f"batch size {b}" + (f" ({n_div} diverged run{'s' * (n_div > 1)} left out)" if n_div else ""),
                     fontsize=10)
        ax.set_xlabel("fraction of training batches normalised")
        ax.set_ylabel("final test accuracy (%)")
        ax.set_xlim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    fig.suptitle(title or "Accuracy vs fraction of batches normalised")
    fig.tight_layout()
    # the grid points in two short keys (scorer by marker, threshold by colour), not one entry per pair
    _legend_outside(fig, axes, handles=[Line2D([], [], marker="o", color=_color(m), label=label) for m, label in sweeps]
                    + [Line2D([], [], ls="none", marker=markers[s], color="#555555", label=f"scorer: {s}") for s in scorers]
                    + [Patch(color=colors[t], label=f"threshold: {t}") for t in strategies])
    return _save(fig, path)


def plot_bn_vs_gn(frames: dict, path=None, title=None):
    """Sanity reference (Wu & He, 2018): BN's accuracy should fall as batches shrink while
    GroupNorm's stays flat. One panel per dataset with ``bn`` and ``gn`` runs (mean, 95% CI)."""
    names = [d for d, df in frames.items() if {"bn", "gn"} <= set(df.method)]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.8), squeeze=False)
    for ax, d in zip(axes.flat, names):
        _by_batch(ax, frames[d], "final_test_acc", ["bn", "gn"], scale=100, bounds=(0.0, 1.0))
        ax.set_title(d, fontsize=10)
        ax.set_ylabel("final test accuracy (%)")
    fig.suptitle(title or "Sanity reference: BN vs GroupNorm across batch sizes")
    fig.tight_layout()
    _legend_outside(fig, axes, title="method")
    return _save(fig, path)


def plot_readings(comparisons: pd.DataFrame, path=None, title=None, baselines=("bn", "control")):
    """The readings as a forest plot: one panel per baseline (``bn``, the random control at the same
    rate), one row per reading, and per batch size the paired test-accuracy difference reading -
    baseline (percentage points) with its 95% bootstrap CI; a filled marker where the verdict is
    not inconclusive (Holm-adjusted Wilcoxon p < 0.05 and the CI on one side of 0).
    ``comparisons``: :func:`sbnlib.experiments.readings.readings_table`'s ``"comparisons"``."""
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
        _zero_line(ax, axis="x")
        ax.set_title(f"reading - {'random control, same rate' if base == 'control' else base}", fontsize=10)
        ax.set_xlabel("test accuracy difference (pp)")
        ax.grid(alpha=0.3, axis="x")
    axes.flat[0].set_yticks(np.arange(len(names)))
    axes.flat[0].set_yticklabels(names)
    axes.flat[0].invert_yaxis()
    fig.suptitle(title or "Readings of selective BN: paired differences (mean, 95% bootstrap CI)")
    fig.tight_layout()
    _legend_outside(fig, axes, title="filled: verdict")
    return _save(fig, path)


# verdict -> (colour, cell text); the text keeps the map readable without colour
_VERDICT_STYLE = {SUPPORTED: ("#55a868", "yes"), CONTRADICTED: ("#c44e52", "no"), INCONCLUSIVE: ("#dddddd", "?")}
# the typed verdict columns (sbnlib.experiments.results.VERDICT_KEYS) -> panel titles
_CLAIM_TITLES = {"c1": "C1\nmore accurate than BN", "c2": "C2\nfewer BN steps, more stable",
                 "vs_random": "sbn vs random\nbeats random selection", "vs_gn": "sbn vs gn\nbeats GroupNorm"}


def plot_verdict_heatmap(verdicts: pd.DataFrame, path=None, title=None):
    """The verdict table at a glance: one heat map per claim (C1, C2 and the controls present),
    rows datasets, columns batch sizes, each cell coloured and labelled by its verdict (blank: not
    measured); a C1 verdict that twice the training would change (``c1_budget`` budget-sensitive)
    is marked ``*``: shown, not counted. ``verdicts``: rows of ``dataset``, ``batch_size`` and the typed
    verdict columns (:data:`sbnlib.experiments.results.VERDICT_KEYS`' values)."""

    claims = [c for c in _CLAIM_TITLES if c in verdicts.columns and verdicts[c].notna().any()]
    datasets = list(dict.fromkeys(verdicts["dataset"]))
    sizes = sorted({int(b) for b in verdicts["batch_size"]})
    kinds = list(_VERDICT_STYLE)
    sensitive = verdicts.get("c1_budget", pd.Series("", index=verdicts.index)) == BUDGET_SENSITIVE
    panel = max(2.6, 0.5 * len(sizes))  # wide enough for its two-line title even with one or two batch sizes
    fig, axes = plt.subplots(1, len(claims), figsize=(panel * len(claims) + 2.2, 0.45 * len(datasets) + 2.1),
                             squeeze=False, sharey=True)
    for ax, claim in zip(axes.flat, claims):
        marked = verdicts.assign(_mark=np.where(sensitive & (claim == "c1"), "*", ""))
        grid = marked.pivot_table(index="dataset", columns="batch_size", values=claim, aggfunc="first")
        grid = grid.reindex(index=datasets, columns=sizes)
        mark = marked.pivot_table(index="dataset", columns="batch_size", values="_mark", aggfunc="first")
        mark = mark.reindex(index=datasets, columns=sizes).fillna("")
        code = grid.apply(lambda col: col.map(lambda v: kinds.index(v) if v in kinds else np.nan))
        text = grid.apply(lambda col: col.map(lambda v: _VERDICT_STYLE[v][1] if v in kinds else ("" if pd.isna(v) else v)))
        sns.heatmap(code.astype(float), ax=ax, cmap=ListedColormap([_VERDICT_STYLE[k][0] for k in kinds]),
                    vmin=-0.5, vmax=len(kinds) - 0.5, cbar=False, annot=(text + mark).to_numpy(), fmt="", linewidths=1,
                    linecolor="white", annot_kws={"fontsize": 8}, square=False)
        ax.set_title(_CLAIM_TITLES[claim], fontsize=9)
        ax.set_xlabel("batch size")
        ax.set_ylabel("dataset" if ax is axes.flat[0] else "")
        ax.tick_params(axis="y", rotation=0, left=ax is axes.flat[0])  # shared rows: one set of tick marks
    fig.suptitle(title or "Verdicts per dataset and batch size", fontsize=11)
    fig.tight_layout()
    handles = [Patch(color=_VERDICT_STYLE[k][0], label=f"{_VERDICT_STYLE[k][1]}: {k}") for k in kinds]
    if sensitive.any():
        handles.append(Patch(color="white", label=f"*: {BUDGET_SENSITIVE} (not counted)"))
    _legend_outside(fig, axes, title="verdict", handles=handles)
    return _save(fig, path)


def plot_seed_accuracy(df, methods, path=None, title=None):
    """Every seed's final test accuracy, per batch size (x) and method (colour), diverged runs as
    black-edged crosses: is a difference of means carried by every seed or by one or two? ``df``:
    the runs (``method``, ``batch_size``, ``seed``, ``final_test_acc``, ``diverged``)."""

    methods = [m for m in methods if m in set(df.method)]
    order = sorted(df.batch_size.unique())
    d = df[df.method.isin(methods)].assign(acc=100 * df.final_test_acc)
    ok, div = _split_diverged(d)
    colors = _palette(methods)
    fig, ax = plt.subplots(figsize=(max(6.4, 0.25 * len(methods) * len(order) + 2), 4.2))
    common = dict(x="batch_size", y="acc", hue="method", order=order, hue_order=methods, palette=colors, dodge=True,
                  ax=ax, jitter=0.15)
    state = np.random.get_state()  # seaborn jitters with numpy's global generator: seed it, so the figure
    np.random.seed(0)              # is the same file every time it is drawn, and leave it as it was
    try:
        sns.stripplot(data=ok, size=3.5, alpha=0.8, **common)
        if len(div):  # hue_order keeps every method's slot, so the crosses land in their method's column
            sns.stripplot(data=div, marker="X", size=7, linewidth=0.8, edgecolor="k", legend=False, **common)
    finally:
        np.random.set_state(state)
    for x in np.arange(len(order) - 1) + 0.5:  # separate the batch sizes
        ax.axvline(x, color="#cccccc", lw=0.8)
    ax.set_xlabel("batch size")
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title or "Final test accuracy of every seed", fontsize=10)
    if ax.get_legend():
        ax.get_legend().remove()
    handles = [Line2D([], [], ls="none", marker="o", color=colors[m],
                      label=m + _diverged_note(div[div.method == m].batch_size, left_out=False)) for m in methods]
    if len(div):
        handles.append(Line2D([], [], ls="none", marker="X", color="#999999", markeredgecolor="k", label="diverged run"))
    fig.tight_layout()
    _legend_outside(fig, ax, title="method", handles=handles)
    return _save(fig, path)
