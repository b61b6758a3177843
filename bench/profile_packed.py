"""Where a packed group's time goes (a profile, not a benchmark). Run:

    python bench/profile_packed.py --batch-size 8 --method bn [--seeds 8] [--data-root ../shared/data]

Trains ``--seeds`` seeds of one MNIST configuration packed (``sbnlib.experiments.packed.train_packed``,
one epoch, one thread) under cProfile, after a short warm-up group (kernels for these shapes), and
prints the group's step-loop time and the functions that took the most time of their own. Absolute
times move with the load on the machine; the shares of the loop are what to read.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sbnlib.data import load_dataset  # noqa: E402
from sbnlib.experiments.config import TrainConfig  # noqa: E402
from sbnlib.experiments.packed import train_packed  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--method", default="bn")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--top", type=int, default=20, help="how many functions to print")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)  # as a sweep's worker
    small = load_dataset("mnist", root=a.data_root, n_train=a.n_train, n_test=200)
    data = (small, small.normalize(small.x_train), small.normalize(small.x_test))
    cfgs = [TrainConfig(dataset="mnist", method=a.method, batch_size=a.batch_size, epochs=1, seed=s,
                        n_train=a.n_train, n_test=200, probe_points=0, engine="packed") for s in range(a.seeds)]
    train_packed(cfgs[:2], dataset=data)  # warm-up
    prof = cProfile.Profile()
    prof.enable()
    records = train_packed(cfgs, dataset=data)
    prof.disable()
    loop = sum(r["loop_time_s"] for r in records)  # each record holds its share of the group's loop
    print(f"B={a.batch_size} {a.method}, {a.seeds} seeds packed: step loop {loop:.2f} s (under cProfile)")
    pstats.Stats(prof).sort_stats("tottime").print_stats(a.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
