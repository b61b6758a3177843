"""Report helpers: tables with provenance, C2 rule, REPORT.md with missing datasets."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sbnlib import provenance
from sbnlib.assess import evidence
from sbnlib.experiments import report, tables
from sbnlib.experiments.records import StepLog

from .conftest import REPO


def _runs(shift_acc=0.0, shift_vol=0.0, n_seeds=8):
    rng = np.random.default_rng(0)
    rows = []
    for b in (2, 8):
        for s in range(n_seeds):
            base = {"batch_size": b, "seed": s, "diverged": False}
            acc = 0.8 + 0.01 * rng.standard_normal()
            vol = 0.5 + 0.01 * rng.standard_normal()
            for m, da, dv, frac in (("bn", 0, 0, 1.0), ("sbn", shift_acc, shift_vol, 0.5)):
                rows.append({**base, "method": m, "final_test_acc": acc + da + 0.001 * s,
                             "loss_volatility": vol + dv, "grad_norm_cv": 0.3 + 0.001 * s,
                             "ics_shift": 0.2 + 0.0001 * s,
                             "bn_transformations": 300 * frac, "frac_normalized": frac})
    return pd.DataFrame(rows)


def test_markdown_table_formats_numbers_and_escapes_pipes():
    md = tables.markdown_table(pd.DataFrame({"a": [0.123456, np.nan], "b": ["x|y", "z"]}), index=False)
    lines = md.splitlines()
    assert lines[0] == "| a | b |" and lines[1] == "|---|---|"
    assert "0.1235" in lines[2] and "x\\|y" in lines[2] and "n/a" in lines[3]


def test_write_table_carries_provenance_and_reads_back(tmp_path):
    df = pd.DataFrame({"acc": [0.5, 0.75]}, index=pd.Index([2, 4], name="batch_size"))
    prov = {"profile": "cpu", "data_status": "unverified copy", "git_commit": "abc"}
    paths = tables.write_table(df, tmp_path, "t", "Title", prov, notes="some notes")
    back = pd.read_csv(paths["csv"], comment="#", index_col=0)
    assert back["acc"].tolist() == [0.5, 0.75]
    text = paths["csv"].read_text()
    assert text.startswith("# profile: cpu\n") and "# data_status: unverified copy" in text
    md = paths["md"].read_text()
    assert md.startswith("## Title") and "some notes" in md and "- data_status: unverified copy" in md


def test_accuracy_table_reports_differences_and_verdicts():
    df = _runs(shift_acc=0.05)
    acc = tables.accuracy_tables(df, ["bn", "sbn"], n_boot=2000)["accuracy"]
    assert list(acc.index) == [2, 8]
    assert (acc["sbn-bn diff (pp)"] == 5.0).all()
    assert (acc["C1 vs bn"] == "supported").all()
    assert acc["sbn batches normalised"].tolist() == ["50.0%", "50.0%"]


def test_c2_rule():
    better = tables.stability_tables(_runs(shift_vol=-0.1), ["bn", "sbn"], n_boot=2000)
    worse = tables.stability_tables(_runs(shift_vol=+0.1), ["bn", "sbn"], n_boot=2000)
    df = _runs()
    assert set(tables.c2_verdicts(df, better["comparisons"])) == {"supported"}
    mixed = better["comparisons"].copy()
    mixed.loc[mixed.metric == "ics_shift", "verdict"] = "contradicted"  # one better, one worse
    assert set(tables.c2_verdicts(df, mixed)) == {"inconclusive"}
    assert set(tables.c2_verdicts(df, worse["comparisons"])) == {"contradicted"}
    same = tables.stability_tables(df, ["bn", "sbn"], n_boot=2000)
    assert "supported" not in set(tables.c2_verdicts(df, same["comparisons"]))
    counts = better["counts"]
    assert counts["BN transformations sbn"].tolist() == [150, 150]


def test_status_round_trip_and_unreadable(tmp_path):
    evidence.write_status(tmp_path, "failed", "boom", runs=3)
    assert evidence.read_status(tmp_path) == {"status": "failed", "reason": "boom", "runs": 3}
    (tmp_path / "status.json").write_text("{not json")
    assert evidence.read_status(tmp_path)["status"] == "failed"


def test_inference_table_rows_per_batch_and_method():
    df = pd.DataFrame([
        {"batch_size": 4, "method": "bn", "acc_running": np.nan, "acc_bypass": np.nan, "acc_selected": np.nan,
         "running_stats_drift": 0.1},
        {"batch_size": 4, "method": "sbn", "acc_running": 0.5, "acc_bypass": 0.25, "acc_selected": 0.75,
         "running_stats_drift": 1.0},
        {"batch_size": 4, "method": "sbn", "acc_running": 0.7, "acc_bypass": 0.35, "acc_selected": 0.85,
         "running_stats_drift": 2.0},
        {"batch_size": 4, "method": "gn", "acc_running": np.nan, "acc_bypass": np.nan, "acc_selected": np.nan,
         "running_stats_drift": np.nan},
    ])
    t = tables.inference_table(df)
    assert list(t.index) == [(4, "bn"), (4, "sbn")]  # gn has nothing to report
    row = t.loc[(4, "sbn")]
    assert row["test acc, standard eval (%)"] == 60.0 and row["running-stats drift"] == 1.5
    assert tables.inference_table(df.drop(columns=["acc_running", "acc_bypass", "acc_selected",
                                                   "running_stats_drift"])).empty


def test_git_commit_ignores_outputs_but_not_code(tmp_path):
    import subprocess

    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@t"), git("config", "user.name", "t")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "r.md").write_text("a")
    (tmp_path / "code.py").write_text("a")
    git("add", "-A"), git("commit", "-qm", "x")
    assert not provenance.git_commit(tmp_path).endswith("+dirty")
    (tmp_path / "outputs" / "r.md").write_text("b")
    assert not provenance.git_commit(tmp_path).endswith("+dirty")
    (tmp_path / "code.py").write_text("b")
    assert provenance.git_commit(tmp_path).endswith("+dirty")
    assert provenance.git_commit(tmp_path / "nowhere").startswith("unknown")


def _result(method, b, seed, losses, bn_on, epochs=2, acc=0.5):
    log = StepLog()  # the trainer's own series -> metrics path
    for loss, on in zip(losses, bn_on):
        log.add(loss, 1.0, on, 0.1)
    return {"config": {"method": method, "batch_size": b, "seed": seed}, "status": "ok", "final_test_acc": acc,
            "metrics": log.metrics(len(losses) // epochs, diverged=False),
            "epochs": [{"train_acc": 0.1}] * (epochs - 1) + [{"train_acc": 0.9}]}


def test_collapse_table_splits_the_last_epoch_by_bn_on_and_off():
    # 2 epochs of 4 steps; only the last 4 count: on-steps lose 1.0, off-steps 3.0
    r1 = _result("sbn", 8, 0, [9, 9, 9, 9, 1.0, 3.0, 1.0, 3.0], [True, False] * 4)
    r2 = _result("sbn", 8, 1, [9, 9, 9, 9, 2.0, 4.0, 2.0, 4.0], [True, False] * 4, acc=0.7)
    bn = _result("bn", 8, 0, [9, 9, 9, 9, 0.5, 0.5, 0.5, 0.5], [True] * 8)
    gn = _result("gn", 8, 0, [9] * 8, [True] * 8)  # not a BN method: left out
    t = tables.collapse_table([r1, r2, bn, gn])
    assert list(t.index) == [(8, "bn"), (8, "sbn")]
    row = t.loc[(8, "sbn")]
    assert row["train loss, BN-on steps"] == 1.5 and row["train loss, BN-off steps"] == 3.5
    assert row["train loss, last epoch"] == 2.5 and row["train acc, last epoch (%)"] == 90.0
    assert row["test acc (%)"] == 60.0
    assert np.isnan(t.loc[(8, "bn"), "train loss, BN-off steps"])  # bn never skips


def _bn_gn_runs(bn_drop, gn_drop, n_seeds=10):
    rows = []
    for s in range(n_seeds):
        jitter = 0.001 * s
        for m, drop in (("bn", bn_drop), ("gn", gn_drop)):
            rows.append({"method": m, "batch_size": 32, "seed": s, "final_test_acc": 0.9 + jitter})
            rows.append({"method": m, "batch_size": 2, "seed": s, "final_test_acc": 0.9 - drop + 2 * jitter})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("bn_drop,gn_drop,expected", [(0.10, 0.0, "supported"), (0.0, 0.10, "contradicted"),
                                                      (0.02, 0.02, "inconclusive")])
def test_bn_vs_gn_sanity_tests_the_difference_of_drops(bn_drop, gn_drop, expected):
    t = tables.bn_vs_gn_sanity({"toy": _bn_gn_runs(bn_drop, gn_drop)}, n_boot=2000)
    row = t.iloc[0]
    assert (row["small B"], row["large B"], row["n"]) == (2, 32, 10)
    assert row["BN drops more than GN"] == expected
    assert row["bn drop (pp)"] == pytest.approx(100 * bn_drop - 0.45, abs=0.01)  # mean jitter 0.0045
    assert row["drop diff (pp)"] == pytest.approx(100 * (bn_drop - gn_drop), abs=0.01)
    line = report.sanity_sentences(t)[0]
    assert line.startswith("- **toy**: from B=32 to B=2")
    assert ("pattern is visible" in line) == (expected == "supported")


def test_bn_vs_gn_sanity_skips_datasets_without_both_methods():
    df = _bn_gn_runs(0.1, 0.0)
    assert len(tables.bn_vs_gn_sanity({"x": df[df.method == "bn"]})) == 0
    assert len(tables.bn_vs_gn_sanity({"x": df[df.batch_size == 32]})) == 0


def test_collapse_sentences_state_train_and_test_gaps():
    rs = [_result("bn", 8, 0, [1, 1, 0.2, 0.2], [True] * 4, acc=0.9),
          _result("sbn", 8, 0, [1, 1, 0.5, 1.5], [True, False] * 2, acc=0.6),
          _result("random", 8, 0, [1, 1, 0.7, 1.7], [True, False] * 2, acc=0.5)]
    rs[1]["epochs"][-1] = {"train_acc": 0.7}
    machine = tables.collapse_table(rs).rename(columns={v: k for k, v in tables.COLLAPSE_COLUMNS.items()}).reset_index()
    lines = report.collapse_sentences(machine, "toy")
    assert lines == ["- **toy**, B=8: accuracy bn - sbn is +30.0 pp on the test set and +20.0 pp on the training "
                     "batches; sbn's last-epoch training loss is 1.000 (0.500 on BN-on steps, 1.500 on BN-off "
                     "steps) against bn's 0.200, random (same rate) 1.200."]


def test_provenance_names_the_runs_commits_not_the_rendering():
    from sbnlib.provenance import numbers_from, portable

    runs = [{"produced": {"git_commit": "abc", "utc": "2026-11-30 10:00:00"}, "wall_time_s": 2.0},
            {"produced": {"git_commit": "abc", "utc": "2026-11-30 12:00:00"}, "wall_time_s": 3.0},
            {"wall_time_s": 1.0}]  # a record from before the field
    assert numbers_from(runs) == {"numbers produced by commit (runs)": "abc (2), unrecorded (1)",
                                  "last run finished (UTC)": "2026-11-30 12:00:00"}
    prov = tables.make_provenance({"dataset": "d", "root": "/machine/path/data"}, "cpu", {"seeds": 2}, runs)
    again = tables.make_provenance({"dataset": "d", "root": "/machine/path/data"}, "cpu", {"seeds": 2}, runs)
    assert prov == again and prov["training_time_s (sum over runs)"] == 6.0
    assert not any(k in prov for k in ("generated", "git_commit", "wall_time_s"))  # nothing of the rendering
    assert portable({"root": "/machine/path/data", "status": "ok"}) == {"root": "data", "status": "ok"}


def test_reports_show_paths_inside_the_repository_relative_and_count_epochs_right():
    from sbnlib.assess.advice import plural
    from sbnlib.provenance import shown_path
    assert shown_path(REPO / "outputs" / "mnist" / "evidence.json") == str(Path("outputs") / "mnist" / "evidence.json")
    assert shown_path("/nowhere/else/evidence.json") == "/nowhere/else/evidence.json"
    assert plural(8, "epoch") == "8 epochs" and plural(2, "batch") == "2 batches" and plural(1, "epoch") == "1 epoch"


