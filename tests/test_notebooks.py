"""Every notebook executes through papermill on tiny data; bad parameters fail with one clear error."""
import json
import subprocess
import sys

import papermill as pm
import pytest

from .conftest import REPO
from .test_data import make_cifar100_layout

NB = REPO / "notebooks"
TINY = dict(profile="smoke", batch_sizes=[4, 8], seeds=2, n_train=96, n_test=64)


def _run(name, tmp_path, **params):
    out = tmp_path / f"{name}.out.ipynb"
    pm.execute_notebook(str(NB / f"{name}.ipynb"), str(out), parameters=params, kernel_name="python3",
                        progress_bar=False, cwd=str(tmp_path))
    return json.loads(out.read_text())


def test_notebooks_are_built_from_their_source():
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "build_notebooks.py"), "--check"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout


@pytest.mark.parametrize("name", ["feasibility", "experiment", "summary"])
def test_notebooks_have_a_parameters_cell_and_narrative(name):
    nb = json.loads((NB / f"{name}.ipynb").read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert sum(c["cell_type"] == "markdown" for c in nb["cells"]) >= 3


@pytest.mark.slow
def test_feasibility_experiment_and_summary_on_cifar100_fixture(tmp_path):
    """CIFAR-100 has no offline copy: a generated fixture in its official layout stands in."""
    data = tmp_path / "data"
    make_cifar100_layout(data, n_train=200, n_test=100)
    out = tmp_path / "outputs"
    common = dict(dataset="cifar100", data_root=str(data), output_dir=str(out))
    _run("feasibility", tmp_path, **common, profile="smoke", batch_sizes=[4, 8], n_train=96)
    assert (out / "cifar100" / "feasibility.json").exists()
    assert (out / "cifar100" / "feasibility_examples.png").exists()
    _run("experiment", tmp_path, **common, **{k: v for k, v in TINY.items() if k != "profile"}, profile="smoke")
    runs = list((out / "cifar100" / "runs").glob("*.json"))
    assert len(runs) == 6 * 2 * 2  # the smoke profile's six methods x batch sizes x seeds
    for f in ("accuracy.csv", "accuracy.md", "stability.md", "verdicts.csv", "accuracy_vs_batch.png",
              "accuracy_per_seed.png", "loss_curves.png", "stability.png"):
        assert (out / "cifar100" / f).exists(), f
    acc = (out / "cifar100" / "accuracy.md").read_text()
    assert "| 4 |" in acc and "| 8 |" in acc and "unverified copy" in acc  # fixture md5 != official
    nb = _run("summary", tmp_path, datasets=["cifar100", "mnist"], output_dir=str(out))
    report = (out / "REPORT.md").read_text()
    assert "| cifar100 | ok |" in report and "| mnist | not run |" in report
    assert "(summary_verdicts.png)" in report and (out / "summary_verdicts.png").exists()
    assert any("C1" in "".join(c.get("source", "")) for c in nb["cells"])


@pytest.mark.slow
def test_ablation_notebook_on_cifar100_fixture(tmp_path):
    data = tmp_path / "data"
    make_cifar100_layout(data, n_train=200, n_test=100)
    out = tmp_path / "outputs"
    _run("ablation", tmp_path, dataset="cifar100", profile="smoke", data_root=str(data), output_dir=str(out),
         n_train=96, n_test=64, scorers=["feature_std"], strategies=["mean"], rates=[0.0, 0.5, 1.0])
    d = out / "cifar100"
    assert (d / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    table = (d / "ablation.md").read_text()
    for sel in ("feature_std / mean", "rate 0", "rate 0.5", "rate 1", "random, rate 0.5"):
        assert f"| {sel} |" in table, sel
    assert "| random, rate 0 |" not in table and "| random, rate 1 |" not in table  # same decisions as sbn's
    assert len(list((d / "runs").glob("*.json"))) == 2 * (1 + 3 + 1)  # seeds x (grid + sbn rates + random rate)
    vs = [l for l in (d / "ablation_vs_random.csv").read_text().splitlines() if not l.startswith("#")]
    assert len(vs) - 1 == 1 and ",0.5," in vs[1]  # compared at the one rate both ran


@pytest.mark.slow
def test_experiment_on_shared_mnist_resumes_with_same_numbers(shared_data, tmp_path):
    params = dict(dataset="mnist", data_root=str(shared_data), output_dir=str(tmp_path / "o"), **TINY)
    _run("experiment", tmp_path, **params)
    first = (tmp_path / "o" / "mnist" / "accuracy.csv").read_text()
    victim = sorted((tmp_path / "o" / "mnist" / "runs").glob("*.json"))[0]
    victim.unlink()  # as if interrupted before this run finished
    _run("experiment", tmp_path, **params)
    again = (tmp_path / "o" / "mnist" / "accuracy.csv").read_text()
    # the recomputed run finished later, and took its own time: every number is the same
    strip = lambda t: [l for l in t.splitlines() if not l.startswith(("# last run finished", "# training_time"))]
    assert strip(first) == strip(again)


@pytest.mark.parametrize(
    "params,message",
    [
        (dict(dataset="imagenet"), "unknown dataset 'imagenet'"),
        (dict(profile="huge"), "unknown profile 'huge'"),
        (dict(batch_sizes=[0, 4]), "batch_sizes must hold integers >= 1"),
        (dict(seeds=[]), "seeds is empty"),
        (dict(epochs=0), "epochs must be an integer >= 1"),
        (dict(methods=["bn", "magic"]), "unknown method 'magic'"),
        (dict(methods=["bn"]), "must include 'bn' and 'sbn'"),
        (dict(n_train=4, batch_sizes=[8]), "batch size 8 is larger than n_train=4"),
        (dict(jobs=0), "jobs must be an integer >= 1"),
        (dict(scheduler="nonsense"), "cannot use the Dask scheduler at 'nonsense'"),
    ],
)
def test_bad_parameter_is_one_clear_error(tmp_path, params, message):
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run("experiment", tmp_path, **{"output_dir": str(tmp_path / "o"), **params})
    assert e.value.ename == "ParameterError"
    assert message in e.value.evalue
    assert not list((tmp_path / "o").rglob("*.json"))  # nothing computed, nothing written
