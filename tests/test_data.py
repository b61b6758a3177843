"""Tests for sbnlib.data: real shared copies (when present) and tiny generated fixtures."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sbnlib import data
from sbnlib.batches import make_batch_plan
from sbnlib.data import DataError, DataWarning, load_dataset, provenance, stratified_subsample


def _shared_root() -> Path:
    env = os.environ.get("SBN_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


SHARED = _shared_root()


def needs_shared(folder: str):
    return pytest.mark.skipif(not (SHARED / folder).is_dir(),
                              reason=f"shared dataset copy not found at {SHARED / folder} "
                                     "(set SBN_SHARED_DATA to the folder holding the offline datasets)")


PROVENANCE_KEYS = {"dataset", "root", "layout", "files", "verified", "status", "note",
                   "n_train_available", "n_test_available", "n_train", "n_test",
                   "n_train_requested", "n_test_requested", "subsample_seed", "warnings"}


# ---------------------------------------------------------------------------------------------
# Fixture writers (official on-disk layouts, tiny sizes)
# ---------------------------------------------------------------------------------------------

def write_idx(path: Path, arr: np.ndarray, magic: int, gz: bool = False) -> None:
    """Write ``arr`` (uint8) as an IDX file: big-endian magic, big-endian dims, raw bytes."""
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    payload = header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_idx_layout(root: Path, folder: str = "MNIST/raw", n_train: int = 30, n_test: int = 10,
                    gz: bool = False, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    for fname, arr in arrays.items():
        write_idx(root / folder / fname, arr, 0x803 if arr.ndim == 3 else 0x801, gz=gz)
    return arrays


def _images(rng, n: int) -> np.ndarray:
    """n CIFAR rows (N x 3072) whose R, G, B planes have clearly different levels."""
    planes = [rng.integers(lo, lo + 60, (n, 1024), dtype=np.uint8) for lo in (0, 90, 180)]
    return np.concatenate(planes, axis=1)


def dump(path: Path, obj, protocol: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar10_layout(root: Path, per_batch: int = 4, n_test: int = 6, protocol: int = 2,
                        seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    out = {}
    for i in range(1, 6):
        d = {"batch_label": f"training batch {i} of 5", "data": _images(rng, per_batch),
             "labels": [int(v) for v in rng.integers(0, 10, per_batch)],
             "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)]}
        dump(folder / f"data_batch_{i}", d, protocol)
        out[f"data_batch_{i}"] = d
    out["test_batch"] = {"batch_label": "testing batch 1 of 1", "data": _images(rng, n_test),
                         "labels": [int(v) for v in rng.integers(0, 10, n_test)],
                         "filenames": [f"test_{j}.png" for j in range(n_test)]}
    dump(folder / "test_batch", out["test_batch"], protocol)
    dump(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch,
                                   "num_vis": 3072}, protocol)
    return out


def make_cifar100_layout(root: Path, n_train: int = 40, n_test: int = 10, protocol: int = 2,
                         seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        fine = [int(v) for v in rng.integers(0, 100, n)]
        out[split] = {"batch_label": f"{split}ing batch 1 of 1", "data": _images(rng, n),
                      "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                      "filenames": [f"{split}_{j}.png" for j in range(n)]}
        dump(folder / split, out[split], protocol)
    out["meta"] = {"fine_label_names": [f"fine_{i}" for i in range(100)],
                   "coarse_label_names": [f"coarse_{i}" for i in range(20)]}
    dump(folder / "meta", out["meta"], protocol)
    return out


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def load_quiet(*args, **kwargs):
    """load_dataset with DataWarnings silenced (for fixtures that are 'unverified' by design)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return load_dataset(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Real shared copies
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_mnist():
    return load_dataset("mnist", root=SHARED)


@pytest.mark.slow
@needs_shared("MNIST/raw")
def test_shared_mnist(shared_mnist):
    ds = shared_mnist
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_train.dtype == torch.uint8
    assert ds.x_test.shape == (10000, 1, 28, 28) and ds.x_test.dtype == torch.uint8
    assert ds.y_train.shape == (60000,) and ds.y_train.dtype == torch.int64
    assert ds.y_test.dtype == torch.int64
    assert ds.num_classes == 10 and ds.in_shape == (1, 28, 28)
    assert abs(ds.mean[0] - 0.1307) < 1e-3 and abs(ds.std[0] - 0.3081) < 1e-3
    counts = torch.bincount(ds.y_train, minlength=10)
    assert counts.sum() == 60000 and (counts > 5000).all() and counts.numel() == 10
    assert torch.bincount(ds.y_test, minlength=10).sum() == 10000
    p = ds.provenance
    assert set(p) == PROVENANCE_KEYS
    assert p["verified"] is False and p["status"] == "unchecked (no reference md5 for uncompressed IDX)"
    assert ".gz" in p["note"] and p["warnings"] == []
    assert set(p["files"]) == {f"MNIST/raw/{f}" for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    json.dumps(p)


@pytest.mark.slow
@needs_shared("MNIST/raw")
def test_mnist_class_names_match_torchvision(shared_mnist):
    import torchvision.datasets as tvd

    assert shared_mnist.classes == list(tvd.MNIST.classes)
    assert list(data.DATASETS["fashion_mnist"].classes) == list(tvd.FashionMNIST.classes)


@pytest.mark.slow
@needs_shared("FashionMNIST/raw")
def test_shared_fashion_mnist():
    ds = load_dataset("fashion_mnist", root=SHARED)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.classes[0] == "T-shirt/top" and ds.num_classes == 10
    assert abs(ds.mean[0] - 0.2860) < 1e-3
    assert torch.equal(torch.bincount(ds.y_train, minlength=10), torch.full((10,), 6000))
    assert ds.provenance["layout"] == "FashionMNIST/raw"


@pytest.mark.slow
@needs_shared("cifar-10-batches-py")
def test_shared_cifar10_is_labelled_unverified():
    with pytest.warns(DataWarning, match="unverified copy"):
        ds = load_dataset("cifar10", root=SHARED)
    assert ds.x_train.shape == (10000, 3, 32, 32) and ds.x_test.shape == (10000, 3, 32, 32)
    assert ds.classes == CIFAR10_NAMES
    p = ds.provenance
    assert p["verified"] is False and p["status"] == "unverified copy"
    assert len(p["warnings"]) == 1 and "data_batch_1" in p["warnings"][0]
    assert p["n_train_available"] == 10000 and len(p["files"]) == 7
    assert all(abs(m - r) < 0.01 for m, r in zip(ds.mean, (0.4914, 0.4822, 0.4465)))
    json.dumps(p)


@pytest.mark.slow
@needs_shared("cifar-10-batches-py")
def test_shared_cifar10_asking_for_more_than_held():
    with pytest.warns(DataWarning) as rec:
        ds = load_dataset("cifar10", root=SHARED, n_train=50000, n_test=500, seed=1)
    assert any("asked for 50000 training images" in str(r.message) for r in rec)
    p = ds.provenance
    assert ds.x_train.shape[0] == 10000 and p["n_train"] == 10000 and p["n_train_requested"] == 50000
    assert any("holds 10000; using 10000" in w for w in p["warnings"])
    assert any("unverified" in str(r.message) for r in rec)
    assert p["n_test"] == 500 and p["n_test_requested"] == 500 and p["n_test_available"] == 10000
    assert torch.equal(torch.bincount(ds.y_test, minlength=10), torch.full((10,), 50))  # stratified


# ---------------------------------------------------------------------------------------------
# Generated fixtures: round trips
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,folder", [("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw")])
def test_idx_round_trip(tmp_path, name, folder):
    arrays = make_idx_layout(tmp_path, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # unchecked IDX is not a warning
        ds = load_dataset(name, root=tmp_path)
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(ds.y_train, torch.from_numpy(arrays["train-labels-idx1-ubyte"]).long())
    assert torch.equal(ds.x_test[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert torch.equal(ds.y_test, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert ds.provenance["verified"] is False
    assert ds.provenance["status"].startswith("unchecked")
    assert ds.provenance["files"][f"{folder}/train-images-idx3-ubyte"] == md5(tmp_path / folder / "train-images-idx3-ubyte")


def test_idx_gz_only_checked_against_reference(tmp_path, monkeypatch):
    arrays = make_idx_layout(tmp_path, gz=True)
    raw = tmp_path / "MNIST/raw"
    # the fixture's .gz files are not torchvision's: unverified copy, with a warning
    with pytest.warns(DataWarning, match="unverified copy"):
        ds = load_dataset("mnist", root=tmp_path)
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert ds.provenance["status"] == "unverified copy" and ds.provenance["verified"] is False
    assert "MNIST/raw/train-images-idx3-ubyte.gz" in ds.provenance["files"]
    # with a reference table that matches: verified, no warning
    refs = {p.name: md5(p) for p in raw.iterdir()}
    monkeypatch.setattr(provenance, "reference_md5s", lambda name: refs)  # where _verify looks it up
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        ds = load_dataset("mnist", root=tmp_path)
    assert ds.provenance["verified"] is True and ds.provenance["status"] == "verified"
    assert ds.provenance["warnings"] == []


def test_reference_md5s_come_from_torchvision():
    import torchvision.datasets as tvd

    refs = data.reference_md5s("cifar10")
    assert refs["data_batch_1"] == tvd.CIFAR10.train_list[0][1]
    assert refs["batches.meta"] == tvd.CIFAR10.meta["md5"]
    assert set(data.reference_md5s("cifar100")) == {"train", "test", "meta"}
    assert data.reference_md5s("mnist")["train-images-idx3-ubyte.gz"] == dict(tvd.MNIST.resources)["train-images-idx3-ubyte.gz"]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_round_trip(tmp_path, protocol):
    batches = make_cifar10_layout(tmp_path, protocol=protocol)
    ds = load_quiet("cifar10", root=tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    assert ds.classes == CIFAR10_NAMES and ds.in_shape == (3, 32, 32)
    # batches concatenated in order 1..5
    expected = np.concatenate([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    labels = sum((batches[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    assert torch.equal(ds.y_train, torch.tensor(labels))
    row = expected[5]  # one image: R plane, G plane, B plane, each 32x32 row-major
    for c in range(3):
        assert torch.equal(ds.x_train[5, c], torch.from_numpy(row[c * 1024:(c + 1) * 1024].reshape(32, 32)))
    assert ds.x_train[:, 0].max() < 60 and ds.x_train[:, 2].min() >= 180  # planes in the right channels
    assert torch.equal(ds.x_train.reshape(20, -1), torch.from_numpy(expected))
    assert torch.equal(ds.x_test.reshape(6, -1), torch.from_numpy(batches["test_batch"]["data"]))
    assert ds.provenance["status"] == "unverified copy"


def test_cifar100_uses_fine_labels(tmp_path):
    d = make_cifar100_layout(tmp_path)
    ds = load_quiet("cifar100", root=tmp_path)
    assert ds.num_classes == 100 and ds.classes[7] == "fine_7"
    assert torch.equal(ds.y_train, torch.tensor(d["train"]["fine_labels"]))
    assert not torch.equal(ds.y_train, torch.tensor(d["train"]["coarse_labels"]))
    assert torch.equal(ds.y_test, torch.tensor(d["test"]["fine_labels"]))
    assert torch.equal(ds.x_train.reshape(40, -1), torch.from_numpy(d["train"]["data"]))
    assert ds.provenance["layout"] == "cifar-100-python"


def test_matching_reference_md5_means_verified(tmp_path, monkeypatch):
    make_cifar100_layout(tmp_path)
    folder = tmp_path / "cifar-100-python"
    with pytest.warns(DataWarning, match="unverified copy"):  # torchvision's real reference
        assert load_dataset("cifar100", root=tmp_path).provenance["verified"] is False
    refs = {f: md5(folder / f) for f in ("train", "test", "meta")}
    monkeypatch.setattr(provenance, "reference_md5s", lambda name: refs)  # where _verify looks it up
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        ds = load_dataset("cifar100", root=tmp_path)
    p = ds.provenance
    assert p["verified"] is True and p["status"] == "verified" and p["warnings"] == []
    assert p["files"] == {f"cifar-100-python/{f}": refs[f] for f in ("train", "test", "meta")}
    # one file off: unverified again, naming that file
    refs["test"] = "0" * 32
    with pytest.warns(DataWarning, match="test"):
        ds = load_dataset("cifar100", root=tmp_path)
    assert ds.provenance["status"] == "unverified copy"


def test_md5_computed_once_per_file_across_loads(tmp_path, monkeypatch):
    make_cifar10_layout(tmp_path)
    calls = []
    real = provenance._md5_uncached
    monkeypatch.setattr(provenance, "_md5_uncached", lambda p, *a: calls.append(p) or real(p, *a))
    load_quiet("cifar10", root=tmp_path)
    assert len(calls) == 7
    load_quiet("cifar10", root=tmp_path)
    assert len(calls) == 7  # cached by (path, size, mtime)


def test_numpy1_pickle_names_load(tmp_path):
    """Official files (numpy < 2, python 2) name numpy.core.multiarray._reconstruct."""
    make_cifar10_layout(tmp_path, protocol=2)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    blob = path.read_bytes()
    assert b"numpy._core.multiarray" in blob
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    ds = load_quiet("cifar10", root=tmp_path)
    assert ds.x_test.shape == (6, 3, 32, 32)


# ---------------------------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------------------------

class _SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("evil,refused", [(_SystemCall, "system"), (_Eval, "eval")])
def test_malicious_pickle_is_refused_without_side_effect(tmp_path, evil, refused):
    make_cifar10_layout(tmp_path)
    marker = tmp_path / "pwned"
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    dump(bad, {"data": evil(marker), "labels": [0], "filenames": ["x"], "batch_label": "x"})
    with pytest.raises(DataError, match="refusing to load") as exc:
        load_quiet("cifar10", root=tmp_path)
    msg = str(exc.value)
    assert str(bad) in msg and refused in msg and "malicious" in msg
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match=refused):
        data.safe_pickle_load(bad)
    assert not marker.exists()


def test_safe_pickle_load_accepts_arrays_and_file_objects(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "ok.pkl"
    dump(path, {"data": arr, "x": [1, "a", 2.5, (b"z",)]}, protocol=2)
    with open(path, "rb") as f:
        obj = data.safe_pickle_load(f)
    assert np.array_equal(obj["data"], arr) and obj["x"][1] == "a"


def test_truncated_pickle(tmp_path):
    make_cifar10_layout(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match="data_batch_2") as exc:
        load_quiet("cifar10", root=tmp_path)
    assert "truncated" in str(exc.value)


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(data=d["data"][:, :100]), "shape"),
    (lambda d: d.update(data=d["data"].astype(np.float32)), "uint8"),
    (lambda d: d.pop("labels"), "missing key"),
    (lambda d: d.update(labels=d["labels"][:-1]), "labels for"),
    (lambda d: d.update(labels=[10] * len(d["labels"])), r"\[0, 10\)"),
])
def test_wrong_cifar_structure(tmp_path, change, message):
    batches = make_cifar10_layout(tmp_path)
    d = dict(batches["data_batch_4"])
    change(d)
    dump(tmp_path / "cifar-10-batches-py" / "data_batch_4", d)
    with pytest.raises(DataError, match=message) as exc:
        load_quiet("cifar10", root=tmp_path)
    assert "data_batch_4" in str(exc.value)


def test_truncated_idx(tmp_path):
    make_idx_layout(tmp_path)
    path = tmp_path / "MNIST/raw/train-images-idx3-ubyte"
    full = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte") as exc:
        load_dataset("mnist", root=tmp_path)
    msg = str(exc.value)
    assert f"expected {full} bytes" in msg and f"got {full - 100}" in msg and "fetch" in msg


def test_truncated_gz_idx(tmp_path):
    make_idx_layout(tmp_path, gz=True)
    path = tmp_path / "MNIST/raw/t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_quiet("mnist", root=tmp_path)


def test_wrong_idx_magic(tmp_path):
    arrays = make_idx_layout(tmp_path)
    # a labels file where the images should be
    write_idx(tmp_path / "MNIST/raw/t10k-images-idx3-ubyte", arrays["t10k-labels-idx1-ubyte"], 0x801)
    with pytest.raises(DataError, match="magic") as exc:
        load_dataset("mnist", root=tmp_path)
    assert "t10k-images-idx3-ubyte" in str(exc.value) and "0x00000803" in str(exc.value)


def test_idx_label_count_mismatch(tmp_path):
    make_idx_layout(tmp_path)
    write_idx(tmp_path / "MNIST/raw/train-labels-idx1-ubyte", np.zeros(7, np.uint8), 0x801)
    with pytest.raises(DataError, match="7 labels for 30 images"):
        load_dataset("mnist", root=tmp_path)


def test_missing_files_lists_every_expected_file(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    dump(tmp_path / "cifar-10-batches-py" / "batches.meta", {"label_names": CIFAR10_NAMES})
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", root=tmp_path)
    msg = str(exc.value)
    for f in ["data_batch_1", "data_batch_5", "test_batch", "batches.meta"]:
        assert str(tmp_path / "cifar-10-batches-py" / f) in msg
    assert msg.count("<- missing") == 6
    assert "SBN_DATA_ROOT" in msg and "root=" in msg and "download=True" in msg


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist") as exc:
        load_dataset("mnist", root=tmp_path / "nowhere")
    assert "SBN_DATA_ROOT" in str(exc.value) and "train-images-idx3-ubyte" in str(exc.value)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(DataError) as exc:
        load_dataset("cifar-10")
    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100"):
        assert name in str(exc.value)
    assert set(data.DATASETS) == {"mnist", "fashion_mnist", "cifar10", "cifar100"}


# ---------------------------------------------------------------------------------------------
# Root resolution and download
# ---------------------------------------------------------------------------------------------

def test_root_resolution_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("SBN_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert data.resolve_root() == (tmp_path / "data").resolve()
    monkeypatch.setenv("SBN_DATA_ROOT", str(tmp_path / "env"))
    assert data.resolve_root() == (tmp_path / "env").resolve()
    assert data.resolve_root(tmp_path / "arg") == (tmp_path / "arg").resolve()
    assert data.resolve_root(str(tmp_path / "arg")) == (tmp_path / "arg").resolve()


def test_load_uses_env_root(tmp_path, monkeypatch):
    make_idx_layout(tmp_path / "envroot")
    monkeypatch.setenv("SBN_DATA_ROOT", str(tmp_path / "envroot"))
    ds = load_dataset("mnist")
    assert ds.provenance["root"] == str((tmp_path / "envroot").resolve())
    monkeypatch.setenv("SBN_DATA_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match=r"\$SBN_DATA_ROOT"):
        load_dataset("mnist")


def test_download_only_when_missing_and_asked(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeCIFAR100(tvd.CIFAR100):  # keeps the reference md5 tables
        def __init__(self, root, train=True, download=False, **kw):
            calls.append((root, download))
            if download:
                make_cifar100_layout(Path(root))

    monkeypatch.setattr(tvd, "CIFAR100", FakeCIFAR100)
    root = tmp_path / "fresh"
    with pytest.raises(DataError, match="download=True"):
        load_dataset("cifar100", root=root)
    assert calls == []
    ds = load_quiet("cifar100", root=root, download=True)
    assert calls == [(str(root.resolve()), True)]
    assert ds.x_train.shape == (40, 3, 32, 32)
    load_quiet("cifar100", root=root, download=True)  # files present: no second download
    assert len(calls) == 1


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*a, **kw):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(DataError, match="internet"):
        load_dataset("mnist", root=tmp_path, download=True)


# ---------------------------------------------------------------------------------------------
# Subsampling and normalisation
# ---------------------------------------------------------------------------------------------

def test_stratified_subsample_properties():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)[torch.randperm(100, generator=torch.Generator().manual_seed(3))]
    a = stratified_subsample(labels, 10, seed=0)
    assert a.dtype == torch.int64 and a.shape == (10,)
    assert torch.equal(a, stratified_subsample(labels, 10, seed=0))
    assert not torch.equal(a, stratified_subsample(labels, 10, seed=1))
    assert torch.equal(a, torch.unique(a))  # sorted, no duplicates
    assert torch.bincount(labels[a], minlength=3).tolist() == [5, 3, 2]
    b = stratified_subsample(labels, 37, seed=5)
    counts = torch.bincount(labels[b], minlength=3).double()
    assert counts.sum() == 37
    assert ((counts - torch.tensor([50, 30, 20.]) * 0.37).abs() <= 1).all()


def test_stratified_subsample_remainder_goes_to_largest_fraction_then_lowest_class():
    labels = torch.tensor([0, 1, 1, 2, 2, 2, 2])  # n=3: exact quotas 3/7, 6/7, 12/7 -> floors 0, 0, 1
    assert torch.bincount(labels[stratified_subsample(labels, 3, 0)], minlength=3).tolist() == [0, 1, 2]
    labels = torch.tensor([0, 1, 2, 2, 2, 2, 2])  # 3/7, 3/7, 15/7: the tie goes to class 0
    assert torch.bincount(labels[stratified_subsample(labels, 3, 0)], minlength=3).tolist() == [1, 0, 2]
    labels = torch.tensor([0, 1, 2])
    assert torch.bincount(labels[stratified_subsample(labels, 2, 0)], minlength=3).tolist() == [1, 1, 0]


def test_stratified_subsample_clips_and_rejects_bad_n():
    labels = torch.arange(10) % 2
    with pytest.warns(DataWarning, match="asked for 50"):
        idx = stratified_subsample(labels, 50, 0)
    assert torch.equal(idx, torch.arange(10))
    for bad in (0, -3, 2.5, "5", None, True):
        with pytest.raises(ValueError, match="positive integer"):
            stratified_subsample(labels, bad, 0)
    with pytest.raises(ValueError, match="n_train"):
        load_dataset("mnist", n_train=0)


def test_subsampled_load(tmp_path):
    make_idx_layout(tmp_path, n_train=100, n_test=50)
    full = load_dataset("mnist", root=tmp_path)
    ds = load_dataset("mnist", root=tmp_path, n_train=20, n_test=10, seed=3)
    idx = stratified_subsample(full.y_train, 20, 3)
    assert torch.equal(ds.x_train, full.x_train[idx]) and torch.equal(ds.y_train, full.y_train[idx])
    assert torch.equal(torch.bincount(ds.y_train, minlength=10), torch.full((10,), 2))
    p = ds.provenance
    assert (p["n_train"], p["n_train_requested"], p["n_train_available"]) == (20, 20, 100)
    assert (p["n_test"], p["n_test_requested"], p["n_test_available"]) == (10, 10, 50)
    assert p["subsample_seed"] == 3 and p["warnings"] == []
    # statistics are those of the held subset, not of the full split
    assert ds.mean[0] == pytest.approx(ds.x_train.double().div(255).mean().item(), abs=1e-12)
    assert ds.mean != full.mean
    again = load_dataset("mnist", root=tmp_path, n_train=20, n_test=10, seed=3)
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.x_test, ds.x_test)


def test_normalisation_constants_and_normalize(tmp_path):
    make_cifar10_layout(tmp_path, per_batch=20)
    ds = load_quiet("cifar10", root=tmp_path)
    x = ds.x_train.numpy().astype(np.float64) / 255
    assert ds.mean == pytest.approx(tuple(x.mean(axis=(0, 2, 3))), abs=1e-12)
    assert ds.std == pytest.approx(tuple(x.std(axis=(0, 2, 3))), abs=1e-12)  # population std
    assert len(set(round(m, 3) for m in ds.mean)) == 3  # channels really differ
    z = ds.normalize(ds.x_train)
    assert z.dtype == torch.float32 and z.shape == ds.x_train.shape
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-4)
    assert torch.equal(ds.normalize(ds.x_train[:1])[0], z[0])
    with pytest.raises(ValueError, match="uint8"):
        ds.normalize(ds.x_train.float())


# ---------------------------------------------------------------------------------------------
# Batch plans
# ---------------------------------------------------------------------------------------------

def test_batch_plan_is_a_seeded_partition():
    plan = make_batch_plan(103, 10, seed=7)
    assert plan.shape == (10, 10) and plan.dtype == torch.int64
    flat = plan.flatten()
    assert flat.unique().numel() == 100 and flat.min() >= 0 and flat.max() < 103
    assert torch.equal(plan, make_batch_plan(103, 10, seed=7))
    assert not torch.equal(plan, make_batch_plan(103, 10, seed=8))
    e0, e1 = make_batch_plan(103, 10, 7, epoch=0), make_batch_plan(103, 10, 7, epoch=1)
    assert not torch.equal(e0, e1) and torch.equal(e1, make_batch_plan(103, 10, 7, epoch=1))
    assert make_batch_plan(5, 5, 0).shape == (1, 5) and make_batch_plan(5, 1, 0).shape == (5, 1)


@pytest.mark.parametrize("batch_size", [0, -1, 11, 2.0, "4", None])
def test_batch_plan_rejects_bad_batch_sizes(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        make_batch_plan(10, batch_size, seed=0)
