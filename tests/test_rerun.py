"""A rerun whose results are all cached leaves every file it writes byte-identical (issue 14)."""
from sbnlib import data
from sbnlib import experiment as ex

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
        ex.analyse(P, ds, results, df)
        ex.summary(["toy_rerun"], tmp_path)

    experiment()
    first = _snapshot(tmp_path)
    assert "toy_rerun/accuracy.csv" in first and "REPORT.md" in first and "toy_rerun/lr_selection.md" in first
    assert not any(b"/tmp" in v or str(tmp_path).encode() in v for k, v in first.items() if not k.endswith(".png"))
    experiment()
    second = _snapshot(tmp_path)
    changed = sorted(k for k in first if first[k] != second.get(k))
    assert set(first) == set(second) and not changed, changed
