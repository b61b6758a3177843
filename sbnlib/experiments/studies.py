"""The studies that reuse a dataset's experiment (its learning rates, its runs), one function per
notebook: :func:`summary` (the verdicts across datasets and ``REPORT.md``, ``notebooks/summary.ipynb``),
:func:`ablation` (``notebooks/ablation.ipynb``) and :func:`readings` (``notebooks/readings.ipynb``).
"""
from __future__ import annotations

import json
import sys

import pandas as pd
from tqdm import tqdm

from ..assess import evidence
from ..data import dataset_names
from ..io import atomic_write_json, read_json_object
from ..provenance import versions
from . import budget
from . import readings as rd
from . import report, stats, tables
from .config import config_hash
from .pipelines import ParameterError, Params, _check_int_list, _repo_path, _split, tune
from .plots import plot_ablation, plot_bn_vs_gn, plot_readings, plot_verdict_diffs, plot_verdict_heatmap
from .stats import chosen_learning_rates
from .sweep import ABLATION, ablation_configs, experiment_configs, iter_results, result_path, run_configs


def summary(datasets, output_dir="outputs", progress: bool = True):  # run_all.sh passes the profile's folder
    """Collect every dataset's verdicts; write REPORT.md.

    ``datasets`` and every other dataset with results in ``output_dir`` (a ``status.json``), in the
    registry's order: a run of some datasets does not drop the others from the report.
    Returns ``(verdicts, statuses, report_path, extra)``; ``extra["sanity"]`` is the BN-vs-GroupNorm
    table and ``extra["collapse"]`` the collapse diagnosis in words. ``progress``: a bar over the
    stages (verdicts, figures, diagnoses, report) on stderr, which ``run_all.sh`` shows."""
    out = _repo_path(output_dir)
    known = dataset_names()  # the registry's order, whichever datasets this run rendered: the same report every time
    datasets = [d for d in known if d in datasets or (out / d / "status.json").is_file()] + \
        [d for d in datasets if d not in known]
    bar = tqdm(total=4, desc="summary", unit="stage", disable=not progress, file=sys.stdout)
    statuses = {d: evidence.read_status(out / d) for d in datasets}
    ran = [d for d in datasets if statuses[d]["status"] == "ok"]  # the datasets whose tables may be read
    verdicts = _collect_verdicts(out, ran)
    runs = {d: pd.read_csv(out / d / "runs.csv") for d in ran if (out / d / "runs.csv").exists()}  # read once
    prov = {"profiles": ", ".join(sorted({str(statuses[d].get("profile")) for d in ran})) or "none",
            **{f"{d} parameters": json.dumps(statuses[d].get("parameters"), sort_keys=True) for d in ran},
            **{f"{d} training time (s, sum over runs)": statuses[d].get("training_time_s") for d in ran},
            "versions": json.dumps(versions("scipy", "pandas"), sort_keys=True)}
    bar.update(1)
    figs, sections, sanity = [], [], pd.DataFrame()
    if len(verdicts):
        figs, sections, sanity = _summary_figures(out, ran, verdicts, prov, runs)
    bar.update(1)
    collapse = [line for d in ran if (out / d / "collapse.csv").exists()
                for line in report.collapse_sentences(pd.read_csv(out / d / "collapse.csv", comment="#",
                                                                  index_col=[0, 1]), d)]
    if collapse:
        sections.append("\n".join(["## Why selective BN loses accuracy", "", COLLAPSE_NOTE, "", *collapse]))
    readings = [line for d in ran if (out / d / "readings.csv").exists()
                for line in report.readings_sentences(pd.read_csv(out / d / "readings.csv", comment="#",
                                                                  index_col=[0, 1]), d)]
    if readings:
        sections.append("\n".join(["## Every reading of the paper", "", READINGS_NOTE, "", *readings]))
    ablation = [line for d in ran if (out / d / "ablation_vs_random.csv").exists()
                for line in report.ablation_sentences(
                    pd.read_csv(out / d / "ablation.csv", comment="#", index_col=[0, 1]),
                    pd.read_csv(out / d / "ablation_vs_random.csv", comment="#"), d)]
    if ablation:
        sections.append("\n".join(["## Heterogeneity or chance: the ablation", "", ABLATION_NOTE, "", *ablation]))
    cost = _cost_table(out, ran, statuses)
    if len(cost):
        sections.append("\n".join(["## What the committed runs cost", "", COST_NOTE, "",
                                    tables.markdown_table(cost.round(2), index=False)]))
    bar.update(1)
    path = report.write_report(out, datasets, verdicts, figs, prov, sections, runs)
    bar.update(1)
    bar.close()
    return verdicts, statuses, path, {"sanity": sanity, "collapse": collapse}


def _collect_verdicts(out, ran) -> pd.DataFrame:
    """Every dataset's ``verdicts.csv``, one row per dataset and batch size."""
    frames = []
    for d in ran:
        if (out / d / "verdicts.csv").exists():
            f = pd.read_csv(out / d / "verdicts.csv", comment="#")
            frames.append(f[["dataset", "batch_size", "C1", "C2"] + [c for c in f.columns if c.startswith("sbn vs ")]
                            + [c for c in ("bn converged",) if c in f.columns]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["dataset", "batch_size", "C1", "C2"])


def _cost_table(out, ran, statuses=None) -> pd.DataFrame:
    """Per dataset, the runs behind its tables and their training time in single-thread hours: the
    learning-rate selection (``lr_selection.csv``: runs and summed ``train_time_s``), the
    evaluation sweep (``status.json``: ``runs`` and ``training_time_s``; ``statuses``: those already
    read) and, where a dataset has them, the readings' and the ablation's own runs
    (``readings_cost.json``, ``ablation_cost.json``); a total row."""
    rows = []
    for d in ran:
        sel_path = out / d / "lr_selection.csv"
        status = statuses[d] if statuses is not None else evidence.read_status(out / d)
        sel = pd.read_csv(sel_path, comment="#") if sel_path.exists() else pd.DataFrame()
        tune_s = float(sel["train_time_s"].sum()) if "train_time_s" in sel else float("nan")
        eval_s = float(status.get("training_time_s", float("nan")))
        row = {"dataset": d, "selection runs": int(sel["n_seeds"].sum()) if "n_seeds" in sel else 0,
               "selection (h)": tune_s / 3600, "evaluation runs": int(status.get("runs", 0)), "evaluation (h)": eval_s / 3600}
        total, seen = tune_s + eval_s, set()
        for study in ("readings", "ablation"):  # a run both studies have (e.g. spectral_split / mean) counts once
            path = out / d / f"{study}_cost.json"
            cost = _read_json(path, f"rerun notebooks/{study}.ipynb on {d}") if path.exists() else {}
            if "training_time_s_by_run" in cost:
                by_run = {h: t for h, t in cost["training_time_s_by_run"].items() if h not in seen}
                seen |= set(by_run)
                row[f"{study} runs"], secs = len(by_run), sum(by_run.values())
            else:  # a file written before the per-run times: its totals
                row[f"{study} runs"] = int(cost.get("runs_beyond_the_evaluation_sweep", 0))
                secs = float(cost.get("training_time_s", 0.0))
            row[f"{study} (h)"] = secs / 3600
            total += secs
        rows.append({**row, "total (h)": total / 3600})
    cost = pd.DataFrame(rows)
    if len(cost) > 1:
        cost = pd.concat([cost, cost.drop(columns="dataset").sum(min_count=1).to_frame().T.assign(dataset="all")],
                         ignore_index=True)
    return cost


def _read_json(path, fix: str) -> dict:
    """A JSON object from ``path``; a file that is not one is a ParameterError naming it and ``fix``."""
    try:
        return read_json_object(path, fix)
    except ValueError as e:
        raise ParameterError(str(e)) from None


def _summary_figures(out, ran, verdicts, prov, runs):
    """The verdict map, the accuracy differences and the BN-vs-GroupNorm sanity reference (figures,
    table and REPORT sections); returns (figures listed at the end, sections, sanity table)."""
    plot_verdict_heatmap(verdicts, out / "summary_verdicts.png")
    sections = ["\n".join(["## Verdicts at a glance", "", VERDICT_MAP_NOTE, "", "![summary_verdicts](summary_verdicts.png)"])]
    comps = {d: pd.read_csv(out / d / "comparisons_accuracy.csv") for d in ran
             if (out / d / "comparisons_accuracy.csv").exists()}
    plot_verdict_diffs(comps, out / "summary_accuracy_diff.png")
    figs = ["summary_accuracy_diff.png"]
    drew_sanity = plot_bn_vs_gn(runs, out / "sanity_bn_vs_gn.png") is not None
    sanity = tables.bn_vs_gn_sanity(runs)
    if len(sanity):
        tables.write_table(sanity.set_index("dataset"), out, "sanity_bn_vs_gn",
                           "Sanity reference: does BN lose more than GroupNorm when the batch shrinks?", prov, SANITY_NOTE)
        sections.append("\n".join(["## Sanity reference: BN vs GroupNorm at small batches", "", SANITY_NOTE, "",
                                    tables.markdown_table(sanity, index=False), "", *report.sanity_sentences(sanity),
                                    "", "![sanity_bn_vs_gn](sanity_bn_vs_gn.png)"]))
    elif drew_sanity:  # a figure without a table: listed with the other figures
        figs.append("sanity_bn_vs_gn.png")
    return figs, sections, sanity


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


COST_NOTE = (
    "Training time of the runs behind each dataset's tables, in single-thread hours: the sum of the times recorded "
    "in the result files (each run trains on one thread; a packed group's time is shared among its runs). "
    "Selection: the learning-rate selection on the validation split (`lr_selection`); evaluation: the sweep "
    "behind the verdicts; readings: the runs of the readings of the paper (`readings`) that the evaluation sweep "
    "does not already have (0 where a dataset's readings have not been run). `--jobs N` trains N runs at once, so "
    "on N free cores the wall time can approach this divided by N. Ablation: its runs (`ablation`) that neither the "
    "evaluation sweep nor the readings already have (0 where a dataset's ablation has not been run).")


ABLATION_NOTE = (
    "Each dataset's `ablation` tables: every scorer x threshold strategy, and batches normalised in order of "
    "heterogeneity score (`rate` strategy) against the same number chosen at random, at each rate, all at sbn's "
    "chosen learning rate (so rate 1 is BN at sbn's learning rate, not the evaluation sweep's bn). If heterogeneity "
    "is what matters, the selected batches beat the random ones at the same rate. Per dataset and batch size: test "
    "accuracy (mean over seeds) with every batch normalised, with none, and with the best selection; then "
    "the paired verdicts against random (rule of C1, Holm across rates; where BN misses its target accuracy the "
    f"verdict reads *{evidence.NOT_CONVERGED}* and is not counted).")

READINGS_NOTE = (
    "The abstract allows several readings of where the selection acts, in which direction the score matters and "
    "what a skipped batch does (`sbnlib.experiments.readings.READINGS`, each dataset's `readings` table). Per dataset and "
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
                          desc=f"{P.dataset} {what} ({len(configs)} runs)", scheduler=P.scheduler, stop=P.stop)
    return pd.DataFrame(list(iter_results(results))), results


# ----------------------------------------------------------------------------------------------
# Ablation: scorer x threshold grid, rate sweep, random control at the same rates
# ----------------------------------------------------------------------------------------------

def train_ablation(P: Params, lr_for, batch_sizes=None, seeds=None, scorers=None, strategies=None, rates=None,
                   progress: bool = True):
    """Train the ablation grid of :func:`sbnlib.experiments.sweep.ablation_configs` (the runs without a
    result file in ``<out>/runs/``) at the rates ``lr_for`` (``{(method, batch_size): lr}``); no table is
    written. ``None`` takes the value of ``sbnlib.experiments.sweep.ABLATION[profile]``.
    Returns (the grid's parameters, the results' rows, the results)."""
    a = dict(ABLATION[P.profile])
    for k, v in (("batch_sizes", batch_sizes), ("seeds", seeds), ("scorers", scorers),
                 ("strategies", strategies), ("rates", rates)):
        if v is not None:
            a[k] = _split(v) if k in ("scorers", "strategies") else v
    a["batch_sizes"] = _check_int_list("batch_sizes", a["batch_sizes"])
    if isinstance(a["rates"], str):
        a["rates"] = [float(r) for r in _split(a["rates"])]
    df, results = _train_grid(P, lambda: ablation_configs(P.dataset, P.sweep, a["batch_sizes"], a["seeds"], a["scorers"],
                                                     a["strategies"], a["rates"], lr_for), "ablation", progress)
    return a, df, results


def _label_ablation(P: Params, comps: pd.DataFrame, lr_for, a: dict, progress: bool) -> pd.DataFrame:
    """Issue 11's rule on the ablation's verdicts: where BN's mean test accuracy at that batch size
    misses the dataset's target, the verdict reads NOT_CONVERGED. BN's runs are the evaluation
    sweep's at the ablation's seeds (cached from it; trained only on a dataset with a target)."""
    converged = {}
    if P.dataset in tables.BN_TARGETS:
        bn, _ = _train_grid(P, lambda: experiment_configs(P.dataset, dict(P.sweep, methods=["bn"], seeds=a["seeds"],
                                                                          batch_sizes=a["batch_sizes"]), lr_for),
                            "ablation's bn reference", progress)
        converged = tables.bn_converged(bn, P.dataset)
    comps = tables.label_unconverged(comps.set_index("batch_size"), converged, ["verdict"]).reset_index()
    comps["bn converged"] = tables.converged_column(comps.batch_size, converged)
    return comps


def ablation(P: Params, ds, batch_sizes=None, seeds=None, scorers=None, strategies=None, rates=None,
             progress: bool = True) -> dict:
    """Train the ablation grid (:func:`train_ablation`, at the experiment's learning rates); write its
    tables and figure."""
    lr_for = chosen_learning_rates(tune(P, progress=progress))  # the experiment's choices (its runs are cached)
    a, df, results = train_ablation(P, lr_for, batch_sizes, seeds, scorers, strategies, rates, progress)
    _write_cost(P, lr_for, results, "ablation")
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
    comps = _label_ablation(P, comps, lr_for, a, progress)
    prov = tables.make_provenance(ds.provenance, P.profile, {**P.sweep, "ablation": a}, results)
    tables.write_table(table, P.out, "ablation", f"{P.dataset}: ablation, accuracy against the fraction normalised",
                       prov, "Test accuracy (%) mean and std over seeds for each batch selection: scorer / threshold "
                       "strategy, the 'rate' strategy (normalise the top fraction by feature_std score) and the "
                       "random control at the same rate.")
    tables.write_table(comps.set_index(["batch_size", "threshold_rate"]), P.out, "ablation_vs_random",
                       f"{P.dataset}: heterogeneity-selected vs random batches at the same rate", prov,
                       "Paired difference sbn - random in test accuracy (fraction, not %), 95% bootstrap CI, "
                       "Holm-adjusted Wilcoxon p across rates; " + stats.VERDICT_RULE + " Column bn converged: did "
                       "BN's mean test accuracy (the evaluation sweep's bn runs at these seeds) reach its target on "
                       f"this dataset? Where it did not, the verdict reads '{evidence.NOT_CONVERGED}' and is not counted.")
    fig = plot_ablation(df, P.out / "ablation.png", title=f"{P.dataset}: accuracy vs fraction of batches normalised")
    return {"table": table, "vs_random": comps, "figure": fig, "frame": df}


# ----------------------------------------------------------------------------------------------
# Readings: where the selection acts, its direction, the skip, the scorer (issue 13)
# ----------------------------------------------------------------------------------------------

def train_readings(P: Params, lr_for, batch_sizes=None, seeds=None, names=None, progress: bool = True):
    """Train the readings runs (``bn``, every reading in ``names`` and its control; None: all) that have no
    result file in ``<out>/runs/`` yet, at the rates ``lr_for`` (``{(method, batch_size): lr}``); no
    table is written. ``batch_sizes`` / ``seeds``: None takes the profile's :data:`~sbnlib.experiments.readings.PLAN`.
    Returns (the results' rows, the results)."""
    plan = rd.plan_for(P.profile, P.sweep)
    bs = _check_int_list("batch_sizes", plan.get("batch_sizes") if batch_sizes is None else batch_sizes)
    seeds = plan.get("seeds") if seeds is None else seeds
    return _train_grid(P, lambda: rd.readings_configs(P.dataset, P.sweep, bs, seeds, lr_for, names),
                       "readings", progress)


def _write_cost(P: Params, lr_for, results, study: str) -> None:
    """``<study>_cost.json``: how many of a study's runs the evaluation sweep does not already have
    (the readings share ``bn``, the default reading and its control; the ablation its default scorer
    and threshold), their recorded training time, and each one's (by config hash, so that REPORT's
    cost table counts a run that the readings and the ablation share once)."""
    selected = [(m, b) for m in P.sweep["methods"] for b in P.sweep["batch_sizes"] if (m, b) in lr_for]
    sweep = {config_hash(c) for m, b in selected
             for c in experiment_configs(P.dataset, dict(P.sweep, methods=[m], batch_sizes=[b]), lr_for)}
    by_run = {r["config_hash"]: round(float(r.get("wall_time_s", 0.0)), 2)
              for r in sorted(results, key=lambda r: r["config_hash"]) if r["config_hash"] not in sweep}
    atomic_write_json(P.out / f"{study}_cost.json", {  # the totals are the per-run times summed, as the cost table sums them
        "dataset": P.dataset, "runs": len(results), "runs_beyond_the_evaluation_sweep": len(by_run),
        "training_time_s": round(sum(by_run.values()), 2), "training_time_s_by_run": by_run})


def readings(P: Params, ds, batch_sizes=None, seeds=None, names=None, lr_for=None, progress: bool = True) -> dict:
    """Train ``bn`` and every reading of :data:`sbnlib.experiments.readings.READINGS` (``names``; None: all) with
    its random control at the same rate; write ``readings.csv`` / ``.md``, ``readings.png`` and ``readings_cost.json``.

    ``batch_sizes`` / ``seeds``: None takes the profile's :data:`sbnlib.experiments.readings.PLAN`.
    ``lr_for``: ``{(method, batch_size): lr}``;
    None runs (or reads the cached) learning-rate selection of the experiment (:func:`tune`). Runs
    are stored with the experiment's in ``<out>/runs/``, so the runs they share are trained once.
    """

    names = list(rd.READINGS if names is None else _split(names))
    if lr_for is None:
        lr_for = chosen_learning_rates(tune(P, progress=progress))
    df, results = train_readings(P, lr_for, batch_sizes, seeds, names, progress)
    _write_cost(P, lr_for, results, "readings")
    out = rd.readings_table(df, names, base=rd.base_fields(P.sweep))
    if len(out["table"]):  # issue 11's rule: a verdict where BN missed its target is not counted
        out["table"] = tables.label_unconverged(out["table"], tables.bn_converged(df, P.dataset),
                                                [c for c in out["table"].columns if " vs " in c])
    prov = tables.make_provenance(ds.provenance, P.profile, {**P.sweep, "readings": list(names)}, results)
    notes = (f"One row per reading and batch size; cells of reading, control and bn: final test accuracy (%) mean ± "
             f"std over {df.seed.nunique()} paired seeds. Each reading is compared with bn, with its random control "
             "(the same number of batches normalised, chosen at random) and, except the default reading itself, with "
             "the default reading (sbn): paired difference in percentage points with a 95% bootstrap CI, Wilcoxon p "
             "Holm-adjusted across batch sizes, verdict. " + stats.VERDICT_RULE + f" Where BN's mean test accuracy is "
             f"below its target, every verdict reads '{evidence.NOT_CONVERGED}' and is not counted. Readings: "
             + "; ".join(f"{n} ({rd.READINGS[n].method} vs {rd.READINGS[n].control}): {rd.READINGS[n].text}"
                         for n in names) + ".")
    files = tables.write_table(out["table"], P.out, "readings", f"{P.dataset}: readings of selective BN", prov, notes)
    fig = plot_readings(out["comparisons"], P.out / "readings.png",
                        title=f"{P.dataset}: readings of selective BN, paired differences (mean, 95% bootstrap CI)")
    return {**out, "frame": df, "files": files, "figure": fig, "provenance": prov}


# ----------------------------------------------------------------------------------------------
# Budget check: would each verdict survive twice the training? (issue 27)
# ----------------------------------------------------------------------------------------------

def _readings_trained(P: Params, lr_for) -> bool:
    """Whether every run of the dataset's readings (the profile's PLAN) has its result file."""
    plan = rd.plan_for(P.profile, P.sweep)
    if not plan.get("batch_sizes"):
        return False
    configs = rd.readings_configs(P.dataset, P.sweep, plan["batch_sizes"], plan.get("seeds"), lr_for)
    return all(result_path(P.out / "runs", c).is_file() for c in configs)


def train_budget_check(P: Params, selection, readings=None, progress: bool = True) -> pd.DataFrame:
    """Train the budget check's runs (:mod:`sbnlib.experiments.budget`): ``bn`` and ``sbn`` at every
    batch size, and, where the dataset's readings are trained (``readings``: their typed comparisons,
    or None to compute them from the cached runs when all exist), the arms of every reading that beats
    ``bn``. Returns one row per run, with ``arm`` and ``factor``."""
    lr_for = chosen_learning_rates(selection)
    kw = dict(root=P.data_root, jobs=P.jobs, progress=progress, scheduler=P.scheduler, stop=P.stop)
    runs = [budget.train_budget(P.out, P.dataset, P.sweep, lr_for, budget.MAIN_ARMS, **kw)]
    if readings is None and _readings_trained(P, lr_for):
        df, _ = train_readings(P, lr_for, progress=False)
        readings = rd.readings_table(df, base=rd.base_fields(P.sweep))["comparisons"]
    for b, arms in budget.win_arms(readings if readings is not None else pd.DataFrame()).items():
        runs.append(budget.train_budget(P.out, P.dataset, P.sweep, lr_for, (budget.Arm("bn", "bn"), *arms),
                                        batch_sizes=[b], **kw))
    return pd.concat(runs, ignore_index=True)
