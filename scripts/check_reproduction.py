"""Does this machine reproduce the committed runs? Retrain a few and compare them with their files.

    python scripts/check_reproduction.py --data-root ../shared/data [--outputs outputs] [--per-dataset 2]
                                         [--batch-size 128] [--datasets mnist cifar10] [--out REPORT.md]

For every dataset with committed result files, the earliest and the latest single-engine runs at
``--batch-size`` (the fastest to retrain; ``--per-dataset`` of them, spread over the sweep's
sittings) are trained again from their stored configuration, with this checkout's code, and every
recorded number is compared with the file: ``bitwise`` when all are equal, else the first step
whose loss differs and the final test accuracy then and now. ``--out`` also writes these lines,
with the machine and the date, as Markdown (``outputs/REPRODUCTION.md`` holds the last check).

Training is bitwise deterministic on one CPU, but another CPU may make torch dispatch other kernels
(the record's ``machine`` says which CPU a run had, where it says it), which sum in another order;
over thousands of steps such rounding can move one seed's final accuracy by a point. A run that
differs here is not wrong, it is another sample of the same rounding the paired seeds average over.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sbnlib.experiments.config import TrainConfig, config_hash  # noqa: E402
from sbnlib.experiments.train import train  # noqa: E402
from sbnlib.io import atomic_write_bytes  # noqa: E402
from sbnlib.provenance import machine  # noqa: E402

# fields that say when, how long and where, not what was computed
NOT_NUMBERS = {"wall_time_s", "loop_time_s", "produced", "versions", "machine", "torch_threads", "packed_group"}


def sample(runs_dir: Path, batch_size: int, k: int) -> list:
    """``k`` single-engine records at ``batch_size``, spread from the earliest to the latest produced."""
    records = []
    for path in sorted(runs_dir.glob("*.json")):
        r = json.loads(path.read_text())
        c = r.get("config", {})
        if c.get("engine", "single") == "single" and c.get("batch_size") == batch_size and "produced" in r:
            records.append((r["produced"]["utc"], path, r))
    records.sort(key=lambda t: (t[0], str(t[1])))
    if not records or k < 1:
        return []
    picks = sorted({round(i * (len(records) - 1) / max(1, k - 1)) for i in range(k)})
    return [records[i][1:] for i in picks]


def compare(old: dict, new: dict) -> str:
    """``bitwise``, or where ``new`` departs from ``old``."""
    differs = [k for k in old if k not in NOT_NUMBERS and old[k] != new.get(k)]
    if not differs:
        return "bitwise"
    a, b = np.asarray(old["steps"]["loss"], float), np.asarray(new["steps"]["loss"], float)
    steps = np.flatnonzero(a != b) if a.shape == b.shape else np.array([0])
    first = f"loss first differs at recorded step {int(steps[0])}" if steps.size else "steps equal"
    return (f"differs ({first}; final test accuracy {100 * old['final_test_acc']:.2f}% then, "
            f"{100 * new['final_test_acc']:.2f}% now; fields: {', '.join(differs)})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--outputs", default=str(Path(__file__).resolve().parents[1] / "outputs"))
    ap.add_argument("--datasets", nargs="*", help="default: every dataset with a runs/ folder")
    ap.add_argument("--per-dataset", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", help="also write the report (Markdown) here")
    a = ap.parse_args(argv)
    outputs = Path(a.outputs)
    names = a.datasets or sorted(p.name for p in outputs.iterdir() if (p / "runs").is_dir() and (p / "status.json").is_file())
    missing = [n for n in names if not (outputs / n / "runs").is_dir()]
    if missing:
        print(f"error: {outputs / missing[0] / 'runs'} does not exist; give --outputs or one of the datasets "
              f"rendered there", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # as every sweep run
    lines = [f"this machine: {machine()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"]
    print(lines[0])
    for name in names:
        for path, old in sample(outputs / name / "runs", a.batch_size, a.per_dataset):
            cfg = TrainConfig(**old["config"])
            if config_hash(cfg) != old.get("config_hash"):
                lines.append(f"{path.name}: skipped (its configuration hashes differently with this code)")
            else:
                ran_on = old.get("machine", {}).get("cpu_capability", "not recorded")
                lines.append(f"{path.name} (trained {old['produced']['utc']}, CPU {ran_on}): "
                             f"{compare(old, train(cfg, root=a.data_root))}")
            print(lines[-1], flush=True)
    if a.out:
        text = ("# Do the committed runs reproduce on this machine?\n\nProduced by `python scripts/check_reproduction.py "
                f"--per-dataset {a.per_dataset} --batch-size {a.batch_size}`; each sampled run retrained from its stored "
                "configuration and compared with its file.\n\n" + "".join(f"- {line}\n" for line in lines))
        atomic_write_bytes(a.out, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
