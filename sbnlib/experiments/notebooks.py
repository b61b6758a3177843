"""An executed notebook made stable: what a cached rerun executes again is written byte-identically.

``run_all.sh`` executes the notebooks with papermill into ``outputs/``, where they are committed so
that a reader sees every table and figure inline without rerunning. :func:`stabilise` rewrites such
a notebook without what changes from one execution to the next or names the machine: execution
times and counts, the papermill and kernel metadata, widget state and random cell ids, progress
bars, the location of warnings (a file, a line number) and absolute paths (the repository by ``.``,
the data and output folders by their folder names, as :func:`sbnlib.provenance.portable` does).
Images, text, HTML and Markdown outputs stay. A notebook that failed is left as papermill wrote it,
with its traceback::

    python -m sbnlib.experiments.notebooks outputs/mnist/experiment.ipynb [...]
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional

import nbformat

from ..io import atomic_write_bytes

__all__ = ["stabilise", "failed", "portable_text"]

_REPO = Path(__file__).resolve().parents[2]
_RUN_KEYS = ("start_time", "end_time", "duration", "input_path", "output_path", "environment_variables")
_WIDGET = "application/vnd.jupyter.widget-view+json"
_INJECTED = "injected-parameters"
# a tqdm bar ("desc:  45%|####   | 9/20 [00:01<00:02, 5.0it/s]", "12it [00:01, 9.8it/s]") or its rate
_PROGRESS = re.compile(r"\d+%\||\[\d+:\d{2}(?::\d{2})?[<,]|\d(?:it/s|s/it)\b|\?[\w ]*/s\]")
# a warning as Python prints it: "<file>:<line>: <Category>: <message>" (then the source line, indented)
_WARNING = re.compile(r"^(?P<file>\S[^:]*\.py|<[^>]+>|/\S*):\d+: (?P<rest>\w*Warning: .*)$")
# what is left of a machine's folders once the known roots are replaced: named by the last folder
_MACHINE = re.compile(r"(?<![\w.\-])(?:/(?:home|Users|root|tmp|work|mnt|scratch|private|var/folders)"
                      r"(?:/[^\s\"'<>|:;,()\[\]{}`*?]*)?|[A-Za-z]:\\[^\s\"'<>|:;,()\[\]{}`*?]*)")


def failed(nb) -> bool:
    """Did papermill stop on an error (an error output, or its metadata says so)?"""
    pm = nb.get("metadata", {}).get("papermill", {})
    return bool(pm.get("exception")) or any(o.get("output_type") == "error"
                                            for c in nb.get("cells", []) for o in c.get("outputs", []))


def _roots(nb, roots: Optional[Dict[str, str]]) -> Dict[str, str]:
    """Absolute folder -> what a committed file calls it: the repository ``.``, the data root and
    the output folder (the notebook's parameters, ``$SBN_DATA_ROOT``) their folder names."""
    params = nb.get("metadata", {}).get("papermill", {}).get("parameters", {}) or {}
    named = [params.get("data_root"), params.get("output_dir"), os.environ.get("SBN_DATA_ROOT")]
    found = {str(_REPO): "."}  # a folder inside the repository reads ./<its path>, e.g. ./outputs
    found.update({p: Path(p).name for p in named if isinstance(p, str) and os.path.isabs(p) and not _inside(p, _REPO)})
    found.update(roots or {})
    out = {}
    for path, name in found.items():
        for variant in {os.path.abspath(path), os.path.realpath(path)}:
            variant = variant.rstrip("/\\")
            if variant:  # never the file system's root
                out[variant] = name
    return out


def _inside(path: str, folder: Path) -> bool:
    return any(Path(p).is_relative_to(folder) for p in {os.path.abspath(path), os.path.realpath(path)})


def portable_text(text: str, roots: Dict[str, str]) -> str:
    """``text`` with each folder of ``roots`` (absolute path -> name) replaced by its name, the
    longest first, then any other folder of a machine (``/home/...``, ``/tmp/...``, ``C:\\...``) by
    its last component."""
    if roots:
        pattern = re.compile(r"(?<![\w.\-])(?:" + "|".join(re.escape(p) for p in sorted(roots, key=len, reverse=True))
                             + r")(?![\w.\-])")
        text = pattern.sub(lambda m: roots[m.group(0)], text)
    return _MACHINE.sub(lambda m: re.split(r"[/\\]", m.group(0).rstrip("/\\"))[-1], text)


def _clean_stream(text: str) -> str:
    """A stream's text without progress bars (each line as a terminal shows it: the last part after
    a carriage return) and with each warning named by its category, not by the file and line that
    raised it."""
    out: List[str] = []
    skip_source = False
    lines = text.split("\n")
    for i, raw in enumerate(lines):
        end = "\n" if i < len(lines) - 1 else ""
        shown = raw
        if "\r" in raw or _PROGRESS.search(raw):
            parts = [p for p in raw.split("\r") if p.strip() and not _PROGRESS.search(p)]
            if not parts:
                skip_source = False
                continue
            shown = parts[-1]
        if skip_source and shown.startswith("  "):  # the source line printed under a warning
            skip_source = False
            continue
        w = _WARNING.match(shown)
        skip_source = w is not None
        out.append((w.group("rest") if w else shown) + end)
    return "".join(out)


def _clean_output(out, roots: Dict[str, str]):
    """One output stable, or None when it is only a progress bar."""
    if out.get("output_type") == "stream":
        out["text"] = portable_text(_clean_stream(out.get("text", "")), roots)
        return out if out["text"] else None
    if out.get("output_type") in ("display_data", "execute_result"):
        data = out.get("data", {})
        if data.pop(_WIDGET, None) is not None and _PROGRESS.search(str(data.get("text/plain", ""))):
            return None  # a tqdm bar drawn as a widget
        if set(data) <= {"text/plain"} and _PROGRESS.search(str(data.get("text/plain", ""))):
            return None
        for mime, value in data.items():
            if isinstance(value, str) and (mime.startswith("text/") or mime.endswith(("json", "javascript"))):
                data[mime] = portable_text(value, roots)
        out.pop("transient", None)
        return out if data else None
    return out


def _merge_streams(outputs) -> list:
    """Consecutive stream outputs as one per stream, stdout first: the kernel sends a stream in
    chunks as its buffer is flushed, and stdout and stderr independently, so how a cell's text is
    cut into outputs depends on timing, not on what it printed."""
    merged, run = [], {}

    def flush():
        merged.extend(run[name] for name in sorted(run, key=lambda name: (name != "stdout", name)))
        run.clear()

    for o in outputs:
        if o.get("output_type") != "stream":
            flush()
            merged.append(o)
        elif o.get("name") in run:
            run[o["name"]]["text"] += o.get("text", "")
        else:
            run[o.get("name")] = o
    flush()
    return merged


def _stable(nb, roots: Dict[str, str]):
    meta = nb.metadata
    meta.pop("widgets", None)
    pm = meta.get("papermill")
    if pm is not None:
        for key in _RUN_KEYS:
            pm.pop(key, None)
        for group in ("parameters", "default_parameters"):
            if isinstance(pm.get(group), dict):
                pm[group] = {k: portable_text(v, roots) if isinstance(v, str) else v for k, v in pm[group].items()}
    count = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
        if _INJECTED in cell.metadata.get("tags", []):
            cell["id"] = _INJECTED  # papermill gives it a random one
        if cell.cell_type != "code":
            continue
        cell.source = portable_text(cell.source, roots)
        outputs = [_clean_output(o, roots) for o in _merge_streams(cell.outputs)]
        cell.outputs = _merge_streams([o for o in outputs if o is not None])
        if cell.get("execution_count") is not None:
            count += 1
            cell.execution_count = count
        for o in cell.outputs:
            if o.get("output_type") == "execute_result":
                o["execution_count"] = cell.execution_count
    return nb


def stabilise(path, roots: Optional[Dict[str, str]] = None) -> bool:
    """Rewrite the executed notebook ``path`` in place (atomically) without its volatile content,
    deterministically: the same execution gives the same bytes, and a stabilised notebook is left
    as it is. ``roots``: more absolute folders to name (path -> name). A notebook that failed
    (:func:`failed`) is left untouched, traceback and all, and False returned; else True."""
    path = Path(path)
    nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    if failed(nb):
        return False
    text = nbformat.writes(_stable(nb, _roots(nb, roots))) + "\n"
    if text != path.read_text(encoding="utf-8"):
        atomic_write_bytes(path, text.encode("utf-8"))
    return True


def main(argv=None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m sbnlib.experiments.notebooks NOTEBOOK.ipynb [...]", file=sys.stderr)
        return 2
    for p in paths:
        if not stabilise(p):
            print(f"{p}: the notebook failed; left as papermill wrote it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
