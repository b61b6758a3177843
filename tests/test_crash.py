"""Crash safety of sweeps: a sweep killed with SIGKILL resumes to the numbers of an uninterrupted one.

Each finished run is one JSON file written atomically (temporary file + rename), so a kill leaves
only whole result files, plus at most one temporary file of the run being written, which is never
read as a result and is removed when the sweep starts again.

Likewise ``assess --out``: its JSON, PNG and HTML are written into a temporary folder and moved into
place together, so a command that fails part-way leaves the earlier set whole and no temporary.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from sbnlib.assess import html
from sbnlib.cli import main
from sbnlib.experiments.sweep import experiment_configs, iter_results, load_result, profile_params, result_path, run_configs
from sbnlib.experiments.tables import accuracy_tables
from sbnlib.io import atomic_output_set

from .conftest import REPO

SWEEP = dict(batch_sizes=[4, 8, 16], seeds=2, n_train=128, n_test=64, methods=["bn", "sbn"])

SCRIPT = """\
import sys
from sbnlib.experiments.sweep import experiment_configs, profile_params, run_configs
params = profile_params("smoke", **{sweep!r})
run_configs(experiment_configs("mnist", params), sys.argv[1], root=sys.argv[2], jobs=1, progress=False)
"""


def _configs():
    return experiment_configs("mnist", profile_params("smoke", **SWEEP))


def _numbers(r):
    """Everything a run records except how long it took (wall_time_s, loop_time_s, ...) and when (produced)."""
    return {k: v for k, v in r.items() if not k.endswith("_time_s") and k != "produced"}


def _accuracy(results):
    df = pd.DataFrame(list(iter_results(results)))
    return accuracy_tables(df, ["bn", "sbn"], n_boot=1000)["accuracy"]


def _load_strict(path, cfg):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="result file")
        return load_result(path, cfg)


def _kill_after_some_results(runs, data_root, tmp_path, n_configs, min_done=2, timeout=60.0):
    """Start the sweep in a subprocess; SIGKILL it once ``min_done`` result files exist (but not all)."""
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT.format(sweep=SWEEP))
    proc = subprocess.Popen([sys.executable, str(script), str(runs), str(data_root)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            done = len(list(runs.glob("*.json"))) if runs.is_dir() else 0
            if done >= min_done:
                break
            if proc.poll() is not None:
                pytest.fail(f"the sweep exited ({proc.returncode}) before it was killed: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {min_done} result files after {timeout:.0f}s")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = len(list(runs.glob("*.json")))
    assert min_done <= done < n_configs, f"{done} of {n_configs} runs finished: the kill came too late"


@pytest.mark.slow
def test_sigkilled_sweep_resumes_to_the_uninterrupted_numbers(shared_data, tmp_path):
    cfgs = _configs()
    assert len(cfgs) == 12
    runs = tmp_path / "killed"
    _kill_after_some_results(runs, shared_data, tmp_path, len(cfgs))

    # what the kill left: whole result files, each loading cleanly, and at most temporary files
    by_name = {result_path(runs, c).name: c for c in cfgs}
    finished, temps = {}, []
    for f in sorted(runs.iterdir()):
        if f.suffix == ".tmp":  # a write cut short by the kill: never a result
            assert f.name.startswith(".") and f.name[1:].rsplit(".", 2)[0] in by_name
            temps.append(f)
            continue
        assert f.name in by_name, f"unexpected file {f.name}"
        r = _load_strict(f, by_name[f.name])
        assert r is not None and r["status"] == "ok" and 0.0 <= r["final_test_acc"] <= 1.0
        n_steps = r["data"]["n_train_used"] // r["config"]["batch_size"]  # the rest is the validation split
        assert len(r["steps"]["loss"]) == n_steps and r["epochs"] and r["torch_threads"] == 1
        finished[f] = f.stat().st_mtime_ns
    assert len(finished) >= 2

    # as if the kill had come in the middle of the next write: half a JSON in a temporary file
    pending = next(c for c in cfgs if not result_path(runs, c).exists())
    partial = runs / f".{result_path(runs, pending).name}.k1ll3d_x.tmp"
    partial.write_text(json.dumps({"config_hash": "x", "final_test_acc": 0.5})[:20])
    temps.append(partial)
    unrelated = runs / f".{result_path(runs, pending).name}.extra.abc.tmp"  # not one of its temporaries
    unrelated.write_text("mine")

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="result file")  # nothing left by the kill looks corrupt
        resumed = run_configs(cfgs, runs, root=shared_data, progress=False)
    assert not [f.name for f in temps if f.exists()], "temporary files of the killed sweep were kept"
    assert unrelated.read_text() == "mine"
    assert len(list(runs.glob("*.json"))) == len(cfgs)
    for f, mtime in finished.items():
        assert f.stat().st_mtime_ns == mtime, f"{f.name} finished before the kill but was recomputed"
    for c, r in zip(cfgs, resumed):
        assert _load_strict(result_path(runs, c), c) == r

    straight = run_configs(cfgs, tmp_path / "straight", root=shared_data, progress=False)
    assert [_numbers(r) for r in resumed] == [_numbers(r) for r in straight]
    pdt.assert_frame_equal(_accuracy(resumed), _accuracy(straight))


@pytest.mark.slow
def test_truncated_result_file_is_reported_and_recomputed_identically(shared_data, tmp_path):
    cfgs = [c for c in _configs() if c.batch_size == 16 and c.method == "bn"]
    runs = tmp_path / "runs"
    run_configs(cfgs, runs, root=shared_data, progress=False)
    victim, other = result_path(runs, cfgs[0]), result_path(runs, cfgs[1])
    original = json.loads(victim.read_text())
    other_mtime = other.stat().st_mtime_ns
    text = victim.read_text()
    victim.write_text(text[: len(text) // 2])

    with pytest.warns(UserWarning, match=re.escape(str(victim)) + ".*corrupt or incomplete"):
        again = run_configs(cfgs, runs, root=shared_data, progress=False)
    recomputed = json.loads(victim.read_text())
    assert _numbers(recomputed) == _numbers(original)
    assert _numbers(again[0]) == _numbers(original)
    assert other.stat().st_mtime_ns == other_mtime  # the intact file was kept, not recomputed
    assert not list(runs.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------
# assess --out: the output set is written whole or not at all
# ---------------------------------------------------------------------------------------------

SET = [f"assess_feat_feature_std_mean.{ext}" for ext in ("json", "png", "html")]


def _earlier_set(out):
    out.mkdir(parents=True)
    for name in SET:
        (out / name).write_text(f"earlier {name}\n")
        os.utime(out / name, ns=(10**18, 10**18))
    return {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in out.iterdir()}


def _assess(tmp_path, out, capsys):
    np.save(tmp_path / "feat.npy", np.random.default_rng(0).random((40, 3)))
    try:
        rc = main(["assess", "--data", str(tmp_path / "feat.npy"), "--batch-sizes", "4", "--out", str(out),
                   "--evidence", "none"])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr()


@pytest.mark.parametrize("failing", ["write_html_report", "os.replace"])
def test_assess_failing_after_the_png_leaves_the_earlier_set_whole(failing, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    before = _earlier_set(out)
    if failing == "write_html_report":  # the PNG is written, then the HTML fails (as a non-UTF-8 path once did)
        def fail(*a, **k):
            raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")
        monkeypatch.setattr(html, "write_html_report", fail)
    else:  # the whole set is written, the move into place fails (the first rename already)
        def fail(*a, **k):
            raise OSError(5, "Input/output error")
        monkeypatch.setattr(os, "replace", fail)
    rc, cap = _assess(tmp_path, out, capsys)
    assert rc == 2 and [l for l in cap.err.splitlines() if l.startswith("error:")], cap.err
    assert "Traceback" not in cap.err
    assert {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in out.iterdir()} == before  # no temporary either


def test_assess_replaces_the_whole_set_and_a_killed_runs_temporary_folder(tmp_path, capsys):
    out = tmp_path / "out"
    _earlier_set(out)
    stale = out / ".assess_feat_feature_std_mean.999999999-abc.tmp"  # left by a SIGKILLed assess
    stale.mkdir()
    (stale / SET[1]).write_bytes(b"half a png")
    live = out / f".assess_feat_feature_std_mean.{os.getpid()}-abc.tmp"  # a running writer's: kept
    live.mkdir()
    rc, cap = _assess(tmp_path, out, capsys)
    assert rc == 0, cap.err
    assert sorted(f.name for f in out.iterdir()) == sorted(SET + [live.name])
    assert all(not (out / name).read_bytes().startswith(b"earlier") for name in SET)
    assert json.loads((out / SET[0]).read_text())["n_samples"] == 40


def test_atomic_output_set_moves_nothing_when_the_block_fails(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output_set(tmp_path, "set") as tmp:
            (tmp / "a.txt").write_text("new")
            (tmp / "b.txt").write_text("new")
            raise RuntimeError("the third file failed")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"
