"""Crash safety of sweeps: a sweep killed with SIGKILL resumes to the numbers of an uninterrupted one.

Each finished run is one JSON file written atomically (temporary file + rename), so a kill leaves
only whole result files, plus at most one temporary file of the run being written, which is never
read as a result and is removed when the sweep starts again.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import pandas as pd
import pandas.testing as pdt
import pytest

from sbnlib.report import accuracy_tables
from sbnlib.sweep import experiment_configs, iter_results, load_result, profile_params, result_path, run_configs

from .conftest import REPO

pytestmark = pytest.mark.slow

SWEEP = dict(batch_sizes=[4, 8, 16], seeds=2, n_train=128, n_test=64, methods=["bn", "sbn"])

SCRIPT = """\
import sys
from sbnlib.sweep import experiment_configs, profile_params, run_configs
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
