"""A rerun whose results are all cached leaves every file it writes byte-identical (issue 14)."""
import json

import pandas as pd
import pytest

from sbnlib import data
from sbnlib.assess import evidence
from sbnlib.assess.evidence import benchmark_evidence
from sbnlib.experiments import pipelines as ex
from sbnlib.experiments import studies

from .conftest import make_toy_dataset


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_cached_rerun_rewrites_nothing(tmp_path, monkeypatch):
    ds = make_toy_dataset()
    monkeypatch.setitem(data.DERIVED, "toy_rerun", lambda **kw: ds)

    def experiment():  # what the experiment notebook does, on a toy task
        P = ex.resolve_params("toy_rerun", "smoke", batch_sizes=[8, 16], output_dir=str(tmp_path))
        selection = ex.tune(P, ds, progress=False)
        results, df, _ = ex.run(P, selection, progress=False)
        ex.analyse(P, ds, results, df, selection, ex.budget_check(P, selection, progress=False))
        studies.summary(["toy_rerun"], tmp_path)

    experiment()
    first = _snapshot(tmp_path)
    assert "toy_rerun/accuracy.csv" in first and "REPORT.md" in first and "toy_rerun/lr_selection.md" in first
    assert "toy_rerun/budget_check.csv" in first and "toy_rerun/REPORT.md" in first
    assert not any(b"/tmp" in v or str(tmp_path).encode() in v for k, v in first.items() if not k.endswith(".png"))
    _check_evidence(tmp_path, "toy_rerun")
    _check_cost(tmp_path, "toy_rerun")
    experiment()
    second = _snapshot(tmp_path)
    changed = sorted(k for k in first if first[k] != second.get(k))
    assert set(first) == set(second) and not changed, changed


def _check_cost(root, dataset):
    """REPORT.md's cost table counts every result file of the selection and the sweep, and their recorded times."""
    recorded = {kind: [json.loads(p.read_text())["wall_time_s"] for p in (root / dataset / kind).glob("*.json")]
                for kind in ("tuning", "runs")}
    cost = studies._cost_table(root, [dataset]).iloc[0]
    assert cost["selection runs"] == len(recorded["tuning"]) > 0 and cost["evaluation runs"] == len(recorded["runs"]) > 0
    # in seconds: the selection's times are summed per (method, batch size, rate) row, rounded to 0.1 s
    assert 3600 * cost["selection (h)"] == pytest.approx(sum(recorded["tuning"]), abs=0.05 * len(recorded["tuning"]))
    assert 3600 * cost["evaluation (h)"] == pytest.approx(sum(recorded["runs"]), abs=0.05)
    assert "## What the committed runs cost" in (root / "REPORT.md").read_text()


def _check_evidence(root, dataset):
    """The analysis wrote ``evidence.json``, its numbers are those of the comparisons, and the advice reads it."""
    ev = json.loads((root / dataset / "evidence.json").read_text())
    verdicts = pd.read_csv(root / dataset / "verdicts.csv", comment="#")
    comps = pd.read_csv(root / dataset / "comparisons_accuracy.csv")
    assert ev["schema"] == evidence.EVIDENCE_SCHEMA and ev["dataset"] == dataset and ev["profile"] == "smoke"
    assert [r["batch_size"] for r in ev["rows"]] == [8, 16] and ev["seeds"] == 2
    for r, v in zip(ev["rows"], verdicts.to_dict(orient="records")):
        assert (r["C1"], r["C2"], r["C1 budget"]) == (v["C1"], v["C2"], v["C1 budget"])
        c = comps[(comps.batch_size == r["batch_size"]) & (comps.baseline == "bn")].iloc[0]
        assert r["diff_pp"]["bn"] == pytest.approx(100 * c.mean_diff, abs=1e-4)
        assert r["ci_pp"]["bn"] == pytest.approx([100 * c.ci_low, 100 * c.ci_high], abs=1e-4)
        assert set(r["accuracy_pct"]) == set(ev["methods"]) and 0 <= r["frac_normalized"] <= 1
    read = benchmark_evidence(root)
    assert not read["problems"] and {r["dataset"] for r in read["rows"]} == {dataset}
