"""The four benchmarks of issue 5, each a ratio measured side by side in one run; writes BENCH.md.

    python bench/bench_suite.py --data-root ../shared/data [--out outputs/BENCH.md]

1. Selective BN vs ``nn.BatchNorm2d``: training-step time when normalising and when skipping
   (cnn_s on MNIST, batch sizes 2..128; interleaved rounds, median). Target: within 3% when
   normalising, faster when skipping.
2. Pre-training assessment (score every batch of an epoch's plan, fit the threshold, classify)
   as a fraction of one training epoch at the same batch size, on MNIST's 60,000 training images.
   The epoch time is the median step time (interleaved with the assessment) times the number of
   steps in the epoch. Target: below 1%.
3. Trainer throughput against a raw forward/backward/step loop over pre-made batch tensors, same
   model, same batches, same number of steps (the trainer also records loss and gradient norm per
   step and slices each batch out of the in-memory training tensor). Target: at least 90%.
4. Sweep throughput, ``--jobs 2`` against ``--jobs 1``: the same 12 small runs, into fresh
   folders. Target: at least 1.6x on 2 cores.
5. Packed seeds (issue 12): training images per second summed over 8 seeds of one configuration,
   ``sbnlib.experiments.packed.train_packed`` on all 8 at once (and in groups of ``pack_size(B)``, as a sweep
   packs them; and with ``torch.compile``, compile time included) against the single trainer run
   after run, on one thread, at B = 2, 4, 8, 32, 128, side by side. Each run is a ``cpu``-profile run
   on a tenth of its images (the profile's recipe: 8 epochs, validation split and evaluation every
   epoch, test set and end-of-run measurements; 1,000 MNIST training and 1,000 test images; the
   shift probe's 20 checkpoints scaled to 2), so a run's evaluation weighs about what it weighs in
   the sweep (the running-statistics drift reads 1,000 images whatever the run, so it weighs up to
   10x more here; it runs on single models in both engines). Whole runs and the step
   loops alone. Targets: >= 3x at B=2, >= 2x at B=8, never slower where a sweep packs (from B=32 a
   sweep trains single runs). ``--only packed`` runs this section alone and updates it in place.

Figures, not assertions: the script prints them and writes a Markdown file with the machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import bench_step  # noqa: E402

from sbnlib.batches import make_batch_plan  # noqa: E402
from sbnlib.data import load_dataset  # noqa: E402
from sbnlib.experiments.config import TrainConfig  # noqa: E402
from sbnlib.experiments.models import build_model  # noqa: E402
from sbnlib.experiments.packed import pack_size, train_packed  # noqa: E402
from sbnlib.experiments.sweep import experiment_configs, profile_params, run_configs  # noqa: E402
from sbnlib.experiments.train import train  # noqa: E402
from sbnlib.io import atomic_write_bytes  # noqa: E402
from sbnlib.scoring import score_batches  # noqa: E402
from sbnlib.threshold import classify_batches, fit_threshold  # noqa: E402

BATCH_SIZES = [2, 4, 8, 16, 32, 64, 128]

BOUNDS = """\
- Selective BN normalising runs `nn.BatchNorm2d.forward` itself (bitwise identical), so the only
  extra work is one Python attribute check per layer; ratios a few percent away from 1 at single
  batch sizes are timing noise of 5 rounds x 30 steps on a shared 2-core machine (they move from
  run to run, in both directions). Skipping is faster at every batch size.
- The assessment scores all 60,000 images once in float64 (about 0.35-0.55 s whatever the batch
  size), while an epoch of this small CNN at large batches takes only seconds on 2 cores, so the
  ratio grows with the batch size: below 1% only at B=2. It is paid once per training run (not per
  epoch unless batches are re-formed), i.e. the ratio divided by the number of epochs; with the
  paper's models (ResNets, GPUs) an epoch is orders of magnitude slower than the scoring pass.
- The trainer's step loop also computes and records the global gradient norm, the loss and the
  BN decision at every step (tensor -> Python conversions); at B=2, where a step takes about 2 ms,
  that bookkeeping is about 10% of the step.
- `--jobs 2` on 12 runs of a few seconds each pays the start-up of two spawned worker processes
  (importing torch) inside a 15-20 s measurement; on the full `cpu` sweep the summed single-thread
  training time divided by the wall time is the better figure (README, profile table).
- Packed seeds remove per-operation overhead, and what is left is torch's CPU kernels: a packed
  step runs each operation once on S times the channels, and grouped convolutions, their backward
  pass, BN and max-pool over those wider tensors cost nearly as much as the S single operations
  they replace, more so as the batch grows (`python bench/profile_packed.py` shows where a group's
  loop goes). Selective BN's packed steps with some seeds on and some off normalise every channel
  and keep each seed's own output, while a single run that skips a batch skips the BN work, so
  `sbn` gains less than `bn`. The evaluation, shift probe, running-statistics drift and inference
  policies run seed by seed on unpacked single models in both engines (the same work), so the
  whole-run ratios sit a little below the step-loop ratios. From B=32 packing gains little for
  `bn` and loses for `sbn`, and at B=128 it loses for both (the S=8 rows), which is why a sweep packs
  `pack_size(B) = 32 // B` seeds (none from B=32 on). torch.compile (inductor, CPU) costs a minute
  of compilation per shape and its steps were not faster. A faster formulation (other kernels,
  layouts or fused layers) changes the last float bits of packed runs, so it needs a new engine
  name and a rerun of every committed packed run."""


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _raw_steps(model, opt, batches):
    for xb, yb in batches:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def bench_selective_bn(x, y, steps, rounds):
    rows = bench_step(x, y, BATCH_SIZES, steps=steps, rounds=rounds)
    return _table(["B", "bn ms/step", "sbn normalising ms/step", "sbn skipping ms/step", "normalising / bn",
                   "skipping / bn"],
                  [(b, f"{bn:.3f}", f"{on:.3f}", f"{off:.3f}", f"{on / bn:.3f}", f"{off / bn:.3f}")
                   for b, bn, on, off in rows])


def bench_assessment(x, y, steps, rounds, scorer="feature_std"):
    print(f"\n## Assessment cost vs one training epoch ({x.shape[0]} images, scorer {scorer})")
    rows = []
    for b in BATCH_SIZES:
        plan = make_batch_plan(x.shape[0], b, seed=0)
        torch.manual_seed(0)
        model = build_model("cnn_s", x.shape[1:], 10, norm="bn")
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        batches = [(x[i], y[i]) for i in plan[:steps]]
        t_assess, t_step = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            scores = score_batches(x, b, scorer, order=plan)
            classify_batches(scores, fit_threshold(scores, "mean"))
            t_assess.append(time.perf_counter() - t)
            t = time.perf_counter()
            _raw_steps(model, opt, batches)
            t_step.append((time.perf_counter() - t) / len(batches))
        assess, epoch = statistics.median(t_assess), statistics.median(t_step) * plan.shape[0]
        print(f"B={b:>4}: assessment {assess:.3f} s, epoch {epoch:.1f} s ({plan.shape[0]} steps), "
              f"ratio {100 * assess / epoch:.2f}%")
        rows.append((b, plan.shape[0], f"{assess:.3f}", f"{epoch:.1f}", f"{100 * assess / epoch:.2f}%"))
    return _table(["B", "steps per epoch", "assessment s", "epoch s (median step x steps)", "assessment / epoch"],
                  rows)


def bench_trainer(data_root, rounds, n_train=2000):
    """The trainer's step loops (``loop_time_s`` of its record: slicing batches out of the
    in-memory tensor, selection switch, loss and gradient-norm bookkeeping; no probe, evaluation
    excluded) vs the raw loop over the same batches, pre-sliced, on the same model."""
    print("\n## Trainer throughput vs a raw loop on pre-made tensors")
    small = load_dataset("mnist", root=data_root, n_train=n_train, n_test=100)
    x, y = small.normalize(small.x_train), small.y_train
    data = (small, x, small.normalize(small.x_test))
    rows = []
    for b in (2, 8, 32, 128):
        cfg = TrainConfig(dataset="mnist", method="bn", batch_size=b, epochs=1, seed=0, n_train=n_train,
                          n_test=100, probe_points=0)
        plan = make_batch_plan(n_train, b, seed=0)
        batches = [(x[i].clone(), y[i].clone()) for i in plan]
        t_tr, t_whole, t_raw = [], [], []
        for _ in range(rounds):
            t = time.perf_counter()
            t_tr.append(train(cfg, dataset=data)["loop_time_s"])
            t_whole.append(time.perf_counter() - t)
            torch.manual_seed(0)
            model = build_model(cfg.model, x.shape[1:], 10, norm="bn")
            opt = torch.optim.SGD(model.parameters(), lr=cfg.effective_lr, momentum=cfg.momentum,
                                  weight_decay=cfg.weight_decay)
            t = time.perf_counter()
            _raw_steps(model, opt, batches)
            t_raw.append(time.perf_counter() - t)
        tr, whole, raw = statistics.median(t_tr), statistics.median(t_whole), statistics.median(t_raw)
        print(f"B={b:>4}: trainer loop {tr:.2f} s (whole train() {whole:.2f} s), raw loop {raw:.2f} s, "
              f"throughput ratio {raw / tr:.3f}")
        rows.append((b, plan.shape[0], f"{tr:.2f}", f"{raw:.2f}", f"{raw / tr:.3f}", f"{whole:.2f}"))
    return _table(["B", "steps", "trainer step loop s", "raw loop s", "trainer throughput / raw",
                   "whole train() s (with selection, evaluation, drift)"], rows)


def bench_jobs(data_root):
    print("\n## Sweep throughput, --jobs 2 vs --jobs 1")
    p = profile_params("cpu", batch_sizes=[8, 32, 128], seeds=2, n_train=1000, n_test=500, epochs=1,
                       methods=["bn", "sbn"])
    configs = experiment_configs("mnist", p)
    walls = {}
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            run_configs(configs, d, root=data_root, jobs=jobs, progress=False)
            walls[jobs] = time.perf_counter() - t
        print(f"jobs={jobs}: {walls[jobs]:.1f} s for {len(configs)} runs")
    print(f"speed-up {walls[1] / walls[2]:.2f}x")
    return _table(["runs", "jobs=1 s", "jobs=2 s", "speed-up"],
                  [(len(configs), f"{walls[1]:.1f}", f"{walls[2]:.1f}", f"{walls[1] / walls[2]:.2f}x")])


ENGINE_LABELS = {"single": "single, run after run", "packed": "packed, S={S}",
                 "packed_as_sweep": "packed as a sweep packs, S={S}",
                 "packed_compiled": "packed + torch.compile, S={S} (compile time included)"}


def bench_packed(data_root, seeds=8, n_train=1000, n_test=1000, methods=("bn", "sbn")):
    print(f"\n## Packed seeds vs single runs ({seeds} seeds, cpu-profile runs on {n_train} MNIST images, 1 thread)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    small = load_dataset("mnist", root=data_root, n_train=n_train, n_test=n_test)
    data = (small, small.normalize(small.x_train), small.normalize(small.x_test))
    # the sweep's runs on a tenth of the images; the shift probe's checkpoints, a fixed number per run,
    # are scaled with them, so that its share of a run stays what it is in the sweep
    recipe = profile_params("cpu", "mnist", n_train=n_train, n_test=n_test)
    recipe["probe_points"] = max(1, round(recipe["probe_points"] * n_train / profile_params("cpu")["n_train"]))
    rows = []
    for b in (2, 4, 8, 32, 128):
        tiny = load_dataset("mnist", root=data_root, n_train=max(40, 4 * b), n_test=100)  # warm-up: kernels for these shapes
        tiny = (tiny, tiny.normalize(tiny.x_train), tiny.normalize(tiny.x_test))
        for method in methods:
            cfgs = [dataclasses.replace(c, engine="packed") for c in experiment_configs(
                "mnist", dict(recipe, methods=[method], batch_sizes=[b], seeds=seeds))]
            k = pack_size(b)
            engines = {  # (engine, group size) -> the runs of the seeds' configurations `cs` (a list of records)
                ("single", 1): lambda cs, d: [train(dataclasses.replace(c, engine="single"), dataset=d) for c in cs],
                ("packed", seeds): lambda cs, d: train_packed(cs, dataset=d),
            }
            if 1 < k < seeds:  # what run_configs does at this batch size (from B=32 it trains single runs)
                engines[("packed_as_sweep", k)] = lambda cs, d: [
                    r for i in range(0, seeds, k) for r in train_packed(cs[i:i + k], dataset=d)]
            if b in (2, 8) and method == "bn":
                engines[("packed_compiled", seeds)] = lambda cs, d: train_packed(cs, dataset=d, compile=True)
            warm = [dataclasses.replace(c, epochs=1) for c in cfgs]
            for (engine, _), run in engines.items():
                if engine != "packed_compiled":  # its warm-up would be a compilation of its own
                    run(warm, tiny)
            base = None
            for (engine, size), run in engines.items():  # interleaved: every engine at this B and method, in turn
                t = time.perf_counter()
                records = run(cfgs, data)
                wall = time.perf_counter() - t
                loop = sum(r["loop_time_s"] for r in records)
                images = sum(r["steps"]["n"] for r in records) * b
                base = base or (images / wall, images / loop)
                print(f"B={b:>4} {method:>4} {ENGINE_LABELS[engine].format(S=size):<58} {images / wall:8.0f} img/s ({images / wall / base[0]:.2f}x), "
                      f"step loops {images / loop:8.0f} img/s ({images / loop / base[1]:.2f}x)", flush=True)
                rows.append(dict(batch_size=b, method=method, engine=engine, group_size=size, images_per_s=round(images / wall, 1),
                                 ratio=round(images / wall / base[0], 3), loop_images_per_s=round(images / loop, 1),
                                 loop_ratio=round(images / loop / base[1], 3)))
    torch.set_num_threads(threads)
    return rows


def packed_table(rows) -> str:
    """Section 5's Markdown table from :func:`bench_packed`'s rows (also written as CSV beside BENCH.md)."""
    return _table(["B", "method", "engine", "images/s, whole runs", "vs single", "images/s, step loops", "vs single"],
                  [(r["batch_size"], r["method"], ENGINE_LABELS[r["engine"]].format(S=r["group_size"]), f"{r['images_per_s']:.0f}", f"{r['ratio']:.2f}x",
                    f"{r['loop_images_per_s']:.0f}", f"{r['loop_ratio']:.2f}x") for r in rows])


def write_packed_csv(rows, bench_md) -> Path:
    """The rows as ``BENCH_packed.csv`` beside ``bench_md``: the ratios other scripts read (``bench/packing_hours.py``)."""
    path = Path(bench_md).with_name("BENCH_packed.csv")
    header = list(rows[0])
    text = ",".join(header) + "\n" + "".join(",".join(str(r[k]) for k in header) + "\n" for r in rows)
    atomic_write_bytes(path, text.encode())
    return path


def _splice(path, title, table):
    """``path``'s Markdown with the section ``## title`` replaced by (or, when absent, added as) ``table``."""
    return _splice_text(Path(path).read_text(), title, table)


def _splice_text(text, title, table):
    """``text`` with the section ``## title`` replaced by (or, when absent, added as) ``table``."""
    head = f"## {title}"
    block = f"{head}\n\n{table}\n"
    if head not in text:
        marker = f"## {BOUNDS_TITLE}"
        i = text.find(marker)
        return text[:i] + block + "\n" + text[i:] if i >= 0 else text.rstrip("\n") + "\n\n" + block
    start = text.index(head)
    end = text.find("\n## ", start + len(head))
    return text[:start] + block + (text[end:] if end >= 0 else "")


PACKED_TITLE = "5. Packed seeds vs single runs, sweep throughput"
BOUNDS_TITLE = "What bounds the figures that miss their targets"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=os.environ.get("SBN_DATA_ROOT"))
    ap.add_argument("--out", default=str(REPO / "outputs" / "BENCH.md"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", choices=["packed"], help="run one section and update it in --out in place")
    args = ap.parse_args()
    machine = (f"{platform.platform()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
               f"torch {torch.__version__}, {torch.get_num_threads()} torch threads in the main process, "
               f"Python {platform.python_version()}")
    print("machine:", machine)
    t0 = time.perf_counter()
    if args.only == "packed":
        rows = bench_packed(args.data_root)
        table = packed_table(rows)
        print("written", write_packed_csv(rows, args.out))
        item = __doc__[__doc__.index("5. Packed seeds"):__doc__.index("Figures, not assertions")]
        stamp = (" ".join(item.split()) + f"\n\nProduced by `python bench/bench_suite.py --only packed` in "
                 f"{time.perf_counter() - t0:.0f} s on {machine}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.")
        text = _splice(args.out, PACKED_TITLE, f"{stamp}\n\n{table}")
        atomic_write_bytes(args.out, _splice_text(text, BOUNDS_TITLE, BOUNDS).encode())
        print("written", args.out)
        return
    ds = load_dataset("mnist", root=args.data_root)
    x = ds.normalize(ds.x_train)
    sections = {
        "1. Selective BN vs nn.BatchNorm2d, training-step time": bench_selective_bn(x, ds.y_train, 30, args.rounds),
        "2. Pre-training assessment as a fraction of one epoch": bench_assessment(x, ds.y_train, 30, args.rounds),
        "3. Trainer throughput vs the raw loop": bench_trainer(args.data_root, max(3, args.rounds // 2)),
        "4. Sweep throughput, --jobs 2 vs --jobs 1": bench_jobs(args.data_root),
        PACKED_TITLE: bench_packed(args.data_root),
    }
    print("written", write_packed_csv(sections[PACKED_TITLE], args.out))
    sections[PACKED_TITLE] = packed_table(sections[PACKED_TITLE])
    text = ["# Benchmarks", "", f"Produced by `python bench/bench_suite.py` in {time.perf_counter() - t0:.0f} s.",
            "", f"- machine: {machine}", f"- generated: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", "",
            (__doc__.split("\n\n", 1)[1].split("Figures, not assertions")[0]).strip(), ""]
    for title, table in sections.items():
        text += [f"## {title}", "", table, ""]
    text += [f"## {BOUNDS_TITLE}", "", BOUNDS, ""]
    atomic_write_bytes(args.out, "\n".join(text).encode())
    print("written", args.out)


if __name__ == "__main__":
    main()
