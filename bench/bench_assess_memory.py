"""Peak memory of the feasibility assessment of your own data (``assess --data``) as the data grow.

Generates synthetic data of ``--n`` items times each scale, of each ``--kinds``:

* ``images``: an image folder (``root/<class>/<image>.png``, 10 classes, RGB, sides 24-40 px so
  that every image is resized to 32x32),
* ``npy``: a ``.npy`` file of float32 ``(N, 3, 32, 32)`` images,
* ``csv``: a CSV file of N rows of 64 numeric features and a label column,

and runs ``sbnlib.assess.assess_data`` on each in a fresh subprocess per size, which reports

* peak RSS (``VmHWM`` of ``/proc/self/status``) and its growth over the RSS right after the
  imports (Python, torch, PIL: the fixed cost),
* the tracemalloc peak during the assessment (Python and numpy allocations; torch's own tensor
  allocations are not traced, so RSS is the figure that counts),
* for comparison, the size of the whole standardised input as one float32 array, which the
  in-memory path would hold.

Memory is bounded when the growth stays flat while the data grow 10x and 100x. What it is made of:
one pass-2 chunk of about ``--chunk-mb`` MiB of float32 inputs, a pass-1 block of 2**20 values, the
scorer's float64 temporaries, and an index of a few dozen bytes per item (the usable ids and the
shuffled order, 16 bytes; for an image folder also its relative path and label); the items
themselves are never held whole. A ``.npy`` file is read with plain file reads, a block or a run of
rows at a time, not through a memory map (whose pages would count as resident memory); a CSV file
is parsed once into a temporary float32 file that pass 2 reads the same way.

    python bench/bench_assess_memory.py                       # 1x: 2,000 images
    python bench/bench_assess_memory.py --scales 1 10         # and 20,000 images
    python bench/bench_assess_memory.py --scales 1 10 100 --kinds images npy csv --chunk-mb 64 16 \
        --out outputs/BENCH_assess_memory.md                  # and 200,000 items (~3 GB of files, ~15 min)

The data are generated under ``--workdir`` (default: a temporary folder, removed at the end unless
``--keep``); existing data of the right size there are reused.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_folder(root: Path, n: int, seed: int = 0) -> None:
    """``n`` PNGs in 10 class folders."""
    import numpy as np
    from PIL import Image

    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for c in range(10):
        (root / f"class_{c}").mkdir(parents=True)
    yy, xx = np.mgrid[0:40, 0:40]
    for i in range(n):
        s = 24 + i % 17
        base = (np.sin(xx[:s, :s] / (3 + i % 5)) + np.cos(yy[:s, :s] / (2 + i % 7)))[..., None] * 60 + 128
        img = base * rng.uniform(0.3, 1.2, 3) + rng.normal(0, 20, (s, s, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"class_{i % 10}" / f"{i:07d}.png")


def write_npy(path: Path, n: int, seed: int = 0) -> None:
    """A float32 ``(n, 3, 32, 32)`` .npy file, written in blocks."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 3, 32, 32))
    for start in range(0, n, 10_000):
        k = min(10_000, n - start)
        arr[start:start + k] = rng.normal(0, 1, (k, 3, 32, 32)) * rng.uniform(0.3, 1.2, (k, 3, 1, 1))
    arr.flush()


def write_csv(path: Path, n: int, seed: int = 0) -> None:
    """A CSV of ``n`` rows: a header, 64 numeric features and a ``label`` column."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write(",".join([f"f{j}" for j in range(64)] + ["label"]) + "\n")
        for start in range(0, n, 10_000):
            k = min(10_000, n - start)
            x = rng.normal(0, 1, (k, 64)) * rng.uniform(0.3, 3, (k, 1))
            np.savetxt(f, np.column_stack([x, rng.integers(0, 10, k)]), fmt=["%.5g"] * 64 + ["%d"], delimiter=",")


WRITERS = {"images": ("images_{n}", write_folder), "npy": ("array_{n}.npy", write_npy), "csv": ("table_{n}.csv", write_csv)}


def make_data(kind: str, work: Path, n: int):
    """(path, seconds to generate) of ``kind`` data with ``n`` items under ``work``; 0 s when reused."""
    name, write = WRITERS[kind]
    path = work / name.format(n=n)
    done = work / (path.name + ".complete")  # written last: a generation cut short is redone
    if done.exists() and done.read_text() == str(n):
        return path, 0.0
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write(path, n)
    done.write_text(str(n))
    return path, time.perf_counter() - t0


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB: ``VmHWM`` of /proc/self/status on Linux.

    Not ``getrusage().ru_maxrss``: Linux carries that over from the parent across fork and exec, so
    a child would report the peak of the process that generated the data.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def child(folder: str, batch_sizes, chunk_mb: float, image_size: int, trace: bool) -> None:
    """Run one assessment and print one JSON line of measurements."""
    import tracemalloc

    import torch

    from sbnlib.assess import assess_data

    torch.set_num_threads(1)
    rss0 = peak_rss_mb()
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    res = assess_data(folder, batch_sizes, evidence=None, chunk_mb=chunk_mb, image_size=image_size,
                      label_column="label" if folder.endswith(".csv") else None)
    secs = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    rss = peak_rss_mb()
    shape = res["input"]["item_shape"]
    whole = res["input"]["n_used"] * 4 * math.prod(shape) / 2**20
    print(json.dumps({"n": res["input"]["n_used"], "seconds": secs, "rss_after_imports_mb": rss0, "rss_peak_mb": rss,
                      "rss_growth_mb": rss - rss0, "tracemalloc_peak_mb": traced, "whole_float32_mb": whole,
                      "frac_needs_bn": {r["batch_size"]: r["frac_needs_bn"] for r in res["batch_sizes"]}}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="items at scale 1 (default 2000)")
    ap.add_argument("--scales", type=int, nargs="+", default=[1], help="multiples of --n to run (default: 1; try 1 10 100)")
    ap.add_argument("--kinds", nargs="+", default=["images"], choices=["images", "npy", "csv"],
                    help="kinds of data (default: images)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 32])
    ap.add_argument("--chunk-mb", type=float, nargs="+", default=[64],
                    help="pass-2 chunk(s) in MiB (assess --chunk-mb; default 64); several: one run per scale and chunk")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--no-tracemalloc", action="store_true", help="measure RSS only (tracemalloc slows the run)")
    ap.add_argument("--workdir", default=None, help="where to generate the folders (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated folders")
    ap.add_argument("--out", default=None, help="also write the table as Markdown to this file (e.g. outputs/BENCH_assess_memory.md)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.batch_sizes, args.chunk_mb[0], args.image_size, not args.no_tracemalloc)
        return 0
    t_start = time.perf_counter()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sbn-bench-"))
    rows = []
    try:
        for kind, scale in [(k, s) for k in args.kinds for s in args.scales]:
            n = args.n * scale
            folder, gen = make_data(kind, work, n)
            for chunk_mb in args.chunk_mb:
                cmd = [sys.executable, __file__, "--child", str(folder), "--batch-sizes", *map(str, args.batch_sizes),
                       "--chunk-mb", str(chunk_mb), "--image-size", str(args.image_size)]
                if args.no_tracemalloc:
                    cmd.append("--no-tracemalloc")
                env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
                p = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if p.returncode:
                    print(p.stderr, file=sys.stderr)
                    return p.returncode
                m = json.loads(p.stdout.strip().splitlines()[-1])
                m.update(kind=kind, scale=scale, chunk_mb=chunk_mb, generate_s=gen)
                rows.append(m)
                print(f"{kind:>6} {scale:>4}x {m['n']:>9,} items, chunk {chunk_mb:g} MiB: {m['seconds']:7.1f} s, peak RSS "
                      f"{m['rss_peak_mb']:7.1f} MiB (+{m['rss_growth_mb']:.1f} over {m['rss_after_imports_mb']:.1f} after "
                      "imports), tracemalloc peak "
                      + (f"{m['tracemalloc_peak_mb']:.1f} MiB" if m["tracemalloc_peak_mb"] is not None else "n/a")
                      + f"; the whole standardised set would be {m['whole_float32_mb']:,.1f} MiB"
                      + (f" (generated in {gen:.0f} s)" if gen else ""), flush=True)
                gen = 0.0
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    setup = (f"batch sizes {args.batch_sizes}; "
             f"one fresh subprocess per run; {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(setup)
    if args.out:
        write_markdown(args.out, rows, setup, time.perf_counter() - t_start, argv if argv is not None else sys.argv[1:])
        print("written", args.out)
    return 0


KIND_TEXT = {"images": "image folder (PNG, resized to 32x32)", "npy": ".npy float32 (N, 3, 32, 32)",
             "csv": "CSV, 64 features"}


def _doc_paragraph(start: str) -> str:
    return next(p for p in __doc__.split("\n\n") if p.startswith(start)).replace("\n", " ")


def write_markdown(path, rows, setup: str, seconds: float, argv) -> None:
    """The measurements as a Markdown table, with the growth per added image between scales."""
    sys.path.insert(0, str(REPO))
    from sbnlib.io import atomic_write_bytes
    from sbnlib.provenance import git_commit, shown_path

    # a committed file names no machine's folder: a path by its place in the repository, else by its name
    shown = [a if not os.path.isabs(a) else (p if not os.path.isabs(p := shown_path(a)) else Path(a).name) for a in argv]
    lines = ["# Peak memory of `assess --data` as the data grow", "",
             f"Produced by `python bench/bench_assess_memory.py {' '.join(shown)}` in {seconds:.0f} s; {setup}.",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} at commit {git_commit(REPO)}.", "",
             "| data | items | chunk (MiB) | seconds | peak RSS (MiB) | growth over imports (MiB) | "
             "growth per added item vs the previous scale (bytes) | whole standardised set (MiB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    last = {}
    for m in rows:
        key = (m["kind"], m["chunk_mb"])
        prev = last.get(key)
        per = ("" if prev is None else
               f"{(m['rss_growth_mb'] - prev['rss_growth_mb']) * 2**20 / (m['n'] - prev['n']):.0f}")
        lines.append(f"| {KIND_TEXT[m['kind']]} | {m['n']:,} | {m['chunk_mb']:g} | {m['seconds']:.1f} | {m['rss_peak_mb']:.1f} | "
                     f"{m['rss_growth_mb']:.1f} | {per} | {m['whole_float32_mb']:,.1f} |")
        last[key] = m
    lines += ["", "Peak RSS is the high-water mark `VmHWM` of a fresh process; the growth is over the RSS "
              "right after importing torch, PIL and sbnlib. While the data are smaller than one chunk the peak grows with "
              "them; beyond, only the index grows. " + _doc_paragraph("Memory is bounded"), ""]
    atomic_write_bytes(path, "\n".join(lines).encode())

if __name__ == "__main__":
    raise SystemExit(main())
