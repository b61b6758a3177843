"""run_all.sh: bad options rejected at once; one run per output folder; a killed run leaves no process."""
import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

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
        (["--ablation-dataset", "svhn"], "unknown dataset 'svhn' in --ablation-datasets"),
        (["--ablation-datasets", "mnist svhn"], "unknown dataset 'svhn' in --ablation-datasets"),
        (["--readings-datasets", "mnist svhn"], "unknown dataset 'svhn' in --readings-datasets"),
    ],
)
def test_bad_options(args, message, tmp_path):
    p = subprocess.run(["bash", str(REPO / "run_all.sh"), *args, "--output-dir", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert message in p.stderr
    assert not (tmp_path / "o").exists()


def test_run_all_knows_the_datasets_the_library_knows():
    from sbnlib.data import dataset_names
    line = next(t for t in (REPO / "run_all.sh").read_text().splitlines() if t.startswith("KNOWN_DATASETS="))
    assert sorted(line.split("=", 1)[1].strip('"').split()) == sorted(dataset_names())


def test_help():
    p = subprocess.run(["bash", str(REPO / "run_all.sh"), "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "--profile" in p.stdout and "--allow-missing" in p.stdout


def test_a_second_run_on_the_same_folder_refuses_at_once(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    with open(out / ".run_all.lock", "w") as held:  # as the first run_all.sh holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        p = subprocess.run(["bash", str(REPO / "run_all.sh"), "--profile", "smoke", "--output-dir", str(out)],
                           capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "another ./run_all.sh is writing" in p.stderr
    assert p.stderr.count("\n") == 1 and sorted(f.name for f in out.iterdir()) == [".run_all.lock"]


def _descendants(pid: int) -> set:
    """Every process below ``pid``, from the parent ids in /proc/<pid>/stat."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parent.items() if pp == p} - found
        found |= kids
        todo += kids
    return found


def _alive(pids) -> set:
    def running(p):
        try:
            return Path(f"/proc/{p}/stat").read_text().split(") ")[1][0] != "Z"  # zombies are gone already
        except OSError:
            return False
    return {p for p in pids if running(p)}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL of the process group"])
def test_killing_run_all_leaves_no_process(shared_data, tmp_path, how):
    out = tmp_path / "o"
    env = dict(os.environ, SBN_DATA_ROOT=str(shared_data))
    proc = subprocess.Popen(["bash", str(REPO / "run_all.sh"), "--profile", "smoke", "--datasets", "mnist",
                             "--no-ablation", "--no-readings", "--jobs", "2", "--output-dir", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    deadline, tree = time.time() + 240, set()
    while time.time() < deadline:  # until the sweep's worker processes are up (papermill -> kernel -> workers)
        tree = _descendants(proc.pid)
        cmds = [Path(f"/proc/{p}/cmdline").read_bytes() for p in _alive(tree)]
        if sum(b"multiprocessing" in c for c in cmds) >= 2:
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("run_all.sh never started its sweep workers")
    if how == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
        assert "interrupted" in proc.stderr.read()
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    deadline = time.time() + 30
    while _alive(tree) and time.time() < deadline:  # the kernel and the workers follow their parents
        time.sleep(0.5)
    assert not _alive(tree), [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in _alive(tree)]
    status = out / "mnist" / "status.json"
    assert not status.exists() or '"failed"' not in status.read_text()  # nothing marked failed
