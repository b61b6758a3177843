#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install sbnlib into it.
#   scripts/bootstrap.sh              -> the core library only (torch, numpy)
#   scripts/bootstrap.sh experiments  -> plus what ./run_all.sh needs (statistics, figures, notebooks)
#   scripts/bootstrap.sh dev          -> everything, plus the test dependencies
# Each installs the lock file of its extra, requirements/{base,experiments,dev}.txt (every package
# pinned, transitive ones too, with its files' hashes: the versions the results were made with; made
# and refreshed by scripts/lock.sh; made for CPython 3.11 on Linux x86_64), then sbnlib itself
# (editable, --no-deps). dev includes assess and cluster.
# Idempotent: reinstalls only when pyproject.toml or that lock file changed. Prints the venv's python path last.
# Environment: PYTHON (interpreter to build the venv with, default python3.11, else python3),
#              SBN_VENV (venv folder, default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
case "$extra" in
  ""|experiments|dev) lock="requirements/${extra:-base}.txt" ;;
  *) echo "error: unknown extra '$extra': the extras are experiments and dev (dev includes assess and cluster)" >&2; exit 2 ;;
esac
venv="${SBN_VENV:-.venv}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
fi
if [ ! -x "$venv/bin/python" ]; then
  "$py" -c 'import sys; assert sys.version_info >= (3, 10), "sbnlib needs Python >= 3.10"' \
    || { echo "error: $py is too old; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2; exit 2; }
  echo "creating virtual environment $venv with $("$py" --version)" >&2
  "$py" -m venv "$venv"
fi
stamp="$venv/.sbn-$(cat pyproject.toml "$lock" | sha256sum | cut -c1-16)-${extra:-base}"
if [ ! -f "$stamp" ]; then
  echo "installing $lock and sbnlib into $venv; the first time this takes a few minutes (PyTorch)" >&2
  "$venv/bin/python" -m pip install --disable-pip-version-check -q --require-hashes -r "$lock" >&2
  # the build backend (setuptools) is pinned in the lock: no unpinned build environment
  "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e . >&2
  touch "$stamp"
fi
echo "$venv/bin/python"
