"""Core benchmarks (figures, not tests). Run:  python bench/bench_core.py [--data-root ../shared/data]

1. Time to score every batch of MNIST's 60,000 training images at batch sizes 2..128, per scorer.
2. Training-step time of a model with selective BN (normalising, and skipping) against the same
   model with nn.BatchNorm2d, measured side by side in one run (interleaved rounds, median), as
   ratios.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from sbnlib import load_dataset, score_batches, selective_bn
from sbnlib.batches import make_batch_plan
from sbnlib.experiments.models import build_model
from sbnlib.scoring import SCORERS


def bench_scoring(x, batch_sizes, scorers):
    print(f"\n## Scoring every batch of {x.shape[0]} images (seconds, best of 3)")
    print(f"{'scorer':>18} " + " ".join(f"{'B=' + str(b):>8}" for b in batch_sizes))
    for name in scorers:
        row = []
        for b in batch_sizes:
            plan = make_batch_plan(x.shape[0], b, seed=0)
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                score_batches(x, b, name, order=plan)
                best = min(best, time.perf_counter() - t)
            row.append(best)
        print(f"{name:>18} " + " ".join(f"{v:8.3f}" for v in row))


def _step(model, opt, xb, yb):
    out = model(xb)
    loss = F.cross_entropy(out, yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bench_step(x, y, batch_sizes, steps=30, rounds=7):
    print(f"\n## Training-step time, selective BN vs nn.BatchNorm2d (cnn_s on {tuple(x.shape[1:])}, "
          f"median of {rounds} interleaved rounds of {steps} steps)")
    print(f"{'B':>5} {'bn ms':>8} {'sbn on ms':>10} {'sbn off ms':>11} {'on/bn':>7} {'off/bn':>7}")
    rows = []
    for b in batch_sizes:
        models = {}
        for key, norm in (("bn", "bn"), ("on", "sbn"), ("off", "sbn")):
            torch.manual_seed(0)
            m = build_model("cnn_s", x.shape[1:], 10, norm=norm)
            models[key] = (m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9))
        plan = make_batch_plan(x.shape[0], b, seed=0)[:steps]
        times = {k: [] for k in models}
        for _ in range(rounds):
            for key, (m, opt) in models.items():
                t = time.perf_counter()
                with selective_bn(m, enabled=(key != "off")):
                    for idx in plan:
                        _step(m, opt, x[idx], y[idx])
                times[key].append((time.perf_counter() - t) / len(plan))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{b:>5} {med['bn']:8.3f} {med['on']:10.3f} {med['off']:11.3f} "
              f"{med['on'] / med['bn']:7.3f} {med['off'] / med['bn']:7.3f}")
        rows.append((b, med["bn"], med["on"], med["off"]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128])
    ap.add_argument("--scorers", nargs="+", default=sorted(SCORERS))
    args = ap.parse_args()
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    ds = load_dataset("mnist", root=args.data_root)
    x = ds.normalize(ds.x_train)
    bench_scoring(x, args.batch_sizes, args.scorers)
    bench_step(x, ds.y_train, args.batch_sizes)


if __name__ == "__main__":
    main()
