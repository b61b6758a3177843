"""Figures are produced from data and written as real PNGs."""
import numpy as np
import pandas as pd

from sbnlib import plots


def _df():
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"method": m, "batch_size": b, "seed": s, "final_test_acc": rng.random(),
                          "loss_volatility": rng.random(), "grad_norm_cv": rng.random(), "ics_shift": rng.random()}
                         for m in ("bn", "sbn") for b in (2, 8, 32) for s in range(3)])


def test_accuracy_and_stability_figures(tmp_path):
    df = _df()
    fig = plots.plot_accuracy_vs_batch(df, ["bn", "sbn"], tmp_path / "a.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "8", "32"]
    assert len(ax.get_legend().get_texts()) == 2
    plots.plot_stability(df, ["bn", "sbn"], {"loss_volatility": "v", "grad_norm_cv": "g"}, tmp_path / "s.png")
    for f in ("a.png", "s.png"):
        assert (tmp_path / f).read_bytes()[:4] == b"\x89PNG"


def test_score_histograms_and_examples(tmp_path):
    res = {"scorer": "feature_std", "threshold_strategy": "mean",
           "batch_sizes": [{"batch_size": b, "n_batches": 50, "threshold": 0.5, "frac_needs_bn": 0.4,
                            "scores": list(np.linspace(0, 1, 50))} for b in (2, 4)]}
    fig = plots.plot_score_histograms(res, tmp_path / "h.png")
    assert "40% of 50 batches need BN" in fig.axes[0].get_title()
    imgs = np.random.default_rng(0).integers(0, 255, (6, 4, 3, 8, 8), dtype=np.uint8)
    fig = plots.plot_example_batches(imgs, np.arange(6.0), k=2, path=tmp_path / "e.png")
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["most\n5.000", "most\n4.000", "least\n0.000", "least\n1.000"]
    assert (tmp_path / "e.png").exists()


def test_bn_vs_gn_sanity_figure_only_where_both_ran(tmp_path):
    df = _df()
    assert plots.plot_bn_vs_gn({"a": df}, tmp_path / "x.png") is None  # no gn runs
    gn = df[df.method == "bn"].assign(method="gn")
    fig = plots.plot_bn_vs_gn({"a": pd.concat([df, gn]), "b": df}, tmp_path / "g.png")
    assert [ax.get_title() for ax in fig.axes] == ["a"] and (tmp_path / "g.png").exists()
