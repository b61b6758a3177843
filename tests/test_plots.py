"""Figures are produced from data and written as real PNGs, and stay readable when a run diverges."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from sbnlib.assess import figures
from sbnlib.experiments import plots

METRICS = {"loss_volatility": "training-loss volatility (std)", "grad_norm_cv": "gradient-norm CV",
           "ics_shift": "ICS probe"}


def _df(methods=("bn", "sbn"), sizes=(2, 8, 32), seeds=3):
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"method": m, "batch_size": b, "seed": s, "final_test_acc": 0.5 + 0.4 * rng.random(),
                          "loss_volatility": 0.1 + rng.random(), "grad_norm_cv": 0.1 + rng.random(),
                          "ics_shift": 0.1 + rng.random(), "diverged": False}
                         for m in methods for b in sizes for s in range(seeds)])


def _with_diverged_run(df, method="sbn_frozen", b=32, seed=0):
    """``df`` with one run of ``method`` at batch size ``b`` marked diverged, its loss volatility blown up."""
    df = df.copy()
    i = df.index[(df.method == method) & (df.batch_size == b) & (df.seed == seed)][0]
    df.loc[i, ["diverged", "loss_volatility", "final_test_acc"]] = [True, 1e21, 0.1]
    return df


def _legend_texts(fig):
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def _bar_ends(ax, axis=1):
    """Every end of every error bar drawn on ``ax`` (y values; ``axis=0``: x values)."""
    ends = [seg[:, axis] for c in ax.containers if hasattr(c, "has_yerr")
            for coll in c.lines[2] for seg in coll.get_segments()]
    return np.concatenate(ends) if ends else np.array([])


def _legend_off_the_data(fig):
    """Every legend lies right of every panel (drawn outside the axes)."""
    fig.canvas.draw()
    right = max(ax.get_window_extent().x1 for ax in fig.axes)
    return fig.legends and all(leg.get_window_extent().x0 >= right for leg in fig.legends) \
        and not any(ax.get_legend() for ax in fig.axes)


def test_accuracy_and_stability_figures(tmp_path):
    df = _df()
    fig = plots.plot_accuracy_vs_batch(df, ["bn", "sbn"], tmp_path / "a.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "8", "32"]
    assert _legend_texts(fig) == ["bn", "sbn"] and _legend_off_the_data(fig)
    fig = plots.plot_stability(df, ["bn", "sbn"], {"loss_volatility": "v", "grad_norm_cv": "g"}, tmp_path / "s.png")
    assert all(ax.get_xlabel() == "batch size" and ax.get_ylabel() for ax in fig.axes)
    assert _legend_off_the_data(fig)
    for f in ("a.png", "s.png"):
        assert (tmp_path / f).read_bytes()[:4] == b"\x89PNG"


def test_a_diverged_run_is_left_out_and_reported(tmp_path):
    df = _with_diverged_run(_df(("bn", "sbn", "sbn_frozen"), seeds=5))
    fig = plots.plot_stability(df, ["bn", "sbn", "sbn_frozen"], METRICS, tmp_path / "s.png")
    vol = fig.axes[0]
    assert vol.get_ylim()[1] < 2 and vol.get_yscale() == "linear"  # the finite data run from 0.1 to 1.1
    assert "sbn_frozen (1 diverged at B=32: left out)" in _legend_texts(fig)
    assert "bn" in _legend_texts(fig)
    fig = plots.plot_accuracy_vs_batch(df, ["bn", "sbn", "sbn_frozen"], tmp_path / "a.png")
    assert fig.axes[0].get_ylim()[0] > 40  # the diverged run's 10% is not averaged in
    assert "sbn_frozen (1 diverged at B=32: left out)" in _legend_texts(fig)
    plt.close("all")


def test_one_blown_up_seed_does_not_set_the_scale(tmp_path):
    """A run whose loss blew up without being flagged diverged: the median and quartiles of ten
    seeds stay where the other nine are."""
    df = _df(seeds=10)
    df.loc[(df.method == "sbn") & (df.batch_size == 8) & (df.seed == 3), "loss_volatility"] = 3.6e21
    fig = plots.plot_stability(df, ["bn", "sbn"], METRICS, tmp_path / "s.png")
    assert fig.axes[0].get_ylim()[1] < 2
    plt.close(fig)


def test_heavy_tailed_metric_gets_a_log_axis_and_bars_stay_non_negative(tmp_path):
    df = _df(seeds=4)
    df["loss_volatility"] = [0.01 * 30 ** (i % 3) for i in range(len(df))]  # seeds spread over three decades
    df.loc[df.seed == 0, "grad_norm_cv"] = 0.0  # a spread that would put a mean - t * se below 0
    df.loc[df.seed == 1, "grad_norm_cv"] = 3.0
    fig = plots.plot_stability(df, ["bn", "sbn"], METRICS, tmp_path / "s.png")
    assert fig.axes[0].get_yscale() == "log" and "log scale" in fig.axes[0].get_ylabel()
    assert fig.axes[1].get_yscale() == "linear"
    for ax in fig.axes:
        ends = _bar_ends(ax)
        assert ends.size and (ends >= 0).all()
    low = _df(seeds=3)
    low["final_test_acc"] = np.tile([0.0, 0.01, 0.6], len(low) // 3)  # mean 0.2, t-interval reaching far below 0
    fig = plots.plot_accuracy_vs_batch(low, ["bn", "sbn"], tmp_path / "a.png")
    ends = _bar_ends(fig.axes[0])
    assert ends.min() == 0 and ends.max() <= 100
    plt.close("all")


def test_difference_plots_keep_the_zero_line_in_view(tmp_path):
    comps = {d: pd.DataFrame({"baseline": "bn", "batch_size": [2, 8, 32], "mean_diff": [-0.12, -0.08, -0.3],
                              "ci_low": [-0.2, -0.1, -0.4], "ci_high": [-0.05, -0.06, -0.2]}) for d in ("mnist", "cifar10")}
    fig = plots.plot_verdict_diffs(comps, tmp_path / "d.png")
    ax = fig.axes[0]
    zero = [ln for ln in ax.lines if list(ln.get_ydata()) == [0, 0]]
    assert zero and ax.get_ylim()[1] > 0  # all differences are below -5 pp, the line is still drawn inside
    assert _legend_texts(fig) == ["mnist", "cifar10"] and _legend_off_the_data(fig)
    plt.close(fig)


def _ablation_frame():
    rng = np.random.default_rng(1)
    rows = []
    for b in (4, 8):
        for s in range(3):
            for r in (0.0, 0.5, 1.0):
                rows += [{"batch_size": b, "seed": s, "method": m, "scorer": "feature_std", "threshold": "rate",
                          "threshold_rate": r, "frac_normalized": r, "final_test_acc": 0.7 + 0.1 * rng.random(),
                          "diverged": False} for m in (("sbn", "random") if 0 < r < 1 else ("sbn",))]
            rows += [{"batch_size": b, "seed": s, "method": "sbn", "scorer": sc, "threshold": t, "threshold_rate": np.nan,
                      "frac_normalized": 0.3 + 0.4 * rng.random(), "final_test_acc": 0.7 + 0.1 * rng.random(),
                      "diverged": False} for sc in ("feature_std", "norm_cv") for t in ("mean", "otsu")]
    df = pd.DataFrame(rows)
    df.loc[0, ["diverged", "final_test_acc"]] = [True, 0.1]
    return df


def test_ablation_legend_is_off_the_data_and_short(tmp_path):
    fig = plots.plot_ablation(_ablation_frame(), tmp_path / "ab.png")
    assert _legend_off_the_data(fig)
    texts = _legend_texts(fig)
    assert texts == ["heterogeneity, rate sweep", "random control, same rates", "scorer: feature_std",
                     "scorer: norm_cv", "threshold: mean", "threshold: otsu"]  # 2 + 2 keys for 4 pairs
    assert [ax.get_title() for ax in fig.axes] == ["batch size 4 (1 diverged run left out)", "batch size 8"]
    assert all(ax.get_ylabel() and ax.get_xlabel() for ax in fig.axes)
    plt.close(fig)


def test_learning_and_loss_curves_leave_a_diverged_run_out(tmp_path):
    def rec(m, b, seed, status="ok", n=10):
        return {"config": {"method": m, "batch_size": b, "seed": seed}, "status": status,
                "epochs": [{"val_acc": 0.5 + 0.1 * e} for e in range(3)],
                "steps": {"loss": list(np.linspace(2, 0.5, n)), "at": list(range(n))}}

    results = [rec(m, b, s) for m in ("bn", "sbn") for b in (4, 32) for s in range(3)]
    results.append(rec("sbn", 32, 3, status="diverged", n=4))  # stopped after 4 chunks
    fig = plots.plot_loss_curves(results, [4, 32], ["bn", "sbn"], tmp_path / "l.png")
    sbn32 = [ln for ln in fig.axes[1].lines if ln.get_label().startswith("sbn")][0]
    assert len(sbn32.get_xdata()) == 10  # the three finished seeds, not cut to the diverged run's 4 chunks
    assert "sbn (1 diverged at B=32: left out)" in _legend_texts(fig)
    assert all(ax.get_ylabel() for ax in fig.axes) and _legend_off_the_data(fig)
    fig = plots.plot_learning_curves(results, ["bn", "sbn"], tmp_path / "c.png")
    assert [ax.get_title() for ax in fig.axes] == ["bn", "sbn (1 diverged at B=32: left out)"]
    assert all(ax.get_ylabel() for ax in fig.axes)
    plt.close("all")


def test_verdict_heatmap_reads_the_typed_verdicts(tmp_path):
    rows = [("mnist", 2, "contradicted", "robust", "contradicted", "inconclusive", "supported"),
            ("mnist", 8, "contradicted", "budget-sensitive", "inconclusive", "inconclusive", "contradicted"),
            ("cifar10", 2, "supported", "robust", "inconclusive", "contradicted", "inconclusive")]
    verdicts = pd.DataFrame(rows, columns=["dataset", "batch_size", "c1", "c1_budget", "c2", "vs_random", "vs_gn"])
    fig = plots.plot_verdict_heatmap(verdicts, tmp_path / "v.png")
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == ["C1", "C2", "sbn vs random", "sbn vs gn"]
    c1 = fig.axes[0]
    cells = {(round(t.get_position()[1] - 0.5), round(t.get_position()[0] - 0.5)): t.get_text() for t in c1.texts}
    # rows: mnist, cifar10 (in the table's order); columns: batch sizes 2, 8; * marks a budget-sensitive C1
    assert cells == {(0, 0): "no", (0, 1): "no*", (1, 0): "yes"}  # cifar10 at B=8 was not measured: blank
    c2 = {t.get_text() for t in fig.axes[1].texts}
    assert "*" not in "".join(c2)  # the budget check is of C1 only
    assert [t.get_text() for t in c1.get_yticklabels()] == ["mnist", "cifar10"]
    assert [t.get_text() for t in c1.get_xticklabels()] == ["2", "8"]
    assert "*: budget-sensitive (not counted)" in _legend_texts(fig)
    assert (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"
    plt.close(fig)


def test_seed_strip_plot_shows_every_run_and_marks_the_diverged_one(tmp_path):
    df = _with_diverged_run(_df(("bn", "sbn", "sbn_frozen"), seeds=4))
    fig = plots.plot_seed_accuracy(df, ["bn", "sbn", "sbn_frozen"], tmp_path / "p.png")
    ax = fig.axes[0]
    drawn = [c for c in ax.collections if len(c.get_offsets())]
    assert sum(len(c.get_offsets()) for c in drawn) == len(df)  # every seed of every method and batch size
    at_10 = [c for c in drawn if np.allclose(c.get_offsets()[:, 1], 10.0)]  # the diverged run's accuracy
    assert len(at_10) == 1 and len(at_10[0].get_offsets()) == 1
    assert tuple(at_10[0].get_edgecolor()[0]) == (0, 0, 0, 1)  # a black-edged cross, unlike the other points
    assert all(tuple(c.get_edgecolor()[0]) != (0, 0, 0, 1) for c in drawn if c is not at_10[0])
    assert "sbn_frozen (1 diverged at B=32)" in _legend_texts(fig) and "diverged run" in _legend_texts(fig)
    assert ax.get_xlabel() == "batch size" and ax.get_ylabel() == "final test accuracy (%)"
    assert _legend_off_the_data(fig)
    plt.close(fig)


def test_score_histograms_and_examples(tmp_path):
    res = {"scorer": "feature_std", "threshold_strategy": "mean",
           "batch_sizes": [{"batch_size": b, "n_batches": 50, "threshold": 0.5, "frac_needs_bn": 0.4,
                            "scores": list(np.linspace(0, 1, 50))} for b in (2, 4)]}
    fig = figures.plot_score_histograms(res, tmp_path / "h.png")
    assert "40% of 50 batches need BN" in fig.axes[0].get_title()
    imgs = np.random.default_rng(0).integers(0, 255, (6, 4, 3, 8, 8), dtype=np.uint8)
    fig = figures.plot_example_batches(imgs, np.arange(6.0), k=2, path=tmp_path / "e.png")
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["most\n5.000", "most\n4.000", "least\n0.000", "least\n1.000"]
    assert (tmp_path / "e.png").exists()


def test_bn_vs_gn_sanity_figure_only_where_both_ran(tmp_path):
    df = _df()
    assert plots.plot_bn_vs_gn({"a": df}, tmp_path / "x.png") is None  # no gn runs
    gn = df[df.method == "bn"].assign(method="gn")
    fig = plots.plot_bn_vs_gn({"a": pd.concat([df, gn]), "b": df}, tmp_path / "g.png")
    assert [ax.get_title() for ax in fig.axes] == ["a"] and (tmp_path / "g.png").exists()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")
