"""Sweeps: profiles, resumable result files, parallel execution.

A sweep is a list of :class:`~sbnlib.experiments.config.TrainConfig` (every method x batch size x seed of one
dataset). Each finished run is stored as its own JSON file, written atomically and named after
the hash of its full configuration; rerunning a sweep skips runs whose file exists and is valid,
so an interrupted sweep resumes where it stopped and ends with the same numbers. A result file
that is corrupt, truncated or belongs to another configuration is reported and recomputed,
never used.

Every run of a sweep uses one torch thread (:data:`THREADS_PER_RUN`), whether it runs in the
main process (``jobs=1``), in one of ``jobs`` worker processes or on a Dask cluster
(``scheduler=``), so the numbers do not depend on where a run ran: CPU kernels may sum in a
different order with another thread count.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import sys
import threading
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, List, Mapping, Optional, Sequence

import torch
from tqdm import tqdm

from ..checks import is_int
from ..io import atomic_write_json, ensure_writable_dir
from ..scoring import SCORERS
from ..threshold import STRATEGIES
from .config import LATER_FIELDS, METHODS, SCHEMA_VERSION, TrainConfig, config_dict, config_hash
from .metrics import run_metrics
from .packed import pack_size, train_packed
from .train import train
from .workers import SweepStopped, dask_client, die_with_parent

__all__ = ["PROFILES", "DATASET_PARAMS", "ABLATION", "THREADS_PER_RUN", "profile_params", "experiment_configs", "tuning_configs",
           "widening_configs",
           "ablation_configs",
           "run_configs", "SweepStopped", "die_with_parent", "dask_client", "result_path", "load_result"]

THREADS_PER_RUN = 1
# torch's seed and thread count belong to the process: runs sharing one (a Dask worker with
# several threads) take turns
_RUN_LOCK = threading.Lock()

# Shared by every profile unless overridden: SGD with momentum; the learning rate is scaled with
# sqrt(batch size / 32). engine="packed" trains the seeds of a configuration together (issue 12,
# sbnlib.experiments.packed): faster at small batches, numbers equal up to float rounding but kept apart;
# engine="auto" packs where that pays (pack_size(B) > 1, i.e. B <= 16: BENCH.md section 5) and
# trains single runs elsewhere.
_COMMON = dict(model="cnn_s", optimizer="sgd", lr=0.05, lr_scaling="sqrt", lr_ref_batch=32,
               momentum=0.9, weight_decay=5e-4, scorer="feature_std", threshold="mean",
               probe_points=20, data_seed=0, engine="single")

# The credible regime (issue 11): Nesterov momentum, a linear warm-up over the first 15% of the
# steps then cosine decay to 0, a stratified 10% validation split on which every method's peak
# learning rate is chosen from LR_GRID (at B=32, scaled by sqrt(B/32)) by the mean final validation
# accuracy over TUNE_SEEDS, which are not evaluation seeds. The test set is read once per run, at
# its end, and never used to choose anything.
RECIPE = dict(_COMMON, engine="auto", nesterov=True, schedule="warmup_cosine", warmup_frac=0.15, val_frac=0.1,
              lr_grid=[0.0125, 0.025, 0.05, 0.1, 0.2], tune_seeds=[100, 101], lr_widen=2)
# (0.0125 was added when the first MNIST selection runs put sbn's and none's choice at B=2 on the
# grid's low edge, 0.025.) lr_widen: where a method's choice at a batch size still lies at an edge
# of the values tried, the selection tries the next value beyond it (half or double), up to lr_widen
# times per edge, for that method and batch size only (widening_configs); every method gets the
# same rule, so none is tuned harder than another.

# every experiment table compares sbn with bn and with the controls (issue 4), on paired seeds
ALL_METHODS = ["none", "bn", "sbn", "sbn_frozen", "random", "gn"]

PROFILES = {
    # minutes, for tests and CI: two batch sizes, two seeds, tiny subsets, a two-value grid
    "smoke": dict(RECIPE, batch_sizes=[4, 32], seeds=2, epochs=1, n_train=256, n_test=256,
                  methods=ALL_METHODS, probe_points=5, lr_grid=[0.05, 0.2], tune_seeds=[100], lr_widen=0),
    # a newcomer's first run: the cpu recipe on fewer images, batch sizes and seeds; 3 seeds cannot
    # make any test significant, so its verdicts are a preview, never evidence
    "quick": dict(RECIPE, batch_sizes=[8, 64], seeds=3, epochs=4, n_train=3000, n_test=2000,
                  methods=ALL_METHODS, probe_points=10, lr_grid=[0.05, 0.1, 0.2]),
    # the committed results (README: measured wall time). 8 seeds over 5 batch sizes: the smallest
    # exact two-sided Wilcoxon p is 2/2^8 and Holm multiplies it by up to 5 (0.039 < 0.05).
    # 10,000 training images (1,000 of them for validation) and 8 epochs, from the pilot curves
    # (scripts/pilot_regime.py, outputs/pilot/curves.md): BN on MNIST plateaus there. On
    # Fashion-MNIST, 12 and 16 epochs add a few tenths of a point at twice the cost and the last
    # epochs of the cosine decay still gain 1-2 points (curves_e12_*, curves_e16_*), so it keeps 8;
    # the CIFAR-10 copy gets its own (DATASET_PARAMS).
    "cpu": dict(RECIPE, batch_sizes=[2, 4, 8, 32, 128], seeds=8, epochs=8, n_train=10000, n_test=None,
                methods=ALL_METHODS),
    # full training sets, a larger CNN, more epochs: for a GPU or a long run
    "paper": dict(RECIPE, model="cnn", batch_sizes=[2, 4, 8, 16, 32, 64, 128, 256], seeds=10, epochs=15,
                  n_train=None, n_test=None, methods=ALL_METHODS),
}


# Where one profile's recipe does not bring BN to its plateau on every dataset: per profile and
# dataset, the parameters that replace the profile's (a caller's explicit override still wins).
# cpu, CIFAR-10 copy: at 8 epochs BN is far from fitted (pilot, outputs/pilot/curves.md: training
# accuracy about 0.6-0.7), at 16 it reaches its 60% target at B >= 4 (curves_e16_*) and 32 epochs
# end at the same validation accuracy at B = 8 and 128 (curves_e32_*). At B=2 BN stays below the
# target even at 32 epochs: BN's small-batch weakness, not a short run. B=2 stays in the sweep all
# the same: it is where selective BN has the most room to help, so leaving it out would hide the
# condition most favourable to the claim; its verdicts read "baseline not converged" by the rule.
DATASET_PARAMS: dict = {"cpu": {"cifar10": dict(epochs=16)}}


def profile_params(profile: str, dataset: Optional[str] = None, **overrides) -> dict:
    """The parameters of ``profile`` (with :data:`DATASET_PARAMS` for ``dataset``) and ``overrides``
    (None values mean "keep the profile's")."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    params = dict(PROFILES[profile], **DATASET_PARAMS.get(profile, {}).get(dataset, {}))
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}; known: {sorted(params)}")
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params


def _seed_list(seeds) -> List[int]:
    if isinstance(seeds, bool):
        raise ValueError(f"seeds must be a count or a list of integers, got {seeds!r}")
    if is_int(seeds):
        seeds = int(seeds)
        if seeds < 1:
            raise ValueError(f"seeds must be at least 1 (a count) or a non-empty list, got {seeds}")
        return list(range(seeds))
    seeds = list(seeds)
    if not seeds:
        raise ValueError("the seed list is empty; give a count (e.g. 8) or a list of integers")
    if not all(is_int(s) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}")
    return seeds


def experiment_configs(dataset: str, params: dict, lr_for: Optional[Mapping] = None) -> List[TrainConfig]:
    """Every (method, batch size, seed) run of one dataset's sweep, validated.

    ``lr_for`` maps ``(method, batch_size)`` to the peak learning rate chosen on validation data
    (:func:`sbnlib.experiments.stats.select_learning_rates`); without it every run takes ``params["lr"]``."""
    methods = list(params["methods"])
    if not methods:
        raise ValueError("the method list is empty; give at least one of " + ", ".join(sorted(METHODS)))
    batch_sizes = list(params["batch_sizes"])
    if not batch_sizes:
        raise ValueError("the batch-size list is empty; give e.g. [2, 4, 8, 16, 32, 64, 128]")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    common = {k: v for k, v in params.items() if k in fields}
    if lr_for is not None:
        missing = [(m, b) for m in methods for b in batch_sizes if (m, b) not in lr_for]
        if missing:
            raise ValueError(f"no learning rate was selected for (method, batch size) {missing[0]}; run the "
                             "learning-rate selection (tuning_configs) for it first")
    lr = (lambda m, b: lr_for[(m, b)]) if lr_for is not None else (lambda m, b: common["lr"])
    configs = [
        TrainConfig(**{**common, "dataset": dataset, "method": m, "batch_size": b, "seed": s, "lr": lr(m, b),
                       "engine": _engine(common.get("engine", "single"), b, common.get("optimizer"))}).validate()
        for m in methods for b in batch_sizes for s in _seed_list(params["seeds"])
    ]
    return configs


def _engine(engine: str, batch_size: int, optimizer) -> str:
    """``engine="auto"`` -> "packed" where packing pays at this batch size (SGD only), else "single"."""
    if engine != "auto":
        return engine

    if not isinstance(batch_size, int) or batch_size < 1:
        return "single"  # TrainConfig.validate names the bad batch size
    return "packed" if pack_size(batch_size) > 1 and optimizer == "sgd" else "single"


def tuning_configs(dataset: str, params: dict) -> List[TrainConfig]:
    """The learning-rate selection: every method x batch size x ``lr_grid`` value x tuning seed.

    The tuning seeds (``tune_seeds``) must not be evaluation seeds, so that the runs that choose a
    learning rate are not the runs that are then compared; the choice reads validation accuracy
    only (:func:`sbnlib.experiments.stats.select_learning_rates`)."""
    grid, tune = list(params["lr_grid"]), _seed_list(params["tune_seeds"])
    if len(grid) < 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in grid):
        raise ValueError(f"lr_grid must hold at least two positive learning rates, got {grid!r}")
    if not params.get("val_frac"):
        raise ValueError("the learning-rate selection needs a validation split: set val_frac > 0")
    overlap = sorted(set(tune) & set(_seed_list(params["seeds"])))
    if overlap:
        raise ValueError(f"tuning seeds {overlap} are also evaluation seeds; tune on other seeds")
    return [c for lr in grid for c in experiment_configs(dataset, dict(params, lr=lr, seeds=tune))]


def widening_configs(dataset: str, params: dict, selection) -> List[TrainConfig]:
    """Tuning runs one step beyond each choice that lies at an edge of the values tried.

    ``selection``: :func:`sbnlib.experiments.stats.select_learning_rates` of the tuning runs so far. For every
    chosen row whose ``edge`` is ``"low"`` (``"high"``), the runs of that method and batch size at
    half (double) its learning rate, on the tuning seeds, unless the values tried already reach
    ``lr_widen`` steps beyond ``lr_grid`` on that side. Empty when no choice lies at an open edge."""
    grid, widen = list(params["lr_grid"]), int(params.get("lr_widen", 0))
    lowest, highest = min(grid) / 2 ** widen, max(grid) * 2 ** widen
    out = []
    for row in selection[selection["chosen"] & (selection["edge"] != "")].itertuples():
        lr = row.lr / 2 if row.edge == "low" else row.lr * 2
        if lowest * (1 - 1e-9) <= lr <= highest * (1 + 1e-9):
            out += experiment_configs(dataset, dict(params, lr=lr, seeds=params["tune_seeds"], methods=[row.method],
                                                    batch_sizes=[int(row.batch_size)]))
    return out


# The ablation (notebooks/ablation.ipynb): every scorer x threshold strategy, and a sweep of the
# "rate" strategy from 0 to 1 with the random control at the same rates, at a few small batches.
ABLATION = {
    "smoke": dict(batch_sizes=[4], seeds=2, rates=[0.0, 0.5, 1.0], strategies=["mean", "otsu"],
                  scorers=["feature_std", "norm_cv"]),
    "quick": dict(batch_sizes=[8], seeds=3, rates=[0.0, 0.5, 1.0], strategies=["mean", "otsu"],
                  scorers=["feature_std", "norm_cv"]),
    # 8 seeds: Holm over the 3 inner rates can reach 3 * 2/2^8 = 0.023 < 0.05 (5 seeds could not: 0.19)
    "cpu": dict(batch_sizes=[4, 8], seeds=8, rates=[0.0, 0.25, 0.5, 0.75, 1.0],
                strategies=["mean", "median", "otsu", "quantile"], scorers=None),
    "paper": dict(batch_sizes=[2, 4, 8, 16], seeds=10, rates=[0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0],
                  strategies=["mean", "median", "otsu", "quantile"], scorers=None),
}
ABLATION_QUANTILE = 0.75  # the "quantile" strategy's q in the grid: normalise the top quarter


def ablation_configs(dataset: str, params: dict, batch_sizes, seeds, scorers, strategies, rates,
                     lr_for: Optional[Mapping] = None) -> List[TrainConfig]:
    """The ablation grid: ``sbn`` for every scorer x strategy; ``sbn`` (default scorer) with
    ``threshold="rate"`` at every rate and ``random`` at every rate strictly between 0 and 1 (at 0
    and 1 it makes the same decisions as ``sbn``); all at every batch size and seed, ``sbn`` and
    ``random`` each at the learning rate ``lr_for`` chose for it (see :func:`experiment_configs`)."""
    scorers = sorted(SCORERS) if scorers is None else list(scorers)
    bad = [s for s in scorers if s not in SCORERS] + [t for t in strategies if t not in STRATEGIES or t == "rate"]
    if bad:
        raise ValueError(f"unknown scorer or grid strategy {bad[0]!r}; scorers: {sorted(SCORERS)}, "
                         f"strategies: {[t for t in STRATEGIES if t != 'rate']}")
    for r in rates:
        if not (isinstance(r, (int, float)) and 0.0 <= r <= 1.0):
            raise ValueError(f"rates must lie in [0, 1], got {r!r}")
    base = dict(params, methods=["sbn"], batch_sizes=list(batch_sizes), seeds=seeds)
    out: List[TrainConfig] = []
    for scorer in scorers:
        for strategy in strategies:
            q = ABLATION_QUANTILE if strategy == "quantile" else None
            out += experiment_configs(dataset, dict(base, scorer=scorer, threshold=strategy, threshold_q=q), lr_for)
    for method in ("sbn", "random"):
        for r in rates:
            if method == "sbn" or 0.0 < r < 1.0:
                out += experiment_configs(dataset, dict(base, methods=[method], threshold="rate", threshold_rate=float(r)),
                                          lr_for)
    return out


def result_path(runs_dir, cfg: TrainConfig) -> Path:
    return Path(runs_dir) / f"{cfg.dataset}_{cfg.method}_b{cfg.batch_size}_s{cfg.seed}_{config_hash(cfg)}.json"


def load_result(path, cfg: TrainConfig) -> Optional[dict]:
    """The stored result for ``cfg``, or None when absent; corrupt files are reported, not used."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
        if result.get("schema_version") != SCHEMA_VERSION:  # an older record: recomputed, never misread
            warnings.warn(f"result file {path} has schema version {result.get('schema_version')!r}, not "
                          f"{SCHEMA_VERSION}; recomputing it", stacklevel=2)
            return None
        ok = result["config_hash"] == config_hash(cfg) and result["config"] == config_dict(cfg)
        ok = ok and isinstance(result["final_test_acc"], float) and "steps" in result
    except (ValueError, KeyError, TypeError, OSError) as e:
        ok, why = False, f"{type(e).__name__}: {e}"
    else:
        why = "its configuration does not match its name"
    if not ok:
        warnings.warn(f"result file {path} is corrupt or incomplete ({why}); recomputing it", stacklevel=2)
        return None
    return result


@contextmanager
def _one_thread():
    """Run the body with :data:`THREADS_PER_RUN` torch threads, one run at a time per process."""
    with _RUN_LOCK:
        threads = torch.get_num_threads()
        torch.set_num_threads(THREADS_PER_RUN)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _run_one(cfg: TrainConfig, root, path: str) -> dict:

    with _one_thread():
        result = train(cfg, root=root)
    result["torch_threads"] = THREADS_PER_RUN
    atomic_write_json(path, result)
    return result


def _run_unit(cfgs: Sequence[TrainConfig], root, paths: Sequence[str], group: Optional[tuple] = None) -> List[dict]:
    """One unit of work: a single-engine run, or the seeds of one configuration trained packed
    (:func:`sbnlib.experiments.packed.train_packed`; in ``group``, the member hashes of their lost
    group, where it is known), whose result files are written when the group ends."""
    if cfgs[0].engine == "single":
        return [_run_one(cfgs[0], root, paths[0])]

    with _one_thread():
        results = train_packed(cfgs, root=root, group=group)
    for result, path in zip(results, paths):
        result["torch_threads"] = THREADS_PER_RUN
        atomic_write_json(path, result)
    return results


def _units(configs: Sequence[TrainConfig], todo: Sequence[int], lost: Optional[Mapping] = None) -> List[List[int]]:
    """The runs ``todo`` (indices into ``configs``) as units of work, in ``todo`` order: a
    single-engine run alone; packed runs of one configuration (all but the seed and the learning
    rate: the seeds of a learning-rate selection train together) together, at most
    :func:`sbnlib.experiments.packed.pack_size` of them per unit. ``lost`` (:func:`_lost_groups`)
    maps a run whose packed group is known from a surviving member's record to that group's member
    hashes: its missing members form a unit of their own, to be trained at the group's size."""
    lost = lost or {}
    groups: dict = {}
    for i in todo:
        c = configs[i]
        key = config_hash(dataclasses.replace(c, seed=0, lr=0.0)) if c.engine == "packed" else i
        groups.setdefault(lost[i] if i in lost else key, []).append(i)
    units = []
    for members in groups.values():
        size = pack_size(configs[members[0]].batch_size) if configs[members[0]].engine == "packed" else 1
        size = len(members) if members[0] in lost else size  # a lost group: its missing members, whole
        units += [members[k:k + size] for k in range(0, len(members), size)]
    return units


def _lost_groups(configs: Sequence[TrainConfig], results: Sequence[Optional[dict]]) -> dict:
    """Index of each missing packed run -> the member hashes of the group it was trained in, where a
    surviving member's record lists it (``packed_group``): a packed run's last float bits may
    depend on its group's size, so a lost file is retrained at that size."""
    recorded = {}
    for r in results:
        if r is not None and r.get("packed_group"):
            for h in r["packed_group"]:
                recorded[h] = tuple(r["packed_group"])
    return {i: recorded[config_hash(c)] for i, (c, r) in enumerate(zip(configs, results))
            if r is None and c.engine == "packed" and config_hash(c) in recorded}


def run_configs(configs: Sequence[TrainConfig], runs_dir, root=None, jobs: int = 1,
                progress: bool = True, desc: str = "runs", scheduler=None,
                stop: Optional[Callable[[], bool]] = None) -> List[dict]:
    """Run every config whose result file is missing; return all results in ``configs`` order.

    ``jobs`` > 1 runs that many worker processes. ``scheduler`` (a Dask scheduler address or a
    ``distributed.Client``) runs them on that cluster instead (``jobs`` is then ignored). The workers
    need sbnlib installed, the data at ``root`` and ``runs_dir`` writable: they write the result
    files there, so on a multi-machine cluster ``runs_dir`` should be on a shared filesystem; the
    client also writes every result it receives whose file it does not see. Finished runs are
    written as they finish, so an interruption loses at most the runs in flight.

    Runs with ``engine="packed"`` that differ only in the seed (and learning rate) are trained
    together, up to :func:`sbnlib.experiments.packed.pack_size` seeds per group, taken in the order
    of ``configs`` among the runs whose file is missing, and their files are written when their
    group ends; ``jobs`` then runs that many groups at once. A packed run's last float bits may
    depend on its group's size (:func:`sbnlib.experiments.packed.train_packed`); groups are whole
    or stopped before they start, so a stopped sweep's missing runs re-form the same groups when
    it resumes, and a run whose file alone was lost is retrained at its group's size where a
    surviving member's record lists the group (``packed_group``; records made before that field
    do not, and such a run is grouped like any other missing run).

    ``stop`` (local processes only; see :func:`sbnlib.experiments.workers.stop_condition`) is asked before each run or packed
    group starts: once it returns True no new one starts, those in flight finish and are written, and
    :class:`SweepStopped` is raised. Rerunning the sweep continues from there.
    """


    if not is_int(jobs) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if stop is not None and scheduler is not None:
        raise ValueError("stop works with local processes only; a Dask cluster's runs are stopped on the cluster")
    runs_dir = ensure_writable_dir(runs_dir)
    paths = [result_path(runs_dir, c) for c in configs]
    results: List[Optional[dict]] = [load_result(p, c) for p, c in zip(paths, configs)]
    todo = [i for i, r in enumerate(results) if r is None]
    # longest first (small batches take the most steps), which also balances the workers
    todo.sort(key=lambda i: (configs[i].epochs * (configs[i].n_train or 60000) / configs[i].batch_size), reverse=True)
    if progress and not todo:  # one line, not a bar drawn twice at 100%
        print(f"{desc}: 100% of {len(configs)} runs cached", file=sys.stdout, flush=True)
    bar = tqdm(total=len(configs), initial=len(configs) - len(todo), desc=desc, unit="run",
               disable=not progress or not todo, file=sys.stdout, mininterval=5)
    root = None if root is None else str(root)
    lost = _lost_groups(configs, results)
    units = _units(configs, todo, lost)

    def done(unit, unit_results):
        for i, r in zip(unit, unit_results):
            results[i] = r
        bar.update(len(unit))  # the bar counts runs, a packed group's all at once

    left = _run_units(units, configs, paths, root, jobs, scheduler, done, stop or (lambda: False), lost)
    bar.close()
    if left:
        raise SweepStopped(sum(r is not None for r in results), sum(len(u) for u in left))
    return results


def _run_units(units, configs, paths, root, jobs: int, scheduler, done, stop, groups=None) -> list:
    """Run the units of work (:func:`_units`) in this process, in ``jobs`` worker processes or on a
    Dask cluster, calling ``done(unit, results)`` as each one ends; returns the units not started
    because ``stop()`` said so. ``groups``: a unit's lost group (by its first run), where it is known."""
    def task(unit):
        return [configs[i] for i in unit], root, [str(paths[i]) for i in unit], (groups or {}).get(unit[0])

    if scheduler is not None and units:
        client, owned = dask_client(scheduler)  # first: without dask, the error names the fix
        from distributed import as_completed as dask_completed

        try:
            futures = {client.submit(_run_unit, *task(u), pure=False): u for u in units}
            for fut in dask_completed(futures):
                unit, unit_results = futures[fut], fut.result()
                done(unit, unit_results)
                for i, r in zip(unit, unit_results):
                    if not paths[i].exists():  # the worker wrote it on its own disk
                        atomic_write_json(paths[i], r)
        finally:
            if owned:
                client.close()
    elif jobs == 1 or len(units) <= 1:
        for k, unit in enumerate(units):
            if stop():
                return units[k:]
            done(unit, _run_unit(*task(unit)))
    else:
        queue = list(units)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            running: dict = {}
            while True:
                # at most `jobs` units submitted at a time, so that each new one can still be held back
                while queue and len(running) < jobs and not stop():
                    unit = queue.pop(0)
                    running[pool.submit(_run_unit, *task(unit))] = unit
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    done(running.pop(fut), fut.result())
        return queue
    return []


def iter_results(results: Iterable[dict]):
    """Rows (dicts) for a DataFrame: config columns plus the run metrics of :mod:`sbnlib.experiments.stats`.

    ``n_test_eval`` / ``n_val_eval``: how many test / validation images the run's accuracies were
    computed on (the record's ``data``: ``n_test``, ``n_val``; NaN where not recorded or 0), so an
    accuracy is a multiple of ``1 / n_test_eval`` (:func:`sbnlib.experiments.stats.accuracy_resolution`).
    """
    for r in results:
        c = {**LATER_FIELDS, **r["config"]}  # a stored configuration leaves a later field at its default out
        data = r.get("data") or {}
        yield {"dataset": c["dataset"], "method": c["method"], "batch_size": c["batch_size"],
               "seed": c["seed"], "lr": c["lr"], "scorer": c["scorer"], "threshold": c["threshold"],
               "threshold_q": c["threshold_q"], "threshold_rate": c["threshold_rate"],
               "scope": c["scope"], "reform_batches": c["reform_batches"],
               "status": r["status"], "wall_time_s": r["wall_time_s"],
               "n_test_eval": float(data.get("n_test") or "nan"), "n_val_eval": float(data.get("n_val") or "nan"),
               **run_metrics(r)}
