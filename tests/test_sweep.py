"""Sweeps: profiles, validation, resumable result files, corrupt files, jobs-independence."""
import json
import warnings

import pytest

from sbnlib.experiments.config import SCHEMA_VERSION
from sbnlib.experiments.sweep import (
    ABLATION,
    DATASET_PARAMS,
    PROFILES,
    SweepStopped,
    experiment_configs,
    iter_results,
    load_result,
    profile_params,
    result_path,
    run_configs,
)
from sbnlib.experiments.workers import stop_condition


def _tiny(**kw):
    kw.setdefault("methods", ["bn", "sbn"])
    p = profile_params("smoke", batch_sizes=[8, 16], seeds=2, n_train=64, n_test=64, **kw)
    return experiment_configs("mnist", p)


def _numbers(r):
    return {k: r[k] for k in ("config", "status", "final_test_acc", "epochs", "steps", "probe", "bn")}


def test_profiles_cover_what_the_suite_promises():
    assert set(PROFILES) == {"smoke", "quick", "cpu", "paper"}
    cpu = PROFILES["cpu"]
    assert min(cpu["batch_sizes"]) == 2 and max(cpu["batch_sizes"]) == 128
    # the smallest exact two-sided Wilcoxon p (2/2^n), Holm-adjusted over the batch sizes, must be
    # able to fall below 0.05, or no verdict could ever be "supported" or "contradicted"
    for name in ("cpu", "paper"):
        for dataset in [None, *DATASET_PARAMS.get(name, {})]:  # and where a dataset has its own parameters
            prof = profile_params(name, dataset)
            assert prof["seeds"] >= 8 and len(prof["batch_sizes"]) * 2 / 2 ** prof["seeds"] < 0.05, (name, dataset)
    for name in PROFILES:  # issue 4: sbn against bn and every control, in every profile
        assert set(PROFILES[name]["methods"]) == {"none", "bn", "sbn", "sbn_frozen", "random", "gn"}, name
    assert PROFILES["paper"]["n_train"] is None  # full training sets
    for name in ("cpu", "paper"):  # the ablation's sbn-vs-random tests, Holm over the inner rates, too
        a = ABLATION[name]
        inner = [r for r in a["rates"] if 0 < r < 1]
        assert len(inner) * 2 / 2 ** a["seeds"] < 0.05, name


def test_experiment_configs_are_paired_across_methods():
    cfgs = experiment_configs("mnist", profile_params("smoke", batch_sizes=[8, 16], seeds=2))
    assert len(cfgs) == 6 * 2 * 2  # the smoke profile runs every method, like cpu and paper
    keys = {(c.batch_size, c.seed) for c in cfgs if c.method == "bn"}
    for m in ("none", "sbn", "sbn_frozen", "random", "gn"):
        assert keys == {(c.batch_size, c.seed) for c in cfgs if c.method == m}, m


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(seeds=0), "seeds must be at least 1"),
        (dict(seeds=[]), "seed list is empty"),
        (dict(seeds=[1, 1]), "distinct"),
        (dict(methods=[]), "method list is empty"),
        (dict(batch_sizes=[]), "batch-size list is empty"),
        (dict(batch_sizes=[0]), "batch_size must be an integer >= 1"),
        (dict(epochs=0), "epochs must be"),
    ],
)
def test_bad_sweep_parameters(kw, match):
    p = profile_params("smoke")
    p.update(kw)
    with pytest.raises(ValueError, match=match):
        experiment_configs("mnist", p)


def test_unknown_profile_and_parameter():
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        profile_params("fast")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['epoch'\]"):
        profile_params("smoke", epoch=3)


@pytest.mark.slow
def test_resume_skips_finished_runs_and_recomputes_corrupt_ones(shared_data, tmp_path, capsys):
    cfgs = _tiny()
    runs = tmp_path / "runs"
    first = run_configs(cfgs, runs, root=shared_data, progress=False)
    files = sorted(runs.glob("*.json"))
    assert len(files) == len(cfgs)
    assert not list(runs.glob(".*.tmp"))  # no temporary leftovers
    mtimes = {p: p.stat().st_mtime_ns for p in files}

    victim, truncated = result_path(runs, cfgs[0]), result_path(runs, cfgs[1])
    victim.unlink()
    truncated.write_text(truncated.read_text()[:100])
    with pytest.warns(UserWarning, match="corrupt or incomplete"):
        second = run_configs(cfgs, runs, root=shared_data, progress=False)
    assert [_numbers(a) for a in first] == [_numbers(b) for b in second]
    for p in files:
        if p not in (victim, truncated):
            assert p.stat().st_mtime_ns == mtimes[p], f"{p.name} was recomputed"
    capsys.readouterr()
    run_configs(cfgs, runs, root=shared_data, progress=True, desc="tiny (4 runs)")  # all cached now
    assert capsys.readouterr().out == f"tiny (4 runs): 100% of {len(cfgs)} runs cached\n"  # one line, no bar
    assert json.loads(truncated.read_text())["config_hash"] in truncated.name

    rows = list(iter_results(second))
    assert {r["method"] for r in rows} == {"bn", "sbn"} and all(0 <= r["final_test_acc"] <= 1 for r in rows)


def test_result_file_of_another_config_is_not_used(tmp_path):
    cfgs = _tiny()
    path = result_path(tmp_path, cfgs[0])
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "config_hash": "0" * 16, "config": {},
                                "final_test_acc": 0.5, "steps": {}}))
    with pytest.warns(UserWarning, match="does not match"):
        assert load_result(path, cfgs[0]) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_result(tmp_path / "absent.json", cfgs[0]) is None


@pytest.mark.slow
def test_jobs_2_gives_the_same_numbers_as_jobs_1(shared_data, tmp_path):
    cfgs = _tiny(methods=["bn", "sbn"])[:4]
    one = run_configs(cfgs, tmp_path / "a", root=shared_data, jobs=1, progress=False)
    two = run_configs(cfgs, tmp_path / "b", root=shared_data, jobs=2, progress=False)
    assert [_numbers(a) for a in one] == [_numbers(b) for b in two]


def test_bad_jobs(tmp_path):
    with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
        run_configs(_tiny(), tmp_path, jobs=0)


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2])
def test_a_stopped_sweep_finishes_the_runs_in_flight_and_continues_later(shared_data, tmp_path, jobs):
    cfgs = _tiny()  # four packed groups of two seeds (bn, sbn x B 8, 16)
    runs = tmp_path / "runs"
    asked = []

    def stop():  # the first `jobs` groups may start, no later one
        asked.append(1)
        return len(asked) > jobs

    with pytest.raises(SweepStopped, match="run the same command again") as e:
        run_configs(cfgs, runs, root=shared_data, jobs=jobs, progress=False, stop=stop)
    written = sorted(runs.glob("*.json"))
    assert len(written) == 2 * jobs  # the groups in flight finished and were written
    assert (e.value.finished, e.value.left) == (len(written), len(cfgs) - len(written))
    assert not list(runs.glob(".*.tmp"))
    mtimes = {f: f.stat().st_mtime_ns for f in written}
    resumed = run_configs(cfgs, runs, root=shared_data, jobs=jobs, progress=False)
    assert all(f.stat().st_mtime_ns == t for f, t in mtimes.items())  # kept, not retrained
    straight = run_configs(cfgs, tmp_path / "straight", root=shared_data, jobs=1, progress=False)
    assert [_numbers(a) for a in resumed] == [_numbers(b) for b in straight]


def test_stop_condition_latches_on_its_file_or_its_clock(tmp_path):
    assert not stop_condition()()
    flag = tmp_path / "stop"
    stop = stop_condition(flag)
    assert not stop()
    flag.touch()
    assert stop()
    flag.unlink()
    assert stop()  # a drained sweep stays drained
    assert stop_condition(minutes=0)() and not stop_condition(minutes=60)()
    with pytest.raises(ValueError, match="local processes only"):
        run_configs(_tiny(), tmp_path / "r", progress=False, scheduler="tcp://host:8786", stop=stop)


def test_ablation_runs_accrue_apart_from_their_tables(tmp_path, monkeypatch):
    # scripts/accrue_runs.py --ablation-only trains the grid with train_ablation; the notebook's ablation()
    # then finds every run cached and only writes the tables
    from sbnlib import data
    from sbnlib.experiments import pipelines as ex
    from sbnlib.experiments import studies

    from .conftest import make_toy_dataset
    ds = make_toy_dataset()
    monkeypatch.setitem(data.DERIVED, "toy_ablation", lambda **kw: ds)
    P = ex.resolve_params("toy_ablation", "smoke", batch_sizes=[8], output_dir=str(tmp_path))
    lr_for = {("sbn", 8): 0.05, ("random", 8): 0.05}
    grid = dict(batch_sizes=[8], seeds=2, scorers=["feature_std"], strategies=["mean"], rates=[0.0, 0.5, 1.0])
    a, df, _ = studies.train_ablation(P, lr_for, **grid, progress=False)
    files = sorted((tmp_path / "toy_ablation" / "runs").glob("*.json"))
    assert a["rates"] == [0.0, 0.5, 1.0] and len(df) == len(files) == 2 * (1 + 3 + 1)  # grid + sbn rates + random
    assert (df.method == "random").sum() == 2 and set(df[df.method == "random"].threshold_rate) == {0.5}
    assert not list((tmp_path / "toy_ablation").glob("ablation*"))  # no table written
    stamps = [f.stat().st_mtime_ns for f in files]
    monkeypatch.setattr(studies, "chosen_learning_rates", lambda selection: lr_for)
    monkeypatch.setattr(studies, "tune", lambda P, progress=True: None)  # the selection: as above
    out = studies.ablation(P, ds, **grid, progress=False)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing retrained
    assert (tmp_path / "toy_ablation" / "ablation.md").exists() and len(out["frame"]) == len(files)


def test_ablation_cost_counts_the_runs_beyond_the_evaluation_sweep(tmp_path, monkeypatch):
    import json

    from sbnlib import data
    from sbnlib.experiments import pipelines as ex
    from sbnlib.experiments import studies

    from .conftest import make_toy_dataset
    ds = make_toy_dataset()
    monkeypatch.setitem(data.DERIVED, "toy_ablation", lambda **kw: ds)
    P = ex.resolve_params("toy_ablation", "smoke", batch_sizes=[8], output_dir=str(tmp_path))
    lr_for = {("sbn", 8): 0.05, ("random", 8): 0.05}
    monkeypatch.setattr(studies, "chosen_learning_rates", lambda selection: lr_for)
    monkeypatch.setattr(studies, "tune", lambda P, progress=True: None)
    out = studies.ablation(P, ds, batch_sizes=[8], seeds=2, scorers=["feature_std"], strategies=["mean"],
                           rates=[0.0, 0.5, 1.0], progress=False)
    df = out["frame"]
    cost = json.loads((tmp_path / "toy_ablation" / "ablation_cost.json").read_text())
    # feature_std / mean is the evaluation sweep's sbn: its 2 seeds are shared, the rest are the ablation's own
    shared = (df.method == "sbn") & (df.threshold == "mean")
    assert cost["runs"] == len(df) and cost["runs_beyond_the_evaluation_sweep"] == int((~shared).sum()) == len(df) - 2
    assert cost["training_time_s"] == pytest.approx(df[~shared].wall_time_s.sum(), abs=0.1)
    row = studies._cost_table(tmp_path, ["toy_ablation"], {"toy_ablation": {}}).iloc[0]
    assert row["ablation runs"] == len(df) - 2 and row["readings runs"] == 0
    assert 3600 * row["ablation (h)"] == pytest.approx(cost["training_time_s"])
    # a run the readings have too is counted once, with the readings
    one = sorted(cost["training_time_s_by_run"].items())[0]
    (tmp_path / "toy_ablation" / "readings_cost.json").write_text(json.dumps(
        {"runs_beyond_the_evaluation_sweep": 1, "training_time_s": one[1], "training_time_s_by_run": dict([one])}))
    row = studies._cost_table(tmp_path, ["toy_ablation"], {"toy_ablation": {}}).iloc[0]
    assert (row["readings runs"], row["ablation runs"]) == (1, len(df) - 3)
    assert 3600 * (row["readings (h)"] + row["ablation (h)"]) == pytest.approx(cost["training_time_s"])
