"""What the notebooks call: validated parameters, one dataset's sweep, its tables and figures.

The notebooks stay thin: each cell calls one function here and displays what it returns.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pandas as pd

from . import report
from .data import dataset_names, load_dataset
from .io import atomic_write_json, ensure_writable_dir
from .provenance import portable
from .scoring import SCORERS
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
from .threshold import STRATEGIES
from .train import METHODS

__all__ = ["ParameterError", "REPO_ROOT", "Params", "resolve_params", "load", "run", "analyse", "feasibility",
           "readings"]

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values]
    try:
        values = list(values)
    except TypeError:
        raise ParameterError(f"{name} must be a list of integers, got {values!r}") from None
    if not values:
        raise ParameterError(f"{name} is empty; give at least one value")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
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
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ParameterError(f"epochs must be an integer >= 1, got {epochs!r}")
    if methods is not None:
        methods = list(_split(methods))
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise ParameterError(f"unknown method {bad[0]!r}; choose from {sorted(METHODS)}")
        if not {"bn", "sbn"} <= set(methods):
            raise ParameterError(f"methods must include 'bn' and 'sbn' (the comparison), got {methods!r}")
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ParameterError(f"{name} must be a positive integer or None (the profile's), got {v!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ParameterError(f"jobs must be an integer >= 1, got {jobs!r}")
    try:
        sweep = profile_params(profile, batch_sizes=batch_sizes, seeds=seeds, epochs=epochs,
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
    import numpy as np

    from .assess import assess
    from .data import make_batch_plan
    from .plots import plot_example_batches, plot_frac_needs_bn, plot_score_histograms

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
    prov = report.make_provenance(ds.provenance, P.profile, {**P.sweep, "scorer": scorer, "threshold": threshold})
    report.write_table(table, out, "feasibility", f"{P.dataset}: which training batches need BN", prov)
    figs = {
        "hist": plot_score_histograms(res, out / "feasibility_scores.png",
                                      title=f"{P.dataset}: batch heterogeneity ({scorer}, threshold {threshold})"),
        "frac": plot_frac_needs_bn(res, out / "feasibility_fraction.png", title=f"{P.dataset}: which batches need BN"),
    }
    if ds.domain_train is not None:  # a known mix of sources: which scorer finds the mixed batches?
        from .assess import domain_auroc_table

        auroc = domain_auroc_table(x, ds.domain_train, P.sweep["batch_sizes"], n_batches=500)
        report.write_table(auroc.round(3), out, "feasibility_auroc",
                           f"{P.dataset}: does each scorer rank mixed batches above pure ones?", prov,
                           "AUROC of each scorer's batch score (one column per scorer) for 500 batches drawn half "
                           "from each source against 500 batches drawn from one source, the same batches for "
                           "every scorer (0.5 = chance, 1 = perfect ranking). Fitted scorers are fitted on the "
                           "training inputs, without the sources.")
        res["domain_auroc"] = auroc.reset_index().to_dict(orient="records")
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

    Trains the tuning runs (:func:`sbnlib.sweep.tuning_configs`: every method x batch size x
    ``lr_grid`` value x tuning seed; results in ``<out>/tuning/``), then picks, per method and batch
    size, the value with the best mean final validation accuracy
    (:func:`sbnlib.stats.select_learning_rates`); where that value is the lowest or highest tried,
    the next one beyond it is trained and the choice made again (:func:`sbnlib.sweep.widening_configs`).
    Writes ``lr_selection.csv`` / ``.md``; returns the selection table. No test accuracy is read.
    """
    from .stats import select_learning_rates

    try:
        configs = tuning_configs(P.dataset, P.sweep)
    except ValueError as e:
        raise ParameterError(str(e)) from None
    for _ in range(int(P.sweep.get("lr_widen", 0)) + 1):  # the grid, then each widening round
        results = run_configs(configs, P.out / "tuning", root=P.data_root, jobs=P.jobs, progress=progress,
                              desc=f"{P.dataset} lr selection ({len(configs)} runs)", scheduler=P.scheduler)
        sel = select_learning_rates(pd.DataFrame(list(iter_results(results))))
        more = widening_configs(P.dataset, P.sweep, sel)
        if not more:
            break
        configs = configs + more
    if ds is not None:  # the table in percent, only where one is written
        table = sel.assign(val_acc_mean=(100 * sel.val_acc_mean).round(2), val_acc_std=(100 * sel.val_acc_std).round(2))
        prov = report.make_provenance(ds.provenance, P.profile, P.sweep, results)
        edges = table[table.chosen & (table.edge != "")]
        report.write_table(
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
    from .stats import chosen_learning_rates

    t0 = time.perf_counter()
    lr_for = None if selection is None else chosen_learning_rates(selection)
    configs = experiment_configs(P.dataset, P.sweep, lr_for=lr_for)
    results = run_configs(configs, P.out / "runs", root=P.data_root, jobs=P.jobs, progress=progress,
                          desc=f"{P.dataset} ({len(configs)} runs)", scheduler=P.scheduler)
    df = pd.DataFrame(list(iter_results(results)))
    return results, df, time.perf_counter() - t0


def analyse(P: Params, ds, results, df: pd.DataFrame) -> dict:
    """Accuracy table, stability analysis, verdicts, ``evidence.json`` (:func:`sbnlib.report.evidence_record`)
    and figures; all written under ``P.out``."""
    from .plots import plot_accuracy_vs_batch, plot_learning_curves, plot_loss_curves, plot_seed_accuracy, plot_stability

    methods = P.sweep["methods"]
    run_time = float(df["wall_time_s"].sum())
    prov = report.make_provenance(ds.provenance, P.profile, P.sweep, results)
    acc = report.accuracy_tables(df, methods, treatment="sbn", baselines=[m for m in ("bn", "random", "gn") if m in methods])
    stab = report.stability_tables(df, methods)
    c2 = report.c2_verdicts(df, stab["comparisons"])
    verdicts = pd.DataFrame({"dataset": P.dataset, "batch_size": acc["accuracy"].index,
                             "C1": acc["accuracy"]["C1 vs bn"].values,
                             "C2": [c2.get(b, "inconclusive") for b in acc["accuracy"].index]})
    for base in ("random", "gn"):  # the controls: is it heterogeneity that matters? would GroupNorm do?
        if f"sbn vs {base}" in acc["accuracy"]:
            verdicts[f"sbn vs {base}"] = acc["accuracy"][f"sbn vs {base}"].values
    # a verdict that rests on a BN baseline below its target is labelled, not counted
    converged = report.bn_converged(df, P.dataset)
    verdict_cols = ["C1", "C2", "sbn vs random", "sbn vs gn", "C1 vs bn"]
    acc["accuracy"] = report.label_unconverged(acc["accuracy"], converged, verdict_cols)
    verdicts = report.label_unconverged(verdicts.set_index("batch_size"), converged, verdict_cols).reset_index()
    verdicts["bn converged"] = [{True: "yes", False: "no", None: "no target"}[converged.get(int(b))]
                                for b in verdicts.batch_size]
    convergence = report.convergence_table(df, methods)
    diverged = df[df.diverged].groupby("method").size().to_dict()
    notes = (f"Cells: final test accuracy (%) mean ± std over {df.seed.nunique()} paired seeds. "
             "Differences in percentage points with a 95% bootstrap CI; p-values Holm-adjusted across batch sizes. "
             + report.C1_RULE + (f" Diverged runs: {diverged}." if diverged else " No run diverged."))
    target = report.BN_TARGETS.get(P.dataset)
    notes += (f" BN's target on {P.dataset}: {100 * target:.1f}% test accuracy; at a batch size where BN's mean falls "
              f"short, every verdict reads '{report.NOT_CONVERGED}' and is not counted." if target is not None else
              f" {P.dataset} has no BN target, so convergence is judged by the validation gain alone (table convergence).")
    notes += " MDE 80%: the paired difference these seeds would detect with 80% power (Holm's first-step level)."
    out = P.out
    files = {
        "accuracy": report.write_table(acc["accuracy"], out, "accuracy",
                                       f"{P.dataset}: test accuracy, BN vs selective BN", prov, notes),
        "convergence": report.write_table(
            convergence, out, "convergence", f"{P.dataset}: did every method converge?", prov,
            "Means over the evaluation seeds, each method at its selected learning rate (lr_selection). Training "
            "accuracy on the last epoch's batches as trained; the validation accuracy gained over the last two "
            "epochs (below 0.5 pp: plateaued)."),
        "stability": report.write_table(stab["verdicts"], out, "stability", f"{P.dataset}: stability analysis, sbn vs bn", prov,
                                        "BN transformations = layer x batch normalisations per run (mean over seeds). "
                                        "Verdict and Holm-adjusted Wilcoxon p per stability metric (lower = more stable). "
                                        + report.C2_RULE),
        "stability_metrics": report.write_table(stab["summary"], out, "stability_metrics",
                                                f"{P.dataset}: stability metrics, mean over seeds", prov),
        "verdicts": report.write_table(verdicts.set_index("batch_size"), out, "verdicts", f"{P.dataset}: verdicts", prov),
    }
    inference = report.inference_table(df)
    if len(inference):
        files["inference"] = report.write_table(
            inference, out, "inference", f"{P.dataset}: train/test consistency of selective BN", prov,
            "Test accuracy of the trained networks under three inference policies (standard eval with running "
            "statistics; test batches of the training batch size scored and normalised only above the training "
            "threshold; BN bypassed), and the drift of BN's running statistics from the statistics of the "
            "inputs they normalise at inference (0 = exact). Means over seeds.")
    collapse = report.collapse_table(results)
    if len(collapse):
        files["collapse"] = report.write_table(
            collapse, out, "collapse", f"{P.dataset}: where selective BN loses accuracy, training or inference", prov,
            "Means over seeds. Training loss over the last epoch's steps, split into steps that ran BN and steps "
            "that skipped it; training accuracy on the last epoch's batches as trained; final test accuracy. A "
            "training loss that stays high means the network did not fit (optimisation); a low training loss "
            "with a low test accuracy points at inference (the running statistics).")
    # the numbers behind the tables, for the advice of `assess` (which reads no rendered table)
    files["evidence"] = report.write_evidence(out, report.evidence_record(
        P.dataset, prov, P.sweep, df.seed.nunique(), verdicts, acc["comparisons"], acc["summary"], acc["frac_normalized"]))
    acc["comparisons"].to_csv(out / "comparisons_accuracy.csv", index=False)
    stab["comparisons"].to_csv(out / "comparisons_stability.csv", index=False)
    df.to_csv(out / "runs.csv", index=False)
    bs = P.sweep["batch_sizes"]
    figs = {
        "accuracy": plot_accuracy_vs_batch(df, methods, out / "accuracy_vs_batch.png",
                                           title=f"{P.dataset}: test accuracy vs batch size (mean, 95% CI)"),
        "seeds": plot_seed_accuracy(df, methods, out / "accuracy_per_seed.png",
                                    title=f"{P.dataset}: final test accuracy of every seed"),
        "learning": plot_learning_curves(results, methods, out / "learning_curves.png",
                                         title=f"{P.dataset}: validation accuracy per epoch (median over seeds)"),
        "loss": plot_loss_curves(results, sorted({bs[0], bs[len(bs) // 2], bs[-1]}), methods, out / "loss_curves.png",
                                 title=f"{P.dataset}: training loss (median over seeds)"),
        "stability": plot_stability(df, methods, {m: lab for m, (lab, _) in report.STABILITY_METRICS.items() if m != "spread"},
                                    out / "stability.png", title=f"{P.dataset}: stability metrics (lower = more stable)"),
    }
    report.write_status(out, "ok", data_status=ds.provenance["status"], training_time_s=round(run_time, 1),
                        runs=len(results), profile=P.profile,
                        parameters=P.sweep)
    return {"accuracy": acc["accuracy"], "convergence": convergence, "stability": stab["verdicts"],
            "stability_metrics": stab["summary"], "inference": inference, "collapse": collapse,
            "verdicts": verdicts, "files": files, "figures": figs, "provenance": prov}


def summary(datasets, output_dir="outputs"):  # run_all.sh passes the profile's folder
    """Collect every dataset's verdicts; write REPORT.md.

    ``datasets`` and after them every other dataset with results in ``output_dir`` (a
    ``status.json``): a run of some datasets does not drop the others from the report.
    Returns ``(verdicts, statuses, report_path, extra)``; ``extra["sanity"]`` is the BN-vs-GroupNorm
    table and ``extra["collapse"]`` the collapse diagnosis in words."""
    out = _repo_path(output_dir)
    datasets = list(datasets) + [d for d in dataset_names() if d not in datasets and (out / d / "status.json").is_file()]
    frames, statuses = [], {}
    for d in datasets:
        statuses[d] = report.read_status(out / d)
        v = out / d / "verdicts.csv"
        if statuses[d]["status"] == "ok" and v.exists():
            f = pd.read_csv(v, comment="#")
            frames.append(f[["dataset", "batch_size", "C1", "C2"] + [c for c in f.columns if c.startswith("sbn vs ")]
                            + [c for c in ("bn converged",) if c in f.columns]])
    verdicts = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["dataset", "batch_size", "C1", "C2"])
    ran = {d: st for d, st in statuses.items() if st["status"] == "ok"}
    prov = {"profiles": ", ".join(sorted({str(st.get("profile")) for st in ran.values()})) or "none",
            **{f"{d} parameters": json.dumps(st.get("parameters"), sort_keys=True) for d, st in ran.items()},
            **{f"{d} training time (s, sum over runs)": st.get("training_time_s") for d, st in ran.items()},
            "versions": json.dumps(report.library_versions(), sort_keys=True)}
    figs, sections, sanity = [], [], pd.DataFrame()
    if frames:
        from .plots import plot_bn_vs_gn, plot_verdict_diffs, plot_verdict_heatmap

        plot_verdict_heatmap(verdicts, out / "summary_verdicts.png")
        sections.append("\n".join(["## Verdicts at a glance", "", VERDICT_MAP_NOTE, "",
                                    "![summary_verdicts](summary_verdicts.png)"]))

        comps = {d: pd.read_csv(out / d / "comparisons_accuracy.csv") for d in datasets
                 if (out / d / "comparisons_accuracy.csv").exists() and statuses[d]["status"] == "ok"}
        plot_verdict_diffs(comps, out / "summary_accuracy_diff.png")
        figs.append("summary_accuracy_diff.png")
        runs = {d: pd.read_csv(out / d / "runs.csv") for d in datasets
                if statuses[d]["status"] == "ok" and (out / d / "runs.csv").exists()}
        if plot_bn_vs_gn(runs, out / "sanity_bn_vs_gn.png") is not None:
            figs.append("sanity_bn_vs_gn.png")
        sanity = report.bn_vs_gn_sanity(runs)
        if len(sanity):
            report.write_table(sanity.set_index("dataset"), out, "sanity_bn_vs_gn",
                               "Sanity reference: does BN lose more than GroupNorm when the batch shrinks?",
                               prov, SANITY_NOTE)
            sections.append("\n".join(["## Sanity reference: BN vs GroupNorm at small batches", "", SANITY_NOTE, "",
                                        report.markdown_table(sanity, index=False), "",
                                        *report.sanity_sentences(sanity), "",
                                        "![sanity_bn_vs_gn](sanity_bn_vs_gn.png)"]))
            figs.remove("sanity_bn_vs_gn.png")
    collapse = [line for d in datasets if statuses[d]["status"] == "ok" and (out / d / "collapse.csv").exists()
                for line in report.collapse_sentences(pd.read_csv(out / d / "collapse.csv", comment="#",
                                                                  index_col=[0, 1]), d)]
    if collapse:
        sections.append("\n".join(["## Why selective BN loses accuracy", "", COLLAPSE_NOTE, "", *collapse]))
    readings = [line for d in datasets if statuses[d]["status"] == "ok" and (out / d / "readings.csv").exists()
                for line in report.readings_sentences(pd.read_csv(out / d / "readings.csv", comment="#",
                                                                  index_col=[0, 1]), d)]
    if readings:
        sections.append("\n".join(["## Every reading of the paper", "", READINGS_NOTE, "", *readings]))
    path = report.write_report(out, datasets, verdicts, figs, prov, sections)
    return verdicts, statuses, path, {"sanity": sanity, "collapse": collapse}


VERDICT_MAP_NOTE = (
    "The verdict table above as one heat map per claim: rows are datasets, columns batch sizes; green (yes) = "
    "supported, red (no) = contradicted, grey (?) = inconclusive, blue (n.c.) = BN short of its target accuracy, "
    "so not counted; blank = not measured. A claim that holds shows as a green band at the small batch sizes.")


COLLAPSE_NOTE = (
    "Each dataset's `collapse` table, at its smallest and largest batch size. If selective BN's accuracy gap "
    "to BN is as large on its own training batches as on the test set, and its training loss stays high, "
    "the network did not fit: the loss comes from training with BN switched off on some steps (the same "
    "weights must serve a normalised and an unnormalised network), not from inference with running "
    "statistics gathered on part of the batches. `random` skips as many batches chosen at random; "
    "`sbn_frozen` normalises skipped batches with the running statistics instead of passing them through.")


READINGS_NOTE = (
    "The abstract allows several readings of where the selection acts, in which direction the score matters and "
    "what a skipped batch does (`sbnlib.readings.READINGS`, each dataset's `readings` table). Per dataset and "
    "reading: the batch sizes where it was significantly more accurate than BN and than its random control at the "
    "same rate (rule of C1, Holm across batch sizes).")


SANITY_NOTE = (
    "Wu & He (2018, ResNet-50 on ImageNet) saw BN's error rise from 23.6% at 32 images per batch to "
    "34.7% at 2 while GroupNorm stayed at 24.1%. Here, per dataset: mean test accuracy of `bn` and `gn` at "
    "the smallest batch size and at 32, each one's drop, and the paired test over seeds of \"BN's drop is "
    "larger than GroupNorm's\" (rule of C1, no multiplicity adjustment: one test per dataset). The room "
    "selective BN has to help at small batches is bounded by how much BN loses there.")


def _train_grid(P: Params, build, what: str, progress: bool):
    """``build()`` the configurations of a grid (a ValueError there becomes a ParameterError) and
    train those without a result file in ``<out>/runs/``; returns (the results' rows, the results)."""
    try:
        configs = build()
    except ValueError as e:
        raise ParameterError(str(e)) from None
    results = run_configs(configs, P.out / "runs", root=P.data_root, jobs=P.jobs, progress=progress,
                          desc=f"{P.dataset} {what} ({len(configs)} runs)", scheduler=P.scheduler)
    return pd.DataFrame(list(iter_results(results))), results


# ----------------------------------------------------------------------------------------------
# Ablation: scorer x threshold grid, rate sweep, random control at the same rates
# ----------------------------------------------------------------------------------------------

def ablation(P: Params, ds, batch_sizes=None, seeds=None, scorers=None, strategies=None, rates=None,
             progress: bool = True) -> dict:
    """Run the ablation grid of :func:`sbnlib.sweep.ablation_configs`; write tables and the figure.

    ``None`` takes the value of ``sbnlib.sweep.ABLATION[profile]``.
    """
    from . import stats
    from .plots import plot_ablation
    from .sweep import ABLATION, ablation_configs

    a = dict(ABLATION[P.profile])
    for k, v in (("batch_sizes", batch_sizes), ("seeds", seeds), ("scorers", scorers),
                 ("strategies", strategies), ("rates", rates)):
        if v is not None:
            a[k] = _split(v) if k in ("scorers", "strategies") else v
    a["batch_sizes"] = _check_int_list("batch_sizes", a["batch_sizes"])
    if isinstance(a["rates"], str):
        a["rates"] = [float(r) for r in _split(a["rates"])]
    from .stats import chosen_learning_rates

    lr_for = chosen_learning_rates(tune(P, progress=progress))  # the experiment's choices (its runs are cached)
    df, results = _train_grid(P, lambda: ablation_configs(P.dataset, P.sweep, a["batch_sizes"], a["seeds"], a["scorers"],
                                                     a["strategies"], a["rates"], lr_for), "ablation", progress)
    df["selection"] = [f"random, rate {r:g}" if m == "random" else
                       (f"rate {r:g}" if t == "rate" else f"{s} / {t}")
                       for m, s, t, r in zip(df.method, df.scorer, df.threshold, df.threshold_rate)]
    table = (df.groupby(["batch_size", "selection"])
             .agg(frac_normalized=("frac_normalized", "mean"), acc_mean=("final_test_acc", "mean"),
                  acc_std=("final_test_acc", "std"), n=("seed", "nunique")))
    table["acc_mean"] = (100 * table["acc_mean"]).round(2)
    table["acc_std"] = (100 * table["acc_std"]).round(2)
    rated = df[df.threshold == "rate"]
    rated = rated[rated.threshold_rate.isin(rated[rated.method == "random"].threshold_rate)]  # 0 < rate < 1
    comps = pd.concat([stats.compare_methods(rated[rated.batch_size == b], "final_test_acc", treatment="sbn",
                                             baseline="random", by="threshold_rate").assign(batch_size=b)
                       for b in a["batch_sizes"]], ignore_index=True)
    comps = comps[["batch_size", "threshold_rate", "n", "mean_diff", "ci_low", "ci_high", "p_wilcoxon_holm", "verdict"]]
    prov = report.make_provenance(ds.provenance, P.profile, {**P.sweep, "ablation": a}, results)
    report.write_table(table, P.out, "ablation", f"{P.dataset}: ablation, accuracy against the fraction normalised",
                       prov, "Test accuracy (%) mean and std over seeds for each batch selection: scorer / threshold "
                       "strategy, the 'rate' strategy (normalise the top fraction by feature_std score) and the "
                       "random control at the same rate.")
    report.write_table(comps.set_index(["batch_size", "threshold_rate"]), P.out, "ablation_vs_random",
                       f"{P.dataset}: heterogeneity-selected vs random batches at the same rate", prov,
                       "Paired difference sbn - random in test accuracy (fraction, not %), 95% bootstrap CI, "
                       "Holm-adjusted Wilcoxon p across rates; " + stats.VERDICT_RULE)
    fig = plot_ablation(df, P.out / "ablation.png", title=f"{P.dataset}: accuracy vs fraction of batches normalised")
    return {"table": table, "vs_random": comps, "figure": fig, "frame": df}


# ----------------------------------------------------------------------------------------------
# Readings: where the selection acts, its direction, the skip, the scorer (issue 13)
# ----------------------------------------------------------------------------------------------

def readings(P: Params, ds, batch_sizes=None, seeds=None, names=None, lr_for=None, progress: bool = True) -> dict:
    """Train ``bn`` and every reading of :data:`sbnlib.readings.READINGS` (``names``; None: all) with
    its random control at the same rate; write ``readings.csv`` / ``.md`` and ``readings.png``.

    ``batch_sizes`` / ``seeds``: None takes the profile's :data:`sbnlib.readings.PLAN`.
    ``lr_for``: ``{(method, batch_size): lr}``;
    None runs (or reads the cached) learning-rate selection of the experiment (:func:`tune`). Runs
    are stored with the experiment's in ``<out>/runs/``, so the runs they share are trained once.
    """
    from . import readings as rd
    from . import stats
    from .plots import plot_readings
    from .stats import chosen_learning_rates

    names = rd.READINGS if names is None else _split(names)
    plan = rd.PLAN.get(P.profile, {})
    bs = _check_int_list("batch_sizes", plan.get("batch_sizes") if batch_sizes is None else batch_sizes)
    seeds = plan.get("seeds") if seeds is None else seeds
    if lr_for is None:
        lr_for = chosen_learning_rates(tune(P, progress=progress))
    df, results = _train_grid(P, lambda: rd.readings_configs(P.dataset, P.sweep, bs, seeds, lr_for, list(names)),
                         "readings", progress)
    out = rd.readings_table(df, list(names), base=rd.base_fields(P.sweep))
    prov = report.make_provenance(ds.provenance, P.profile, {**P.sweep, "readings": list(names)}, results)
    notes = (f"One row per reading and batch size; cells of reading, control and bn: final test accuracy (%) mean ± "
             f"std over {df.seed.nunique()} paired seeds. Each reading is compared with bn, with its random control "
             "(the same number of batches normalised, chosen at random) and, except the default reading itself, with "
             "the default reading (sbn): paired difference in percentage points with a 95% bootstrap CI, Wilcoxon p "
             "Holm-adjusted across batch sizes, verdict. " + stats.VERDICT_RULE + " Readings: "
             + "; ".join(f"{n} ({rd.READINGS[n].method} vs {rd.READINGS[n].control}): {rd.READINGS[n].text}"
                         for n in names) + ".")
    files = report.write_table(out["table"], P.out, "readings", f"{P.dataset}: readings of selective BN", prov, notes)
    fig = plot_readings(out["comparisons"], P.out / "readings.png",
                        title=f"{P.dataset}: readings of selective BN, paired differences (mean, 95% bootstrap CI)")
    return {**out, "frame": df, "files": files, "figure": fig, "provenance": prov}
