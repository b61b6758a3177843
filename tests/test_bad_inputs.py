"""Bad inputs across the three entry points: the CLI, run_all.sh and the notebooks' parameters.

Every case must fail with a non-zero exit (or the documented exception), one clear message that
names the problem, no Python traceback, and leave earlier outputs alone: a sentinel file planted
where the command would write keeps its bytes and its mtime, and nothing new appears beside it.
"""
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sbnlib.experiments.pipelines import ParameterError, feasibility, resolve_params

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


# ---------------------------------------------------------------------------------------------
# Hostile inputs (issue 14), in-process: each case builds its input in tmp_path; the command must
# end with exit 2 and exactly one line "error: ..." that names the file (and row / item), no
# traceback, the earlier output set (JSON, PNG, HTML) untouched and no temporary left anywhere
# ---------------------------------------------------------------------------------------------

def _images(folder: Path, n=4, size=8, mode="RGB"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(n):
        Image.fromarray((rng.uniform(0, 255, (size, size, 3))).astype(np.uint8)).convert(mode).save(folder / f"{i}.png")


def _image_folder(tmp):
    for c in ("ant", "bee"):
        _images(tmp / "imgs" / c)
    return tmp / "imgs"


def _zip_with_member(path: Path, member: str, data: bytes, compress=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compress) as z:
        z.writestr(member, data)


def _npy_bytes(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _damaged_npz(tmp):
    p = tmp / "feat.npz"
    np.savez_compressed(p, x=np.random.default_rng(0).random((50, 4)))
    b = bytearray(p.read_bytes())
    b[80:120] = bytes(40)  # inside the compressed member
    p.write_bytes(bytes(b))
    return p


def _forged_npz(tmp):
    """A member whose zip entry says more bytes than its .npy header describes (a bomb in disguise)."""
    p = tmp / "feat.npz"
    _zip_with_member(p, "x.npy", _npy_bytes(np.zeros((4, 3), np.float32)) + bytes(10_000))
    return p


def _big_npz(tmp, monkeypatch):
    p = tmp / "feat.npz"
    np.savez_compressed(p, x=np.zeros((1000, 100), np.float32))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**6, 10**6 - 1000, 1000))
    return p


def _file(name, write):
    def build(tmp):
        p = tmp / name
        write(p)
        return p
    return build


def _csv(text):
    return _file("table.csv", lambda p: p.write_text(text))


def _npy(a):
    return _file("feat.npy", lambda p: np.save(p, a))


def _unreadable_subfolder(tmp, monkeypatch):
    root = _image_folder(tmp)
    _images(root / "bee" / "locked")
    real = os.scandir

    def scandir(path="."):
        if str(path).endswith("locked"):  # as a folder without read permission (tests may run as root)
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    return root


def _broken_link(tmp):
    root = _image_folder(tmp)
    (root / "ant" / "gone.png").symlink_to(tmp / "nowhere.png")
    return root


def _bomb_image(tmp, monkeypatch):
    from PIL import Image

    root = _image_folder(tmp)
    _images(root / "bee", n=1, size=40)  # 1,600 pixels: over the (lowered) limit of 1,000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    return root


def _cifar_bomb(tmp):
    """A CIFAR batch whose labels are 30 references to a list of 30 references ... (30**6 labels once converted)."""
    make_cifar10_layout(tmp / "cifar")
    labels = [0] * 30
    for _ in range(5):
        labels = [labels] * 30
    dump(tmp / "cifar" / "cifar-10-batches-py" / "data_batch_1",
         {"batch_label": "x", "data": np.zeros((4, 3072), np.uint8), "labels": labels, "filenames": ["x"] * 4})
    return tmp / "cifar"


# id, build(tmp[, monkeypatch]) -> the data path, argv ({data} filled in), words of the error line ({data})
HOSTILE = [
    ("unreadable subfolder", _unreadable_subfolder, "assess --data {data}",
     ["{data}/bee/locked", "cannot list the folder", "Permission denied", "--skip-bad"]),
    ("broken link", _broken_link, "assess --data {data}", ["{data}/ant/gone.png", "leads to no file", "--skip-bad"]),
    ("decompression bomb", _bomb_image, "assess --data {data}",
     ["{data}/bee/0.png", "image too large", "exceeds limit", "--skip-bad"]),
    ("items of no values", _npy(np.zeros((10, 0))), "assess --data {data}", ["feat.npy", "(0,)", "hold no values"]),
    ("no items", _npy(np.zeros((0, 3))), "assess --data {data}", ["feat.npy", "N >= 1", "(0, 3)"]),
    ("a scalar array", _npy(np.float64(3)), "assess --data {data}", ["feat.npy", "got ()"]),
    ("an object array", _file("feat.npz", lambda p: np.savez(p, x=np.array([{}, 1], dtype=object))),
     "assess --data {data}", ["feat.npz['x']", "object array"]),
    ("float64 beyond float32", _npy(np.array([[1.0, 2.0], [3.0, 1e300]] * 3)), "assess --data {data}",
     ["feat.npy", "beyond float32's range", "row 1, column 1"]),
    ("image array beyond float32", _npy(np.full((4, 1, 2, 2), -1e40)), "assess --data {data}",
     ["feat.npy", "beyond float32's range", "row 0 (element [0, 0, 0, 0])"]),
    ("CSV cell beyond float32", _csv("a,b\n1,2\n3,-4e38\n5,6\n"), "assess --data {data} --batch-sizes 2",
     ["table.csv line 3 (data row 2), column 2 ('b')", "beyond float32's range", "'-4e38'"]),
    ("huge CSV field in the first row", _csv("a," + "9" * 200_000 + "\n1,2\n"), "assess --data {data}",
     ["table.csv line 1", "field larger than field limit"]),
    ("huge CSV field in a later row", _csv("a,b\n1,2\n3," + "9" * 200_000 + "\n"), "assess --data {data}",
     ["table.csv line 3", "field larger than field limit"]),
    ("damaged .npz member", _damaged_npz, "assess --data {data}", ["feat.npz['x']"]),
    ("not a zip file", _file("feat.npz", lambda p: p.write_bytes(b"PK\x03\x04 no zip")), "assess --data {data}",
     ["feat.npz", "not a readable .npz file"]),
    ("forged .npz member size", _forged_npz, "assess --data {data}",
     ["feat.npz['x']", "10,", "bytes but its header describes"]),
    (".npz member larger than the free space", _big_npz, "assess --data {data}",
     ["feat.npz['x']", "needs 400,128 bytes", "1,000 are free", "np.savez"]),
    ("truncated .npy", _file("feat.npy", lambda p: p.write_bytes(_npy_bytes(np.zeros((100, 4)))[:300])),
     "assess --data {data}", ["feat.npy"]),
    ("CIFAR labels that explode", _cifar_bomb, "check-data --dataset cifar10 --data-root {data}",
     ["{data}/cifar-10-batches-py/data_batch_1", "referenced twice"]),
    ("batch size beyond the data", _image_folder, "assess --data {data} --batch-sizes 2 9",
     ["batch size 9", "larger than the 8 usable items"]),
    # option values: finite and in range, else one error line naming the option and the value
    ("chunk-mb inf", _image_folder, "assess --data {data} --chunk-mb inf", ["--chunk-mb", "'inf'"]),
    ("chunk-mb nan", _image_folder, "assess --data {data} --chunk-mb nan", ["--chunk-mb", "'nan'"]),
    ("chunk-mb 0", _image_folder, "assess --data {data} --chunk-mb 0", ["--chunk-mb", "(0, 65536]", "'0'"]),
    ("image-size 0", _image_folder, "assess --data {data} --image-size 0", ["--image-size", "'0'"]),
    ("image-size huge", _image_folder, "assess --data {data} --image-size 100000", ["--image-size", "<= 4096"]),
    ("q nan", _image_folder, "assess --data {data} --threshold quantile --q nan", ["--q", "[0, 1]", "'nan'"]),
    ("rate inf", _image_folder, "assess --data {data} --threshold rate --rate inf", ["--rate", "'inf'"]),
    ("seed beyond the seedable range", _image_folder, "assess --data {data} --seed 4294967296",
     ["--seed", "<= 4294967295"]),
    ("batch size beyond any index", _image_folder, "assess --data {data} --batch-sizes 2 " + "9" * 40,
     ["--batch-sizes", "<= 2147483647"]),
    ("channels 5", _image_folder, "assess --data {data} --channels 5", ["--channels", "invalid choice: 5"]),
    ("train seed beyond the seedable range", _image_folder, "train --dataset mnist --seed 18446744073709551616",
     ["--seed", "<= 4294967295"]),
    ("train data-seed negative", _image_folder, "train --dataset mnist --data-seed -1", ["--data-seed", "'-1'"]),
    ("absurd learning rate", _image_folder, "train --dataset mnist --lr 1e300", ["--lr", "'1e300'"]),
    ("learning rate nan", _image_folder, "train --dataset mnist --lr nan", ["--lr", "'nan'"]),
    ("learning rate 0", _image_folder, "train --dataset mnist --lr 0", ["--lr", "'0'"]),
    ("epochs beyond reason", _image_folder, "train --dataset mnist --epochs 1000000000", ["--epochs", "<= 100000"]),
    ("threads 0", _image_folder, "train --dataset mnist --threads 0", ["--threads", "'0'"]),
    ("n-train beyond any index", _image_folder, "train --dataset mnist --n-train 1e9", ["--n-train", "'1e9'"]),
]


def run_main(argv, capsys):
    """``python -m sbnlib ARGV`` in this process: (exit status, stdout, stderr)."""
    from sbnlib.cli import main

    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture
def earlier_set(tmp_path, monkeypatch):
    """``out/`` holding an earlier assessment's JSON, PNG and HTML; temporaries go to ``tmp/``."""
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    for stem in ("imgs", "feat", "table"):
        for ext in ("json", "png", "html"):
            plant(out / f"assess_{stem}_feature_std_mean.{ext}")
    return out, tmp


@pytest.mark.parametrize("build,argv,words", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_input_is_one_error_line(build, argv, words, tmp_path, earlier_set, monkeypatch, capsys):
    out, tmp = earlier_set
    data = build(tmp_path, monkeypatch) if "monkeypatch" in build.__code__.co_varnames else build(tmp_path)
    before = snapshot(out)
    monkeypatch.setenv("SBN_DATA_ROOT", str(tmp_path / "nowhere"))  # never the real data
    argv = argv.format(data=data).split() + (["--out", str(out), "--evidence", "none"] if "assess" in argv else [])
    if argv[0] == "train":
        argv += ["--out", str(out / "r.json")]
    rc, stdout, stderr = run_main(argv, capsys)
    assert rc == 2, (rc, stdout, stderr)
    lines = [l for l in stderr.splitlines() if "error" in l.lower()]  # besides, at most a progress bar
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "warning" not in stderr
    for w in words:
        assert w.format(data=data) in lines[0], f"{w!r} not in {lines[0]}"
    assert snapshot(out) == before  # the earlier output set, unchanged, and nothing new beside it
    assert not list(tmp.iterdir()), "a temporary was left behind"


def test_skip_bad_counts_unreadable_folders_broken_links_and_bombs(tmp_path, earlier_set, monkeypatch, capsys):
    root = _unreadable_subfolder(tmp_path, monkeypatch)
    (root / "ant" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    _images(root / "ant" / "big", n=1, size=40)
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    out, _ = earlier_set
    rc, stdout, stderr = run_main(["assess", "--data", str(root), "--skip-bad", "--batch-sizes", "2", "--out", str(out),
                                   "--evidence", "none"], capsys)
    assert rc == 0, stderr
    res = json.loads((out / "assess_imgs_feature_std_mean.json").read_text())
    assert res["skipped"]["by_reason"] == {"unreadable folder": 1, "broken link": 1, "image too large": 1}
    assert res["input"]["n_used"] == 8
    assert "skipped 3 bad items (--skip-bad)" in stdout
    assert "warning" not in stderr  # Pillow's DecompressionBombWarning is the error, not a stray line


def test_symlink_loops_and_second_links_are_read_once_and_noted(tmp_path, earlier_set, capsys):
    root = _image_folder(tmp_path)
    (root / "ant" / "loop").symlink_to("..")  # back to the root: would walk every class again, forever
    (root / "ant" / "again").symlink_to(root / "bee")  # a link to another class folder
    (root / "bee" / "twin.png").symlink_to(root / "ant" / "0.png")  # a second link to one file
    outside = tmp_path / "elsewhere"
    _images(outside, n=2)
    (root / "bee" / "more").symlink_to(outside)  # a link to a folder outside: followed
    out, _ = earlier_set
    rc, stdout, stderr = run_main(["assess", "--data", str(root), "--batch-sizes", "2", "--out", str(out),
                                   "--evidence", "none"], capsys)
    assert rc == 0, stderr
    res = json.loads((out / "assess_imgs_feature_std_mean.json").read_text())
    assert res["input"]["n_used"] == 10  # 4 + 4 + the 2 outside, each once
    assert res["input"]["images_per_class"] == [4, 6]
    assert res["input"]["links_skipped"]["count"] == 3
    assert sorted(res["input"]["links_skipped"]["examples"]) == ["ant/again/", "ant/loop/", "bee/twin.png"]
    assert "note: 3 entries of" in stdout and "each real file is read once" in stdout


def test_small_folder_drops_default_batch_sizes_with_a_note_and_warns_about_one_batch(tmp_path, earlier_set, capsys):
    root = _image_folder(tmp_path)  # 8 images: default sizes 16, 32 and 64 cannot be formed
    out, _ = earlier_set
    rc, stdout, stderr = run_main(["assess", "--data", str(root), "--out", str(out), "--evidence", "none"], capsys)
    assert rc == 0, stderr
    assert "note: default batch sizes 16 32 64 dropped: larger than the 8 usable items" in stdout
    res = json.loads((out / "assess_imgs_feature_std_mean.json").read_text())
    assert [r["batch_size"] for r in res["batch_sizes"]] == [2, 4, 8] and res["dropped_batch_sizes"] == [16, 32, 64]
    at8 = res["batch_sizes"][2]["recommendation"]["headline"]
    assert "of the 1 batch is heterogeneous" in at8 and "fitted on only 1 score" in at8 and "0% by construction" in at8
    assert "1 batches" not in stdout and "1 scores" not in stdout


def test_a_path_that_is_not_utf8_is_read_and_written_escaped(tmp_path, earlier_set, capsys):
    root = Path(os.fsdecode(bytes(tmp_path) + b"/imgs_\xff"))
    for c in ("ant", "bee"):
        _images(root / c)
    out, _ = earlier_set
    rc, stdout, stderr = run_main(["assess", "--data", str(root), "--batch-sizes", "2", "--out", str(out),
                                   "--evidence", "none"], capsys)
    assert rc == 0, stderr
    res = json.loads((out / "assess_imgs_feature_std_mean.json").read_text())
    assert res["input"]["path"].endswith("imgs_\\xff")
    assert "imgs_\\xff" in (out / "assess_imgs_feature_std_mean.html").read_text(encoding="utf-8")
    assert (out / "assess_imgs_feature_std_mean.png").read_bytes() != SENTINEL


def test_pickle_checks_refuse_hash_bombs_and_deep_nesting_before_building_anything():
    from sbnlib.data import safe_pickle_load

    # {t60: 1} with t0 = (0,), t(i+1) = (ti, ti): 130 bytes, but hashing t60 takes 2**60 steps
    ops = [b"\x80\x02}q\x00", b"K\x00\x85q\x01"]
    ops += [b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86q" + bytes([i + 1]) for i in range(1, 61)]
    with pytest.raises(pickle.UnpicklingError, match="referenced twice"):
        safe_pickle_load(io.BytesIO(b"".join(ops) + b"K\x01s."))
    deep = []
    for _ in range(50):
        deep = [deep]
    with pytest.raises(pickle.UnpicklingError, match="nested more than 8 deep"):
        safe_pickle_load(io.BytesIO(pickle.dumps({"labels": deep}, protocol=2)))
    with pytest.raises(pickle.UnpicklingError, match="opcode EMPTY_SET"):
        safe_pickle_load(io.BytesIO(pickle.dumps({"labels": {1, 2}}, protocol=4)))
    for protocol in (2, 4, 5):  # what a CIFAR batch holds still loads, arrays sharing their dtype included
        d = {"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "labels": np.zeros(2, np.uint8), "filenames": ["a", "b"]}
        got = safe_pickle_load(io.BytesIO(pickle.dumps(d, protocol=protocol)))
        assert got["data"].tolist() == [[0, 1, 2], [3, 4, 5]] and got["labels"].dtype == np.uint8
