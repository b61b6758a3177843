"""Project files agree with each other."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _req(spec: str):
    name = re.match(r"[A-Za-z0-9_.\-]+", spec).group(0).lower().replace("_", "-")
    return name, spec[len(name):].replace(" ", "")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_req(s) for s in project["dependencies"] + project["optional-dependencies"]["dev"])
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
