"""Bad inputs across the three entry points: the CLI, run_all.sh and the notebooks' parameters.

Every case must fail with a non-zero exit (or the documented exception), one clear message that
names the problem, no Python traceback, and leave earlier outputs alone: a sentinel file planted
where the command would write keeps its bytes and its mtime, and nothing new appears beside it.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sbnlib.experiment import ParameterError, feasibility, resolve_params

from .conftest import REPO
from .test_data import _SystemCall, dump, make_cifar10_layout, make_idx_layout

N_TRAIN = 60  # training images of the small IDX fixture
OLD_NS = 1_000_000_000 * 10**9  # 2001: any rewrite of a sentinel changes its mtime
SENTINEL = b"an earlier result\n"


# ---------------------------------------------------------------------------------------------
# Fixtures: small data layouts, good and broken, and sentinels
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Data roots: ``idx`` (a good tiny MNIST), ``truncated_idx``, ``truncated_pickle``, ``evil``
    (a CIFAR-10 batch whose unpickling would call os.system), ``missing``; ``marker``: the file the
    evil pickle would create."""
    base = tmp_path_factory.mktemp("data")
    roots = {name: base / name for name in ("idx", "truncated_idx", "cifar", "truncated_pickle", "evil")}
    make_idx_layout(roots["idx"], n_train=N_TRAIN, n_test=20)
    shutil.copytree(roots["idx"], roots["truncated_idx"])
    images = roots["truncated_idx"] / "MNIST/raw/train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    make_cifar10_layout(roots["cifar"])
    shutil.copytree(roots["cifar"], roots["truncated_pickle"])
    batch = roots["truncated_pickle"] / "cifar-10-batches-py/data_batch_2"
    batch.write_bytes(batch.read_bytes()[: batch.stat().st_size // 2])
    shutil.copytree(roots["cifar"], roots["evil"])
    marker = base / "pwned"
    dump(roots["evil"] / "cifar-10-batches-py/data_batch_3",
         {"batch_label": "x", "data": _SystemCall(marker), "labels": [0], "filenames": ["x"]})
    roots["missing"] = base / "nowhere"
    roots["marker"] = marker
    return roots


def plant(path: Path) -> Path:
    """An earlier output at ``path``, with an old mtime."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(SENTINEL)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    return path


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_clear_error(p: subprocess.CompletedProcess, words):
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
    errors = [line for line in p.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, p.stderr
    for w in words:
        assert w in p.stderr, f"{w!r} not in the message: {p.stderr}"


# ---------------------------------------------------------------------------------------------
# CLI: python -m sbnlib ...
# ---------------------------------------------------------------------------------------------

ASSESS = "assess_mnist_feature_std_mean.json"  # what `assess --dataset mnist` writes into --out

CLI_CASES = [
    # id, argv ({out}, {file}, {idx} ... are filled in), the file it would write, key words of the message
    ("unknown dataset", "assess --dataset svhn --out {out}", ASSESS, ["--dataset", "invalid choice: 'svhn'"]),
    ("unknown method", "train --dataset mnist --method fancy --out {out}/r.json", "r.json",
     ["--method", "invalid choice: 'fancy'"]),
    ("unknown scorer", "assess --dataset mnist --scorer entropy --out {out}", ASSESS,
     ["--scorer", "invalid choice: 'entropy'"]),
    ("unknown threshold", "assess --dataset mnist --threshold magic --out {out}", ASSESS,
     ["--threshold", "invalid choice: 'magic'"]),
    ("batch size 0", "train --dataset mnist --batch-size 0 --out {out}/r.json", "r.json",
     ["--batch-size", "positive integer", "'0'"]),
    ("negative batch size", "assess --dataset mnist --batch-sizes 8 -4 --out {out}", ASSESS,
     ["--batch-sizes", "positive integer", "'-4'"]),
    ("batch size 4.5", "train --dataset mnist --batch-size 4.5 --out {out}/r.json", "r.json",
     ["--batch-size", "positive integer", "'4.5'"]),
    ("batch size four", "assess --dataset mnist --batch-sizes four --out {out}", ASSESS,
     ["--batch-sizes", "positive integer", "'four'"]),
    ("epochs 0", "train --dataset mnist --epochs 0 --out {out}/r.json", "r.json", ["--epochs", "'0'"]),
    ("n-train 0", "assess --dataset mnist --n-train 0 --out {out}", ASSESS, ["--n-train", "'0'"]),
    ("assess batch larger than the training set",
     "assess --dataset mnist --data-root {idx} --batch-sizes 4 128 --out {out}", ASSESS,
     ["batch size 128", f"larger than the {N_TRAIN} training images"]),
    ("train batch larger than the training set",
     "train --dataset mnist --data-root {idx} --batch-size 128 --quiet --out {out}/r.json", "r.json",
     ["batch_size=128", f"larger than the {N_TRAIN} training samples"]),
    ("quantile outside [0, 1]", "assess --dataset mnist --data-root {idx} --threshold quantile --q 1.5 --out {out}",
     "assess_mnist_feature_std_quantile.json", ["--q", "[0, 1]", "'1.5'"]),
    ("rate strategy without --rate", "assess --dataset mnist --data-root {idx} --threshold rate --out {out}",
     "assess_mnist_feature_std_rate.json", ["'rate'", "rate in [0, 1]", "None"]),
    ("missing data root", "assess --dataset mnist --data-root {missing} --out {out}", ASSESS,
     ["data root {missing}", "does not exist", "SBN_DATA_ROOT"]),
    ("truncated IDX file", "assess --dataset mnist --data-root {truncated_idx} --out {out}", ASSESS,
     ["{truncated_idx}/MNIST/raw/train-images-idx3-ubyte", "truncated IDX images file"]),
    ("truncated pickle", "assess --dataset cifar10 --data-root {truncated_pickle} --out {out}",
     "assess_cifar10_feature_std_mean.json", ["{truncated_pickle}/cifar-10-batches-py/data_batch_2", "truncated"]),
    ("malicious pickle", "assess --dataset cifar10 --data-root {evil} --out {out}",
     "assess_cifar10_feature_std_mean.json",
     ["refusing to load {evil}/cifar-10-batches-py/data_batch_3", "system", "malicious"]),
    ("assess output under a file", "assess --dataset mnist --data-root {idx} --out {file}/sub", None,
     ["cannot create output directory {file}/sub", "Not a directory", "--out"]),
    ("train output under a file", "train --dataset mnist --data-root {idx} --quiet --out {file}/sub/r.json", None,
     ["cannot create output directory {file}/sub", "Not a directory", "--out"]),
    ("bad --threads", "train --dataset mnist --threads two --out {out}/r.json", "r.json",
     ["--threads", "positive integer", "'two'"]),
]


@pytest.mark.parametrize("argv,target,words", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(argv, target, words, data, tmp_path):
    where = {k: str(v) for k, v in data.items()}
    out, file = tmp_path / "out", tmp_path / "a_file"
    where.update(out=str(out), file=str(file))
    plant(file)
    plant(out / "earlier.json")
    if target:
        plant(out / target)  # the very file the command would write
    before = snapshot(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "SBN_DATA_ROOT"}
    env["SBN_DATA_ROOT"] = where["missing"]  # never the real data, whatever the case forgets
    p = subprocess.run([sys.executable, "-m", "sbnlib", *argv.format(**where).split()], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=env)
    assert_one_clear_error(p, [w.format(**where) for w in words])
    if "argument" not in p.stderr:  # errors after parsing: one line, no progress bar
        assert p.stderr.startswith("error: "), p.stderr
    assert snapshot(tmp_path) == before  # nothing overwritten, nothing new
    assert not data["marker"].exists()  # the malicious pickle never ran


def test_malicious_pickle_runs_nothing_through_check_data(data, tmp_path):
    p = subprocess.run([sys.executable, "-m", "sbnlib", "check-data", "--dataset", "cifar10",
                        "--data-root", str(data["evil"])], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert_one_clear_error(p, ["refusing to load", "data_batch_3", "system"])
    assert not data["marker"].exists()


# ---------------------------------------------------------------------------------------------
# run_all.sh options: refused before any work
# ---------------------------------------------------------------------------------------------

RUN_ALL_CASES = [
    ("unknown profile", ["--profile", "huge"], ["unknown profile 'huge'"]),
    ("unknown dataset", ["--datasets", "mnist svhn"], ["unknown dataset 'svhn'"]),
    ("jobs 0", ["--jobs", "0"], ["--jobs must be a positive integer", "'0'"]),
    ("jobs 00", ["--jobs", "00"], ["--jobs must be a positive integer", "'00'"]),
    ("negative jobs", ["--jobs", "-2"], ["--jobs must be a positive integer", "'-2'"]),
    ("jobs 2.5", ["--jobs", "2.5"], ["--jobs must be a positive integer", "'2.5'"]),
    ("jobs two", ["--jobs", "two"], ["--jobs must be a positive integer", "'two'"]),
    ("option without its value", ["--data-root"], ["--data-root needs a value"]),
    ("unknown option", ["--epochs", "3"], ["unknown option '--epochs'"]),
    ("output under a file", ["--output-dir", "{file}/sub"], ["output directory '{file}/sub' is not writable",
                                                             "--output-dir"]),
]


@pytest.mark.parametrize("args,words", [c[1:] for c in RUN_ALL_CASES], ids=[c[0] for c in RUN_ALL_CASES])
def test_run_all_bad_option(args, words, tmp_path):
    out, file = tmp_path / "out", tmp_path / "a_file"
    where = {"out": str(out), "file": str(file)}
    plant(file)
    plant(out / "REPORT.md")
    plant(out / "mnist" / "accuracy.csv")
    before = snapshot(tmp_path)
    args = [a.format(**where) for a in args]
    if "--output-dir" not in args:
        args = ["--output-dir", str(out), *args]
    # should a case get past the option checks, the venv set-up fails at once instead of installing
    env = dict(os.environ, PYTHON="false", SBN_VENV=str(tmp_path / "no-venv"))
    p = subprocess.run(["bash", str(REPO / "run_all.sh"), *args], capture_output=True, text=True, timeout=60,
                       env=env)
    assert_one_clear_error(p, [w.format(**where) for w in words])
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "no-venv").exists()


# ---------------------------------------------------------------------------------------------
# Notebook parameters: what the parameters cell calls (papermill passes them through unchanged)
# ---------------------------------------------------------------------------------------------

PARAM_CASES = [
    ("unknown dataset", dict(dataset="svhn"), ["unknown dataset 'svhn'", "mnist"]),
    ("unknown profile", dict(profile="fast"), ["unknown profile 'fast'", "smoke"]),
    ("unknown method", dict(methods="bn, sbn, fancy"), ["unknown method 'fancy'", "sbn_frozen"]),
    ("batch size 0", dict(batch_sizes=[0, 4]), ["batch_sizes", "integers >= 1", "got 0"]),
    ("negative batch size", dict(batch_sizes="[-4, 8]"), ["batch_sizes", "got -4"]),
    ("batch size 4.5", dict(batch_sizes="4.5"), ["batch_sizes", "'4.5'"]),
    ("batch size four", dict(batch_sizes="four"), ["batch_sizes", "'four'"]),
    ("batch larger than n_train", dict(n_train=64, batch_sizes=[8, 128]), ["batch size 128", "n_train=64"]),
    ("empty seed list", dict(seeds="[]"), ["seeds is empty"]),
    ("epochs 0", dict(epochs=0), ["epochs must be an integer >= 1", "got 0"]),
    ("jobs 0", dict(jobs=0), ["jobs must be an integer >= 1", "got 0"]),
    ("jobs two", dict(jobs="two"), ["jobs must be an integer >= 1", "'two'"]),
    ("output_dir under a file", dict(output_dir="{file}/sub"),
     ["cannot create output directory {file}/sub/mnist", "output_dir"]),
]


@pytest.mark.parametrize("params,words", [c[1:] for c in PARAM_CASES], ids=[c[0] for c in PARAM_CASES])
def test_notebook_bad_parameter(params, words, tmp_path):
    out, file = tmp_path / "out", tmp_path / "a_file"
    plant(file)
    plant(out / "mnist" / "accuracy.csv")
    before = snapshot(tmp_path)
    params = {"output_dir": str(out), **params}
    params = {k: v.format(file=file) if isinstance(v, str) else v for k, v in params.items()}
    with pytest.raises(ParameterError) as e:
        resolve_params(**params)
    for w in words:
        assert w.format(file=file) in str(e.value)
    assert "\n" not in str(e.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kw,words", [(dict(scorer="entropy"), ["unknown scorer 'entropy'", "feature_std"]),
                                      (dict(threshold="magic"), ["unknown threshold 'magic'", "otsu"])],
                         ids=["unknown scorer", "unknown threshold"])
def test_feasibility_bad_parameter(kw, words, tmp_path):
    """The feasibility notebook's scorer / threshold parameters, checked before any work."""
    out = tmp_path / "out"
    P = resolve_params("mnist", "smoke", output_dir=str(out))
    plant(out / "mnist" / "feasibility.json")
    before = snapshot(tmp_path)
    with pytest.raises(ParameterError) as e:
        feasibility(P, ds=None, **kw)
    for w in words:
        assert w in str(e.value)
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_papermill_bad_parameter_stops_the_notebook_at_its_parameters(tmp_path):
    """One real execution: papermill's text parameter reaches resolve_params and stops the notebook."""
    import papermill as pm

    out = tmp_path / "out"
    plant(out / "mnist" / "accuracy.csv")
    plant(out / "mnist" / "runs" / "mnist_bn_b4_s0_0000000000000000.json")
    before = snapshot(out)
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(REPO / "notebooks" / "experiment.ipynb"), str(tmp_path / "executed.ipynb"),
                            parameters=dict(dataset="mnist", profile="smoke", batch_sizes="4 four",
                                            output_dir=str(out)),
                            kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    assert e.value.ename == "ParameterError"
    assert "batch_sizes" in e.value.evalue and "'four'" in e.value.evalue
    assert snapshot(out) == before
