"""What to do about it: per batch size, a plain-language recommendation with its reason and the
evidence it rests on (:func:`recommend`, :func:`add_recommendations`; the rule:
:data:`RECOMMENDATION_RULE`).

The evidence is :mod:`sbnlib.assess.evidence`'s (numbers, never rendered tables); the assessment
itself (scores, threshold, fraction of batches that need BN) is :mod:`sbnlib.assess.core`; the
HTML report is :mod:`sbnlib.assess.html`.
"""
from __future__ import annotations

from typing import List

import numpy as np

from ..provenance import shown_path
from .evidence import BUDGET_SENSITIVE, _evidence_at, _title, diff_pp

__all__ = ["diff_pp", "recommend", "add_recommendations", "recommendation_lines", "RECOMMENDATION_RULE"]

CONTROLS = {"sbn vs random": "heterogeneity-selected batches against randomly selected ones at the same rate",
            "sbn vs gn": "selective BN against GroupNorm"}

RECOMMENDATION_RULE = (
    "The fraction of batches above the threshold says how often selective BN would normalise; it does not "
    "by itself say whether skipping BN on the other batches costs accuracy. The advice at each batch size "
    "therefore rests on the measured comparisons of selective BN with BN on the benchmark datasets at the "
    "same batch size (or the nearest one measured), claim C1 of the replication report: 'use BN' when "
    "selective BN was significantly less accurate than BN (C1 contradicted) on at least one benchmark and "
    "significantly more accurate on none; 'try selective BN' when it was significantly more accurate "
    "(C1 supported) on at least one and less accurate on none; 'compare both' when both happened; "
    "'no measured difference' when every comparison was inconclusive; 'no evidence' when no benchmark "
    "results were found. Every number quoted is read from the result files named in the report.")

_ACTIONS = {
    "use BN": "use standard BN, not selective BN",
    "try selective BN": "selective BN is worth a trial: compare it with BN on held-out data",
    "compare both": "the evidence is mixed: train with BN and with selective BN and compare",
    "no measured difference": "no measured accuracy difference: BN is the safe default",
    "no evidence": "no measured evidence either way: BN is the default",
}


def _join(names: List[str]) -> str:
    names = [_title(n) for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def plural(n: int, word: str) -> str:
    """``"1 batch"``, ``"2 batches"``, ``"1,000 epochs"``: a count with its noun in the right number."""
    count = f"{n:,}" if isinstance(n, int) else str(n)  # counts read from a results file may be text
    es = word.endswith(("s", "sh", "ch", "x")) and word != "epoch"  # "batches", but "epochs"
    return f"{count} {word}" if n == 1 else f"{count} {word}{'es' if es else 's'}"


#: fewer batches than this: the threshold is fitted on too few scores for the fraction to mean much
FEW_BATCHES = 10


def _pct(f: float) -> str:
    if f != f:
        return "n/a"
    if 0 < f < 0.1 or 0.9 < f < 1:
        return f"{100 * f:.1f}%"
    return f"{100 * f:.0f}%"


def _diff_range(rows) -> str:
    """'accuracy of selective BN minus BN: -8.3 to -5.8 pp', from each row's ``diff_pp["bn"]``."""
    have = [r for r in rows if diff_pp(r) is not None]
    if not have:
        return ""
    d = [diff_pp(r) for r in have]
    lo, hi = min(d), max(d)
    text = f"{lo:+.1f} pp" if lo == hi else f"{lo:+.1f} to {hi:+.1f} pp"
    if len(have) < len(rows):  # say whose numbers these are
        text = ", ".join(f"{diff_pp(r):+.1f} pp on {_title(r['dataset'])}" for r in have)
    return "accuracy of selective BN minus BN: " + text


def recommend(row: dict, ev: dict) -> dict:
    """The recommendation for one batch size's row of an assessment, with its reason and evidence."""
    b, f, nb, t = row["batch_size"], row["frac_needs_bn"], row["n_batches"], row["threshold"]
    if b == 1:
        headline = ("At batch size 1 every batch scores 0 (one sample cannot be heterogeneous), so no batch is "
                    "above the threshold: selective BN would never normalise, and BN itself is degenerate at B=1.")
    else:
        t_text = f"{t:.4g}" if np.isfinite(t) else str(t)
        headline = (f"At batch size {b}, {_pct(f)} of the {plural(nb, 'batch')} {'is' if nb == 1 else 'are'} heterogeneous "
                    f"(score above the threshold {t_text}): selective BN would normalise those and skip BN on "
                    f"{_pct(1 - f)} of steps.")
        if nb < FEW_BATCHES:  # the threshold is fitted on these very scores: with one, it is that score
            headline += (f" Warning: the threshold is fitted on only {plural(nb, 'score')}, so this fraction is "
                         f"{'0% by construction' if nb == 1 else 'degenerate'}; use more data or a smaller batch size.")
    rows, near = _evidence_at(ev, b)
    out = {"batch_size": b, "headline": headline, "evidence_batch_size": near, "evidence": rows}
    if not rows:
        where = f"looked in {', '.join(ev['looked_in'])}" if ev.get("looked_in") else "no results folder was given"
        out.update(action="no evidence", reason=(
            f"No benchmark results were found ({where}), so the evidence is unavailable: nothing measured "
            "says whether skipping BN on those batches helps or hurts accuracy."))
    else:
        at = f"B={near}" if near == b else f"B={near} (the nearest measured batch size; B={b} was not measured)"
        counted = [r for r in rows if r.get("C1 budget") != BUDGET_SENSITIVE]  # a budget-sensitive verdict is not counted
        by = {v: [r["dataset"] for r in counted if r.get("C1") == v] for v in ("supported", "contradicted", "inconclusive")}
        sup, con, inc = by["supported"], by["contradicted"], by["inconclusive"]
        parts = []
        if con:
            rng = _diff_range([r for r in rows if r["dataset"] in con])
            parts.append(f"on {_join(con)} at {at} selective BN was significantly less accurate than BN "
                         f"(C1 contradicted{'; ' + rng if rng else ''})")
        if sup:
            rng = _diff_range([r for r in rows if r["dataset"] in sup])
            parts.append(f"on {_join(sup)} at {at} selective BN was significantly more accurate than BN "
                         f"(C1 supported{'; ' + rng if rng else ''})")
        if inc:
            rng = _diff_range([r for r in rows if r["dataset"] in inc])
            parts.append(f"on {_join(inc)} at {at} the difference was not significant "
                         f"(C1 inconclusive{'; ' + rng if rng else ''})")
        unsure = [r["dataset"] for r in rows if r.get("C1 budget") == BUDGET_SENSITIVE]
        if unsure:
            parts.append(f"on {_join(unsure)} at {at} twice the training changed the comparison on validation data, "
                         f"so it is not counted ({BUDGET_SENSITIVE})")
        action = ("compare both" if sup and con else "use BN" if con else "try selective BN" if sup
                  else "no measured difference")
        reason = "; ".join(parts)
        reason = reason[0].upper() + reason[1:] + "."
        for col, what in CONTROLS.items():
            got = {v: [r["dataset"] for r in rows if r.get(col) == v] for v in ("supported", "contradicted", "inconclusive")}
            if any(got.values()):
                told = "; ".join(f"{v} on {_join(ds)}" for v, ds in got.items() if ds)
                reason += f" {what[0].upper() + what[1:]}: {told}."
        fr = [100 * r["frac_normalized"] for r in rows if r.get("frac_normalized") is not None]
        if fr and b > 1:
            span = f"{min(fr):.0f}%" if round(min(fr)) == round(max(fr)) else f"{min(fr):.0f}-{max(fr):.0f}%"
            reason += f" On those benchmarks selective BN normalised {span} of the batches (here: {_pct(f)})."
        out.update(action=action, reason=reason)
    out["recommendation"] = f"Recommendation at B={b}: {_ACTIONS[out['action']]}."
    out["text"] = f"{out['headline']} {out['recommendation']} {out['reason']}"
    return out


def add_recommendations(result: dict, ev: dict) -> dict:
    """Add ``evidence``, ``recommendation_rule``, a ``summary`` and per-row ``recommendation`` to ``result``."""
    result["evidence"] = ev
    result["recommendation_rule"] = RECOMMENDATION_RULE
    for r in result["batch_sizes"]:
        r["recommendation"] = recommend(r, ev)
    acts = [r["recommendation"]["action"] for r in result["batch_sizes"]]
    sizes = [r["batch_size"] for r in result["batch_sizes"]]
    if len(set(acts)) == 1:
        which = "the requested batch size" if len(sizes) == 1 else "every requested batch size"
        summary = f"At {which} ({', '.join(map(str, sizes))}): {_ACTIONS[acts[0]]}."
    else:
        summary = " ".join(f"B={b}: {_ACTIONS[a]}." for b, a in zip(sizes, acts))
    prov = []
    for d, p in ev.get("datasets", {}).items():
        n_train = f"{p['n_train']:,}" if isinstance(p.get("n_train"), int) else p.get("n_train")
        bits = [f"{p['profile']} profile" if p.get("profile") else "", f"{n_train} training images" if n_train else "",
                plural(p["seeds"], "seed") if p.get("seeds") else "", plural(p["epochs"], "epoch") if p.get("epochs") else ""]
        prov.append(f"{_title(d)} ({', '.join(x for x in bits if x) or 'provenance not recorded'})")
    result["summary"] = summary
    result["evidence_note"] = (
        f"Evidence read from {shown_path(ev['dir'])}: " + "; ".join(prov) + "." if ev.get("available") else
        "Benchmark evidence unavailable: " + (f"no results found in {', '.join(ev['looked_in'])}." if ev.get("looked_in")
                                              else "no results folder was given."))
    if ev.get("not_run"):
        result["evidence_note"] += " No results for: " + "; ".join(
            f"{_title(d)} ({s.split(':')[0]})" for d, s in ev["not_run"].items()) + "."
    if ev.get("problems"):  # a dataset left out must not go unnoticed on the command line either
        result["evidence_note"] += " Left out: " + "; ".join(ev["problems"]) + "."
    return result


def recommendation_lines(result: dict) -> List[str]:
    """The recommendations as plain text lines (the CLI prints them)."""
    lines = [result.get("summary", "")]
    for r in result["batch_sizes"]:
        rec = r.get("recommendation")
        if rec:
            lines.append(f"- {rec['text']}")
    if result.get("evidence_note"):
        lines.append(result["evidence_note"])
    return [l for l in lines if l]
