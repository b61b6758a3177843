"""Print every number a refactor must not change, to diff between two checkouts.

(a) the result-file hash (:func:`config_hash`) of every configuration the sweeps make for the
``smoke`` and ``cpu`` profiles: tuning, experiment, ablation and readings configurations of every
dataset; (b) the result records of a few smoke-sized training runs (``bn``, ``sbn``, ``random``,
``gn``, ``sbn_frozen`` at scope ``input`` with re-formed batches, and ``sbn`` packed, through
:func:`run_configs` with two worker processes), without the fields that record time, commit,
versions and machine. Run it on both checkouts and diff the outputs::

    PYTHONPATH=<checkout> python scripts/check_numbers_unchanged.py --data-root ../shared/data > out.txt

Training is bitwise deterministic on one CPU with one torch thread (every sweep run uses one), so on
one machine the records must be identical, float for float (another CPU may round differently).
"""
import argparse
import json
import sys
import tempfile

try:  # the layout of issue 15
    from sbnlib.experiments import readings
    from sbnlib.experiments.config import config_hash
    from sbnlib.experiments.sweep import (
        ABLATION,
        ablation_configs,
        experiment_configs,
        profile_params,
        run_configs,
        tuning_configs,
    )
except ImportError:  # the flat layout before it
    from sbnlib.sweep import ABLATION, ablation_configs, experiment_configs, profile_params, run_configs, tuning_configs
    from sbnlib.train import config_hash

    from sbnlib import readings

DATASETS = ["mnist", "fashion_mnist", "cifar10", "cifar100", "mnist_fmnist_mix"]
TIMING = ("wall_time_s", "loop_time_s", "produced", "versions", "machine")


def hashes():
    for profile in ("smoke", "cpu"):
        abl = ABLATION[profile]
        plan = readings.PLAN[profile]
        for d in DATASETS:
            params = profile_params(profile, d)
            groups = {
                "tuning": tuning_configs(d, params),
                "experiment": experiment_configs(d, params),
                "ablation": ablation_configs(d, params, abl["batch_sizes"], abl["seeds"], abl["scorers"],
                                             abl["strategies"], abl["rates"]),
                "readings": readings.readings_configs(d, params, plan["batch_sizes"], plan["seeds"]),
            }
            for name, cfgs in groups.items():
                for c in cfgs:
                    print(profile, d, name, c.method, c.batch_size, c.seed, c.lr, c.engine, config_hash(c))


def runs(root):
    params = profile_params("smoke", methods=["bn", "sbn", "random", "gn"], batch_sizes=[32], seeds=1)
    cfgs = experiment_configs("mnist", params)
    cfgs += experiment_configs("mnist", dict(params, methods=["sbn_frozen"], scope="input", reform_batches=True))
    cfgs += experiment_configs("mnist", profile_params("smoke", methods=["sbn"], batch_sizes=[4], seeds=2))
    assert {c.engine for c in cfgs} == {"single", "packed"}, [c.engine for c in cfgs]
    with tempfile.TemporaryDirectory() as tmp:
        results = run_configs(cfgs, tmp, root=root, jobs=2, progress=False)
    for c, r in zip(cfgs, results):
        print("run", c.method, c.batch_size, c.seed, c.engine,
              json.dumps({k: v for k, v in r.items() if k not in TIMING}, sort_keys=True))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--no-runs", action="store_true", help="only the configuration hashes")
    args = ap.parse_args()
    hashes()
    if not args.no_runs:
        runs(args.data_root)
    sys.stdout.flush()
