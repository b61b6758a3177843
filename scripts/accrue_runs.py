"""Train a profile's runs (learning-rate selection, then the evaluation sweep) without writing any table.

    python scripts/accrue_runs.py --profile cpu --datasets mnist fashion_mnist --data-root ../shared/data --jobs 2
    python scripts/accrue_runs.py --profile cpu --datasets fashion_mnist --readings-only --data-root ../shared/data
    python scripts/accrue_runs.py --profile cpu --datasets fashion_mnist --ablation-only --data-root ../shared/data

``--readings`` adds, after a dataset's evaluation sweep, the runs of its readings of the paper
(``sbnlib.experiments.readings``: every reading and its random control at the batch sizes and seeds
of the profile's PLAN, at the learning rates the selection chose); ``--readings-only`` trains those
alone (the selection must be complete: it is read from the tuning runs, or trained first).
``--budget-only`` trains the budget check's runs alone (``sbnlib.experiments.budget``): those of
``bn`` and ``sbn`` on every dataset first, then those of every reading that beats ``bn``.
``--ablation-only`` trains the ablation grid alone (``sbnlib.experiments.studies.train_ablation``: every
scorer x threshold strategy, the rate sweep and its random control, at the profile's ABLATION batch
sizes and seeds), the runs that ``notebooks/ablation.ipynb`` would otherwise train in one sitting.

For a rerun that spans several sittings: the result files accrue under outputs/<dataset>/tuning/ and
runs/ (each written when its run ends, so an interruption loses only the runs in flight) and can be
committed as they come, while the committed tables stay as they are until ./run_all.sh renders
every table from the complete set of result files.

To end a sitting without losing the runs in flight (a packed group at a small batch size trains for
a quarter of an hour or more): ``--stop-after MINUTES`` or ``--stop-file PATH`` (``touch PATH``):
from then on no new run starts, those in flight finish and are written, and the script exits 0
saying how many runs are left; the same command continues later.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sbnlib.experiments import pipelines as ex  # noqa: E402
from sbnlib.experiments.stats import chosen_learning_rates  # noqa: E402
from sbnlib.experiments.studies import train_ablation, train_budget_check, train_readings  # noqa: E402
from sbnlib.experiments.workers import SweepStopped, stop_condition  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist", "cifar10", "mnist_fmnist_mix"])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--output-dir", default=None,
                    help="default: outputs/ for the cpu profile (the committed results), outputs/<profile> for the others")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--tune-only", action="store_true", help="only the learning-rate selection runs")
    which.add_argument("--readings", action="store_true",
                       help="also the readings runs, after each dataset's evaluation sweep")
    which.add_argument("--readings-only", action="store_true",
                       help="only the readings runs (and the selection they need, if not yet trained)")
    which.add_argument("--ablation-only", action="store_true",
                       help="only the ablation runs (and the selection they need, if not yet trained)")
    which.add_argument("--budget-only", action="store_true",
                       help="only the budget check's runs (bn and sbn, and the arms of any reading that beats bn, "
                            "at 1x and 2x the epochs on the tuning seeds; the selection and readings must be trained)")
    ap.add_argument("--stop-after", type=float, metavar="MINUTES",
                    help="start no new run after this many minutes; the runs in flight finish and are written")
    ap.add_argument("--stop-file", metavar="PATH",
                    help="start no new run once this file exists (touch it to end the sitting cleanly)")
    a = ap.parse_args(argv)
    if a.stop_after is not None and not a.stop_after > 0:
        ap.error(f"--stop-after must be a positive number of minutes, got {a.stop_after}")
    stop = stop_condition(a.stop_file, a.stop_after)  # one clock for every dataset
    try:
        if a.budget_only:  # the check of bn and sbn on every dataset first, then of the readings' wins
            for wins in (False, True):
                for d in a.datasets:
                    P = dataclasses.replace(ex.resolve_params(d, a.profile, data_root=a.data_root, output_dir=a.output_dir,
                                                              jobs=a.jobs), stop=stop)
                    train_budget_check(P, ex.tune(P), wins=wins)
            return 0
        for d in a.datasets:
            P = dataclasses.replace(ex.resolve_params(d, a.profile, data_root=a.data_root, output_dir=a.output_dir,
                                                      jobs=a.jobs), stop=stop)
            selection = ex.tune(P)  # no dataset given: trains and selects, writes no table
            if not (a.tune_only or a.readings_only or a.ablation_only or a.budget_only):
                ex.run(P, selection)
            if a.readings or a.readings_only:
                train_readings(P, chosen_learning_rates(selection))
            if a.ablation_only:
                train_ablation(P, chosen_learning_rates(selection))
    except SweepStopped as e:
        print(f"{d}: {e}", flush=True)
    except ex.ParameterError as e:  # a bad option: one line that names it, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
