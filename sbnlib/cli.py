"""Command line: ``python -m sbnlib assess ...`` and ``python -m sbnlib train ...``.

Every user error (unknown dataset, bad batch size, missing data, unwritable output) ends with one
line ``error: ...`` on stderr and exit status 2; nothing already written is overwritten by a failed
command (outputs are written atomically, and only after the work succeeded).
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import torch

from .assess.advice import add_recommendations, plural, recommendation_lines
from .assess.core import CHUNK_MB_MAX, DEFAULT_BATCH_SIZES, assess, assess_data, fitting_batch_sizes, summary_table
from .assess.evidence import benchmark_evidence
from .assess.sources import IMAGE_SIZE_MAX
from .batches import SEED_MAX
from .data import DataError, dataset_names, load_dataset
from .experiments.config import EPOCHS_MAX, LR_RANGE, METHODS, SCOPES, THREADS_MAX, TrainConfig, config_hash
from .experiments.models import MODELS
from .experiments.train import train
from .io import atomic_output_set, atomic_write_json, ensure_writable_dir
from .scoring import SCORERS
from .threshold import STRATEGIES, fit_threshold

__all__ = ["main"]


#: the most of a count option (subset sizes, batch sizes): fits every index type used
COUNT_MAX = 2**31 - 1


def _int_in(lo: int, hi: int):
    """argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is not None and v > hi:
            raise argparse.ArgumentTypeError(f"expected an integer <= {hi}, got {text!r}")
        if v is None or v < lo:
            what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


def _float_in(lo: float, hi: float, open_lo: bool = False):
    """argparse type: a finite number in [lo, hi] (``(lo, hi]`` with ``open_lo``); never NaN or inf."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        if not (lo < v <= hi if open_lo else lo <= v <= hi):
            raise argparse.ArgumentTypeError(f"expected a number in {'(' if open_lo else '['}{lo:g}, {hi:g}], got {text!r}")
        return v
    return parse


_positive_int = _int_in(1, COUNT_MAX)
_seed = _int_in(0, SEED_MAX)
_fraction = _float_in(0.0, 1.0)


class _Parser(argparse.ArgumentParser):
    """Usage errors as the one line ``error: ...`` that every other error of this command line is,
    instead of argparse's usage block (``--help`` still prints the usage)."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _data_args(p: argparse.ArgumentParser, subsets: bool = True, own_data: bool = False) -> None:
    """--dataset, --data-root, --download; with ``subsets`` also --n-train, --n-test, --data-seed;
    with ``own_data`` the alternative --data PATH and its reading options."""

    if own_data:
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--dataset", choices=dataset_names(), help="a benchmark dataset")
        g.add_argument("--data", metavar="PATH", help="your own data: an image folder (root/<class>/<image>), "
                       "a .npy / .npz array file (N, ...) or a CSV file of numeric features")
        o = p.add_argument_group("reading --data")
        o.add_argument("--image-size", type=_int_in(1, IMAGE_SIZE_MAX), default=32,
                       help=f"image folders: every image is resized to SIZE x SIZE (default 32, at most {IMAGE_SIZE_MAX})")
        o.add_argument("--channels", type=int, choices=[1, 2, 3, 4], default=None,
                       help="image folders: convert every image to this many channels (default: the first image's)")
        o.add_argument("--label-column", default=None, help="CSV: a column (name or 0-based index) to drop")
        o.add_argument("--header", choices=["auto", "yes", "no"], default="auto",
                       help="CSV: whether the first row is a header (auto: when it holds no number)")
        o.add_argument("--array-key", default=None,
                       help=".npz: which array (default: the only one, or x / data / features / images)")
        o.add_argument("--layout", choices=["auto", "nchw", "nhwc"], default="auto", help="4-D arrays: channel axis")
        o.add_argument("--skip-bad", action="store_true",
                       help="skip unreadable images, rows with NaN or non-numeric cells, empty classes ... "
                            "and count them in the report")
        o.add_argument("--chunk-mb", type=_float_in(0, CHUNK_MB_MAX, open_lo=True), default=64,
                       help="pass 2 reads about this many MiB of inputs at a time")
    else:
        p.add_argument("--dataset", required=True, choices=dataset_names(), help="dataset name")
    p.add_argument("--data-root", default=None, help="data folder (default: $SBN_DATA_ROOT, else ./data)")
    p.add_argument("--download", action="store_true", help="download missing files through torchvision")
    if not subsets:
        return
    p.add_argument("--n-train", type=_positive_int, default=None, help="stratified training subset size")
    p.add_argument("--n-test", type=_positive_int, default=None, help="stratified test subset size")
    p.add_argument("--data-seed", type=_seed, default=0, help="seed of the subsets")


def _parser() -> argparse.ArgumentParser:

    ap = _Parser(prog="python -m sbnlib", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    a = sub.add_parser("assess", help="score and classify training batches (no training); should I use BN on my data?")
    _data_args(a, own_data=True)
    a.add_argument("--batch-sizes", type=_positive_int, nargs="+", default=None,
                   help=f"default: {' '.join(map(str, DEFAULT_BATCH_SIZES))}, less those larger than the data (with a note)")
    a.add_argument("--scorer", choices=sorted(SCORERS), default="feature_std")
    a.add_argument("--threshold", choices=list(STRATEGIES), default="mean")
    a.add_argument("--q", type=_fraction, default=None, help="quantile for --threshold quantile")
    a.add_argument("--rate", type=_fraction, default=None, help="fraction normalised for --threshold rate")
    a.add_argument("--seed", type=_seed, default=0, help="seed of the batch plans")
    a.add_argument("--evidence", default="auto", metavar="DIR",
                   help="results folder with the benchmark evidence (<dataset>/evidence.json, written by the "
                        "analysis); default: ./outputs, else the repository's outputs/; 'none': no evidence")
    a.add_argument("--out", default="outputs/assess", help="folder for the JSON, the histogram PNG and the HTML report")

    sub.add_parser("datasets", help="list the dataset names --dataset accepts, one a line (run_all.sh reads them)")
    c = sub.add_parser("check-data", help="check that a dataset's files are present and readable")
    _data_args(c, subsets=False)

    t = sub.add_parser("train", help="run one training run and write its result record")
    _data_args(t)
    t.add_argument("--method", choices=sorted(METHODS), default="sbn")
    t.add_argument("--batch-size", type=_positive_int, default=32)
    t.add_argument("--epochs", type=_int_in(1, EPOCHS_MAX), default=1)
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--model", choices=sorted(MODELS), default="cnn_s")
    t.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    t.add_argument("--lr", type=_float_in(*LR_RANGE), default=0.01)
    t.add_argument("--scorer", choices=sorted(SCORERS), default="feature_std")
    t.add_argument("--threshold", choices=list(STRATEGIES), default="mean")
    t.add_argument("--q", type=_fraction, default=None)
    t.add_argument("--rate", type=_fraction, default=None)
    t.add_argument("--reform-batches", action="store_true", help="re-form and re-score batches every epoch")
    t.add_argument("--scope", choices=list(SCOPES), default="all",
                   help="which BN layers a selective method switches (sbnlib.experiments.config.SCOPES)")
    t.add_argument("--threads", type=_int_in(1, THREADS_MAX), default=None, help="torch CPU threads")
    t.add_argument("--out", default=None, help="result JSON path (default: outputs/runs/<config hash>.json)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def _assess(args) -> int:
    from .assess.figures import plot_score_histograms  # the [assess] extra (matplotlib), needed here only
    from .assess.html import write_html_report


    fit_threshold([0.0, 1.0], args.threshold, q=args.q, rate=args.rate)  # bad --q / --rate: now, not after loading
    if args.data is not None:
        given = [o for o, v in (("--n-train", args.n_train), ("--n-test", args.n_test), ("--data-root", args.data_root),
                                ("--download", args.download)) if v]
        if given:
            raise ValueError(f"{', '.join(given)} apply to --dataset only; with --data every item of {args.data} is used")
    ensure_writable_dir(args.out)
    evidence = None if args.evidence == "none" else args.evidence
    # the default batch sizes larger than the data are dropped (with a note); sizes asked for are an error
    drop = args.batch_sizes is None
    sizes = list(DEFAULT_BATCH_SIZES) if drop else args.batch_sizes
    if args.data is not None:
        result = assess_data(args.data, sizes, args.scorer, args.threshold, q=args.q, rate=args.rate,
                             seed=args.seed, progress=True, image_size=args.image_size, channels=args.channels,
                             label_column=args.label_column, header={"auto": None, "yes": True, "no": False}[args.header],
                             array_key=args.array_key, layout=args.layout, skip_bad=args.skip_bad,
                             evidence=evidence, chunk_mb=args.chunk_mb, drop_too_big=drop)
        name, inp = result["input"]["name"], result["input"]
        head = (f"{inp['path']} ({inp['kind']}): {inp['n_used']} of {plural(inp['n_items'], 'item')} used, item shape "
                f"{'x'.join(map(str, inp['item_shape']))}, standardised {inp['standardisation']}")
    else:

        ds = load_dataset(args.dataset, root=args.data_root, download=args.download,
                          n_train=args.n_train, n_test=args.n_test, seed=args.data_seed)
        n = ds.x_train.shape[0]
        sizes, dropped = fitting_batch_sizes(sizes, n, f"{n} training images of {args.dataset}",
                                             "drop it or raise --n-train", drop)
        x = ds.normalize(ds.x_train)
        result = assess(x, sizes, args.scorer, args.threshold, q=args.q, rate=args.rate,
                        seed=args.seed, progress=True)
        result.update(dataset=args.dataset, data=ds.provenance, dropped_batch_sizes=dropped)
        add_recommendations(result, benchmark_evidence(evidence))
        name = args.dataset
        head = f"{args.dataset} ({ds.provenance.get('status', '?')}), {plural(result['n_samples'], 'training image')}"
    stem = f"assess_{name}_{args.scorer}_{args.threshold}"
    out = Path(args.out)
    with atomic_output_set(out, stem) as tmp:  # all three files, or none: the earlier set stays whole
        plot_score_histograms(result, tmp / f"{stem}.png", title=f"{name}: batch heterogeneity ({args.scorer}, {args.threshold})")
        write_html_report(result, tmp / f"{stem}.html")
        atomic_write_json(tmp / f"{stem}.json", result)
    print(f"{head}, scorer={args.scorer}, threshold={args.threshold}")
    if result.get("dropped_batch_sizes"):
        print(f"note: default batch sizes {' '.join(map(str, result['dropped_batch_sizes']))} dropped: larger than "
              f"the {plural(result['n_samples'], 'usable item')}")
    for note in result.get("input", {}).get("notes", []):
        print(f"note: {note}")
    sk = result.get("skipped") or {}
    if sk.get("count"):
        print(f"skipped {plural(sk['count'], 'bad item')} (--skip-bad): "
              + ", ".join(f"{k}: {v}" for k, v in sk["by_reason"].items()))
    print(summary_table(result))
    print("\n".join(recommendation_lines(result)))
    print(f"wrote {out / (stem + '.json')}, {out / (stem + '.png')} and {out / (stem + '.html')}")
    return 0


def _datasets(args) -> int:
    print("\n".join(dataset_names()))
    return 0


def _check_data(args) -> int:

    ds = load_dataset(args.dataset, root=args.data_root, download=args.download)
    p = ds.provenance
    print(f"{args.dataset}: {p['n_train']} training and {p['n_test']} test images at {p['root']}/{p['layout']} "
          f"({p['status']})")
    return 0


def _train(args) -> int:


    cfg = TrainConfig(dataset=args.dataset, method=args.method, batch_size=args.batch_size,
                      epochs=args.epochs, seed=args.seed, model=args.model, optimizer=args.optimizer,
                      lr=args.lr, n_train=args.n_train, n_test=args.n_test, data_seed=args.data_seed,
                      scorer=args.scorer, threshold=args.threshold, threshold_q=args.q,
                      threshold_rate=args.rate, reform_batches=args.reform_batches, scope=args.scope).validate()
    out = Path(args.out) if args.out else Path("outputs/runs") / f"{config_hash(cfg)}.json"
    ensure_writable_dir(out.parent)  # fail before training, not after
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.download:

        load_dataset(args.dataset, root=args.data_root, download=True)
    result = train(cfg, root=args.data_root, progress=not args.quiet)
    atomic_write_json(out, result)
    bn = result["bn"]
    print(f"{cfg.dataset} {cfg.method} B={cfg.batch_size} seed={cfg.seed}: status={result['status']} "
          f"test_acc={result['final_test_acc']:.4f} BN on {bn['batches_normalized']}/"
          f"{bn['batches_normalized'] + bn['batches_skipped']} batches, {result['wall_time_s']:.1f}s")
    print(f"wrote {out}")
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def main(argv=None) -> int:

    # a path that is not valid UTF-8 (kept by Python as surrogates) is printed escaped, never a crash
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    warnings.showwarning = _show_warning

    try:
        return {"assess": _assess, "train": _train, "check-data": _check_data, "datasets": _datasets}[args.command](args)
    except (DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written for the unfinished command", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
