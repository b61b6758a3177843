"""run_all.sh rejects bad options at once, with one clear message, before any work."""
import subprocess

import pytest

from .conftest import REPO


@pytest.mark.parametrize(
    "args,message",
    [
        (["--profile", "huge"], "unknown profile 'huge'"),
        (["--datasets", "mnist imagenet"], "unknown dataset 'imagenet'"),
        (["--jobs", "0"], "--jobs must be a positive integer"),
        (["--jobs", "two"], "--jobs must be a positive integer"),
        (["--frobnicate"], "unknown option '--frobnicate'"),
        (["--datasets", ""], "--datasets needs a value"),
        (["--datasets", "  "], "--datasets is empty"),
        (["--ablation-dataset", "svhn"], "unknown --ablation-dataset 'svhn'"),
    ],
)
def test_bad_options(args, message, tmp_path):
    p = subprocess.run(["bash", str(REPO / "run_all.sh"), *args, "--output-dir", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert message in p.stderr
    assert not (tmp_path / "o").exists()


def test_help():
    p = subprocess.run(["bash", str(REPO / "run_all.sh"), "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "--profile" in p.stdout and "--allow-missing" in p.stdout
