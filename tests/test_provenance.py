"""Tables name the library versions their result records carry, not the renderer's (issue 27)."""
import json

from sbnlib.experiments.tables import make_provenance
from sbnlib.provenance import recorded_versions, records_in, versions, versions_entry

V = {"sbnlib": "0.1.0", "torch": "2.14.1+cu130", "numpy": "2.4.6", "python": "3.11.7"}


def test_recorded_versions_names_the_one_value_where_the_runs_agree():
    assert recorded_versions([{"versions": V}, {"versions": dict(V)}]) == V
    assert list(recorded_versions([{"versions": V}])) == ["numpy", "python", "sbnlib", "torch"]


def test_recorded_versions_counts_each_value_where_the_runs_disagree():
    runs = [{"versions": {**V, "numpy": "2.4.6"}}] * 5 + [{"versions": {**V, "numpy": "2.4.5"}}] * 3 + \
        [{"versions": {k: v for k, v in V.items() if k != "torch"}}]
    got = recorded_versions(runs)
    assert got["numpy"] == "2.4.5 (3), 2.4.6 (6)"
    assert got["torch"] == "2.14.1+cu130 (8), unrecorded (1)"
    assert got["python"] == "3.11.7"
    assert recorded_versions(list(reversed(runs))) == got  # the order of the runs does not matter


def test_recorded_versions_of_records_without_them_is_empty():
    assert recorded_versions([]) == {}
    assert recorded_versions([{"status": "ok"}, {"versions": None}, None]) == {}
    assert versions_entry(None) == {} and versions_entry([{"status": "ok"}]) == {}
    assert versions_entry([{"versions": V}]) == {"versions": json.dumps(V, sort_keys=True)}


def test_a_table_names_the_versions_of_its_runs_not_the_renderers():
    runs = [{"versions": {**V, "torch": "2.2.0"}, "produced": {"git_commit": "abc", "utc": "2026-01-01 00:00:00"}}]
    prov = make_provenance({"dataset": "toy"}, "smoke", {"seeds": 2}, runs)
    recorded = json.loads(prov["versions"])
    assert recorded == {**V, "torch": "2.2.0"} and "pandas" not in recorded and "scipy" not in recorded
    assert list(prov).index("versions") == list(prov).index("seeds") + 1  # where the line always stood
    # a table that trains nothing (feasibility) has no runs to name: no versions line at all
    assert "versions" not in make_provenance({"dataset": "toy"}, "smoke", {"seeds": 2})
    # the result record itself still carries the versions of the process that trained it
    assert set(versions()) == set(V)


def test_records_in_reads_each_records_versions(tmp_path):
    runs, tuning = tmp_path / "runs", tmp_path / "tuning"
    runs.mkdir()
    tuning.mkdir()
    (runs / "a.json").write_text(json.dumps({"versions": V, "metrics": {"loss": [1, 2]}}))
    (tuning / "b.json").write_text(json.dumps({"versions": {**V, "numpy": "2.4.5"}}))
    (tuning / "c.json").write_text("not json")
    (tuning / "d.json").write_text("[1, 2]")
    got = recorded_versions(records_in([runs, tuning, tmp_path / "budget"]))  # a missing folder is no runs
    assert got == {**V, "numpy": "2.4.5 (1), 2.4.6 (1)"}
    # "versions" as a string value after the key, or a record without the key: read as a whole
    (runs / "e.json").write_text(json.dumps({"versions": {**V, "torch": "2.2.0"}, "note": "versions", "n": 1}, indent=1))
    (runs / "f.json").write_text(json.dumps({"status": "ok", "what": ["versions"]}))
    assert list(records_in([runs])) == [{"versions": V}, {"versions": {**V, "torch": "2.2.0"}}, {"versions": None}]
