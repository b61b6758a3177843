"""Executed notebooks are committed (issue 27): stabilised, so that a rerun of the same execution is
byte-identical, with their figures inline; and no committed output names a machine's folder."""
import base64
import difflib
import json
import re
import shutil
import subprocess
import sys

import nbformat
import papermill as pm
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from sbnlib.data import DataWarning, load_dataset
from sbnlib.experiments.notebooks import stabilise
from sbnlib.provenance import portable

from .conftest import REPO
from .test_data import make_cifar100_layout

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8).decode()
TIMES = {"start_time": "2026-01-01T00:00:00.1+00:00", "end_time": "2026-01-01T00:00:02.2+00:00", "duration": 2.1}


def _executed(path, data_root, out_dir, stamp="1", failed=False):
    """A notebook as papermill leaves it: run times, a random cell id, a widget, progress bars on
    stderr and stdout, a warning located by file and line, machine paths and an image."""
    meta = lambda: {"execution": {"iopub.status.busy": f"2026-01-01T00:00:0{stamp}Z"},
                    "papermill": {**TIMES, "exception": False, "status": "completed"}}
    cells = [new_markdown_cell("# a notebook"),
             new_code_cell('output_dir = None', metadata={"tags": ["parameters"]}, execution_count=4),
             new_code_cell(f'# Parameters\ndata_root = "{data_root}"\noutput_dir = "{out_dir}"\n',
                           metadata={"tags": ["injected-parameters"]}, execution_count=5),
             new_code_cell("work()", execution_count=7, outputs=[
                 new_output("stream", name="stderr", text=f"runs:  50%|#####     | 1/2 [00:0{stamp}<00:01,  1.0{stamp}it/s]"
                                                         "\rruns: 100%|##########| 2/2 [00:02<00:00,  1.00it/s]\n"),
                 new_output("stream", name="stdout", text=f"read {data_root}/MNIST into {out_dir}/mnist and {REPO}/outputs\n\ndone\n"),
                 new_output("stream", name="stderr", text=f"{REPO}/sbnlib/data/loader.py:12{stamp}: DataWarning: the copy at "
                                                         f"{data_root}/cifar is not the official release\n"
                                                         "  warnings.warn(w, DataWarning, stacklevel=2)\n"),
                 new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": f"ab{stamp}"},
                                                  "text/plain": "assess:   0%|          | 0/2 [00:00<?, ?batch size/s]"}),
                 new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"}),
                 new_output("display_data", data={"text/html": f"<p>evidence in {out_dir}</p>", "text/plain": "<HTML>"}),
             ]),
             new_code_cell("42", execution_count=9, outputs=[
                 new_output("execute_result", data={"text/plain": "42"}, execution_count=9)])]
    if failed:
        cells[-1].outputs = [new_output("error", ename="ValueError", evalue="bad", traceback=[f"{REPO}/x.py"])]
    for i, c in enumerate(cells):
        c.id = f"cell-{i:02d}"
        c.metadata.update(meta())
        c.metadata.setdefault("tags", [])
    cells[2].id = f"f58388{stamp}7"  # papermill gives the injected cell a random id
    nb = new_notebook(cells=cells)
    nb.metadata.update({"papermill": {**TIMES, "input_path": "notebooks/x.ipynb", "output_path": str(path),
                                      "environment_variables": {}, "exception": failed or None, "version": "2.7.0",
                                      "parameters": {"data_root": str(data_root), "output_dir": str(out_dir)},
                                      "default_parameters": {}},
                        "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {f"ab{stamp}": {}}}}})
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def test_stabilise_removes_what_changes_and_keeps_the_figures(tmp_path):
    data, out = tmp_path / "mydata", tmp_path / "a" / "out"
    path = _executed(out / "mnist" / "x.ipynb", data, out)
    assert stabilise(path) is True
    text = path.read_text()
    for gone in ("start_time", "end_time", "duration", "iopub", "widget", "environment_variables", "output_path",
                 "input_path", "f5838817", "it/s", "%|", "loader.py", "warnings.warn", str(tmp_path), str(REPO)):
        assert gone not in text, gone
    nb = json.loads(text)
    cells = nb["cells"]
    assert nb["metadata"]["papermill"] == {"default_parameters": {}, "exception": None, "version": "2.7.0",
                                           "parameters": {"data_root": "mydata", "output_dir": "out"}}
    assert [c.get("execution_count") for c in cells] == [None, 1, 2, 3, 4]
    assert cells[4]["outputs"][0]["execution_count"] == 4
    assert cells[2]["id"] == "injected-parameters" and 'data_root = "mydata"' in "".join(cells[2]["source"])
    assert all(set(c["metadata"]) <= {"tags"} for c in cells)
    outputs = cells[3]["outputs"]
    assert "".join(outputs[0]["text"]) == "read mydata/MNIST into out/mnist and ./outputs\n\ndone\n"
    assert "".join(outputs[1]["text"]) == "DataWarning: the copy at mydata/cifar is not the official release\n"
    assert outputs[2]["data"]["image/png"] == PNG  # the figure, inline and unchanged
    assert "".join(outputs[3]["data"]["text/html"]) == "<p>evidence in out</p>"
    assert len(outputs) == 4 and text.endswith("}\n")
    stabilise(path)
    assert path.read_text() == text  # idempotent


def test_the_same_execution_stabilises_to_the_same_bytes(tmp_path):
    """Other run times, kernel and widget ids, output folders in other places, the text sent in other
    chunks: the same file."""
    a = _executed(tmp_path / "a" / "out" / "x.ipynb", tmp_path / "d1" / "data", tmp_path / "a" / "out", stamp="1")
    b = _executed(tmp_path / "b" / "out" / "x.ipynb", tmp_path / "d2" / "data", tmp_path / "b" / "out", stamp="2")
    nb = nbformat.read(str(b), as_version=4)  # the kernel flushed stdout in two chunks, around the warning
    bar, out, warning, *rest = nb.cells[3].outputs
    cut = out.text.index("\n") + 1
    nb.cells[3].outputs = [new_output("stream", name="stdout", text=out.text[:cut]), bar, warning,
                           new_output("stream", name="stdout", text=out.text[cut:]), *rest]
    nbformat.write(nb, str(b))
    assert a.read_bytes() != b.read_bytes()
    stabilise(a), stabilise(b)
    assert a.read_bytes() == b.read_bytes()


def test_a_failed_notebook_is_left_as_papermill_wrote_it(tmp_path):
    path = _executed(tmp_path / "out" / "x.ipynb", tmp_path / "data", tmp_path / "out", failed=True)
    before = path.read_bytes()
    assert stabilise(path) is False
    assert path.read_bytes() == before
    p = subprocess.run([sys.executable, "-m", "sbnlib.experiments.notebooks", str(path)],
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0 and "failed; left as papermill wrote it" in p.stderr and path.read_bytes() == before


TINY = """\
import sys, warnings
from tqdm.auto import tqdm
from IPython.display import Image, display
import matplotlib.pyplot as plt
for _ in tqdm(range(3), desc="auto"):
    pass
for _ in tqdm(range(3), desc="runs", file=sys.stdout):
    pass
warnings.warn(f"the copy at {output_dir}/x is odd")
print("writing to", output_dir)
fig, ax = plt.subplots(figsize=(2, 2))
ax.plot([0, 1], [1, 0])
fig.savefig(f"{output_dir}/f.png")
display(Image(f"{output_dir}/f.png"))"""


def test_two_executions_through_papermill_are_byte_identical_once_stabilised(tmp_path):
    src = tmp_path / "tiny.ipynb"
    nb = new_notebook(cells=[new_code_cell("output_dir = None", metadata={"tags": ["parameters"]}), new_code_cell(TINY)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, c in enumerate(nb.cells):
        c.id = f"cell-{i:02d}"
    nbformat.write(nb, str(src))
    done = []
    for run in ("a", "b"):
        out = tmp_path / run / "out"
        out.mkdir(parents=True)
        pm.execute_notebook(str(src), str(out / "tiny.ipynb"), parameters={"output_dir": str(out)},
                            kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
        assert stabilise(out / "tiny.ipynb")
        done.append((out / "tiny.ipynb").read_text())
    assert done[0] == done[1]
    outputs = json.loads(done[0])["cells"][-1]["outputs"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # the inline figure and the saved one
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "UserWarning: the copy at out/x is odd" in text and "writing to out" in text and "%|" not in text


@pytest.mark.slow
def test_feasibility_on_mnist_twice_is_byte_identical_once_stabilised(shared_data, tmp_path):
    done = []
    for run in ("a", "b"):
        out = tmp_path / run / "out"
        (out / "mnist").mkdir(parents=True)
        nb = out / "mnist" / "feasibility.ipynb"
        pm.execute_notebook(str(REPO / "notebooks" / "feasibility.ipynb"), str(nb), kernel_name="python3",
                            parameters=dict(dataset="mnist", profile="smoke", data_root=str(shared_data),
                                            output_dir=str(out)), progress_bar=False, cwd=str(REPO))
        assert stabilise(nb)
        done.append(nb.read_text())
    changed = [line for line in difflib.unified_diff(*(t.splitlines() for t in done), lineterm="", n=0)]
    assert not changed, "the two executions differ:\n" + "\n".join(line[:200] for line in changed[:20])
    assert "image/png" in done[0] and str(tmp_path) not in done[0]


def test_run_all_stabilises_each_notebook_that_ran_and_git_tracks_them():
    script = (REPO / "run_all.sh").read_text()
    render = next(line for line in script.splitlines() if line.startswith("render()"))
    assert "sbnlib.experiments.notebooks" in render  # before the HTML, which renders the stabilised notebook
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path):
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0

    for kept in ("outputs/mnist/experiment.ipynb", "outputs/cifar10/feasibility.ipynb", "outputs/summary.ipynb"):
        assert not ignored(kept), kept
    for dropped in ("outputs/mnist/experiment.html", "outputs/mnist/experiment.log", "outputs/summary.html",
                    "outputs/smoke/mnist/experiment.ipynb", "outputs/quick/summary.ipynb", "out.ipynb",
                    "outputs/mnist/out.ipynb", "outputs/mnist/.ipynb_checkpoints/experiment-checkpoint.ipynb"):
        assert ignored(dropped), dropped


def test_a_datasets_provenance_names_the_data_root_by_its_folder(tmp_path):
    """What goes into committed tables and reports names no machine's folder; the warning the user
    sees at run time gives the full path."""
    root = tmp_path / "somewhere" / "mydata"
    make_cifar100_layout(root, n_train=40, n_test=10)
    with pytest.warns(DataWarning) as rec:
        ds = load_dataset("cifar100", root=root, n_train=80)
    prov = ds.provenance
    assert prov["warnings"] and any("the copy at mydata/cifar-100-python is not the official" in w for w in prov["warnings"])
    assert any("the copy at mydata/cifar-100-python holds 40" in w for w in prov["warnings"])
    assert str(tmp_path) not in prov["note"] + " ".join(prov["warnings"])
    assert all(f"(data root: {root})" in str(r.message) for r in rec)
    assert str(tmp_path) not in json.dumps(portable(prov))  # as result records store it


# a machine's folder: what a committed file must not name (the repository's own path included)
MACHINE_PATH = re.compile(r"(?<![\w.\-])/(?:work|home|tmp|root|Users|private/var|mnt)/"
                          r"|\b[A-Z]:\\(?:\\)?(?![ntr\"\\])\w"  # C:\Users (C:\\Users in JSON), not "X:\n"
                          + "|" + re.escape(str(REPO)))
# result records are hashed evidence, kept as the run that made them wrote them (older ones name the data root)
RECORDS = re.compile(r"/(runs|tuning|budget)/[^/]+\.json$")


def test_no_committed_output_names_a_machines_folder():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z", "outputs"], cwd=REPO, capture_output=True, check=True).stdout
    found = []
    for name in filter(None, files.decode().split("\0")):
        path = REPO / name
        if RECORDS.search(name) or not path.is_file():
            continue
        raw = path.read_bytes()
        if b"\0" in raw[:8192]:
            continue  # binary (PNG)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith('"image/'):
                continue  # a notebook's figure: its base64 may hold "/tmp/" by chance
            if MACHINE_PATH.search(line):
                found.append(f"{name}:{n}: {line.strip()[:160]}")
    assert not found, f"{len(found)} lines of committed outputs name a machine's folder:\n" + "\n".join(found[:40])
