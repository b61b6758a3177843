"""What the committed cpu-profile runs cost with packing (as they ran) and without it (estimated).

    python bench/packing_hours.py [--outputs outputs] [--bench outputs/BENCH_packed.csv] [--out outputs/BENCH_packing_hours.md]

With packing: the sum of ``wall_time_s`` over every result file under ``<outputs>/<dataset>/tuning``
and ``<outputs>/<dataset>/runs`` (one torch thread per run; a packed group's time is shared among
its runs), i.e. the total of REPORT.md's cost table. Without packing: each packed run's time
multiplied by the whole-run ratio that ``bench/bench_suite.py --only packed`` measured at its batch
size, side by side, for the groups a sweep forms there (``BENCH_packed.csv``: the ``bn`` row for
methods that normalise every batch, the ``sbn`` row for those that select batches); single-engine
runs count as they are. The ratios come from MNIST runs of the cpu recipe on a tenth of its
images, so for the other datasets (CIFAR-10's 3x32x32 images, 16 epochs) the second column is an
estimate, not a measurement: retraining 37 single-thread hours to measure it is what packing saves.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sbnlib.experiments.config import METHODS  # noqa: E402
from sbnlib.io import atomic_write_bytes  # noqa: E402


def whole_run_ratios(bench_csv) -> dict:
    """``(batch_size, "bn" | "sbn")`` -> packed/single whole-run throughput for the groups a sweep forms."""
    rows = list(csv.DictReader(Path(bench_csv).read_text().splitlines()))
    ratios = {}
    for engine in ("packed", "packed_as_sweep"):  # the sweep's own group size wins where it was measured
        ratios.update({(int(r["batch_size"]), r["method"]): float(r["ratio"]) for r in rows if r["engine"] == engine})
    return ratios


def run_hours(outputs, ratios) -> list:
    """Per dataset: runs, packed runs, hours as run, hours estimated without packing."""
    table = []
    for ds in sorted(p for p in Path(outputs).iterdir() if (p / "status.json").is_file()):  # a rendered dataset
        seen, runs, packed, hours, single = set(), 0, 0, 0.0, 0.0
        for path in sorted([*ds.glob("tuning/*.json"), *ds.glob("runs/*.json")]):
            r = json.loads(path.read_text())
            if r.get("config_hash") in seen or "wall_time_s" not in r:
                continue
            seen.add(r["config_hash"])
            c, t = r["config"], r["wall_time_s"]
            runs, hours = runs + 1, hours + t / 3600
            if c.get("engine") == "packed":
                kind = "bn" if METHODS[c["method"]].selection == "all" else "sbn"
                if (c["batch_size"], kind) not in ratios:
                    raise ValueError(f"{path} is a packed run at batch size {c['batch_size']}, which the benchmark's "
                                     f"CSV has no {kind} row for; add the batch size to bench_packed and rerun "
                                     "python bench/bench_suite.py --only packed")
                packed, single = packed + 1, single + t * ratios[(c["batch_size"], kind)] / 3600
            else:
                single += t / 3600
        if runs:
            table.append((ds.name, runs, packed, hours, single))
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outputs", default=str(REPO / "outputs"))
    ap.add_argument("--bench", default=str(REPO / "outputs" / "BENCH_packed.csv"))
    ap.add_argument("--out", help="also write the table (Markdown) here")
    a = ap.parse_args(argv)
    try:
        rows = run_hours(a.outputs, whole_run_ratios(a.bench))
    except FileNotFoundError as e:
        print(f"error: {e.filename} is missing; run python bench/bench_suite.py --only packed first "
              "(it writes BENCH_packed.csv), or give --bench / --outputs", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: {a.outputs} holds no rendered dataset (no <dataset>/status.json); give --outputs", file=sys.stderr)
        return 2
    total = ("all", *(sum(r[k] for r in rows) for k in range(1, 5)))
    lines = ["| dataset | runs | packed runs | single-thread h, as run (packed) | single-thread h without packing "
             "(estimated) | saved |", "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {runs} | {p} | {h:.2f} | {s:.2f} | {1 - h / s:.0%} |" for n, runs, p, h, s in [*rows, total]]
    text = (f"# Single-thread hours of the committed runs, with and without packing\n\nProduced by "
            f"`python bench/packing_hours.py` from the result files in `{Path(a.outputs).name}/` and the ratios "
            f"in `{Path(a.bench).name}`.\n\n" + __doc__.split("\n\n", 2)[2].strip() + "\n\n" + "\n".join(lines) + "\n")
    print(text)
    if a.out:
        atomic_write_bytes(a.out, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
