"""Sweeps on a Dask cluster: the same numbers and result files as jobs=1; clear errors."""
import json
import sys

import pytest

from sbnlib.experiments import config, sweep, workers
from sbnlib.experiments.pipelines import ParameterError, resolve_params
from sbnlib.experiments.sweep import result_path, run_configs

from .test_sweep import _numbers, _tiny


@pytest.mark.slow
def test_cluster_gives_the_same_numbers_and_files_as_jobs_1(shared_data, tmp_path):
    distributed = pytest.importorskip("distributed")
    cfgs = _tiny()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        on_cluster = run_configs(cfgs, tmp_path / "cluster", root=shared_data, progress=False,
                                 scheduler=cluster.scheduler_address)
    local = run_configs(cfgs, tmp_path / "local", root=shared_data, jobs=1, progress=False)
    assert [_numbers(a) for a in on_cluster] == [_numbers(b) for b in local]
    for c, r in zip(cfgs, on_cluster):
        assert json.loads(result_path(tmp_path / "cluster", c).read_text()) == r


def test_client_writes_results_that_workers_kept_on_their_own_disk(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    def run_elsewhere(cfgs, root, paths, group=None):  # a worker without the client's filesystem (a unit: one run or a packed group)
        return [{"config_hash": config.config_hash(c), "ran": c.method} for c in cfgs]

    monkeypatch.setattr(sweep, "_run_unit", run_elsewhere)
    cfgs = _tiny()[:2]
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        out = run_configs(cfgs, tmp_path, progress=False, scheduler=client)
        assert client.status == "running"  # a client passed in is left open
    assert [r["ran"] for r in out] == [c.method for c in cfgs]
    for c, r in zip(cfgs, out):
        assert json.loads(result_path(tmp_path, c).read_text()) == r


@pytest.mark.parametrize("bad", ["nonsense", "foo://host:1", "tcp://no-such-host.invalid:8786", "", 8786])
def test_bad_scheduler_address_is_one_clear_error(tmp_path, bad):
    pytest.importorskip("distributed")
    with pytest.raises(ValueError, match="scheduler"):
        run_configs(_tiny(), tmp_path, progress=False, scheduler=bad)
    with pytest.raises(ParameterError, match="tcp://host:8786"):
        resolve_params("mnist", "smoke", output_dir=str(tmp_path), scheduler=bad)
    assert not list(tmp_path.rglob("*.json"))


def test_missing_dask_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ImportError, match=r'pip install "sbnlib\[cluster\]"'):
        run_configs(_tiny(), tmp_path, progress=False, scheduler="tcp://host:8786")
    with pytest.raises(ParameterError, match=r'pip install "sbnlib\[cluster\]"'):
        resolve_params("mnist", "smoke", output_dir=str(tmp_path), scheduler="tcp://host:8786")


def test_unreachable_scheduler_is_one_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(workers, "DASK_CONNECT_TIMEOUT_S", 1)
    with pytest.raises(ValueError, match="cannot use the Dask scheduler at 'tcp://127.0.0.1:1'.*Timed out"):
        run_configs(_tiny(), tmp_path, progress=False, scheduler="tcp://127.0.0.1:1")
