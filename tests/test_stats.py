"""Paired statistics, Holm correction, verdicts, run metrics and run tables (sbnlib.experiments.stats, sbnlib.experiments.metrics)."""
import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from sbnlib.experiments.metrics import grad_norm_cv, loss_volatility, run_metrics
from sbnlib.experiments.records import StepLog
from sbnlib.experiments.stats import (
    PAIRED_FIELDS,
    VERDICT_RULE,
    WILCOXON_EXACT_MAX_N,
    _bootstrap_ci,
    accuracy_resolution,
    accuracy_table,
    compare_methods,
    holm,
    min_detectable_effect,
    paired_comparison,
    rule_mde_factor,
    rule_min_detectable_effect,
    signed_rank_pvalue,
    spread_comparison,
    summary_frame,
    verdict,
)

# --------------------------------------------------------------------------- paired_comparison

def test_paired_hand_example():
    b = np.array([1.0, 1.0, 2.0, 2.0, 1.0, 1.0])
    d = np.array([1.5, 3.0, -1.0, 5.0, 2.5, 7.0])  # sum 18 -> mean 3
    t = b + d
    r = paired_comparison(t, b, n_boot=2000, seed=1)
    assert set(r) == set(PAIRED_FIELDS)
    json.dumps(r)  # JSON-serialisable
    assert r["n"] == 6 and r["n_dropped"] == 0
    assert r["mean_diff"] == pytest.approx(3.0, abs=1e-12)
    assert r["mean_treatment"] == pytest.approx(26 / 6) and r["mean_baseline"] == pytest.approx(8 / 6)
    assert r["std_treatment"] == pytest.approx(np.std(t, ddof=1))
    # Wilcoxon by hand: |d| ranks 1.5->2, 3->4, 1->1 (negative), 5->5, 2.5->3, 7->6; T- = 1.
    # Sign assignments with rank sum <= 1: {} and {1} -> 2 of 64; two-sided p = 2 * 2/64.
    assert r["p_wilcoxon"] == pytest.approx(4 / 64)
    assert r["p_wilcoxon"] == pytest.approx(st.wilcoxon(d).pvalue)
    # Paired t-test from the formula.
    sd = np.std(d, ddof=1)
    tstat = 3.0 / (sd / math.sqrt(6))
    assert r["p_ttest"] == pytest.approx(2 * st.t.sf(abs(tstat), df=5))
    assert r["effect_size_dz"] == pytest.approx(3.0 / sd)
    assert r["ci_low"] < r["mean_diff"] < r["ci_high"]


def test_wilcoxon_smallest_exact_p_for_eight_seeds():
    d = np.arange(1, 9) * 0.01
    r = paired_comparison(0.5 + d, np.full(8, 0.5), n_boot=500)
    assert r["p_wilcoxon"] == pytest.approx(2 / 2**8)
    assert r["p_wilcoxon"] == pytest.approx(st.wilcoxon(d).pvalue)


def test_bootstrap_ci_deterministic_and_seed_dependent():
    rng = np.random.default_rng(3)
    b = rng.normal(0.9, 0.01, 10)
    t = b + rng.normal(0.005, 0.01, 10)
    r1 = paired_comparison(t, b, seed=7)
    r2 = paired_comparison(t, b, seed=7)
    r3 = paired_comparison(t, b, seed=8)
    assert (r1["ci_low"], r1["ci_high"]) == (r2["ci_low"], r2["ci_high"])
    assert (r1["ci_low"], r1["ci_high"]) != (r3["ci_low"], r3["ci_high"])
    for r in (r1, r3):
        assert r["ci_low"] <= r["mean_diff"] <= r["ci_high"]
    # Wider confidence level -> wider interval (same resamples).
    r90 = paired_comparison(t, b, seed=7, alpha=0.10)
    assert r1["ci_low"] <= r90["ci_low"] and r90["ci_high"] <= r1["ci_high"]


def test_bootstrap_ci_close_to_t_interval_for_large_normal_sample():
    rng = np.random.default_rng(0)
    n = 400
    b = rng.normal(0, 1, n)
    t = b + rng.normal(0.3, 1, n)
    d = t - b
    r = paired_comparison(t, b, n_boot=10000, seed=0)
    half = st.t.ppf(0.975, n - 1) * np.std(d, ddof=1) / math.sqrt(n)  # about 0.1
    assert r["ci_low"] == pytest.approx(d.mean() - half, abs=0.01)
    assert r["ci_high"] == pytest.approx(d.mean() + half, abs=0.01)


def test_bootstrap_ci_coverage_small_samples():
    """Percentile bootstrap of a mean at n=20 should cover the true mean roughly 95% of the time."""
    rng = np.random.default_rng(11)
    hits, reps = 0, 200
    for _ in range(reps):
        d = rng.normal(1.0, 2.0, 20)
        r = paired_comparison(d, np.zeros(20), n_boot=2000, seed=int(rng.integers(1 << 30)))
        hits += r["ci_low"] <= 1.0 <= r["ci_high"]
    assert 0.86 <= hits / reps <= 0.99


def test_nan_pairs_dropped_and_counted():
    t = np.array([1.0, np.nan, 3.0, 4.0, 6.0])
    b = np.array([0.0, 1.0, np.nan, 2.0, 3.0])
    r = paired_comparison(t, b, n_boot=100)
    assert r["n"] == 3 and r["n_dropped"] == 2
    assert r["mean_diff"] == pytest.approx((1 + 2 + 3) / 3)
    assert r["mean_treatment"] == pytest.approx((1 + 4 + 6) / 3)


def test_all_zero_differences():
    x = np.array([0.9, 0.91, 0.95, 0.97])
    r = paired_comparison(x, x.copy(), n_boot=200)
    assert r["p_wilcoxon"] == 1.0 and r["p_ttest"] == 1.0
    assert r["mean_diff"] == 0.0 and r["ci_low"] == 0.0 and r["ci_high"] == 0.0
    assert math.isnan(r["effect_size_dz"])
    assert verdict(r["mean_diff"], r["ci_low"], r["ci_high"], r["p_wilcoxon"]) == "inconclusive"


def test_constant_nonzero_differences():
    b = np.array([0.91, 0.83, 0.77, 0.95, 0.62, 0.88])
    r = paired_comparison(b + 0.05, b, n_boot=200)  # d == 0.05 up to rounding
    assert math.isnan(r["p_ttest"]) and math.isnan(r["effect_size_dz"])
    assert r["p_wilcoxon"] == pytest.approx(2 / 2**6)
    assert r["ci_low"] == pytest.approx(0.05) and r["ci_high"] == pytest.approx(0.05)


def test_too_few_pairs_and_bad_input():
    r = paired_comparison([1.0], [0.0])
    assert r["n"] == 1 and r["mean_diff"] == 1.0
    for k in ("p_wilcoxon", "p_ttest", "ci_low", "ci_high", "effect_size_dz", "std_treatment"):
        assert math.isnan(r[k]), k
    r0 = paired_comparison([np.nan], [1.0])
    assert r0["n"] == 0 and r0["n_dropped"] == 1 and math.isnan(r0["mean_diff"])
    with pytest.raises(ValueError):
        paired_comparison([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_comparison(np.ones((2, 2)), np.ones((2, 2)))


# --------------------------------------------------------------------------- holm

def _holm_bruteforce(p):
    """Adjusted p of H_i = the smallest alpha at which the Holm step-down procedure rejects H_i.

    The procedure at level alpha: sort ascending; for k = 1..m reject H_(k) while
    (m - k + 1) * p_(k) <= alpha, stop at the first failure. The smallest such alpha is one of the
    values (m - k + 1) * p_(k) (or above 1 -> 1).
    """
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size

    def rejected(alpha):
        rej = set()
        for k, i in enumerate(sorted(idx, key=lambda i: p[i])):
            if (m - k) * p[i] <= alpha:
                rej.add(i)
            else:
                break
        return rej

    candidates = sorted({(m - k) * p[i] for k, i in enumerate(sorted(idx, key=lambda i: p[i]))})
    for i in idx:
        out[i] = min([1.0] + [c for c in candidates if i in rejected(c)])
    return out


def test_holm_hand_example():
    # sorted: 0.005*4 = 0.02; 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 = 0.04 -> running max 0.06.
    got = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)


def test_holm_matches_bruteforce_on_random_inputs():
    rng = np.random.default_rng(5)
    for trial in range(200):
        m = int(rng.integers(1, 9))
        p = rng.uniform(0, 0.2 if trial % 2 else 1.0, m)
        if trial % 3 == 0 and m > 1:  # ties
            p[-1] = p[0]
        if trial % 5 == 0:  # NaNs
            p[rng.integers(m)] = np.nan
        got = holm(p)
        np.testing.assert_allclose(got, _holm_bruteforce(p), rtol=1e-12, equal_nan=True)
        ok = ~np.isnan(p)
        assert np.all(got[ok] >= p[ok]) and np.all(got[ok] <= 1.0)
        order = np.argsort(p[ok])
        assert np.all(np.diff(got[ok][order]) >= 0)  # monotone in the raw p


def test_holm_nan_handling():
    got = holm([0.01, np.nan, 0.04])
    assert math.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2]], [0.02, 0.04])  # m = 2, not 3
    assert np.all(np.isnan(holm([np.nan, np.nan])))
    assert holm([]).shape == (0,)
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])  # capped


def test_holm_matches_statsmodels_if_available():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(9)
    for _ in range(20):
        p = rng.uniform(0, 0.3, int(rng.integers(2, 10)))
        np.testing.assert_allclose(holm(p), multitest.multipletests(p, method="holm")[1], rtol=1e-12)


# --------------------------------------------------------------------------- verdict

@pytest.mark.parametrize("hib", [True, False])
def test_verdict_four_cases(hib):
    s = 1 if hib else -1  # the sign of "better"
    better_ci = sorted([s * 0.01, s * 0.03])
    worse_ci = sorted([-s * 0.01, -s * 0.03])
    assert verdict(s * 0.02, *better_ci, 0.01, higher_is_better=hib) == "supported"
    assert verdict(-s * 0.02, *worse_ci, 0.01, higher_is_better=hib) == "contradicted"
    assert verdict(s * 0.02, *better_ci, 0.2, higher_is_better=hib) == "inconclusive"  # by p
    assert verdict(s * 0.02, *sorted([-s * 0.01, s * 0.05]), 0.01, higher_is_better=hib) == "inconclusive"
    assert verdict(s * 0.02, *better_ci, 0.05, higher_is_better=hib) == "inconclusive"  # p == alpha
    assert verdict(s * 0.02, *better_ci, 0.01, alpha=0.005, higher_is_better=hib) == "inconclusive"


def test_verdict_nan_and_rule_text():
    assert verdict(0.02, 0.01, 0.03, float("nan")) == "inconclusive"
    assert verdict(0.02, float("nan"), 0.03, 0.001) == "inconclusive"
    assert verdict(float("nan"), 0.01, 0.03, 0.001) == "inconclusive"
    assert "supported" in VERDICT_RULE and "contradicted" in VERDICT_RULE and "Holm" in VERDICT_RULE


# --------------------------------------------------------------------------- run metrics

def test_loss_volatility_and_grad_norm_cv():
    loss = np.array([2.3, 1.9, 1.7, 1.8, 1.2, 1.1])
    assert loss_volatility(loss) == pytest.approx(np.std(np.diff(loss)))
    assert math.isnan(loss_volatility([1.0]))
    assert math.isnan(loss_volatility([1.0, np.nan, 0.5]))
    assert math.isnan(loss_volatility([1.0, np.inf]))
    # a linearly decreasing loss has zero volatility
    assert loss_volatility(np.linspace(2, 1, 50)) == pytest.approx(0.0, abs=1e-12)
    g = np.array([1.0, 3.0, 2.0, 6.0])
    assert grad_norm_cv(g) == pytest.approx(np.std(g) / np.mean(g))
    assert math.isnan(grad_norm_cv([]))
    assert math.isnan(grad_norm_cv([0.0, 0.0]))
    assert math.isnan(grad_norm_cv([1.0, np.nan]))


def _record(status="ok", loss=(2.0, 1.5, 1.4, 1.0), gn=(3.0, 2.0, 2.5, 1.0), probe=(0.2, 0.4), val=(0.5, 0.6, 0.8)):
    log = StepLog()  # metrics come from the trainer's full series
    for lv, gv, on in zip(loss, gn, [True, False, True, True]):
        log.add(lv, gv, on, 0.1)
    r = {
        "status": status,
        "final_test_acc": 0.87,
        "final_train_acc": 0.9,
        "epochs": [{"val_acc": v} for v in val],
        "metrics": log.metrics(len(loss), status == "diverged"),
        "bn": {"layers": 2, "layer_batches_normalized": 6, "layer_batches_skipped": 2,
               "batches_normalized": 3, "batches_skipped": 1, "frac_normalized": 0.75},
    }
    if probe is not None:
        r["probe"] = {"step": [2, 4][: len(probe)], "shift": list(probe)}
    return r


def test_run_metrics_ok_run():
    m = run_metrics(_record())
    assert m["final_test_acc"] == 0.87 and m["diverged"] is False
    assert m["final_val_acc"] == 0.8 and m["val_gain_last2"] == pytest.approx(0.3) and m["final_train_acc"] == 0.9
    assert math.isnan(run_metrics(_record(val=(0.5, 0.6)))["val_gain_last2"])  # fewer than three epochs
    assert math.isnan(run_metrics(_record(val=(None, None, None)))["final_val_acc"])  # no validation split
    assert m["loss_volatility"] == pytest.approx(np.std(np.diff([2.0, 1.5, 1.4, 1.0])))
    assert m["grad_norm_cv"] == pytest.approx(np.std([3.0, 2.0, 2.5, 1.0]) / 2.125)
    assert m["ics_shift"] == pytest.approx(0.3)
    assert m["bn_transformations"] == 6 and m["frac_normalized"] == 0.75
    json.dumps(m)
    assert math.isnan(run_metrics(_record(probe=None))["ics_shift"])
    assert math.isnan(run_metrics(_record(probe=()))["ics_shift"])


def test_run_metrics_diverged_run():
    inference = {"running": 0.5, "bypass": 0.4, "running_stats_drift": float("inf")}
    m = run_metrics({**_record(status="diverged", loss=(2.0, 1.5, float("nan")), gn=(3.0, 2.0, 1.0)),
                     "inference": inference})
    assert m["diverged"] is True and m["final_test_acc"] == 0.87
    assert math.isnan(m["loss_volatility"]) and math.isnan(m["grad_norm_cv"]) and math.isnan(m["ics_shift"])
    assert math.isnan(m["running_stats_drift"]) and m["acc_running"] == 0.5  # the drift of non-finite statistics says nothing
    assert run_metrics({**_record(), "inference": {**inference, "running_stats_drift": 0.2}})["running_stats_drift"] == 0.2
    assert m["bn_transformations"] == 6


# --------------------------------------------------------------------------- run tables

NULL_D = 0.002 * np.array([1, -1, 2, -2, 3, -3, 4, -4])  # symmetric: no effect
BASE = 0.9 + 0.01 * np.array([0.3, -1.2, 0.8, 0.1, -0.5, 1.4, -0.9, 0.6])


def _runs(shift_at=32, shift=0.03, sizes=(8, 32, 128)):
    rows = []
    for bs in sizes:
        d = NULL_D + (shift if bs == shift_at else 0.0)
        for seed in range(8):
            rows.append({"method": "bn", "seed": seed, "batch_size": bs, "final_test_acc": BASE[seed]})
            rows.append({"method": "sbn", "seed": seed, "batch_size": bs,
                         "final_test_acc": BASE[seed] + d[seed]})
    # a third method that must be ignored
    rows.append({"method": "gn", "seed": 0, "batch_size": 8, "final_test_acc": 0.1})
    return pd.DataFrame(rows)


def test_compare_methods_detects_the_shifted_batch_size():
    df = _runs().sample(frac=1.0, random_state=0)  # row order must not matter
    out = compare_methods(df, "final_test_acc", n_boot=2000, seed=0)
    assert out["batch_size"].tolist() == [8, 32, 128]
    assert out.set_index("batch_size")["verdict"].to_dict() == {
        8: "inconclusive", 32: "supported", 128: "inconclusive"}
    row = out.set_index("batch_size").loc[32]
    assert row["mean_diff"] == pytest.approx(0.03)
    assert row["p_wilcoxon"] == pytest.approx(2 / 2**8)
    assert row["p_wilcoxon_holm"] == pytest.approx(3 * 2 / 2**8)
    assert (out["p_wilcoxon_holm"] >= out["p_wilcoxon"]).all()
    assert (out["p_ttest_holm"] >= out["p_ttest"]).all()
    assert (out["metric"] == "final_test_acc").all() and (out["treatment"] == "sbn").all()
    assert set(PAIRED_FIELDS) <= set(out.columns)
    # deterministic; the bootstrap seed does not touch the tests
    again = compare_methods(df, "final_test_acc", n_boot=2000, seed=0)
    pd.testing.assert_frame_equal(out, again)
    other = compare_methods(df, "final_test_acc", n_boot=2000, seed=1)
    np.testing.assert_allclose(other["p_wilcoxon"], out["p_wilcoxon"])


def test_compare_methods_negative_shift_and_lower_is_better():
    df = _runs(shift=-0.03)
    out = compare_methods(df, "final_test_acc", n_boot=1000).set_index("batch_size")
    assert out.loc[32, "verdict"] == "contradicted"
    assert set(out.loc[[8, 128], "verdict"]) == {"inconclusive"}
    # the same negative difference is "supported" when lower is better (e.g. an error metric)
    low = compare_methods(df, "final_test_acc", higher_is_better=False, n_boot=1000).set_index("batch_size")
    assert low.loc[32, "verdict"] == "supported"


def test_compare_methods_drops_unpaired_seeds():
    df = _runs()
    df = df[~((df["method"] == "sbn") & (df["seed"] == 7) & (df["batch_size"] == 8))]
    extra = pd.DataFrame([{"method": "bn", "seed": 99, "batch_size": 8, "final_test_acc": 0.5}])
    df = pd.concat([df, extra], ignore_index=True)
    df.loc[(df["method"] == "bn") & (df["seed"] == 3) & (df["batch_size"] == 128), "final_test_acc"] = np.nan
    out = compare_methods(df, "final_test_acc", n_boot=500).set_index("batch_size")
    assert out.loc[8, "n"] == 7 and out.loc[8, "n_unpaired"] == 2
    assert out.loc[32, "n"] == 8 and out.loc[32, "n_unpaired"] == 0
    assert out.loc[128, "n"] == 7 and out.loc[128, "n_dropped"] == 1
    assert out.loc[8, "mean_diff"] == pytest.approx(NULL_D[:7].mean())


def test_compare_methods_rejects_duplicate_seeds():
    df = _runs()
    df = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="seed"):
        compare_methods(df, "final_test_acc", n_boot=100)


def test_summary_frame_and_accuracy_table():
    df = pd.DataFrame([
        {"method": "bn", "seed": 0, "batch_size": 16, "final_test_acc": 0.90},
        {"method": "bn", "seed": 1, "batch_size": 16, "final_test_acc": 0.92},
        {"method": "sbn", "seed": 0, "batch_size": 16, "final_test_acc": 0.95},
        {"method": "sbn", "seed": 1, "batch_size": 16, "final_test_acc": np.nan},
        {"method": "bn", "seed": 0, "batch_size": 4, "final_test_acc": 0.80},
        {"method": "bn", "seed": 1, "batch_size": 4, "final_test_acc": 0.84},
    ])
    s = summary_frame(df, ["sbn", "bn"], "batch_size", "final_test_acc")
    assert list(s.columns) == ["batch_size", "method", "mean", "std", "n", "n_missing"]
    assert len(s) == 4
    r = s[(s["batch_size"] == 16) & (s["method"] == "bn")].iloc[0]
    assert r["mean"] == pytest.approx(0.91) and r["std"] == pytest.approx(np.std([0.90, 0.92], ddof=1))
    r = s[(s["batch_size"] == 16) & (s["method"] == "sbn")].iloc[0]
    assert r["n"] == 1 and r["n_missing"] == 1 and math.isnan(r["std"])

    tab = accuracy_table(df, ["sbn", "bn"])
    assert tab.shape == (2, 2)
    assert tab.index.tolist() == [4, 16] and tab.columns.tolist() == ["sbn", "bn"]
    assert tab.loc[16, "bn"] == "91.00 ± 1.41"
    assert tab.loc[4, "bn"] == "82.00 ± 2.83"
    assert tab.loc[4, "sbn"] == "n/a"
    assert tab.loc[16, "sbn"].startswith("95.00 ± ")
    custom = accuracy_table(df, ["bn"], fmt=lambda m, sd: f"{m:.3f}")
    assert custom.loc[16, "bn"] == "0.910"


def _spread_runs(wide, narrow):
    # Different centres (0.90 vs 0.95): deviations must be taken from each method's own mean.
    k = np.array([1, -1, 2, -2, 3, -3, 4, -4, 5, -5], float)
    rows = []
    for seed in range(10):
        rows.append({"method": wide, "seed": seed, "batch_size": 8, "final_test_acc": 0.9 + 0.01 * k[seed]})
        rows.append({"method": narrow, "seed": seed, "batch_size": 8,
                     "final_test_acc": 0.95 - 0.001 * k[seed]})
    return pd.DataFrame(rows)


def test_spread_comparison_detects_larger_spread():
    out = spread_comparison(_spread_runs(wide="bn", narrow="sbn"), n_boot=1000)
    assert out["metric"].iloc[0] == "absdev_final_test_acc"
    assert out["verdict"].iloc[0] == "supported"  # sbn spreads less
    assert out["mean_diff"].iloc[0] == pytest.approx(-0.009 * 3)  # mean |k| = 3
    out = spread_comparison(_spread_runs(wide="sbn", narrow="bn"), n_boot=1000)
    assert out["verdict"].iloc[0] == "contradicted"  # sbn spreads more


# --------------------------------------------------------------------------- exact Wilcoxon with ties and zeros

def _signed_rank_bruteforce(d):
    """Two-sided signed-rank p by enumerating all 2**n sign flips of the non-zero |d| (midranks)."""
    d = np.asarray(d, float)
    d = d[d != 0]
    n = d.size
    if n == 0:
        return 1.0
    a = np.abs(d)
    ranks = np.array([(a < x).sum() + ((a == x).sum() + 1) / 2 for x in a])
    t_obs = ranks[d > 0].sum()
    sums = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=n)])
    p_tails = min(1.0, 2 * min(np.mean(sums >= t_obs - 1e-9), np.mean(sums <= t_obs + 1e-9)))
    centre = ranks.sum() / 2  # "at least as far from the null mean as observed": the same number (symmetry)
    p_far = np.mean(np.abs(sums - centre) >= abs(t_obs - centre) - 1e-9)
    assert p_tails == pytest.approx(p_far, abs=1e-12)
    return p_tails


def test_signed_rank_matches_bruteforce_with_ties_and_zeros():
    cases = [[3, 3, 3, 3, 3], [-2, -2, -2, -2, -2, -2], [2, -2, 2, -2, 2], [0, 0, 0], [0, 4], [5], [0, 0, 1, -1],
             [1, 1, 2, -2, 0, 3, 3, -3, 0, 1], [-3, -16, 23, -5, 15, -16, -23, -2]]
    rng = np.random.default_rng(21)
    for _ in range(40):  # small integer differences: many ties and zeros
        n = int(rng.integers(1, 11))
        cases.append(rng.integers(-4, 5, n).tolist())
    for d in cases:
        d = np.asarray(d, float)
        assert signed_rank_pvalue(d) == pytest.approx(_signed_rank_bruteforce(d), rel=1e-12, abs=1e-15), d
        assert signed_rank_pvalue(0.37 * d) == signed_rank_pvalue(d)  # scale-free
        assert signed_rank_pvalue(-d) == signed_rank_pvalue(d)  # two-sided


def test_signed_rank_equals_scipy_exact_without_ties():
    rng = np.random.default_rng(4)
    for n in list(range(2, 25)) + [WILCOXON_EXACT_MAX_N]:
        d = rng.normal(0.3, 1.0, n)
        assert signed_rank_pvalue(d) == pytest.approx(st.wilcoxon(d, method="exact").pvalue, rel=1e-12)
    assert signed_rank_pvalue(np.arange(1, 9)) == pytest.approx(2 / 2**8)


def test_signed_rank_normal_approximation_above_the_exact_limit():
    rng = np.random.default_rng(6)
    for shift in (0.0, 0.5):
        d = np.round(rng.normal(shift, 1.0, WILCOXON_EXACT_MAX_N + 30), 1)  # ties and zeros
        assert (d == 0).any() and np.unique(np.abs(d[d != 0])).size < (d != 0).sum()
        want = st.wilcoxon(d, zero_method="wilcox", method="approx", correction=False).pvalue
        assert signed_rank_pvalue(d) == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError):
        signed_rank_pvalue([1.0, np.nan])


# Committed MNIST runs (outputs/mnist/runs): sbn and random at B=2, seeds 0-7, test accuracy over 10000
# images. Two differences are +-23/10000 but not bitwise opposite: float subtraction hides that tie.
MNIST_SBN_B2 = np.array([0.9834, 0.9828, 0.9863, 0.9828, 0.9841, 0.9849, 0.9822, 0.9861])
MNIST_RANDOM_B2 = np.array([0.9837, 0.9844, 0.984, 0.9833, 0.9826, 0.9865, 0.9845, 0.9863])


def test_resolution_makes_hidden_ties_visible():
    raw = MNIST_SBN_B2 - MNIST_RANDOM_B2
    steps = np.round(raw * 10000)  # [-3, -16, 23, -5, 15, -16, -23, -2]
    assert abs(raw[2]) != abs(raw[6]) and steps[2] == -steps[6]  # the hidden tie
    plain = paired_comparison(MNIST_SBN_B2, MNIST_RANDOM_B2, n_boot=500)
    exact = paired_comparison(MNIST_SBN_B2, MNIST_RANDOM_B2, n_boot=500, resolution=1 / 10000)
    assert plain["p_wilcoxon"] == pytest.approx(_signed_rank_bruteforce(raw))  # ranks 7 and 8, no tie
    assert exact["p_wilcoxon"] == pytest.approx(_signed_rank_bruteforce(steps))  # midranks 7.5, 7.5
    assert exact["p_wilcoxon"] != pytest.approx(plain["p_wilcoxon"])
    # the rounded differences: equal steps are equal floats; mean and CI move by float rounding only
    d = np.round(raw / 1e-4) * 1e-4
    assert d[2] == -d[6]
    assert exact["mean_diff"] == pytest.approx(plain["mean_diff"], abs=1e-15)
    assert exact["ci_low"] == pytest.approx(plain["ci_low"], abs=1e-15)
    assert exact["std_diff"] == pytest.approx(plain["std_diff"], rel=1e-9)
    with pytest.raises(ValueError, match="resolution"):
        paired_comparison(MNIST_SBN_B2, MNIST_RANDOM_B2, resolution=1 / 3000)  # not a multiple
    with pytest.raises(ValueError, match="resolution"):
        paired_comparison(MNIST_SBN_B2, MNIST_RANDOM_B2, resolution=0.0)


def test_resolution_turns_float_noise_into_zeros():
    b = np.array([0.91, 0.83, 0.77, 0.95, 0.62, 0.88])
    t = b + np.array([0.01, 0.0, 0.02, 0.0, 0.03, 0.04])
    t[1] += 1e-15  # float noise on a true zero
    r = paired_comparison(t, b, n_boot=200, resolution=0.01)
    assert r["p_wilcoxon"] == pytest.approx(2 / 2**4)  # two zeros discarded, four positive
    assert paired_comparison(t, b, n_boot=200)["p_wilcoxon"] == pytest.approx(2 / 2**5)  # the noise counts


def test_accuracy_resolution_from_the_evaluation_set_size():
    df = _runs()
    assert accuracy_resolution(df) is None  # no column: no rounding
    assert accuracy_resolution(df.assign(n_test_eval=np.nan)) is None
    assert accuracy_resolution(df.assign(n_test_eval=10000)) == 1 / 10000
    assert accuracy_resolution(df.assign(n_val_eval=1000.0), "n_val_eval") == 1 / 1000
    mixed = df.assign(n_test_eval=[10000] * (len(df) - 1) + [20000])
    with pytest.raises(ValueError, match="n_test_eval"):
        accuracy_resolution(mixed)
    with pytest.raises(ValueError, match="n_test_eval"):
        accuracy_resolution(df.assign(n_test_eval=[10000] * (len(df) - 1) + [np.nan]))


def test_iter_results_records_the_evaluation_set_sizes():
    from sbnlib.experiments.sweep import iter_results
    config = {"dataset": "mnist", "method": "bn", "batch_size": 8, "seed": 0, "lr": 0.05, "scorer": "feature_std",
              "threshold": "mean", "threshold_q": None, "threshold_rate": None, "reform_batches": False}
    rec = {**_record(), "config": config, "wall_time_s": 1.0, "data": {"n_test": 10000, "n_val": 1000}}
    row = next(iter_results([rec]))
    assert row["n_test_eval"] == 10000 and row["n_val_eval"] == 1000
    row = next(iter_results([{**rec, "data": {"n_test": 10000, "n_val": 0}}]))
    assert math.isnan(row["n_val_eval"])  # no validation split
    assert math.isnan(next(iter_results([{k: v for k, v in rec.items() if k != "data"}]))["n_test_eval"])


def test_accuracy_tables_round_to_the_test_set():
    from sbnlib.experiments.tables import accuracy_tables
    rows = [{"method": m, "seed": s, "batch_size": 2, "final_test_acc": acc[s], "frac_normalized": 1.0,
             "n_test_eval": 10000.0}
            for m, acc in (("sbn", MNIST_SBN_B2), ("bn", MNIST_RANDOM_B2)) for s in range(8)]
    c = accuracy_tables(pd.DataFrame(rows), ["sbn", "bn"], n_boot=500)["comparisons"]
    steps = np.round((MNIST_SBN_B2 - MNIST_RANDOM_B2) * 10000)
    assert c["p_wilcoxon"].iloc[0] == pytest.approx(_signed_rank_bruteforce(steps))


# --------------------------------------------------------------------------- MDE of the verdict rule

def _rule_power(delta, sd, n, level, reps, seed):
    """Share of ``reps`` samples of n normal differences that the rule calls supported: exact Wilcoxon
    p < level and bootstrap 95% CI above 0 (the functions paired_comparison calls; another seed than the
    MDE's simulation, and a bootstrap of 2000 resamples drawn afresh per sample)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(reps):
        d = rng.normal(delta, sd, n)
        hits += signed_rank_pvalue(d) < level and _bootstrap_ci(d, 2000, seed + i, 0.05)[0] > 0
    return hits / reps


@pytest.mark.parametrize("n,level", [(8, 0.05 / 5), (10, 0.05 / 3)])
def test_rule_mde_has_the_stated_power(n, level):
    sd = 0.02
    mde = rule_min_detectable_effect(sd, n, level)
    assert mde == pytest.approx(rule_mde_factor(n, level) * sd)
    assert _rule_power(mde, sd, n, level, reps=2000, seed=99) == pytest.approx(0.8, abs=0.03)
    assert _rule_power(0.7 * mde, sd, n, level, reps=500, seed=98) < 0.7  # and not much less would do


def test_rule_mde_against_the_t_test_and_closed_form():
    k = rule_mde_factor(8, 0.05 / 5)
    # with 8 pairs at level 0.01 only "all 8 positive" is significant (p = 2/256), which then puts the whole
    # bootstrap CI above 0: power = Phi(k)**8, so k = Phi^-1(0.8**(1/8)) = 1.919 up to Monte-Carlo error
    assert k == pytest.approx(st.norm.ppf(0.8 ** (1 / 8)), abs=0.03)
    assert rule_min_detectable_effect(1.0, 8, 0.01) > min_detectable_effect(1.0, 8, 0.01)  # t-test: 1.60
    assert rule_mde_factor(8, 0.05) < k  # a laxer level needs less
    assert rule_mde_factor(8, 0.01) == k  # the same rejection region (2/256 < 0.01 < 4/256): the same factor
    rule_mde_factor.cache_clear()
    assert rule_mde_factor(8, 0.05 / 5) == k  # deterministic, not just cached
    assert rule_min_detectable_effect(1.0, 5, 0.05) == math.inf  # 2/2**5 = 0.0625: unreachable
    assert rule_min_detectable_effect(1.0, 8, 0.05 / 128) == math.inf  # 2/256 > 0.05/128
    assert math.isnan(rule_min_detectable_effect(0.0, 8, 0.01))
    assert math.isnan(rule_min_detectable_effect(1.0, 1, 0.01))


def test_compare_methods_mde_is_the_rules():
    out = compare_methods(_runs(), "final_test_acc", n_boot=500)
    for r in out.itertuples(index=False):
        assert r.mde_80 == pytest.approx(rule_min_detectable_effect(r.std_diff, 8, 0.05 / 3))
