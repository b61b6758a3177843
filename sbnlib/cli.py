"""Command line: ``python -m sbnlib assess ...`` and ``python -m sbnlib train ...``.

Every user error (unknown dataset, bad batch size, missing data, unwritable output) ends with one
line ``error: ...`` on stderr and exit status 2; nothing already written is overwritten by a failed
command (outputs are written atomically, and only after the work succeeded).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def _data_args(p: argparse.ArgumentParser, subsets: bool = True, own_data: bool = False) -> None:
    """--dataset, --data-root, --download; with ``subsets`` also --n-train, --n-test, --data-seed;
    with ``own_data`` the alternative --data PATH and its reading options."""
    from .data import dataset_names

    if own_data:
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--dataset", choices=dataset_names(), help="a benchmark dataset")
        g.add_argument("--data", metavar="PATH", help="your own data: an image folder (root/<class>/<image>), "
                       "a .npy / .npz array file (N, ...) or a CSV file of numeric features")
        o = p.add_argument_group("reading --data")
        o.add_argument("--image-size", type=_positive_int, default=32,
                       help="image folders: every image is resized to SIZE x SIZE (default 32)")
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
        o.add_argument("--chunk-mb", type=float, default=64, help="pass 2 reads about this many MiB of inputs at a time")
    else:
        p.add_argument("--dataset", required=True, choices=dataset_names(), help="dataset name")
    p.add_argument("--data-root", default=None, help="data folder (default: $SBN_DATA_ROOT, else ./data)")
    p.add_argument("--download", action="store_true", help="download missing files through torchvision")
    if not subsets:
        return
    p.add_argument("--n-train", type=_positive_int, default=None, help="stratified training subset size")
    p.add_argument("--n-test", type=_positive_int, default=None, help="stratified test subset size")
    p.add_argument("--data-seed", type=_nonneg_int, default=0, help="seed of the subsets")


def _parser() -> argparse.ArgumentParser:
    from .models import MODELS
    from .scoring import SCORERS
    from .threshold import STRATEGIES
    from .train import METHODS, SCOPES

    ap = argparse.ArgumentParser(prog="python -m sbnlib", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    a = sub.add_parser("assess", help="score and classify training batches (no training); should I use BN on my data?")
    _data_args(a, own_data=True)
    a.add_argument("--batch-sizes", type=_positive_int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    a.add_argument("--scorer", choices=sorted(SCORERS), default="feature_std")
    a.add_argument("--threshold", choices=list(STRATEGIES), default="mean")
    a.add_argument("--q", type=float, default=None, help="quantile for --threshold quantile")
    a.add_argument("--rate", type=float, default=None, help="fraction normalised for --threshold rate")
    a.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the batch plans")
    a.add_argument("--evidence", default="auto", metavar="DIR",
                   help="results folder with the benchmark evidence (REPORT.md, <dataset>/verdicts.csv); "
                        "default: ./outputs, else the repository's outputs/")
    a.add_argument("--out", default="outputs/assess", help="folder for the JSON, the histogram PNG and the HTML report")

    c = sub.add_parser("check-data", help="check that a dataset's files are present and readable")
    _data_args(c, subsets=False)

    t = sub.add_parser("train", help="run one training run and write its result record")
    _data_args(t)
    t.add_argument("--method", choices=sorted(METHODS), default="sbn")
    t.add_argument("--batch-size", type=_positive_int, default=32)
    t.add_argument("--epochs", type=_positive_int, default=1)
    t.add_argument("--seed", type=_nonneg_int, default=0)
    t.add_argument("--model", choices=sorted(MODELS), default="cnn_s")
    t.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    t.add_argument("--lr", type=float, default=0.01)
    t.add_argument("--scorer", choices=sorted(SCORERS), default="feature_std")
    t.add_argument("--threshold", choices=list(STRATEGIES), default="mean")
    t.add_argument("--q", type=float, default=None)
    t.add_argument("--rate", type=float, default=None)
    t.add_argument("--reform-batches", action="store_true", help="re-form and re-score batches every epoch")
    t.add_argument("--scope", choices=list(SCOPES), default="all",
                   help="which BN layers a selective method switches (sbnlib.train.SCOPES)")
    t.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    t.add_argument("--out", default=None, help="result JSON path (default: outputs/runs/<config hash>.json)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def _assess(args) -> int:
    from .advice import add_recommendations, benchmark_evidence, recommendation_lines, write_html_report
    from .assess import assess, assess_data, summary_table
    from .io import atomic_write_json, ensure_writable_dir
    from .plots import plot_score_histograms
    from .threshold import fit_threshold

    fit_threshold([0.0, 1.0], args.threshold, q=args.q, rate=args.rate)  # bad --q / --rate: now, not after loading
    if args.data is not None:
        given = [o for o, v in (("--n-train", args.n_train), ("--n-test", args.n_test), ("--data-root", args.data_root),
                                ("--download", args.download)) if v]
        if given:
            raise ValueError(f"{', '.join(given)} apply to --dataset only; with --data every item of {args.data} is used")
    out = ensure_writable_dir(args.out)
    if args.data is not None:
        result = assess_data(args.data, args.batch_sizes, args.scorer, args.threshold, q=args.q, rate=args.rate,
                             seed=args.seed, progress=True, image_size=args.image_size, channels=args.channels,
                             label_column=args.label_column, header={"auto": None, "yes": True, "no": False}[args.header],
                             array_key=args.array_key, layout=args.layout, skip_bad=args.skip_bad,
                             evidence=args.evidence, chunk_mb=args.chunk_mb)
        name, inp = result["input"]["name"], result["input"]
        head = (f"{args.data} ({inp['kind']}): {inp['n_used']} of {inp['n_items']} items used, item shape "
                f"{'x'.join(map(str, inp['item_shape']))}, standardised {inp['standardisation']}")
    else:
        from .data import load_dataset

        ds = load_dataset(args.dataset, root=args.data_root, download=args.download,
                          n_train=args.n_train, n_test=args.n_test, seed=args.data_seed)
        too_big = [b for b in args.batch_sizes if b > ds.x_train.shape[0]]
        if too_big:
            raise ValueError(f"batch size {too_big[0]} is larger than the {ds.x_train.shape[0]} training images "
                             f"of {args.dataset}; drop it or raise --n-train")
        x = ds.normalize(ds.x_train)
        result = assess(x, args.batch_sizes, args.scorer, args.threshold, q=args.q, rate=args.rate,
                        seed=args.seed, progress=True)
        result.update(dataset=args.dataset, data=ds.provenance)
        add_recommendations(result, benchmark_evidence(args.evidence))
        name = args.dataset
        head = f"{args.dataset} ({ds.provenance.get('status', '?')}), {result['n_samples']} training images"
    stem = f"assess_{name}_{args.scorer}_{args.threshold}"
    png = out / f"{stem}.png"
    plot_score_histograms(result, png, title=f"{name}: batch heterogeneity ({args.scorer}, {args.threshold})")
    page = write_html_report(result, out / f"{stem}.html")
    atomic_write_json(out / f"{stem}.json", result)
    print(f"{head}, scorer={args.scorer}, threshold={args.threshold}")
    sk = result.get("skipped") or {}
    if sk.get("count"):
        print(f"skipped {sk['count']} bad items (--skip-bad): " + ", ".join(f"{k}: {v}" for k, v in sk["by_reason"].items()))
    print(summary_table(result))
    print("\n".join(recommendation_lines(result)))
    print(f"wrote {out / (stem + '.json')}, {png} and {page}")
    return 0


def _check_data(args) -> int:
    from .data import load_dataset

    ds = load_dataset(args.dataset, root=args.data_root, download=args.download)
    p = ds.provenance
    print(f"{args.dataset}: {p['n_train']} training and {p['n_test']} test images at {p['root']}/{p['layout']} "
          f"({p['status']})")
    return 0


def _train(args) -> int:
    import torch

    from .io import atomic_write_json, ensure_writable_dir
    from .train import TrainConfig, config_hash, train

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
        from .data import load_dataset

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
    import warnings

    args = _parser().parse_args(argv)
    warnings.showwarning = _show_warning
    from .data import DataError

    try:
        return {"assess": _assess, "train": _train, "check-data": _check_data}[args.command](args)
    except (DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written for the unfinished command", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
