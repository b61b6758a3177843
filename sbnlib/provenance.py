"""Where numbers come from: the code's commit, and the record each result carries of it.

Tables and reports state the commit(s) and the time at which their *numbers* were produced (read
from the result records), not when they were last rendered, and no path of the machine that ran
them: re-rendering unchanged results leaves every committed file byte-identical.
"""
from __future__ import annotations

import importlib
import json
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterable, Optional

import numpy
import torch

from . import __version__

__all__ = ["git_commit", "produced", "numbers_from", "portable", "versions", "recorded_versions", "versions_entry",
           "records_in", "machine"]

_REPO = Path(__file__).resolve().parents[1]


def git_commit(repo: Optional[Path] = None) -> str:
    """Id of the code that produced a result: the commit hash, "+dirty" if tracked files other than
    ``outputs/`` differ from it."""
    repo = repo or _REPO
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
        # results being written under outputs/ are not a change of the code that produced them
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!outputs"],
                               cwd=repo, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def produced() -> dict:
    """What a result record says of its making: the code's commit and the time (UTC)."""
    return {"git_commit": git_commit(), "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def numbers_from(results: Iterable[dict]) -> dict:
    """Provenance of a table computed from ``results``: the commits that produced them (with the
    number of runs each) and when the last of them finished; records older than this field say
    "unrecorded"."""
    commits, last = {}, None
    for r in results:
        p = r.get("produced") or {}
        c = p.get("git_commit", "unrecorded")
        commits[c] = commits.get(c, 0) + 1
        if p.get("utc") and (last is None or p["utc"] > last):
            last = p["utc"]
    return {"numbers produced by commit (runs)": ", ".join(f"{c} ({n})" for c, n in sorted(commits.items())) or "none",
            "last run finished (UTC)": last or "unrecorded"}


def portable(dataset_provenance: dict) -> dict:
    """A dataset's provenance without the machine's paths: the data root by its folder name."""
    out = dict(dataset_provenance)
    if out.get("root"):
        out["root"] = Path(str(out["root"])).name
    return out


def shown_path(path) -> str:
    """A path as a report shows it: relative to the working directory or to the repository holding
    this package when it lies inside one of them (so that a committed report names no machine's
    folders), else as given."""
    p = Path(str(path)).absolute()
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        try:
            return str(p.relative_to(base.absolute()))
        except ValueError:
            continue
    return str(path)


def versions(*extras: str) -> Dict[str, str]:
    """The versions record (the one place it is built): sbnlib, torch, numpy and python, then each
    installed package of ``extras``. A result record carries ``versions()``; a table names those its
    records carry (:func:`recorded_versions`), never the versions of the process rendering it."""
    out = {"sbnlib": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
           "python": platform.python_version()}
    for name in extras:
        out[name] = importlib.import_module(name).__version__
    return out


def recorded_versions(results: Iterable[dict]) -> Dict[str, str]:
    """The library versions the result records say their numbers were computed with (each record's
    ``versions``: sbnlib, torch, numpy, python), by library in name order: its one value where the runs
    agree, else each distinct value with its number of runs, sorted (``"2.4.5 (3), 2.4.6 (5)"``; a record
    without that library counts as ``unrecorded``). Empty when no record carries versions."""
    counts: Dict[str, Dict[str, int]] = {}
    n = 0
    for r in results:
        if not isinstance(r, dict):
            continue
        n += 1
        recorded = r.get("versions")
        for name, value in (recorded.items() if isinstance(recorded, dict) else ()):
            c = counts.setdefault(str(name), {})
            c[str(value)] = c.get(str(value), 0) + 1
    out = {}
    for name in sorted(counts):
        c = dict(counts[name])
        if n > sum(c.values()):
            c["unrecorded"] = n - sum(c.values())
        out[name] = next(iter(c)) if len(c) == 1 else ", ".join(f"{v} ({k})" for v, k in sorted(c.items()))
    return out


def versions_entry(results: Optional[Iterable[dict]]) -> Dict[str, str]:
    """A provenance block's ``versions`` line: :func:`recorded_versions` of ``results`` as sorted JSON,
    or no line where there are no results (a table that trains nothing) or none records versions."""
    recorded = recorded_versions(results) if results is not None else {}
    return {"versions": json.dumps(recorded, sort_keys=True)} if recorded else {}


def records_in(folders: Iterable[Path]):
    """The result records (``*.json``) in ``folders``, in path order, each reduced to its ``versions``
    (what :func:`recorded_versions` reads); a missing folder or a file that is not a JSON object is skipped.
    Only the ``versions`` object is decoded where it is the record's last (a record's metrics make a
    whole parse of thousands of them take seconds)."""
    for folder in folders:
        for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else ():
            try:
                text = path.read_text()
            except OSError:
                continue
            found = _last_versions(text)
            if found is None:
                try:
                    record = json.loads(text)
                except ValueError:
                    continue
                if not isinstance(record, dict):
                    continue
                found = record.get("versions")
            yield {"versions": found}


def _last_versions(text: str) -> Optional[dict]:
    """The value of the last ``"versions":`` key of a record's JSON text when it is an object of strings
    and the text is an object; else None (the caller parses the whole record)."""
    key = '"versions"'
    at = text.rfind(key)
    if at < 0 or not text.lstrip().startswith("{"):
        return None
    m = re.compile(r"\s*:\s*").match(text, at + len(key))
    if m is None:  # "versions" as a string value, not a key
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text, m.end())
    except ValueError:
        return None
    ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    return value if ok else None


def machine() -> Dict[str, str]:
    """The CPU a result record's numbers were computed on: its model and the instruction set torch
    dispatches its kernels for. Training is bitwise deterministic on one machine; on another CPU
    torch may pick other kernels (AVX2 or AVX-512), which sum in another order, so the same run can
    differ there in the last float bits and, amplified over thousands of steps, in its metrics."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux: platform's answer stands
        pass
    return {"cpu": model, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
