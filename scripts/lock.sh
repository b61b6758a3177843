#!/usr/bin/env bash
# Refresh the lock files requirements/{base,experiments,dev}.txt that scripts/bootstrap.sh installs
# from (pip install --require-hashes): every package sbnlib's extra needs, transitive ones and
# setuptools included, pinned to one version with the sha256 of each of its files (PyPI's files and
# the copies on this machine's disk, which pip takes the torch/CUDA wheels from).
#   scripts/lock.sh                            -> keep every pin that pyproject.toml still admits;
#                                                 only a new or changed dependency moves
#   scripts/lock.sh --upgrade                  -> the newest versions pyproject.toml admits
#   scripts/lock.sh --upgrade-package pandas   -> one package (any other pip-compile option passes too)
#   SBN_LOCK_FROM=.venv scripts/lock.sh        -> pin what that venv has installed (how the locks
#                                                 were first made, from the venv the results were made with)
# pip-compile (pip-tools, installed into a throwaway venv) resolves with this machine's pip settings
# (its indexes, find-links and the torch cap), for this platform and Python (Linux x86_64, CPython
# 3.11). It reads every local wheel (several GB) to hash it: 1 to 25 minutes for the three, as the
# disk allows. Then run tests/test_lock.py and commit the lock files (bootstrap.sh's stamp then changes,
# and its next run installs from them).
# Environment: PYTHON (interpreter, default python3.11, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --disable-pip-version-check -q "pip-tools==7.7.0" >&2
mkdir -p requirements
for extra in base experiments dev; do
  lock="requirements/$extra.txt"
  if [ -n "${SBN_LOCK_FROM:-}" ]; then
    # pip-compile keeps the pins of an existing output file: start from the venv's
    "$SBN_LOCK_FROM/bin/python" -m pip freeze --all --exclude-editable --disable-pip-version-check \
      | grep -v -i -E '^(pip|sbnlib)==' > "$lock"
  fi
  args=()
  [ "$extra" != base ] && args=(--extra "$extra")
  echo "locking $lock" >&2
  CUSTOM_COMPILE_COMMAND="scripts/lock.sh" "$tmp/venv/bin/pip-compile" --quiet --resolver=backtracking \
    --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
    "${args[@]}" "$@" --output-file "$lock" pyproject.toml
  # dev's extra names sbnlib's own (sbnlib[experiments,assess,cluster]), so pip-compile lists the
  # project itself (sbnlib @ file://<this folder>, unhashable): bootstrap.sh installs it apart, --no-deps
  "$tmp/venv/bin/python" - "$lock" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
text = re.sub(r"(# WARNING: pip install will require the following package to be hashed\.\n# Consider .*\n)?"
              r"sbnlib @ .*\n(    #.*\n)*", "", text)
open(path, "w").write(text)
PY
done
