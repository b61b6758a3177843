"""The lock files scripts/bootstrap.sh installs from (issue 27): every package pinned with its hashes,
complete (each pinned package's own requirements are pinned too) and admitted by pyproject.toml."""
import hashlib
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

packaging = pytest.importorskip("packaging")
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402
from packaging.version import Version  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOCKS = {"base": [], "experiments": ["experiments"], "dev": ["dev"]}  # lock file -> extras of pyproject.toml
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)$")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _entries(name: str):
    """The lock file's requirements as (requirement, [options]), continuation lines joined, comments dropped."""
    text = (ROOT / "requirements" / f"{name}.txt").read_text()
    lines = [re.sub(r"(^|\s)#.*$", "", line).rstrip() for line in text.splitlines()]
    joined = re.sub(r"\s*\\\n\s*", " ", "\n".join(lines))
    return [(parts[0], parts[1:]) for parts in (line.split() for line in joined.splitlines()) if parts]


def _pins(name: str) -> dict:
    return {canonicalize_name(PIN.match(req).group(1)): PIN.match(req).group(2) for req, _ in _entries(name)}


@pytest.mark.parametrize("name", list(LOCKS))
def test_every_line_pins_one_version_with_hashes(name):
    entries = _entries(name)
    assert len(entries) > 20  # torch alone brings the CUDA stack
    names = []
    for req, options in entries:
        assert PIN.match(req), f"{name}.txt: {req!r} is not name==version"
        assert options and all(HASH.match(o) for o in options), f"{name}.txt: {req} lacks --hash=sha256: options"
        names.append(canonicalize_name(PIN.match(req).group(1)))
    assert len(names) == len(set(names)), f"{name}.txt pins a package twice"
    assert "sbnlib" not in names  # installed by bootstrap.sh itself, editable
    assert "setuptools" in names  # torch needs it, and bootstrap.sh builds sbnlib with it (--no-build-isolation)


def test_the_locks_agree_and_each_extra_adds_to_the_core():
    base, experiments, dev = _pins("base"), _pins("experiments"), _pins("dev")
    assert base.items() <= experiments.items() <= dev.items()


def _roots(extras) -> list:
    """pyproject.toml's requirements of the core and ``extras``, sbnlib's own extras expanded."""
    project, todo, seen, out = _pyproject(), list(extras), set(), list(_pyproject()["dependencies"])
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for spec in project["optional-dependencies"][extra]:
            req = Requirement(spec)
            if canonicalize_name(req.name) == "sbnlib":
                todo.extend(req.extras)
            else:
                out.append(spec)
    return [Requirement(s) for s in out]


@pytest.mark.parametrize("name", list(LOCKS))
def test_pyproject_admits_the_pins_and_the_lock_is_complete(name):
    """Each requirement of pyproject.toml (for the lock's extra) and, for each pinned package installed
    here at its pinned version, each of its own requirements: pinned in the lock, at a version it admits."""
    pins = _pins(name)
    todo, seen, unread = [(r, "pyproject.toml") for r in _roots(LOCKS[name])], set(), set()
    while todo:
        req, by = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        assert key in pins, f"{name}.txt lacks {req} (required by {by})"
        assert req.specifier.contains(Version(pins[key]), prereleases=True), \
            f"{name}.txt pins {key}=={pins[key]}, which {by}'s {req} does not admit"
        if (key, frozenset(req.extras)) in seen:
            continue
        seen.add((key, frozenset(req.extras)))
        try:
            dist = md.distribution(key)
        except md.PackageNotFoundError:
            dist = None
        if dist is None or Version(dist.version) != Version(pins[key]):
            unread.add(key)  # not here, or another version: its requirements are not those of the pinned one
            continue
        for spec in dist.requires or []:
            r = Requirement(spec)
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in {"", *req.extras}):
                r.marker = None
                todo.append((r, f"{key} {pins[key]}"))
    reached = {k for k, _ in seen}
    if not unread:  # every requirement was followed to the end: the lock holds nothing else
        assert reached == set(pins), f"{name}.txt pins what nothing requires: {sorted(set(pins) - reached)}"


def test_a_venv_bootstrap_made_has_the_pinned_versions():
    """In a venv that ``scripts/bootstrap.sh dev`` set up from the current lock (its stamp), every
    pinned package is installed at its pinned version."""
    stamp = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "requirements" / "dev.txt").read_bytes())
    if not (Path(sys.prefix) / f".sbn-{stamp.hexdigest()[:16]}-dev").is_file():
        pytest.skip("not a venv that scripts/bootstrap.sh dev set up from the current lock")
    wrong = {k: (v, md.version(k) if _installed(k) else None) for k, v in _pins("dev").items()
             if not _installed(k) or Version(md.version(k)) != Version(v)}
    assert not wrong, wrong


def _installed(name: str) -> bool:
    try:
        md.distribution(name)
        return True
    except md.PackageNotFoundError:
        return False
