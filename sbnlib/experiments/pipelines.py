"""What the experiment and feasibility notebooks call: validated parameters, one dataset's sweep
(learning-rate selection, then the evaluation runs), its tables and figures.

The notebooks stay thin: each cell calls one function here (or in :mod:`.studies`, for the
summary, the ablation and the readings) and displays what it returns.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import pandas as pd

from ..assess import evidence
from ..assess.core import assess, domain_auroc_table
from ..assess.figures import plot_example_batches, plot_frac_needs_bn, plot_score_histograms
from ..batches import make_batch_plan
from ..checks import is_int
from ..data import dataset_names, load_dataset
from ..io import atomic_write_json, ensure_writable_dir
from ..provenance import portable
from ..scoring import SCORERS
from ..threshold import STRATEGIES
from . import budget, report, tables
from .config import METHODS
from .plots import plot_accuracy_vs_batch, plot_learning_curves, plot_loss_curves, plot_seed_accuracy, plot_stability
from .stats import chosen_learning_rates, select_learning_rates
from .sweep import (
    PROFILES,
    dask_client,
    experiment_configs,
    iter_results,
    profile_params,
    run_configs,
    tuning_configs,
    widening_configs,
)

__all__ = ["ParameterError", "REPO_ROOT", "Params", "resolve_params", "load", "run", "analyse", "feasibility"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class ParameterError(ValueError):
    """A notebook or command-line parameter is invalid; the message names it and the fix."""


def _repo_path(p) -> Path:
    """Relative paths are relative to the repository root, wherever the notebook runs from."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p)


def _split(value):
    """A list given as text (``papermill -p batch_sizes "[2, 4, 8]"`` or ``"2 4 8"``) -> its items."""
    if isinstance(value, str):
        items = [v for v in value.strip().strip("[]()").replace(",", " ").split() if v]
        return [v.strip("'\"") for v in items]
    return value


def _check_int_list(name, values, lo=1) -> List[int]:
    values = _split(values)
    if isinstance(values, list):
        values = [int(v) if isinstance(v, str) and v.lstrip("-").isdigit() else v for v in values]
    if is_int(values):
        values = [values]
    try:
        values = list(values)
    except TypeError:
        raise ParameterError(f"{name} must be a list of integers, got {values!r}") from None
    if not values:
        raise ParameterError(f"{name} is empty; give at least one value")
    for v in values:
        if not is_int(v) or v < lo:
            raise ParameterError(f"{name} must hold integers >= {lo}, got {v!r} in {values!r}")
    return values


@dataclass
class Params:
    """Validated parameters of one dataset's notebooks (profile values filled in)."""
    dataset: str
    profile: str
    sweep: dict
    data_root: Optional[str]
    output_dir: Path
    jobs: int
    scheduler: object = None  # a Dask scheduler address or distributed.Client; None: local processes
    stop: object = None  # for scripts/accrue_runs.py: no new run starts once stop() is true (workers.stop_condition)

    @property
    def out(self) -> Path:
        return self.output_dir / self.dataset


def default_output_dir(profile: str) -> str:
    """Where a profile writes by default: the committed ``outputs/`` for ``cpu`` only, so that no
    other profile's run can overwrite the committed results; ``outputs/<profile>`` (ignored by git)."""
    return "outputs" if profile == "cpu" else f"outputs/{profile}"


def resolve_params(dataset="mnist", profile="cpu", batch_sizes=None, seeds=None, epochs=None,
                   methods=None, n_train=None, n_test=None, data_root=None, output_dir=None,
                   jobs=1, scheduler=None) -> Params:
    """Validate notebook parameters; raise one :class:`ParameterError` naming the problem and the fix."""
    if dataset not in dataset_names():
        raise ParameterError(f"unknown dataset {dataset!r}; choose one of {dataset_names()}")
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    if batch_sizes is not None:
        batch_sizes = _check_int_list("batch_sizes", batch_sizes)
    if isinstance(seeds, str) and seeds.strip().isdigit():
        seeds = int(seeds)
    if seeds is not None and not isinstance(seeds, int):
        seeds = _check_int_list("seeds", seeds, lo=0)
    if seeds is not None and isinstance(seeds, int) and (isinstance(seeds, bool) or seeds < 1):
        raise ParameterError(f"seeds must be a count >= 1 or a list of integers, got {seeds!r}")
    if epochs is not None and (not is_int(epochs) or epochs < 1):
        raise ParameterError(f"epochs must be an integer >= 1, got {epochs!r}")
    if methods is not None:
        methods = list(_split(methods))
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise ParameterError(f"unknown method {bad[0]!r}; choose from {sorted(METHODS)}")
        if not {"bn", "sbn"} <= set(methods):
            raise ParameterError(f"methods must include 'bn' and 'sbn' (the comparison), got {methods!r}")
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if v is not None and (not is_int(v) or v < 1):
            raise ParameterError(f"{name} must be a positive integer or None (the profile's), got {v!r}")
    if not is_int(jobs) or jobs < 1:
        raise ParameterError(f"jobs must be an integer >= 1, got {jobs!r}")
    try:
        sweep = profile_params(profile, dataset, batch_sizes=batch_sizes, seeds=seeds, epochs=epochs,
                               methods=methods, n_train=n_train, n_test=n_test)
    except ValueError as e:
        raise ParameterError(str(e)) from None
    if sweep["n_train"] is not None and max(sweep["batch_sizes"]) > sweep["n_train"]:
        raise ParameterError(f"batch size {max(sweep['batch_sizes'])} is larger than n_train={sweep['n_train']}; "
                             "drop it or raise n_train")
    if data_root is None and not os.environ.get("SBN_DATA_ROOT"):
        data_root = str(REPO_ROOT / "data")
    elif data_root is not None:
        data_root = str(_repo_path(data_root))
    out = _repo_path(default_output_dir(profile) if output_dir is None else output_dir)
    try:
        ensure_writable_dir(out / dataset, option="output_dir")
    except OSError as e:
        raise ParameterError(str(e)) from None
    if scheduler is not None:  # connect once now, so that a bad address stops the notebook at the top
        try:
            client, owned = dask_client(scheduler)
        except (ImportError, ValueError) as e:
            raise ParameterError(str(e)) from None
        if owned:
            client.close()
    return Params(dataset, profile, sweep, data_root, out, jobs, scheduler)


def load(P: Params, download: bool = False):
    """The dataset at the sweep's subset sizes (the same arrays every run trains on).

    ``download=True`` fetches missing files through torchvision first (needs internet).
    """
    return load_dataset(P.dataset, root=P.data_root, download=bool(download), n_train=P.sweep["n_train"],
                        n_test=P.sweep["n_test"], seed=P.sweep["data_seed"])


# ----------------------------------------------------------------------------------------------
# Feasibility (no training)
# ----------------------------------------------------------------------------------------------

def feasibility(P: Params, ds, scorer="feature_std", threshold="mean"):
    """Score every batch at each batch size; write JSON, CSV and figures; return (result, table)."""


    if scorer not in SCORERS:
        raise ParameterError(f"unknown scorer {scorer!r}; choose one of {sorted(SCORERS)}")
    if threshold not in STRATEGIES:
        raise ParameterError(f"unknown threshold {threshold!r}; choose one of {list(STRATEGIES)}")
    x = ds.normalize(ds.x_train)
    res = assess(x, P.sweep["batch_sizes"], scorer, threshold, seed=0, progress=True)
    res.update(dataset=P.dataset, data=portable(ds.provenance))
    out = P.out
    table = pd.DataFrame([{k: r[k] for k in ("batch_size", "n_batches", "threshold", "frac_needs_bn",
                                              "score_mean", "score_std")} for r in res["batch_sizes"]]).set_index("batch_size")
    prov = tables.make_provenance(ds.provenance, P.profile, {**P.sweep, "scorer": scorer, "threshold": threshold})
    tables.write_table(table, out, "feasibility", f"{P.dataset}: which training batches need BN", prov)
    figs = {
        "hist": plot_score_histograms(res, out / "feasibility_scores.png",
                                      title=f"{P.dataset}: batch heterogeneity ({scorer}, threshold {threshold})"),
        "frac": plot_frac_needs_bn(res, out / "feasibility_fraction.png", title=f"{P.dataset}: which batches need BN"),
    }
    if ds.domain_train is not None:  # a known mix of sources: which scorer finds the mixed batches?
        from ..assess.core import plan_ordering_table
        from ..data import validation_split
        from .sweep import _seed_list

        # 1. the batches training sees: the evaluation seeds' batch plans over the trainer's training
        # split (the validation images held out as train.training_data holds them out)
        train_idx, _ = validation_split(ds.y_train, P.sweep.get("val_frac", 0.0), seed=P.sweep["data_seed"])
        seeds = _seed_list(P.sweep["seeds"])
        order = plan_ordering_table(x[train_idx], ds.domain_train[train_idx], P.sweep["batch_sizes"], seeds=seeds)
        by_size = order.groupby(level="batch_size").first()  # n_batches and the shares: the same for every scorer
        what = (f"every batch of the batch plans of the evaluation seeds {seeds} (pooled: column n_batches) over the "
                f"{len(train_idx)} training images that remain after the validation split (val_frac "
                f"{P.sweep.get('val_frac', 0.0)}), the batches the evaluation runs train on; minority share = "
                "min(share of source 0, share of source 1) of a batch. Fitted scorers are fitted once on those "
                "training images, without the sources, as the trainer fits them.")
        spearman = pd.concat([by_size[["n_batches", "minority_share_mean"]],
                              order["spearman"].unstack("scorer")], axis=1).round(3)
        tables.write_table(spearman, out, "feasibility_plan_ordering",
                           f"{P.dataset}: does each scorer order the training batches by their mixture?", prov,
                           "Spearman rank correlation between each scorer's batch score (one column per scorer) "
                           f"and the batch's minority-source share, over {what} Positive: the more mixed "
                           "batches score higher; 0: the score does not see the mixture.")
        plan_auroc = pd.concat([by_size[["n_batches", "n_high", "n_low"]].rename(
            columns={"n_high": "n_share_ge_25pct", "n_low": "n_share_le_5pct"}),
            order["auroc"].unstack("scorer")], axis=1).round(3)
        tables.write_table(plan_auroc, out, "feasibility_plan_auroc",
                           f"{P.dataset}: do the training batches with a minority share >= 25% score above "
                           "those with <= 5%?", prov,
                           "AUROC of each scorer's batch score (one column per scorer) for the batches with a "
                           "minority-source share >= 25% (n_share_ge_25pct) against those with <= 5% "
                           f"(n_share_le_5pct), over {what} n/a: one of the two groups is empty (at large batch "
                           "sizes a random batch of the mix is never nearly pure). 0.5 = chance, 1 = perfect.")
        rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}  # n/a -> null
                for r in order.reset_index().to_dict(orient="records")]
        res["plan_ordering"] = {"batches": what, "seeds": seeds, "n_train_images": int(len(train_idx)),
                                "share_high": 0.25, "share_low": 0.05, "rows": rows}
        # 2. the controlled check: balanced half/half batches against pure ones, drawn for the check
        auroc = domain_auroc_table(x, ds.domain_train, P.sweep["batch_sizes"], n_batches=500)
        tables.write_table(auroc.round(3), out, "feasibility_auroc",
                           f"{P.dataset}: balanced half/half batches vs pure batches (batches training never sees "
                           "at B >= 8): does each scorer rank the half/half ones above the pure ones?", prov,
                           "AUROC of each scorer's batch score (one column per scorer) for 500 batches drawn half "
                           "from each source against 500 batches drawn from one source, the same batches for "
                           "every scorer (0.5 = chance, 1 = perfect ranking). Fitted scorers are fitted on the "
                           "training inputs, without the sources. These batches are drawn for the check, not "
                           "taken from the batch plan: a random batch of the mix is almost never pure at B >= 8 "
                           "(probability 2 * 0.5^B), so this separates extremes that training does not meet; "
                           "feasibility_plan_ordering and feasibility_plan_auroc rank the batches training sees.")
        res["domain_auroc"] = auroc.reset_index().to_dict(orient="records")
        res["domain_auroc_batches"] = ("500 balanced half/half batches vs 500 pure batches per batch size, drawn "
                                       "for the check from all training inputs (not the batch plan's batches)")
    atomic_write_json(out / "feasibility.json", res)
    sizes = [r["batch_size"] for r in res["batch_sizes"]]
    i = min(range(len(sizes)), key=lambda j: abs(sizes[j] - 8))  # the batch size closest to 8
    plan = make_batch_plan(x.shape[0], sizes[i], seed=0)
    figs["examples"] = plot_example_batches(ds.x_train[plan].numpy(), np.asarray(res["batch_sizes"][i]["scores"]),
                                            path=out / "feasibility_examples.png",
                                            title=f"{P.dataset}: most and least heterogeneous batches of {sizes[i]}")
    return res, table, figs


# ----------------------------------------------------------------------------------------------
# Experiment
# ----------------------------------------------------------------------------------------------

def tune(P: Params, ds=None, progress: bool = True):
    """Choose every method's peak learning rate per batch size on the validation split.

    Trains the tuning runs (:func:`sbnlib.experiments.sweep.tuning_configs`: every method x batch size x
    ``lr_grid`` value x tuning seed; results in ``<out>/tuning/``), then picks, per method and batch
    size, the value with the best mean final validation accuracy
    (:func:`sbnlib.experiments.stats.select_learning_rates`); where that value is the lowest or highest tried,
    the next one beyond it is trained and the choice made again (:func:`sbnlib.experiments.sweep.widening_configs`).
    Writes ``lr_selection.csv`` / ``.md``; returns the selection table. No test accuracy is read.
    """
    try:
        configs = tuning_configs(P.dataset, P.sweep)
    except ValueError as e:
        raise ParameterError(str(e)) from None
    for _ in range(int(P.sweep.get("lr_widen", 0)) + 1):  # the grid, then each widening round
        results = run_configs(configs, P.out / "tuning", root=P.data_root, jobs=P.jobs, progress=progress,
                              desc=f"{P.dataset} lr selection ({len(configs)} runs)", scheduler=P.scheduler, stop=P.stop)
        sel = select_learning_rates(pd.DataFrame(list(iter_results(results))))
        more = widening_configs(P.dataset, P.sweep, sel)
        if not more:
            break
        configs = configs + more
    if ds is not None:  # the table in percent, only where one is written
        table = sel.assign(val_acc_mean=(100 * sel.val_acc_mean).round(2), val_acc_std=(100 * sel.val_acc_std).round(2))
        prov = tables.make_provenance(ds.provenance, P.profile, P.sweep, results)
        edges = table[table.chosen & (table.edge != "")]
        tables.write_table(
            table.set_index(["method", "batch_size", "lr"]), P.out, "lr_selection",
            f"{P.dataset}: learning rate chosen per method and batch size on the validation split", prov,
            f"Peak learning rate at batch size 32 (scaled by sqrt(B/32) at batch size B) from the grid "
            f"{P.sweep['lr_grid']} (widened by halving or doubling, up to {P.sweep.get('lr_widen', 0)} steps, for a "
            f"method and batch size whose choice lay at an edge), chosen per method and batch size by the mean final "
            f"validation accuracy (%) over "
            f"the tuning seeds {P.sweep['tune_seeds']} (not evaluation seeds); ties go to the smaller rate. "
            + (f"{len(edges)} of {int(table.chosen.sum())} choices lie at an edge of the values tried (column edge): "
               "the grid should widen further there." if len(edges) else "No choice lies at an edge of the values tried."))
    return sel


def run(P: Params, selection=None, progress: bool = True):
    """Train every run of the sweep that has no result file yet, each method at the learning rate
    ``selection`` chose for it (:func:`tune`; None: the profile's ``lr`` for all); returns
    (results, DataFrame, wall time)."""
    t0 = time.perf_counter()
    lr_for = None if selection is None else chosen_learning_rates(selection)
    configs = experiment_configs(P.dataset, P.sweep, lr_for=lr_for)
    results = run_configs(configs, P.out / "runs", root=P.data_root, jobs=P.jobs, progress=progress,
                          desc=f"{P.dataset} ({len(configs)} runs)", scheduler=P.scheduler, stop=P.stop)
    df = pd.DataFrame(list(iter_results(results)))
    return results, df, time.perf_counter() - t0


BUDGET_MODES = ("train", "cached")  # the notebooks' budget_check parameter


def budget_check(P: Params, selection, progress: bool = True, mode: str = "train") -> pd.DataFrame:
    """Train the budget check of ``bn`` and ``sbn`` (:mod:`sbnlib.experiments.budget`: every batch size,
    the tuning seeds, 1x and 2x the epochs, each at its selected learning rate; runs in
    ``<out>/tuning/`` and ``<out>/budget/``); returns one row per run, with ``arm`` and ``factor``.
    ``mode="cached"`` trains nothing and reads the runs that exist (a batch size without them reads
    "not checked"): for rendering while the check's runs still accrue."""
    if mode not in BUDGET_MODES:
        raise ParameterError(f"budget_check must be one of {list(BUDGET_MODES)}, got {mode!r}")
    return budget.train_budget(P.out, P.dataset, P.sweep, chosen_learning_rates(selection), budget.MAIN_ARMS,
                               train=mode == "train", root=P.data_root, jobs=P.jobs, progress=progress,
                               scheduler=P.scheduler, stop=P.stop)


def open_edges(selection) -> list:
    """``(method, batch_size)`` whose selected learning rate lies at an open edge of the values tried."""
    rows = selection[selection["chosen"] & (selection["edge"] != "")]
    return [(m, int(b)) for m, b in zip(rows["method"], rows["batch_size"])]


def budget_labels(comparisons: pd.DataFrame, budget_runs: pd.DataFrame, selection, pairs=(("sbn", "bn"),)) -> pd.DataFrame:
    """The budget check's table (:func:`sbnlib.experiments.budget.budget_table`) for ``pairs`` of arms,
    labelled (:func:`sbnlib.experiments.budget.label`) with each comparison's MDE (``comparisons``:
    :func:`sbnlib.experiments.stats.compare_methods` rows, as fractions) and the open edges of ``selection``."""
    mde = {(r.treatment, r.baseline, int(r.batch_size)): 100 * float(r.mde_80) for r in comparisons.itertuples(index=False)}
    return budget.label(budget.budget_table(budget_runs, list(pairs)), mde, open_edges(selection))


def analyse(P: Params, ds, results, df: pd.DataFrame, selection=None, budget_runs=None) -> dict:
    """Accuracy table, stability analysis, verdicts, the budget check (``budget_runs``: :func:`budget_check`'s,
    with the ``selection`` it used; None: not checked), ``evidence.json``
    (:func:`sbnlib.experiments.report.evidence_record`) and figures; all written under ``P.out``."""
    methods = P.sweep["methods"]
    run_time = float(df["wall_time_s"].sum())
    prov = tables.make_provenance(ds.provenance, P.profile, P.sweep, results)
    acc = tables.accuracy_tables(df, methods, treatment="sbn", baselines=[m for m in ("bn", "random", "gn") if m in methods])
    stab = tables.stability_tables(df, methods)
    checked = budget_runs is not None and selection is not None
    checks = budget_labels(acc["comparisons"], budget_runs, selection) if checked else None
    verdicts = _verdicts(P, df, acc, stab, checks)
    convergence = tables.convergence_table(df, methods, budget_runs)
    files = _write_tables(P, df, prov, acc, stab, verdicts, convergence)
    if checks is not None:
        files["budget_check"] = tables.write_table(checks.set_index(["treatment", "baseline", "batch_size"]), P.out,
                                                   "budget_check", f"{P.dataset}: would twice the training change "
                                                   "the verdict?", prov, BUDGET_NOTE)
    recipe = tables.recipe_check(df, P.dataset)  # stated in REPORT; it gates nothing
    inference, collapse = _write_run_tables(P, results, df, prov, files)
    # the numbers behind the tables, for the advice of `assess` (which reads no rendered table)
    out = P.out
    record = report.evidence_record(P.dataset, prov, P.sweep, df.seed.nunique(), verdicts, acc["comparisons"],
                                    acc["summary"], acc["frac_normalized"])
    record["recipe_check"] = recipe
    record["collapse"] = ([] if not len(collapse) else  # machine column names (tables.COLLAPSE_COLUMNS' keys)
                          collapse.rename(columns={v: k for k, v in tables.COLLAPSE_COLUMNS.items()}).reset_index()
                          .round(4).to_dict(orient="records"))
    files["evidence"] = evidence.write_evidence(out, record)
    acc["comparisons"].to_csv(out / "comparisons_accuracy.csv", index=False)
    stab["comparisons"].to_csv(out / "comparisons_stability.csv", index=False)
    df.to_csv(out / "runs.csv", index=False)
    figs = _write_figures(P, results, df)
    evidence.write_status(out, "ok", data_status=ds.provenance["status"], training_time_s=round(run_time, 1),
                        runs=len(results), profile=P.profile,
                        parameters=P.sweep)
    return {"accuracy": acc["accuracy"], "convergence": convergence, "stability": stab["verdicts"],
            "stability_metrics": stab["summary"], "inference": inference, "collapse": collapse,
            "verdicts": verdicts, "files": files, "figures": figs, "provenance": prov}


def _verdicts(P: Params, df: pd.DataFrame, acc: dict, stab: dict, checks: Optional[pd.DataFrame]) -> pd.DataFrame:
    """The verdict per batch size (C1, C2, the controls), every batch size judged; column ``C1 budget``
    says whether twice the training would change C1 (``checks``: :func:`budget_labels`; None: not checked)."""
    c2 = tables.c2_verdicts(df, stab["comparisons"])
    verdicts = pd.DataFrame({"dataset": P.dataset, "batch_size": acc["accuracy"].index,
                             "C1": acc["accuracy"]["C1 vs bn"].values,
                             "C2": [c2.get(b, "inconclusive") for b in acc["accuracy"].index]})
    for base in ("random", "gn"):  # the controls: is it heterogeneity that matters? would GroupNorm do?
        if f"sbn vs {base}" in acc["accuracy"]:
            verdicts[f"sbn vs {base}"] = acc["accuracy"][f"sbn vs {base}"].values
    label = {} if checks is None else {int(b): v for b, v in zip(checks.batch_size, checks.budget)}
    verdicts["C1 budget"] = [label.get(int(b), "not checked") for b in verdicts.batch_size]
    return verdicts


BUDGET_NOTE = (
    "The budget check (sbnlib.experiments.budget): bn and sbn retrained at twice the epochs on the tuning seeds, "
    "each at its selected learning rate, and read on the validation split (never the test set). Columns: the mean "
    "paired difference sbn - bn in validation accuracy (pp) at 1x and 2x the epochs, its shift, each arm's mean "
    "validation accuracy, the MDE of the cell's test comparison (pp). A verdict is budget-sensitive (shown, not "
    "counted) where the doubled budget flips the sign of the difference or moves it by more than the MDE, or "
    "where either arm's learning rate lies at an open edge of the widened grid.")


def _accuracy_notes(P: Params, df: pd.DataFrame) -> str:
    """The notes under the accuracy table: what a cell is, the rules, divergence, BN's target."""
    diverged = df[df.diverged].groupby(["method", "batch_size"]).size()
    where = "; ".join(f"{m} {n} at B={b}" for (m, b), n in diverged.items())
    notes = (f"Cells: final test accuracy (%) mean ± std over {df.seed.nunique()} paired seeds. "
             "Differences in percentage points with a 95% bootstrap CI; p-values Holm-adjusted across batch sizes. "
             + report.C1_RULE + (f" Diverged runs ({where}): they count in the means with the test accuracy "
                                 "of the model where it stopped." if len(diverged) else " No run diverged."))
    notes += (" Every batch size is judged; column C1 budget says whether twice the training would change C1 "
              "(table budget_check; a budget-sensitive verdict is shown, not counted).")
    notes += " " + report.MDE_RULE
    return notes


def _write_tables(P: Params, df: pd.DataFrame, prov: dict, acc: dict, stab: dict, verdicts: pd.DataFrame,
                  convergence: pd.DataFrame) -> dict:
    """Write the accuracy, convergence, stability and verdict tables; returns their files by name."""
    out = P.out
    return {
        "accuracy": tables.write_table(acc["accuracy"], out, "accuracy",
                                       f"{P.dataset}: test accuracy, BN vs selective BN", prov, _accuracy_notes(P, df)),
        "convergence": tables.write_table(
            convergence, out, "convergence", f"{P.dataset}: did every method converge?", prov,
            "Means over the evaluation seeds, each method at its selected learning rate (lr_selection). Training "
            "accuracy on the last epoch's batches as trained; the validation accuracy gained over the last two "
            "epochs (below 0.5 pp: plateaued)."),
        "stability": tables.write_table(stab["verdicts"], out, "stability", f"{P.dataset}: stability analysis, sbn vs bn", prov,
                                        "BN transformations = layer x batch normalisations per run (mean over seeds). "
                                        "Verdict and Holm-adjusted Wilcoxon p per stability metric (lower = more stable). "
                                        + report.C2_RULE),
        "stability_metrics": tables.write_table(stab["summary"], out, "stability_metrics",
                                                f"{P.dataset}: stability metrics, mean over seeds", prov),
        "verdicts": tables.write_table(verdicts.set_index("batch_size"), out, "verdicts", f"{P.dataset}: verdicts", prov),
    }


_INFERENCE_NOTE = (
    "Test accuracy of the trained networks under three inference policies (standard eval with running "
    "statistics; test batches of the training batch size scored and normalised only above the training "
    "threshold; BN bypassed), and the drift of BN's running statistics from the statistics of the "
    "inputs they normalise at inference (0 = exact). Means over seeds.")
_COLLAPSE_NOTE = (
    "Means over seeds. Training loss over the last epoch's steps, split into steps that ran BN and steps "
    "that skipped it; training accuracy on the last epoch's batches as trained; final test accuracy. A "
    "training loss that stays high means the network did not fit (optimisation); a low training loss "
    "with a low test accuracy points at inference (the running statistics).")


def _write_run_tables(P: Params, results, df: pd.DataFrame, prov: dict, files: dict):
    """Write the inference and collapse tables where the runs measured them (their files added to
    ``files``); returns both tables."""
    built = {"inference": (tables.inference_table(df), "train/test consistency of selective BN", _INFERENCE_NOTE),
             "collapse": (tables.collapse_table(results), "where selective BN loses accuracy, training or inference",
                          _COLLAPSE_NOTE)}
    for name, (table, title, note) in built.items():
        if len(table):  # empty when no run measured them (no selective or BN method in the sweep)
            files[name] = tables.write_table(table, P.out, name, f"{P.dataset}: {title}", prov, note)
    return built["inference"][0], built["collapse"][0]


def _write_figures(P: Params, results, df: pd.DataFrame) -> dict:
    """Draw the accuracy, per-seed, learning-curve, loss and stability figures; returns their files by name."""
    out, methods, bs = P.out, P.sweep["methods"], P.sweep["batch_sizes"]
    return {
        "accuracy": plot_accuracy_vs_batch(df, methods, out / "accuracy_vs_batch.png",
                                           title=f"{P.dataset}: test accuracy vs batch size (mean, 95% CI)"),
        "seeds": plot_seed_accuracy(df, methods, out / "accuracy_per_seed.png",
                                    title=f"{P.dataset}: final test accuracy of every seed"),
        "learning": plot_learning_curves(results, methods, out / "learning_curves.png",
                                         title=f"{P.dataset}: validation accuracy per epoch (median over seeds)"),
        "loss": plot_loss_curves(results, sorted({bs[0], bs[len(bs) // 2], bs[-1]}), methods, out / "loss_curves.png",
                                 title=f"{P.dataset}: training loss (median over seeds)"),
        "stability": plot_stability(df, methods, {m: lab for m, (lab, _) in tables.STABILITY_METRICS.items() if m != "spread"},
                                    out / "stability.png", title=f"{P.dataset}: stability metrics (lower = more stable)"),
    }
