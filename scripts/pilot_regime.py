"""Pilot learning curves that chose the cpu profile's training images and epochs (issue 11).

    python scripts/pilot_regime.py --data-root ../shared/data [--jobs 1] [--epochs 8] [--n-train 10000]

Trains `bn` (one seed, 0) with the cpu profile's recipe at every batch size of the profile, on each
dataset, and writes the validation accuracy after every epoch to outputs/pilot/curves.csv and a
Markdown copy. The choice rule (issue 11): BN's validation accuracy has plateaued at every batch
size, i.e. it gained less than 0.5 pp over the last two epochs. Test accuracy is not read here
beyond what the record carries; nothing is chosen from it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from sbnlib.experiments.sweep import experiment_configs, profile_params, run_configs  # noqa: E402
from sbnlib.experiments.tables import markdown_table  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist", "cifar10"])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--lr", type=float, default=0.1, help="peak learning rate at batch size 32 (sqrt-scaled)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "outputs" / "pilot"))
    a = ap.parse_args(argv)
    params = profile_params("cpu", epochs=a.epochs, n_train=a.n_train, methods=["bn"], seeds=[0],
                            batch_sizes=a.batch_sizes)
    params["lr"] = a.lr
    rows = []
    for d in a.datasets:
        configs = experiment_configs(d, params)
        results = run_configs(configs, Path(a.out) / "runs", root=a.data_root, jobs=a.jobs, desc=f"{d} pilot")
        for r in results:
            val = [e["val_acc"] for e in r["epochs"]]
            rows += [{"dataset": d, "batch_size": r["config"]["batch_size"], "epoch": e + 1,
                      "val_acc": 100 * v, "n_train_used": r["data"]["n_train_used"]} for e, v in enumerate(val)]
    df = pd.DataFrame(rows)
    out = Path(a.out)
    tag = f"_e{params['epochs']}_lr{a.lr:g}" if (a.epochs or a.lr != 0.1 or a.batch_sizes) else ""
    df.to_csv(out / f"curves{tag}.csv", index=False)
    wide = df.pivot_table(index=["dataset", "batch_size"], columns="epoch", values="val_acc").round(2)
    last = wide.columns[-1]
    wide["gain, last 2 epochs (pp)"] = (wide[last] - wide[last - 2]).round(2)
    (out / f"curves{tag}.md").write_text(f"# Pilot: BN validation accuracy (%) per epoch (peak lr {a.lr:g} at B=32, "
                                         f"{params['epochs']} epochs)\n\n" + markdown_table(wide) + "\n")
    print(wide.to_string())


if __name__ == "__main__":
    main()
