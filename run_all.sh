#!/usr/bin/env bash
# Runs the whole replication suite into outputs/. (The notebook suite lands with the notebooks
# issue; until then this sets up the environment and runs the pre-training feasibility assessment
# of every dataset whose files are available.)
set -euo pipefail
cd "$(dirname "$0")"
python=$(scripts/bootstrap.sh)
export SBN_DATA_ROOT="${SBN_DATA_ROOT:-data}"
status=0
for ds in mnist fashion_mnist cifar10 cifar100; do
  echo "== $ds: feasibility assessment"
  "$python" -m sbnlib assess --dataset "$ds" --batch-sizes 2 4 8 16 32 64 128 --out "outputs/$ds" || status=1
done
exit $status
