"""The answer issue (27): the budget check, the typed results and the report that answers first."""
import json

import numpy as np
import pandas as pd
import pytest

from sbnlib.assess import evidence
from sbnlib.experiments import budget, report, results, studies, tables
from sbnlib.experiments.stats import CONTRADICTED, INCONCLUSIVE, SUPPORTED
from sbnlib.experiments.sweep import PROFILES

from .conftest import REPO

# ----------------------------------------------------------------------------------------------
# the budget check
# ----------------------------------------------------------------------------------------------


def _budget_runs(diffs_1x, diffs_2x, seeds=(100, 101)):
    """Runs of arms bn and sbn at 1x and 2x: bn at 0.9, sbn at 0.9 + diff (fractions), per batch size."""
    rows = []
    for factor, diffs in ((1, diffs_1x), (2, diffs_2x)):
        for b, d in diffs.items():
            for s in seeds:
                rows.append({"arm": "bn", "factor": factor, "batch_size": b, "seed": s, "final_val_acc": 0.9})
                rows.append({"arm": "sbn", "factor": factor, "batch_size": b, "seed": s, "final_val_acc": 0.9 + d})
    return pd.DataFrame(rows)


def test_budget_table_gives_the_paired_difference_at_both_budgets():
    t = budget.budget_table(_budget_runs({2: -0.02, 8: 0.01}, {2: -0.01, 8: 0.01}), [("sbn", "bn")])
    assert t.batch_size.tolist() == [2, 8] and t.n_seeds.tolist() == [2, 2]
    assert t.diff_1x_pp.tolist() == [-2.0, 1.0] and t.diff_2x_pp.tolist() == [-1.0, 1.0]
    assert t.shift_pp.tolist() == [1.0, 0.0] and t.sbn_val_2x.tolist() == [89.0, 91.0]


@pytest.mark.parametrize("d1, d2, mde, edge, sensitive, why", [
    (-2.0, -2.1, 1.0, False, False, ""),  # stable: robust
    (-2.0, 0.5, 5.0, False, True, "sign flips"),  # opposite signs, however small the move
    (-2.0, -0.5, 1.0, False, True, "more than the MDE"),  # moves 1.5 pp > MDE 1 pp
    (0.0, -0.5, 1.0, False, False, ""),  # reaching 0 from a side is no flip, and 0.5 < MDE
    (-2.0, -2.0, 1.0, True, True, "open edge"),  # a learning rate at an open edge of the grid
    (-2.0, -1.5, float("nan"), False, False, ""),  # no MDE (one seed): only a flip counts
])
def test_budget_label_rule(d1, d2, mde, edge, sensitive, why):
    t = budget.budget_table(_budget_runs({4: d1 / 100}, {4: d2 / 100}), [("sbn", "bn")])
    out = budget.label(t, {("sbn", "bn", 4): mde}, [("sbn", 4)] if edge else [])
    assert (out.budget.iloc[0] == budget.SENSITIVE) == sensitive
    assert why in out.why.iloc[0] and (out.why.iloc[0] == "") == (not sensitive)


def test_budget_label_without_longer_runs_reads_not_checked():
    runs = _budget_runs({4: -0.01}, {})
    out = budget.label(budget.budget_table(runs, [("sbn", "bn")]), {})
    assert out.budget.tolist() == [budget.NOT_CHECKED] and "no 2x runs" in out.why.iloc[0]
    assert len(budget.label(budget.budget_table(pd.DataFrame(), [("sbn", "bn")]), {})) == 0


def test_a_cached_budget_check_trains_nothing_and_reads_what_exists(tmp_path, monkeypatch):
    from sbnlib import data
    from sbnlib.experiments import pipelines as ex

    from .conftest import make_toy_dataset
    ds = make_toy_dataset()
    monkeypatch.setitem(data.DERIVED, "toy_budget", lambda **kw: ds)
    P = ex.resolve_params("toy_budget", "smoke", batch_sizes=[8, 16], output_dir=str(tmp_path))
    selection = ex.tune(P, progress=False)
    cached = ex.budget_check(P, selection, progress=False, mode="cached")
    assert set(cached.factor) == {1} and not (tmp_path / "toy_budget" / "budget").exists()  # the 1x runs are the selection's
    trained = ex.budget_check(P, selection, progress=False)
    assert sorted(set(trained.factor)) == [1, 2] and len(trained) == 2 * len(cached)
    again = ex.budget_check(P, selection, progress=False, mode="cached")
    assert again.drop(columns="wall_time_s").equals(trained.drop(columns="wall_time_s"))
    with pytest.raises(ex.ParameterError, match="budget_check"):
        ex.budget_check(P, selection, mode="later")


def test_budget_configs_double_the_epochs_on_the_tuning_seeds_at_the_selected_rates():
    params = PROFILES["smoke"]
    lr_for = {(m, b): 0.05 * (1 + i) for i, m in enumerate(["bn", "sbn", "random", "none"]) for b in params["batch_sizes"]}
    plan = budget.budget_configs("mnist", params, lr_for, budget.MAIN_ARMS)
    assert [(a.label, f) for a, f, _ in plan] == [("bn", 1), ("bn", 2), ("sbn", 1), ("sbn", 2)]
    for arm, factor, configs in plan:
        assert {c.epochs for c in configs} == {factor * params["epochs"]}
        assert {c.seed for c in configs} == set(params["tune_seeds"])  # never an evaluation seed
        assert {c.lr for c in configs} == {lr_for[(arm.method, configs[0].batch_size)]}
    # a reading takes its method's rate and its TrainConfig fields
    arm = budget.Arm("input_bare", "sbn", {"scope": "input_bare"})
    (_, _, configs), _ = budget.budget_configs("mnist", params, lr_for, [arm])
    assert {c.scope for c in configs} == {"input_bare"} and {c.lr for c in configs} == {lr_for[("sbn", 4)]}
    assert not arm.plain and budget.MAIN_ARMS[0].plain


def test_the_1x_runs_of_a_profile_method_are_the_selections_runs():
    """The check reads the selection's runs at 1x (same configuration, hence same file) and trains only 2x."""
    from sbnlib.experiments.sweep import config_hash, tuning_configs
    params = PROFILES["smoke"]
    tuning = {config_hash(c) for c in tuning_configs("mnist", params)}
    lr_for = {(m, b): params["lr_grid"][0] for m in params["methods"] for b in params["batch_sizes"]}
    for _arm, factor, configs in budget.budget_configs("mnist", params, lr_for, budget.MAIN_ARMS):
        assert all((config_hash(c) in tuning) == (factor == 1) for c in configs)


def test_win_arms_name_the_reading_its_control_and_none():
    comps = pd.DataFrame({"reading": ["input_bare", "input_bare", "identity"], "batch_size": [2, 2, 4],
                          "baseline": ["bn", "control", "bn"], "verdict": [SUPPORTED, INCONCLUSIVE, CONTRADICTED]})
    wins = budget.win_arms(comps)
    assert list(wins) == [("input_bare", 2)]
    assert [a.label for a in wins[("input_bare", 2)]] == ["input_bare", "input_bare control", "none"]
    assert wins[("input_bare", 2)][1].overrides == {"scope": "input_bare"} and wins[("input_bare", 2)][1].method == "random"
    assert budget.win_arms(pd.DataFrame()) == {}


# ----------------------------------------------------------------------------------------------
# typed results and the report
# ----------------------------------------------------------------------------------------------

def _dataset(root, name, diffs, verdicts, sensitive=(), reading_win=None):
    """A dataset folder as the notebooks write it: status, evidence (typed verdicts), comparisons,
    runs and the budget check; ``diffs``: sbn - bn in pp per batch size."""
    d = root / name
    evidence.write_status(d, "ok", data_status="verified", profile="cpu", training_time_s=10.0, runs=4)
    sizes = sorted(diffs)
    rows = [{"batch_size": b, "C1": verdicts[b], "C1 budget": budget.SENSITIVE if b in sensitive else budget.ROBUST,
             "C2": INCONCLUSIVE, "sbn vs random": INCONCLUSIVE, "sbn vs gn": CONTRADICTED} for b in sizes]
    (d / "evidence.json").write_text(json.dumps({"schema": evidence.EVIDENCE_SCHEMA, "rows": rows,
                                                 "recipe_check": {"best_batch_size": 32, "bn_val_acc_pct": 99.0,
                                                                  "target_pct": 98.5, "met": True}}))
    pd.DataFrame([{"batch_size": b, "baseline": base, "treatment": "sbn", "mean_diff": diffs[b] / 100,
                   "ci_low": diffs[b] / 100 - 0.01, "ci_high": diffs[b] / 100 + 0.01, "p_wilcoxon_holm": 0.03,
                   "mde_80": 0.01, "verdict": verdicts[b] if base == "bn" else INCONCLUSIVE}
                  for b in sizes for base in ("bn", "random")]).to_csv(d / "comparisons_accuracy.csv", index=False)
    pd.DataFrame([{"method": m, "batch_size": b, "seed": s, "final_test_acc": 0.9 + (diffs[b] / 100 if m == "sbn" else 0)
                   + 0.001 * s, "final_val_acc": 0.9} for m in ("bn", "sbn") for b in sizes for s in range(3)]
                 ).to_csv(d / "runs.csv", index=False)
    bt = budget.budget_table(_budget_runs({b: diffs[b] / 100 for b in sizes}, {b: diffs[b] / 100 for b in sizes}),
                             [("sbn", "bn")])
    checks = budget.label(bt, {("sbn", "bn", b): 1.0 for b in sizes})
    checks.loc[checks.batch_size.isin(sensitive), ["budget", "why"]] = [budget.SENSITIVE, "the sign flips at 2x"]
    tables.write_table(checks.set_index(["treatment", "baseline", "batch_size"]), d, "budget_check", "t", {"p": 1})
    if reading_win is not None:
        b, diff, vs_control = reading_win
        pd.DataFrame([{"reading": "input_bare", "batch_size": b, "baseline": base, "treatment": "reading",
                       "mean_diff": v / 100, "ci_low": v / 100 - 0.01, "ci_high": v / 100 + 0.01, "p_wilcoxon_holm": p,
                       "mde_80": 0.01, "verdict": verdict}
                      for base, v, p, verdict in (("bn", diff, 0.031, SUPPORTED), ("control", vs_control, 0.59, INCONCLUSIVE),
                                                  ("none", -0.39, 0.5, INCONCLUSIVE))]).to_csv(
            d / "comparisons_readings.csv", index=False)


@pytest.fixture
def outputs(tmp_path):
    _dataset(tmp_path, "mnist", {2: -0.5, 8: -1.0, 32: -0.2}, {2: CONTRADICTED, 8: CONTRADICTED, 32: INCONCLUSIVE})
    _dataset(tmp_path, "cifar10", {2: -3.0, 8: -4.0, 32: -5.0}, {2: CONTRADICTED, 8: CONTRADICTED, 32: CONTRADICTED},
             sensitive=(2,), reading_win=(2, 3.7, 0.48))
    evidence.write_status(tmp_path / "cifar100", "missing", "cifar100: files missing under the data root")
    (tmp_path / "mnist" / "accuracy.md").write_text("## mnist: test accuracy\n\n| a |\n")
    return tmp_path


def test_typed_result_reads_machine_files(outputs):
    r = results.load(outputs, "cifar10")
    assert r.ok and r.verdicts.columns.tolist() == ["batch_size", *results.VERDICT_KEYS.values()]
    assert r.verdicts.c1_budget.tolist() == [budget.SENSITIVE, budget.ROBUST, budget.ROBUST]
    assert r.comparisons.mean_diff_pp.round(6).tolist()[:2] == [-3.0, -3.0] and r.recipe["met"] is True
    assert r.n_better("sbn", "bn", 2) == (0, 3)
    assert not results.load(outputs, "cifar100").ok and not results.load(outputs, "nowhere").ok


def test_answer_counts_judged_cells_and_names_every_win(outputs):
    res = [results.load(outputs, d) for d in ("mnist", "cifar10", "cifar100")]
    text = "\n".join(report.answer(res))
    assert text.startswith("**Selective BN does not beat BN here.**")
    assert "below BN in 6 of 6 cells (sbn - bn -5.00 to -0.20 pp; below on every seed in 6)" in text
    # the budget-sensitive cell (cifar10 B=2) is shown, not counted: 5 counted, 4 worse, 1 inconclusive
    assert "of the 5 verdicts that twice the training leaves standing, it is significantly worse in 4, " \
           "significantly better in 0, inconclusive in 1" in text
    assert "CIFAR-10 B=2 (contradicted, -3.00 pp)" in text
    assert "small batch sizes the paper's claim is about (B <= 8):** sbn - bn -4.00 to -0.50 pp; significantly " \
           "worse in 3 and better in 0 of 3 counted cells" in text
    win = [line for line in report.answer(res) if "input_bare" in line]
    assert len(win) == 1 and "+3.70 pp over BN" in win[0] and "+0.48 pp against its random control (Holm p 0.59)" in win[0]


def test_report_answers_on_its_first_screen_and_links_each_dataset(outputs):
    for d in ("mnist", "cifar10"):
        assert report.write_dataset_report(outputs, d) is not None
    assert report.write_dataset_report(outputs, "cifar100") is None
    res = [results.load(outputs, d) for d in ("mnist", "cifar10", "cifar100")]
    path = report.write_report(outputs, ["mnist", "cifar10", "cifar100"], res,
                               ["summary_accuracy_diff.png", "summary_verdicts.png"], {"versions": "{}"})
    lines = path.read_text().splitlines()
    first = "\n".join(lines[:40])
    assert lines[0].startswith("# Does selective BN beat BN?")
    assert "![sbn - bn per batch size](summary_accuracy_diff.png)" in first and "summary_verdicts.png" in first
    assert "[MNIST](mnist/REPORT.md)" in path.read_text() and "| cifar100 | missing |" in path.read_text()
    assert "## mnist: test accuracy" in (outputs / "mnist" / "REPORT.md").read_text()
    assert "## The budget check" in path.read_text() and "robust at every batch size" in path.read_text()


def test_summary_writes_every_report_and_is_byte_stable(outputs):
    verdicts, statuses, path, extra = studies.summary(["mnist"], outputs, progress=False)
    assert set(verdicts.dataset) == {"mnist", "cifar10"} and list(statuses) == ["cifar10", "cifar100", "mnist"]
    first = path.read_bytes()
    assert (outputs / "cifar10" / "REPORT.md").is_file() and (outputs / "summary_verdicts.png").read_bytes()[:4] == b"\x89PNG"
    studies.summary(["cifar10"], outputs, progress=False)
    assert path.read_bytes() == first


def test_the_recipe_check_reads_validation_at_bns_best_batch_size():
    df = pd.DataFrame({"method": ["bn"] * 4 + ["sbn"] * 2, "batch_size": [2, 2, 32, 32, 32, 32],
                       "final_val_acc": [0.97, 0.98, 0.99, 0.985, 0.999, 0.999], "final_test_acc": [0.0] * 6})
    rc = tables.recipe_check(df, "mnist")
    assert rc == {"best_batch_size": 32, "bn_val_acc_pct": 98.75, "target_pct": 98.5, "met": True}
    assert tables.recipe_check(df, "mnist_fmnist_mix")["met"] is None


# ----------------------------------------------------------------------------------------------
# the committed report and README
# ----------------------------------------------------------------------------------------------

def test_committed_report_answers_first_and_is_short():
    path = REPO / "outputs" / "REPORT.md"
    text = path.read_text()
    assert len(text.encode()) <= 30_000, f"{path} is {len(text.encode())} bytes; the limit is 30 KB"
    assert "summary_accuracy_diff.png" in "\n".join(text.splitlines()[:40])
    assert "baseline not converged" not in text


def test_readme_states_the_finding_on_its_first_screen():
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) <= 15_000, f"README.md is {len(text.encode())} bytes; the limit is 15 KB"
    first = "\n".join(text.splitlines()[:40])
    assert "summary_accuracy_diff.png" in first and "pp" in first
    # the README's numbers are the rendered report's, not typed apart from it
    report_text = (REPO / "outputs" / "REPORT.md").read_text()
    for number in ("-6.90 to -0.23 pp", "-3.99 to -0.23 pp", "+3.70 pp", "+0.48 pp", "-1.80 pp"):
        assert number in first and number in report_text, number


def test_every_dataset_has_a_budget_check():
    for d in ("mnist", "fashion_mnist", "cifar10", "mnist_fmnist_mix"):
        t = pd.read_csv(REPO / "outputs" / d / "budget_check.csv", comment="#")
        assert set(t.budget) <= {budget.ROBUST, budget.SENSITIVE, budget.NOT_CHECKED} and len(t) == 5
        checked = t[t.budget != budget.NOT_CHECKED]
        assert np.isfinite(checked.diff_2x_pp).all() and np.isfinite(checked.diff_1x_pp).all()
