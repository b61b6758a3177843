"""Project files agree with each other."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _req(spec: str):
    name = re.match(r"[A-Za-z0-9_.\-]+", spec).group(0).lower().replace("_", "-")
    return name, spec[len(name):].replace(" ", "")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values() for s in extra]
    wanted = dict(_req(s) for s in specs if not s.startswith("sbnlib"))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert dict(_req(s) for s in pip) == wanted
    assert "python=3.11" in env["dependencies"]


def test_public_api_is_importable_from_the_top_level():
    import sbnlib

    for name in ["score_batches", "fit_threshold", "classify_batches", "SelectiveBatchNorm1d",
                 "SelectiveBatchNorm2d", "selective_bn", "convert_to_selective", "load_dataset"]:
        assert callable(getattr(sbnlib, name)), name
        assert name in sbnlib.__all__


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run_tests.sh" in readme and "./run_tests.sh" in ci
    assert "./run_all.sh" in readme


def test_the_core_imports_and_works_without_the_extras():
    """``pip install .`` without extras: import sbnlib, score, threshold and a selective layer, with
    every extra's package made unimportable."""
    code = """
import sys
for m in ("scipy", "pandas", "matplotlib", "seaborn", "papermill", "jupyter", "PIL", "dask", "statsmodels"):
    sys.modules[m] = None  # import m now raises ImportError
import torch, sbnlib
from sbnlib.experiments.models import build_model
from sbnlib.experiments.config import TrainConfig
x = torch.randn(64, 3, 8, 8)
scores = sbnlib.score_batches(x, batch_size=8)
needs = sbnlib.classify_batches(scores, sbnlib.fit_threshold(scores, "mean"))
layer = sbnlib.SelectiveBatchNorm2d(3)
with sbnlib.selective_bn([layer], enabled=False):
    assert torch.equal(layer(x), x)
model = sbnlib.convert_to_selective(build_model("cnn_s", (3, 8, 8), 4, norm="bn"))
TrainConfig(dataset="mnist").validate()
print("ok", int(needs.sum()))
"""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0 and p.stdout.startswith("ok"), p.stderr[-2000:]


def test_accrue_runs_stops_cleanly_when_asked_and_refuses_bad_options(shared_data, tmp_path):
    script, flag = str(ROOT / "scripts/accrue_runs.py"), tmp_path / "stop"
    flag.touch()  # asked to stop before the first run
    args = [sys.executable, script, "--profile", "smoke", "--datasets", "mnist", "--data-root", str(shared_data),
            "--output-dir", str(tmp_path / "out"), "--jobs", "1"]
    p = subprocess.run(args + ["--stop-file", str(flag)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "mnist: stopped as asked: 0 runs have their result files" in p.stdout
    assert not list((tmp_path / "out").rglob("*.json"))
    p = subprocess.run(args + ["--stop-after", "0"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--stop-after must be a positive number of minutes" in p.stderr
    p = subprocess.run(args[:5] + ["nope"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "error: unknown dataset 'nope'; choose one of ['cifar10', 'cifar100', 'fashion_mnist', 'mnist', 'mnist_fmnist_mix']"]


@pytest.mark.parametrize("script", ["scripts/accrue_runs.py", "scripts/check_numbers_unchanged.py", "scripts/pilot_regime.py",
                                    "scripts/check_reproduction.py",
                                    "bench/profile_packed.py", "bench/packing_hours.py",
                                    "bench/bench_suite.py", "bench/bench_core.py", "bench/bench_assess_memory.py"])
def test_every_script_imports_and_answers_help(script):
    # a moved module breaks a script only when it runs: --help imports everything the script needs
    p = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "usage:" in p.stdout
