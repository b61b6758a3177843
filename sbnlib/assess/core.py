"""The paper's early-stage feasibility assessment: score and classify batches, no training.

For each batch size, the training set is cut into a seeded batch plan, every batch is scored, a
threshold is fitted and the fraction of batches that *need BN* is reported.

* :func:`assess`: normalised inputs already in memory (the benchmark datasets);
* :func:`assess_data`: a user's own data (an image folder, a ``.npy`` / ``.npz`` / ``.csv`` file, or
  an array / tensor), standardised and scored in chunks with bounded memory (see
  :mod:`sbnlib.assess.sources`), with a plain-language recommendation per batch size that quotes the
  measured evidence from the benchmark results (:mod:`sbnlib.assess.advice`; :mod:`sbnlib.assess.html` writes the HTML
  report);
* :func:`domain_auroc`: does the scorer rank truly mixed batches above pure ones?
  (:func:`domain_auroc_table`: every scorer at every batch size; balanced half/half batches against
  pure ones, which a random batch plan hardly ever forms at B >= 8)
* :func:`plan_ordering_table`: how does each scorer order the batches of the batch plan itself
  (the batches training sees) by their share of the minority source?
"""
from __future__ import annotations

import time
from typing import Iterable, List, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from ..batches import make_batch_plan
from ..checks import is_int
from ..scoring import FITTED, SCORERS, fit_scorer, get_scorer, score_batches
from ..threshold import classify_batches, fit_threshold
from .advice import add_recommendations
from .evidence import benchmark_evidence
from .readers import open_source
from .streaming import read_standardized, release_free_memory, scan

__all__ = ["assess", "assess_data", "stream_scores", "summary_table", "domain_auroc", "domain_auroc_table",
           "plan_ordering_table", "fitting_batch_sizes", "DEFAULT_BATCH_SIZES"]

FIT_ITEMS = 10_000  # how many items of your own data a fitted scorer is fitted on (one read, bounded memory)
DEFAULT_BATCH_SIZES = (2, 4, 8, 16, 32, 64)
CHUNK_MB_MAX = 65536  # pass 2's chunk: at most 64 GiB of inputs at a time


def fitting_batch_sizes(batch_sizes: List[int], n: int, what: str, fix: str, drop: bool) -> Tuple[List[int], List[int]]:
    """``(kept, dropped)``: the batch sizes that fit ``n`` items (``what`` names them: "60 training
    images of mnist") and those larger. Larger sizes are an error that says ``fix``, unless ``drop``
    (the defaults, which no one asked for by size); none fitting is always an error."""
    kept, dropped = [b for b in batch_sizes if b <= n], [b for b in batch_sizes if b > n]
    if dropped and (not drop or not kept):
        raise ValueError(f"batch size {dropped[0]} is larger than the {what}; {fix}")
    return kept, dropped


def assess(
    x: torch.Tensor,
    batch_sizes: Iterable[int],
    scorer: str = "feature_std",
    threshold: str = "mean",
    q: Optional[float] = None,
    rate: Optional[float] = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Assess normalised inputs ``x`` (N, ...) at each batch size; JSON-serialisable result.

    ``result["batch_sizes"][i]`` holds ``batch_size``, ``n_batches``, ``threshold``,
    ``frac_needs_bn``, summary statistics of the scores and the scores themselves.
    """
    batch_sizes = list(batch_sizes)
    if not batch_sizes:
        raise ValueError("no batch sizes given; pass at least one, e.g. 2 4 8 16 32 64")
    rows, fitted = [], fit_scorer(scorer, x)  # a fitted scorer is fitted once, on all of x
    for b in tqdm(batch_sizes, desc="assess", unit="batch size", disable=not progress):
        plan = make_batch_plan(x.shape[0], b, seed=seed)
        scores = score_batches(x, b, fitted, order=plan)
        t = fit_threshold(scores, threshold, q=q, rate=rate)
        needs = classify_batches(scores, t)
        rows.append(_row(b, scores.numpy(), t, needs))
    return {"scorer": scorer if isinstance(scorer, str) else getattr(scorer, "__name__", "custom"),
            "threshold_strategy": threshold, "q": q, "rate": rate, "seed": seed,
            "n_samples": int(x.shape[0]), "batch_sizes": rows}


def summary_table(result: dict) -> str:
    """Plain-text table of an :func:`assess` result, one line per batch size."""
    lines = [f"{'batch':>6} {'batches':>8} {'threshold':>10} {'needs BN':>9}  score mean ± std"]
    for r in result["batch_sizes"]:
        lines.append(f"{r['batch_size']:>6} {r['n_batches']:>8} {r['threshold']:>10.4f} "
                     f"{r['frac_needs_bn']:>8.1%}  {r['score_mean']:.4f} ± {r['score_std']:.4f}")
    return "\n".join(lines)


def domain_auroc(x: torch.Tensor, domain: torch.Tensor, batch_size: int, scorer="feature_std",
                 n_batches: int = 500, seed: int = 0) -> dict:
    """Does the scorer rank truly mixed batches above pure ones? (ground-truth check)

    ``domain`` (0/1 per sample) says which source each sample comes from; a fitted scorer is fitted
    on all of ``x``, without the domains. Build ``n_batches``
    *pure* batches (each all from one domain, the two domains alternating) and ``n_batches``
    *mixed* batches (``batch_size // 2`` samples from domain 0, the rest from domain 1), sampling
    without replacement within a batch, seeded. Returns the scores' AUROC for "mixed" vs "pure":
    the probability that a random mixed batch scores above a random pure one (ties count half),
    computed as the Mann-Whitney U statistic / (n_mixed * n_pure). 0.5 = no better than chance.
    """
    from scipy.stats import mannwhitneyu

    if batch_size < 2:
        raise ValueError("a mixed batch needs at least 2 samples; use batch_size >= 2")
    domain = torch.as_tensor(domain).long()
    pools = [torch.nonzero(domain == d).flatten() for d in (0, 1)]
    if any(len(p) < batch_size for p in pools):
        raise ValueError(f"each domain needs at least {batch_size} samples")
    g = torch.Generator().manual_seed(seed)

    def draw(pool, k):
        return pool[torch.randperm(len(pool), generator=g)[:k]]

    pure = torch.stack([draw(pools[i % 2], batch_size) for i in range(n_batches)])
    half = batch_size // 2
    mixed = torch.stack([torch.cat([draw(pools[0], half), draw(pools[1], batch_size - half)])
                         for _ in range(n_batches)])
    fitted = fit_scorer(scorer, x)
    s_pure = score_batches(x, batch_size, fitted, order=pure).numpy()
    s_mixed = score_batches(x, batch_size, fitted, order=mixed).numpy()
    u = mannwhitneyu(s_mixed, s_pure, alternative="two-sided").statistic
    return {"batch_size": batch_size, "scorer": scorer if isinstance(scorer, str) else "custom",
            "auroc": float(u / (len(s_mixed) * len(s_pure))), "n_batches": n_batches,
            "score_mean_mixed": float(s_mixed.mean()), "score_mean_pure": float(s_pure.mean())}


def domain_auroc_table(x: torch.Tensor, domain: torch.Tensor, batch_sizes: Iterable[int], scorers=None,
                       n_batches: int = 500, seed: int = 0):
    """:func:`domain_auroc` of every scorer (default: all of :data:`sbnlib.scoring.SCORERS`) at
    every batch size >= 2: a DataFrame indexed by ``batch_size``, one AUROC column per scorer. Each
    fitted scorer is fitted once, on all of ``x``; every scorer sees the same batches (same ``seed``)."""
    import pandas as pd


    names = sorted(SCORERS) if scorers is None else list(scorers)
    fitted = {name: fit_scorer(name, x) for name in names}
    sizes = [b for b in batch_sizes if b >= 2]
    return pd.DataFrame({name: [domain_auroc(x, domain, b, fn, n_batches, seed)["auroc"] for b in sizes]
                         for name, fn in fitted.items()}, index=pd.Index(sizes, name="batch_size"))


def plan_ordering_table(x: torch.Tensor, domain: torch.Tensor, batch_sizes: Iterable[int], scorers=None,
                        seeds: Iterable[int] = (0,), high: float = 0.25, low: float = 0.05):
    """How each scorer orders the batches that training forms, by their share of the minority source.

    ``x`` and ``domain`` (0/1 per sample: its source) are the images the batches are drawn from, in
    the trainer's order (its training split, after the validation images are held out), so that the
    batch of plan index ``i`` is ``x[make_batch_plan(len(x), B, seed)[i]]``, exactly a training
    batch of a run with that ``seed``. At every batch size ``B >= 2`` the batches of the plans of all
    ``seeds`` are pooled (their union: every batch some run of those seeds trains on; ``B`` with no
    full batch is left out) and each batch's minority share, ``min(share of source 0, share of
    source 1)`` in ``[0, 0.5]``, is set against its score. Each scorer (default: all of
    :data:`sbnlib.scoring.SCORERS`) is fitted once, on all of ``x``, without the sources, as
    :func:`domain_auroc_table` fits it and as the trainer fits it on its training inputs.

    Returns a DataFrame indexed by ``(batch_size, scorer)`` with the columns

    * ``n_batches``: batches scored (all plans together); ``minority_share_mean``: their mean
      minority share (the same for every scorer);
    * ``spearman``: Spearman's rank correlation of score and minority share
      (:func:`scipy.stats.spearmanr`, ties averaged; NaN where either is constant);
    * ``n_high`` / ``n_low``: batches with a minority share ``>= high`` (default 25%) and ``<= low``
      (default 5%);
    * ``auroc``: the probability that a ``high`` batch scores above a ``low`` one (ties count half;
      Mann-Whitney U / (n_high * n_low)); NaN where either group is empty.

    Deterministic: the plans are seeded, the fits too.
    """
    import pandas as pd
    from scipy.stats import mannwhitneyu, spearmanr

    names = sorted(SCORERS) if scorers is None else list(scorers)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("no seeds given; pass the seeds whose batch plans training uses, e.g. [0]")
    domain = torch.as_tensor(domain).long().flatten()
    if domain.numel() != x.shape[0]:
        raise ValueError(f"domain has {domain.numel()} entries but x holds {x.shape[0]} samples")
    if bool(((domain != 0) & (domain != 1)).any()):
        raise ValueError("domain must hold 0 or 1 per sample (which of two sources it comes from)")
    if not 0 <= low < high <= 0.5:
        raise ValueError(f"need 0 <= low < high <= 0.5, got low={low}, high={high}")
    fitted = {name: fit_scorer(name, x) for name in names}
    rows = []
    for b in [int(b) for b in batch_sizes if 2 <= b <= x.shape[0]]:
        plan = torch.cat([make_batch_plan(x.shape[0], b, seed=s) for s in seeds])
        ones = domain[plan].sum(1).numpy()
        share = np.minimum(ones, b - ones) / b  # the minority source's share of each batch
        eps = 1e-9 / b
        is_high, is_low = share >= high - eps, share <= low + eps
        # score_batches' scores, every scorer on one gather of each slice of batches (in float64, as
        # score_batches computes them: a batch's score does not depend on the slice it is scored in)
        scores = {name: torch.empty(plan.shape[0], dtype=torch.float64) for name in fitted}
        step = max(1, 2**22 // (b * x[0].numel() + b * b))
        for i in range(0, plan.shape[0], step):
            xb = x[plan[i: i + step]].to(torch.float64)
            for name, fn in fitted.items():
                scores[name][i: i + step] = fn(xb)
        for name in fitted:
            s = scores[name].numpy()
            rho = float(spearmanr(s, share).statistic) if np.ptp(s) > 0 and np.ptp(share) > 0 else float("nan")
            auroc = float("nan")
            if is_high.any() and is_low.any():
                u = mannwhitneyu(s[is_high], s[is_low], alternative="two-sided").statistic
                auroc = float(u / (is_high.sum() * is_low.sum()))
            rows.append({"batch_size": b, "scorer": name, "n_batches": int(plan.shape[0]),
                         "minority_share_mean": float(share.mean()), "spearman": rho,
                         "n_high": int(is_high.sum()), "n_low": int(is_low.sum()), "auroc": auroc})
    cols = ["batch_size", "scorer", "n_batches", "minority_share_mean", "spearman", "n_high", "n_low", "auroc"]
    return pd.DataFrame(rows, columns=cols).set_index(["batch_size", "scorer"])


# ----------------------------------------------------------------------------------------------
# Your own data: streaming assessment
# ----------------------------------------------------------------------------------------------

def _row(b: int, s: np.ndarray, t: float, needs: np.ndarray, quantiles: bool = False) -> dict:
    row = {"batch_size": b, "n_batches": int(s.size), "threshold": float(t), "frac_needs_bn": float(needs.mean()),
           "n_needs_bn": int(needs.sum()), "score_mean": float(s.mean()), "score_std": float(s.std()),
           "score_min": float(s.min()), "score_max": float(s.max())}
    if quantiles:
        for q in (5, 25, 50, 75, 95):
            row[f"score_q{q:02d}"] = float(np.percentile(s, q))
    row["scores"] = s.tolist()
    return row


def stream_scores(source, sc, batch_sizes: List[int], scorer="feature_std", seed: int = 0,
                  chunk_elements: int = 2**24, progress: bool = False) -> dict:
    """Pass 2: the score of every batch of every batch size's plan, reading each item once.

    The batch plan of batch size B cuts the seeded permutation ``make_batch_plan(n, 1, seed)`` into
    consecutive groups of B (exactly :func:`sbnlib.batches.make_batch_plan`'s plan), so all batch sizes
    share one permutation: it is read in chunks of about ``chunk_elements`` input values; each batch
    size scores the full batches of a chunk and carries its last partial batch (< B items) over to
    the next chunk. Returns ``{B: float64 scores}``, the same scores as scoring the whole
    standardised input at once. A fitted scorer is first fitted on the first
    :data:`FIT_ITEMS` items of the permutation (a seeded sample, read at once).
    """


    n = sc.n
    perm = make_batch_plan(n, 1, seed=seed).flatten().numpy()
    if scorer in FITTED:
        scorer = fit_scorer(scorer, read_standardized(source, sc, perm[:FIT_ITEMS]))
    item = int(np.prod(source.item_shape))
    chunk = max(1, chunk_elements // max(1, item))
    used = {b: (n // b) * b for b in batch_sizes}
    end_all = max(used.values())
    pending = {b: None for b in batch_sizes}
    parts = {b: [] for b in batch_sizes}
    bar = tqdm(total=end_all, desc=f"pass 2 of 2: scoring {source.name}", unit="item", disable=not progress,
               mininterval=0.5)
    try:
        for start in range(0, end_all, chunk):
            stop = min(start + chunk, end_all)
            xs = read_standardized(source, sc, perm[start:stop])
            for b in batch_sizes:
                if start >= used[b]:
                    continue
                part = xs[: min(stop, used[b]) - start]  # a view: no copy of the chunk per batch size
                if pending[b] is not None:  # complete the batch carried over from the last chunk
                    need = b - pending[b].shape[0]
                    head, part = torch.cat([pending[b], part[:need]]), part[need:]
                    if head.shape[0] < b:  # this chunk is smaller than what the batch still needs
                        pending[b] = head
                        continue
                    parts[b].append(score_batches(head, b, scorer, max_elements=2**20))
                k = (part.shape[0] // b) * b
                if k:
                    parts[b].append(score_batches(part[:k], b, scorer, max_elements=2**20))
                    release_free_memory()  # the scorer's temporaries (see release_free_memory)
                pending[b] = part[k:].clone() if k < part.shape[0] else None
            del xs, part  # free this chunk before the next one is read
            release_free_memory()
            bar.update(stop - start)
    finally:
        bar.close()
    return {b: torch.cat(parts[b]).numpy() for b in batch_sizes}


def assess_data(data, batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES, scorer: str = "feature_std",
                threshold: str = "mean", q: Optional[float] = None, rate: Optional[float] = None, seed: int = 0,
                progress: bool = False, *, image_size: int = 32, channels: Optional[int] = None,
                label_column=None, header: Optional[bool] = None, array_key: Optional[str] = None,
                layout: str = "auto", skip_bad: bool = False, evidence=None, chunk_mb: float = 64,
                name: Optional[str] = None, drop_too_big: bool = False) -> dict:
    """Feasibility assessment of your own data: "should I use BN on it?" (no training).

    ``data``: an image folder (``root/<class>/<image>``), a ``.npy`` / ``.npz`` / ``.csv`` path, or
    an array / tensor ``(N, ...)``; see :mod:`sbnlib.assess.sources` for the readers and their options
    (``image_size``, ``channels``, ``label_column``, ``header``, ``array_key``, ``layout``). The
    inputs are standardised per channel (images) or per feature (tables) with statistics from a
    first streaming pass, then every batch of each batch size's seeded plan is scored in chunks of
    about ``chunk_mb`` MiB of float32 inputs (pass 2), so memory stays bounded whatever the size.
    Bad items raise :class:`sbnlib.assess.sources.UserDataError` naming them, or, with ``skip_bad``, are
    left out and counted in ``result["skipped"]``. A batch size larger than the usable items is an
    error, or, with ``drop_too_big``, left out and listed in ``result["dropped_batch_sizes"]``.

    Returns the :func:`assess` result (one row per batch size, with score quantiles) plus
    ``input`` (what was read and how), ``skipped``, ``evidence`` (the benchmark results found under
    ``evidence``: a results folder, ``"auto"`` for ./outputs then the repository's, or None, the
    default, for none: a library call never picks up whatever folder it happens to run in) and, per
    batch size, a ``recommendation`` (:func:`sbnlib.assess.advice.recommend`; "no evidence" without results).
    """
    t0 = time.perf_counter()
    batch_sizes = list(batch_sizes)
    if not batch_sizes:
        raise ValueError("no batch sizes given; pass at least one, e.g. 2 4 8 16 32 64")
    for b in batch_sizes:
        if not is_int(b) or b < 1:
            raise ValueError(f"batch sizes must be positive integers, got {b!r}")
    batch_sizes = [int(b) for b in batch_sizes]
    get_scorer(scorer)
    fit_threshold([0.0, 1.0], threshold, q=q, rate=rate)  # a bad strategy / q / rate: now, not after reading
    if isinstance(chunk_mb, bool) or not isinstance(chunk_mb, (int, float)) or not 0 < chunk_mb <= CHUNK_MB_MAX:
        raise ValueError(f"chunk_mb must be a number in (0, {CHUNK_MB_MAX}], got {chunk_mb!r}")
    with open_source(data, image_size=image_size, channels=channels, label_column=label_column, header=header,
                     array_key=array_key, layout=layout, skip_bad=skip_bad, name=name) as src:
        sc = scan(src, skip_bad=skip_bad, progress=progress)
        batch_sizes, dropped = fitting_batch_sizes(batch_sizes, sc.n, f"{sc.n} usable items of {src.name}",
                                                   "drop it or use more data", drop_too_big)
        scores = stream_scores(src, sc, batch_sizes, scorer, seed=seed,
                               chunk_elements=int(chunk_mb * 2**20) // 4, progress=progress)
        info = src.info()
    rows = []
    for b in batch_sizes:
        s = scores[b]
        t = fit_threshold(s, threshold, q=q, rate=rate)
        rows.append(_row(b, s, t, classify_batches(s, t), quantiles=True))
    info.update(n_items=sc.n_seen, n_used=sc.n, n_constant=sc.n_constant)  # items looked at, and usable
    result = {"scorer": scorer if isinstance(scorer, str) else getattr(scorer, "__name__", "custom"),
              "threshold_strategy": threshold, "q": q, "rate": rate, "seed": seed, "n_samples": sc.n,
              "batch_sizes": rows, "dropped_batch_sizes": dropped, "input": info, "skipped": sc.skipped,
              "standardisation": {"mean": sc.mean.ravel().tolist()[:64], "std": sc.std.ravel().tolist()[:64],
                                  "n_constant": sc.n_constant}}

    add_recommendations(result, benchmark_evidence(evidence))
    result["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return result
