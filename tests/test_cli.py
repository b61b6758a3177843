"""Command line: assess and train on real (offline) data, and clear errors."""
import json
import subprocess
import sys

import pytest

from sbnlib.cli import main

from .conftest import REPO


def test_assess_writes_json_and_png_and_prints_table(shared_data, tmp_path, capsys):
    rc = main(["assess", "--dataset", "mnist", "--data-root", str(shared_data), "--n-train", "600",
               "--batch-sizes", "2", "8", "32", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "assess_mnist_feature_std_mean.json").read_text())
    png = (tmp_path / "assess_mnist_feature_std_mean.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["batch_size"] for r in res["batch_sizes"]] == [2, 8, 32]
    for r in res["batch_sizes"]:
        assert r["n_batches"] == 600 // r["batch_size"] == len(r["scores"])
        assert 0.0 < r["frac_needs_bn"] < 1.0
        assert r["threshold"] == pytest.approx(sum(r["scores"]) / len(r["scores"]))
        assert f"{r['frac_needs_bn']:>8.1%}" in out
    assert res["data"]["n_train"] == 600


def test_train_writes_a_result_record(shared_data, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["train", "--dataset", "fashion_mnist", "--data-root", str(shared_data), "--n-train", "200",
               "--n-test", "100", "--method", "sbn", "--batch-size", "16", "--quiet", "--out", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["config"]["method"] == "sbn" and r["config"]["batch_size"] == 16
    assert r["status"] == "ok" and 0.0 <= r["final_test_acc"] <= 1.0
    assert len(r["steps"]["loss"]) == 200 // 16
    assert "test_acc=" in capsys.readouterr().out


def test_missing_data_is_one_clear_error_and_keeps_existing_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "assess_mnist_feature_std_mean.json"
    keep.write_text("earlier result")
    rc = main(["assess", "--dataset", "mnist", "--data-root", str(tmp_path / "nowhere"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and "SBN_DATA_ROOT" in err
    assert keep.read_text() == "earlier result"


def test_batch_size_larger_than_training_set(shared_data, tmp_path, capsys):
    rc = main(["assess", "--dataset", "mnist", "--data-root", str(shared_data), "--n-train", "100",
               "--batch-sizes", "4", "128", "--out", str(tmp_path)])
    assert rc == 2
    assert "batch size 128 is larger than the 100 training images" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv,match",
    [
        (["assess", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
        (["assess", "--dataset", "mnist", "--batch-sizes", "0"], "expected a positive integer, got '0'"),
        (["assess", "--dataset", "mnist", "--batch-sizes", "2.5"], "expected a positive integer"),
        (["train", "--dataset", "mnist", "--method", "fancy"], "invalid choice: 'fancy'"),
        (["train", "--dataset", "mnist", "--scorer", "entropy"], "invalid choice: 'entropy'"),
    ],
)
def test_bad_arguments_exit_2_with_message(argv, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert match in capsys.readouterr().err


def test_module_entry_point_runs():
    p = subprocess.run([sys.executable, "-m", "sbnlib", "--help"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0 and "assess" in p.stdout and "train" in p.stdout
