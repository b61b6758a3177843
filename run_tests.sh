#!/usr/bin/env bash
# Set up (or reuse) .venv with the test dependencies, then run the test suite.
# Arguments go to pytest, e.g. ./run_tests.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")"
python=$(scripts/bootstrap.sh dev)
exec "$python" -m pytest "$@"
