"""The benchmark evidence as data: the files the analysis writes per dataset (``evidence.json``,
versioned by :data:`EVIDENCE_SCHEMA`, and ``status.json``) and their reader,
:func:`benchmark_evidence`, which the advice and its figures use; nothing here reads a rendered
table. Writer and reader share this module, so the format has one definition.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List

from ..io import atomic_write_json, read_json_object

# ----------------------------------------------------------------------------------------------
# Evidence from the benchmark results, and the recommendation
# ----------------------------------------------------------------------------------------------

DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
                  "cifar100": "CIFAR-100", "mnist_fmnist_mix": "MNIST+Fashion-MNIST mix"}


def _title(d: str) -> str:
    return DATASET_TITLES.get(d, d)



#: A verdict that twice the training budget would change (:mod:`sbnlib.experiments.budget`): shown, not counted.
BUDGET_SENSITIVE = "budget-sensitive"


#: version of ``evidence.json``; a reader refuses any other (:func:`sbnlib.assess.evidence.benchmark_evidence`)
EVIDENCE_SCHEMA = 2  # 2: no verdict is gated on BN's test accuracy; rows carry "C1 budget" (issue 27)


def write_evidence(out_dir, record: dict) -> Path:
    """Write :func:`evidence_record`'s ``record`` as ``<out_dir>/evidence.json`` (atomically)."""
    return atomic_write_json(Path(out_dir) / "evidence.json", record)


def write_status(out_dir, status: str, reason: str = "", **extra) -> Path:
    """``status.json`` of one dataset's run: ``ok``, ``missing`` (no data) or ``failed``."""
    return atomic_write_json(Path(out_dir) / "status.json", {"status": status, "reason": reason, **extra})


def read_status(out_dir) -> dict:
    p = Path(out_dir) / "status.json"
    if not p.exists():
        return {"status": "not run", "reason": f"{p} does not exist"}
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        return {"status": "failed", "reason": f"unreadable {p}: {e}"}


def find_evidence_dir(output_dir="auto") -> List[Path]:
    """Where to look for benchmark results: none for None, ``output_dir``, or for ``"auto"`` (the
    command line's default) ./outputs then the repository's."""
    if output_dir is None:
        return []
    if output_dir != "auto":
        return [Path(output_dir)]
    here = Path.cwd() / "outputs"
    repo = Path(__file__).resolve().parents[2] / "outputs"
    return [here] if here.resolve() == repo.resolve() else [here, repo]


def _read_evidence(path: Path) -> dict:
    """``evidence.json`` as written by :func:`sbnlib.assess.evidence.write_evidence`; ValueError naming what is wrong."""
    fix = "rerun the analysis to rewrite it"
    rec = read_json_object(path, fix)
    if rec.get("schema") != EVIDENCE_SCHEMA:
        raise ValueError(f"{path} has schema {rec.get('schema')!r}; this sbnlib reads schema {EVIDENCE_SCHEMA} ({fix})")
    rows = rec.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and _row_ok(r) for r in rows):
        raise ValueError(f"{path}: 'rows' must be a list of rows, each with an integer batch_size, a C1 verdict "
                         "and numbers (or null) for diff_pp and frac_normalized")
    return rec


def _row_ok(r: dict) -> bool:
    """The fields the advice computes with have the types the writer gives them."""
    numbers = [*(r.get("diff_pp") or {}).values(), r.get("frac_normalized")]
    return (isinstance(r.get("batch_size"), int) and isinstance(r.get("C1"), str)
            and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in numbers))


def benchmark_evidence(output_dir="auto") -> dict:
    """The measured evidence the recommendation rests on, read from a results folder (``outputs/``).

    Reads ``<dir>/<dataset>/evidence.json`` (:func:`sbnlib.experiments.report.evidence_record`: verdicts and
    numbers per batch size, written by the analysis) and, for a dataset without it,
    ``status.json`` (why it did not run). No rendered table is read. A dataset whose
    ``evidence.json`` is unreadable, of another schema or missing although it ran is left out and
    named in ``problems``. ``output_dir``: a folder, ``"auto"`` (:func:`find_evidence_dir`) or None
    (no evidence); ``available`` is False when no verdict was found.
    """
    ev = {"available": False, "dir": None, "looked_in": [], "rows": [], "datasets": {}, "not_run": {},
          "files": [], "problems": []}
    for d in find_evidence_dir(output_dir):
        ev["looked_in"].append(str(d))
        if any(d.glob("*/evidence.json")) or any(d.glob("*/status.json")):
            root = d
            break
    else:
        return ev
    ev["dir"] = str(root)
    order = list(DATASET_TITLES)
    names = sorted({p.parent.name for p in (*root.glob("*/evidence.json"), *root.glob("*/status.json"))},
                   key=lambda n: (order.index(n) if n in order else len(order), n))
    for name in names:
        path = root / name / "evidence.json"
        if not path.is_file():
            status = read_status(root / name)
            if status["status"] == "ok":  # it ran, but before evidence.json existed (or the file was lost)
                ev["problems"].append(f"{path} is missing although {name} ran; rerun its analysis to write it")
            else:
                ev["not_run"][name] = status["status"] + (": " + status["reason"].split(". ")[0][:160]
                                                          if status.get("reason") else "")
            continue
        try:
            rec = _read_evidence(path)
        except ValueError as e:
            ev["problems"].append(str(e))
            continue
        ev["files"].append(str(path))
        ev["datasets"][name] = {k: rec.get(k) for k in ("profile", "data_status", "n_train", "seeds", "epochs",
                                                        "methods", "numbers_produced")}
        ev["rows"].extend({"dataset": name, **r} for r in sorted(rec["rows"], key=lambda r: r["batch_size"]))
    ev["available"] = bool(ev["rows"])
    return ev


def _evidence_at(ev: dict, b: int):
    """Evidence rows at batch size ``b``, or at the nearest measured one (log scale); (rows, size)."""
    sizes = sorted({r["batch_size"] for r in ev.get("rows", [])})
    if not sizes:
        return [], None
    near = b if b in sizes else min(sizes, key=lambda s: (abs(math.log2(s) - math.log2(b)), s))
    return [r for r in ev["rows"] if r["batch_size"] == near], near


def diff_pp(row: dict, baseline: str = "bn"):
    """An evidence row's selective BN minus ``baseline`` accuracy difference (pp), or None if not measured."""
    return (row.get("diff_pp") or {}).get(baseline)
