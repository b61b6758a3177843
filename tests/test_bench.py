"""The benchmark scripts' own arithmetic (their figures are measured, not asserted)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from packing_hours import main as packing_hours  # noqa: E402

CSV = """batch_size,method,engine,group_size,images_per_s,ratio,loop_images_per_s,loop_ratio
2,bn,single,1,700,1.0,750,1.0
2,bn,packed,8,2100,3.0,2400,3.2
2,sbn,packed,8,1400,2.0,1500,2.0
8,bn,packed,8,1800,1.8,1900,1.9
8,bn,packed_as_sweep,4,1500,1.5,1600,1.6
"""


def _run(tmp_path, name, method, batch_size, engine, seconds, folder="runs"):
    config = {"method": method, "batch_size": batch_size, **({"engine": engine} if engine == "packed" else {})}
    (tmp_path / "out" / "ds" / folder).mkdir(parents=True, exist_ok=True)
    (tmp_path / "out" / "ds" / folder / f"{name}.json").write_text(
        json.dumps({"config": config, "config_hash": name, "wall_time_s": seconds}))


def test_packing_hours_scale_packed_runs_by_the_sweeps_own_ratio(tmp_path, capsys):
    (tmp_path / "out" / "ds").mkdir(parents=True)
    (tmp_path / "out" / "ds" / "status.json").write_text("{}")
    (tmp_path / "bench.csv").write_text(CSV)
    _run(tmp_path, "a", "bn", 2, "packed", 3600)  # x3.0 without packing
    _run(tmp_path, "b", "sbn", 2, "packed", 3600, folder="tuning")  # a selecting method: the sbn row, x2.0
    _run(tmp_path, "c", "bn", 8, "packed", 3600)  # the group a sweep forms (S=4) wins over S=8: x1.5
    _run(tmp_path, "d", "bn", 32, "single", 7200)  # single runs count as they are
    out = tmp_path / "hours.md"
    assert packing_hours(["--outputs", str(tmp_path / "out"), "--bench", str(tmp_path / "bench.csv"),
                          "--out", str(out)]) == 0
    assert "| ds | 4 | 3 | 5.00 | 8.50 | 41% |" in out.read_text()
    assert "| all | 4 | 3 | 5.00 | 8.50 | 41% |" in capsys.readouterr().out


@pytest.mark.parametrize("bench_csv,message", [
    ("missing.csv", "missing.csv is missing; run python bench/bench_suite.py --only packed first"),
    ("bench.csv", "a packed run at batch size 4, which the benchmark's CSV has no bn row for"),
])
def test_packing_hours_refuses_what_it_cannot_estimate(tmp_path, bench_csv, message):
    (tmp_path / "out" / "ds").mkdir(parents=True)
    (tmp_path / "out" / "ds" / "status.json").write_text("{}")
    (tmp_path / "bench.csv").write_text(CSV)
    _run(tmp_path, "a", "bn", 4, "packed", 60)
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "packing_hours.py"), "--outputs", str(tmp_path / "out"),
                        "--bench", str(tmp_path / bench_csv)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert p.stderr.startswith("error: ") and message in p.stderr


def test_check_reproduction_samples_across_sittings_and_reports_where_a_rerun_departs(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from check_reproduction import compare, sample

    runs = tmp_path / "runs"
    runs.mkdir()
    for i, (b, engine) in enumerate([(128, None), (128, None), (128, "packed"), (8, None), (128, None)]):
        config = {"batch_size": b, **({"engine": engine} if engine else {})}
        (runs / f"r{i}.json").write_text(json.dumps({"config": config, "produced": {"utc": f"2026-12-0{5 - i}"}}))
    picked = [path.name for path, _ in sample(runs, 128, 2)]
    assert picked == ["r4.json", "r0.json"]  # the earliest and the latest single run at that batch size
    assert [p.name for p, _ in sample(runs, 128, 5)] == ["r4.json", "r1.json", "r0.json"]
    old = {"final_test_acc": 0.9, "steps": {"loss": [2.0, 1.5, 1.0]}, "wall_time_s": 3.0, "machine": {"cpu": "a"}}
    assert compare(old, {**old, "wall_time_s": 4.0, "machine": {"cpu": "b"}}) == "bitwise"
    new = {**old, "final_test_acc": 0.91, "steps": {"loss": [2.0, 1.5, 1.1]}}
    assert compare(old, new).startswith("differs (loss first differs at recorded step 2; final test accuracy "
                                        "90.00% then, 91.00% now; fields: final_test_acc, steps)")


def test_check_reproduction_refuses_a_dataset_without_runs(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_reproduction.py"), "--data-root", str(tmp_path),
                        "--outputs", str(tmp_path), "--datasets", "mnist"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'mnist' / 'runs'} does not exist; give --outputs or one of the datasets rendered there"]
