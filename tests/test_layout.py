"""The layout of issue 15: a core that imports without the extras, small modules, no import cycles,
one integer check, evidence read as data, the dataset list from the registry."""
import ast
import subprocess
import sys

import numpy as np
import pytest
import torch

import sbnlib
from sbnlib.checks import check_choice, check_int, is_int
from sbnlib.cli import main
from sbnlib.data import dataset_names

from .conftest import REPO

PKG = REPO / "sbnlib"
MODULES = sorted(PKG.rglob("*.py"))
EXTRAS = ["pandas", "matplotlib", "seaborn", "scipy", "papermill", "dask", "distributed", "statsmodels", "PIL"]


def _name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_core_and_the_trainer_import_without_the_extras():
    code = f"""
import sys
for name in {EXTRAS!r}:
    sys.modules[name] = None  # importing any of them now raises ImportError
import torch
import sbnlib
from sbnlib.experiments.train import train
from sbnlib.experiments.sweep import run_configs
import sbnlib.cli
model = sbnlib.convert_to_selective(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)))
x = torch.randn(8, 1, 6, 6)
scores = sbnlib.score_batches(x, batch_size=4)
needs = sbnlib.classify_batches(scores, sbnlib.fit_threshold(scores, "mean"))
with sbnlib.selective_bn(model, enabled=False):
    out = model(x[:4])
print(type(model[1]).__name__, len(needs), tuple(out.shape))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["SelectiveBatchNorm2d", "2", "(4,", "4,", "4,", "4)"]


def test_the_package_has_the_parts_of_the_design():
    tops = {p.name for p in PKG.iterdir() if p.suffix == ".py"}
    assert {"scoring.py", "threshold.py", "layers.py", "batches.py", "norms.py", "checks.py"} <= tops
    for part in ("data", "experiments", "assess"):
        assert (PKG / part / "__init__.py").exists()
    assert len(tops) <= 12  # the top holds the core and the shared helpers, not every job


def _module_imports(path):
    """The sbnlib modules ``path`` imports when it is imported (not inside functions or TYPE_CHECKING)."""
    tree, me = ast.parse(path.read_text()), _name(path)
    pkg = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("sbnlib"):
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)  # from . import report
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("sbnlib"))
    known = {_name(p) for p in MODULES}
    return {m for m in out if m in known and m != me}


def test_no_import_cycles():
    graph = {_name(p): _module_imports(p) for p in MODULES}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join(path + [m])
        state[m] = "open"
        for n in graph.get(m, ()):
            if not n.startswith(m + "."):  # a package importing its own submodules is no cycle
                visit(n, path + [m])
        state[m] = "done"

    for m in graph:
        visit(m, [])
    assert "sbnlib.experiments.plots" not in graph["sbnlib.assess.advice"]


def test_nothing_parses_markdown_or_display_strings():
    for p in MODULES:
        text = p.read_text()
        assert 'split("|")' not in text and "split(' | ')" not in text, _name(p)
        # the only Markdown read back is REPORT.md embedding each table as it is (experiments.report)
        assert "md.read_text()" not in text or _name(p) == "sbnlib.experiments.report", _name(p)
    # the report is rendered from the typed results (experiments.results), never from a rendered table
    for name in ("studies", "report", "results"):
        src = (PKG / "experiments" / f"{name}.py").read_text()
        for table in ("verdicts", "readings", "collapse", "ablation", "ablation_vs_random", "accuracy", "convergence"):
            assert f'"{table}.csv"' not in src, f"sbnlib.experiments.{name} reads the rendered {table}.csv"
    # the advice reads evidence.json (numbers), never a rendered table
    src = (PKG / "assess" / "evidence.py").read_text()
    assert "evidence.json" in src and ".md" not in src


def test_one_integer_check_accepts_numpy_integers_and_rejects_bools():
    assert is_int(3) and is_int(np.int64(3)) and is_int(np.int32(3))
    assert not is_int(True) and not is_int(np.bool_(True)) and not is_int(3.0)
    assert check_int(np.int64(4), "batch_size", lo=1) == 4 and type(check_int(np.int64(4), "b")) is int
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got True"):
        check_int(True, "batch_size", lo=1)
    with pytest.raises(ValueError, match="unknown strategy 'x'"):
        check_choice("x", "strategy", ["mean", "otsu"])
    x = torch.randn(32, 3, 4, 4)
    # scoring and the batch plan agree: numpy batch sizes are accepted by both, bools by neither
    assert torch.equal(sbnlib.score_batches(x, np.int64(8)), sbnlib.score_batches(x, 8))
    with pytest.raises(ValueError):
        sbnlib.score_batches(x, True)


def test_the_cli_lists_the_datasets_of_the_registry(capsys):
    assert main(["datasets"]) == 0
    assert capsys.readouterr().out.split() == dataset_names()
    assert {"mnist", "fashion_mnist", "cifar10", "cifar100", "mnist_fmnist_mix"} <= set(dataset_names())
