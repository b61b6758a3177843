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
from ..provenance import records_in, versions_entry
from . import budget, report, results, stats, tables
from . import readings as rd
from .config import config_hash
from .pipelines import ParameterError, Params, _check_int_list, _repo_path, _split, budget_check, open_edges, tune
from .plots import plot_ablation, plot_bn_vs_gn, plot_readings, plot_verdict_diffs, plot_verdict_heatmap
from .stats import chosen_learning_rates
from .sweep import ABLATION, ablation_configs, experiment_configs, iter_results, result_path, run_configs


def summary(datasets, output_dir="outputs", progress: bool = True):  # run_all.sh passes the profile's folder
    """Collect every dataset's typed result (:func:`sbnlib.experiments.results.load`); write each
    dataset's ``REPORT.md`` and the top-level ``REPORT.md`` (the answer first).

    ``datasets`` and every other dataset with results in ``output_dir`` (a ``status.json``), in the
    registry's order: a run of some datasets does not drop the others from the report.
    Returns ``(verdicts, statuses, report_path, extra)``; ``verdicts`` has one row per dataset and batch
    size (the typed columns of :data:`sbnlib.experiments.results.VERDICT_KEYS`), ``extra["sanity"]`` is the
    BN-vs-GroupNorm table and ``extra["results"]`` the typed results. ``progress``: a bar over the
    stages (results, figures, reports) on stdout, which ``run_all.sh`` shows."""
    out = _repo_path(output_dir)
    known = dataset_names()  # the registry's order, whichever datasets this run rendered: the same report every time
    datasets = [d for d in known if d in datasets or (out / d / "status.json").is_file()] + \
        [d for d in datasets if d not in known]
    bar = tqdm(total=3, desc="summary", unit="stage", disable=not progress, file=sys.stdout)
    res = [results.load(out, d) for d in datasets]
    statuses = {r.name: r.status for r in res}
    ran = [r for r in res if r.ok]
    verdicts = (pd.concat([r.verdicts.assign(dataset=r.name) for r in ran], ignore_index=True) if ran
                else pd.DataFrame(columns=["dataset", "batch_size", *results.VERDICT_KEYS.values()]))
    prov = {"profiles": ", ".join(sorted({str(r.status.get("profile")) for r in ran})) or "none",
            **{f"{r.name} parameters": json.dumps(r.status.get("parameters"), sort_keys=True) for r in ran},
            **{f"{r.name} training time (s, sum over runs)": r.status.get("training_time_s") for r in ran},
            **versions_entry(records_in(out / r.name / runs for r in ran for runs in ("runs", "tuning", budget.RUNS_DIR)))}
    bar.update(1)
    figs, sections, sanity = [], [], pd.DataFrame()
    if ran:
        figs, sections, sanity = _summary_figures(out, ran, verdicts, prov)
    cost = _cost_table(out, [r.name for r in ran], statuses)
    if len(cost):
        sections.append("\n".join(["## What the committed runs cost", "", COST_NOTE, "",
                                    tables.markdown_table(cost.round(2), index=False)]))
    bar.update(1)
    for r in ran:
        report.write_dataset_report(out, r.name)
    path = report.write_report(out, datasets, res, figs, prov, sections)
    bar.update(1)
    bar.close()
    return verdicts, statuses, path, {"sanity": sanity, "results": res}


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
        check = [read_json_object(f, "delete it; the budget check retrains it")["wall_time_s"]
                 for f in sorted((out / d / budget.RUNS_DIR).glob("*.json"))]
        row["budget check runs"], row["budget check (h)"] = len(check), sum(check) / 3600
        total += sum(check)
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


def _summary_figures(out, ran, verdicts, prov):
    """The answer figure (sbn - bn per batch size), the verdict map and the BN-vs-GroupNorm sanity
    reference (figure, table and a REPORT section); returns (figure files, sections, sanity table)."""
    plot_verdict_diffs({r.name: r.comparisons for r in ran}, out / "summary_accuracy_diff.png")
    plot_verdict_heatmap(verdicts, out / "summary_verdicts.png")
    figs, sections = ["summary_accuracy_diff.png", "summary_verdicts.png"], []
    runs = {r.name: r.runs for r in ran if len(r.runs)}
    drew_sanity = plot_bn_vs_gn(runs, out / "sanity_bn_vs_gn.png") is not None
    sanity = tables.bn_vs_gn_sanity(runs)
    if len(sanity):
        tables.write_table(sanity.set_index("dataset"), out, "sanity_bn_vs_gn",
                           "Sanity reference: does BN lose more than GroupNorm when the batch shrinks?", prov, SANITY_NOTE)
        sections.append("\n".join(["## Sanity reference: BN vs GroupNorm at small batches", "", SANITY_NOTE, "",
                                    tables.markdown_table(sanity, index=False), "", *report.sanity_sentences(sanity),
                                    "", "![sanity_bn_vs_gn](sanity_bn_vs_gn.png)"]))
    elif drew_sanity:
        sections.append("![sanity_bn_vs_gn](sanity_bn_vs_gn.png)")
    return figs, sections, sanity




COST_NOTE = (
    "Training time of the runs behind each dataset's tables, in single-thread hours: the sum of the times recorded "
    "in the result files (each run trains on one thread; a packed group's time is shared among its runs). "
    "Selection: the learning-rate selection on the validation split (`lr_selection`); evaluation: the sweep "
    "behind the verdicts; readings: the runs of the readings of the paper (`readings`) that the evaluation sweep "
    "does not already have (0 where a dataset's readings have not been run). `--jobs N` trains N runs at once, so "
    "on N free cores the wall time can approach this divided by N. Ablation: its runs (`ablation`) that neither the "
    "evaluation sweep nor the readings already have (0 where a dataset's ablation has not been run). Budget check: "
    "its runs at twice the epochs (and a reading's at 1x), `<dataset>/budget/`.")



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
                                             baseline="random", by="threshold_rate",
                                             resolution=stats.accuracy_resolution(rated)).assign(batch_size=b)
                       for b in a["batch_sizes"]], ignore_index=True)
    comps = comps[["batch_size", "threshold_rate", "n", "mean_diff", "ci_low", "ci_high", "p_wilcoxon_holm", "verdict"]]
    comps.to_csv(P.out / "comparisons_ablation.csv", index=False)  # the numbers, with machine column names
    prov = tables.make_provenance(ds.provenance, P.profile, {**P.sweep, "ablation": a}, results)
    tables.write_table(table, P.out, "ablation", f"{P.dataset}: ablation, accuracy against the fraction normalised",
                       prov, "Test accuracy (%) mean and std over seeds for each batch selection: scorer / threshold "
                       "strategy, the 'rate' strategy (normalise the top fraction by feature_std score) and the "
                       "random control at the same rate.")
    tables.write_table(comps.set_index(["batch_size", "threshold_rate"]), P.out, "ablation_vs_random",
                       f"{P.dataset}: heterogeneity-selected vs random batches at the same rate", prov,
                       "Paired difference sbn - random in test accuracy (fraction, not %), 95% bootstrap CI, "
                       "Holm-adjusted Wilcoxon p across rates; " + stats.VERDICT_RULE)
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


def readings(P: Params, ds, batch_sizes=None, seeds=None, names=None, lr_for=None, progress: bool = True,
             budget_check: str = "train") -> dict:
    """Train ``bn`` and every reading of :data:`sbnlib.experiments.readings.READINGS` (``names``; None: all) with
    its random control at the same rate; write ``readings.csv`` / ``.md``, ``readings.png`` and ``readings_cost.json``.

    ``batch_sizes`` / ``seeds``: None takes the profile's :data:`sbnlib.experiments.readings.PLAN`.
    ``lr_for``: ``{(method, batch_size): lr}``;
    None runs (or reads the cached) learning-rate selection of the experiment (:func:`tune`).
    ``budget_check``: "train" (every win over ``bn`` is checked at twice the training) or "cached"
    (read the check's runs that exist; see :func:`sbnlib.experiments.pipelines.budget_check`). Runs
    are stored with the experiment's in ``<out>/runs/``, so the runs they share are trained once.
    """

    names = list(rd.READINGS if names is None else _split(names))
    if lr_for is None:
        lr_for = chosen_learning_rates(tune(P, progress=progress))
    df, results = train_readings(P, lr_for, batch_sizes, seeds, names, progress)
    _write_cost(P, lr_for, results, "readings")
    out = rd.readings_table(df, names, base=rd.base_fields(P.sweep))
    out["budget"] = _readings_budget(P, lr_for, out["comparisons"], progress, budget_check)
    if len(out["table"]):  # a win over BN that twice the training would change is shown, not counted
        sensitive = {(r.treatment, int(r.batch_size)): r.budget for r in out["budget"].itertuples(index=False)
                     if r.baseline == "bn"}
        out["table"]["reading vs bn budget"] = [sensitive.get((n, int(b)), "" if v != stats.SUPPORTED else "not checked")
                                                for (n, b), v in zip(out["table"].index, out["table"]["reading vs bn"])]
    if len(out["comparisons"]):
        out["comparisons"].to_csv(P.out / "comparisons_readings.csv", index=False)  # machine column names
    prov = tables.make_provenance(ds.provenance, P.profile, {**P.sweep, "readings": list(names)}, results)
    notes = (f"One row per reading and batch size; cells of reading, control and bn: final test accuracy (%) mean ± "
             f"std over {df.seed.nunique()} paired seeds. Each reading is compared with bn, with its random control "
             "(the same number of batches normalised, chosen at random) and, except the default reading itself, with "
             "the default reading (sbn): paired difference in percentage points with a 95% bootstrap CI, Wilcoxon p "
             "Holm-adjusted across batch sizes, verdict. " + stats.VERDICT_RULE + " Every win over bn is checked at "
             "twice the training (column reading vs bn budget; table readings_budget_check). Readings: "
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


def _win_budget(P: Params, lr_for, comparisons: pd.DataFrame, progress: bool = True, train_only: bool = False,
                mode: str = "train"):
    """Train the budget check of every reading that beats ``bn`` in ``comparisons``
    (:func:`sbnlib.experiments.budget.win_arms`; ``mode="cached"``: train nothing, read the runs that
    exist); return its labelled table (None with ``train_only``)."""
    wins = budget.win_arms(comparisons)
    kw = dict(root=P.data_root, jobs=P.jobs, progress=progress, scheduler=P.scheduler, stop=P.stop)
    parts = []
    for (name, b), arms in wins.items():
        runs = budget.train_budget(P.out, P.dataset, P.sweep, lr_for, (budget.Arm("bn", "bn"), *arms), batch_sizes=[b],
                                   train=mode == "train", **kw)
        if train_only:
            continue
        mde = {(name, {"control": f"{name} control"}.get(r.baseline, r.baseline), int(r.batch_size)): 100 * float(r.mde_80)
               for r in comparisons[comparisons.reading == name].itertuples(index=False)}
        edges = [(a.label, b) for a in (budget.Arm("bn", "bn"), *arms)
                 if (a.lr_from or a.method, b) in set(open_edges(tune(P, progress=False)))]
        parts.append(budget.label(budget.budget_table(runs, budget.win_pairs(name)), mde, edges))
    if train_only:
        return None
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["treatment", "baseline", "batch_size",
                                                                                   "budget", "why"])


def _readings_budget(P: Params, lr_for, comparisons: pd.DataFrame, progress: bool, mode: str) -> pd.DataFrame:
    """:func:`_win_budget`, written as ``readings_budget_check.csv`` / ``.md`` where there is a win."""
    checks = _win_budget(P, lr_for, comparisons, progress, mode=mode)
    if len(checks):
        tables.write_table(checks.set_index(["treatment", "baseline", "batch_size"]), P.out, "readings_budget_check",
                           f"{P.dataset}: would twice the training change a reading's win over BN?",
                           tables.make_provenance({"dataset": P.dataset}, P.profile, P.sweep), WIN_BUDGET_NOTE)
    return checks


WIN_BUDGET_NOTE = (
    "The budget check of every reading that beats bn significantly: the reading, its random control, none and "
    "bn, retrained at twice the epochs on the tuning seeds at their selected learning rates, read on validation. "
    "The comparisons say whether the win survives a longer run (reading - bn), whether it is owed to the selection "
    "(reading - its control) or to less normalisation (reading - none, none - bn). Labels as in budget_check.")


def train_budget_check(P: Params, selection, progress: bool = True, wins: bool = True) -> None:
    """Train the budget check's runs (:mod:`sbnlib.experiments.budget`) without writing a table: ``bn``
    and ``sbn`` at every batch size (``wins=False``: only these) and, where the dataset's readings are
    trained, the arms of every reading that beats ``bn`` (for ``scripts/accrue_runs.py --budget-only``)."""
    budget_check(P, selection, progress)
    lr_for = chosen_learning_rates(selection)
    if wins and _readings_trained(P, lr_for):
        df, _ = train_readings(P, lr_for, progress=False)
        _win_budget(P, lr_for, rd.readings_table(df, base=rd.base_fields(P.sweep))["comparisons"], progress, train_only=True)
