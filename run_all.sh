#!/usr/bin/env bash
# Run the whole replication suite into outputs/ with papermill:
#   for each dataset: notebooks/experiment.ipynb -> outputs/<dataset>/ (and the ablation and readings notebooks on some),
#   then for each dataset: notebooks/feasibility.ipynb (training-free; run last so that the recommendation in each
#   feasibility report rests on every benchmark measured in this run),
#   then notebooks/summary.ipynb -> outputs/summary.ipynb and outputs/REPORT.md; HTML of every executed notebook.
# Resumable: finished training runs are kept (outputs/<dataset>/runs/); rerun to continue after an interruption.
set -uo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'USAGE'
usage: ./run_all.sh [--profile smoke|quick|cpu|paper] [--datasets "mnist fashion_mnist cifar10 cifar100"]
                    [--data-root DIR] [--download] [--jobs N] [--output-dir DIR] [--allow-missing]
                    [--ablation-datasets "NAMES" | --no-ablation] [--readings-datasets "NAMES" | --no-readings]
                    [--scheduler ADDR] [--budget-check train|cached]
  --profile        smoke (minutes, for CI), quick (a newcomer's first run), cpu (default: the committed results;
                   hours, resumable across sittings), paper (full data; GPU or a long run). See README for measured times.
  --datasets       which datasets (default: the paper's four and mnist_fmnist_mix, the heterogeneity stress set)
  --data-root      where the datasets are (default: $SBN_DATA_ROOT, else ./data)
  --download       fetch missing datasets through torchvision (needs internet)
  --jobs           parallel training processes (default 2)
  --scheduler      train on a Dask cluster at this scheduler address (e.g. tcp://host:8786) instead of
                   local processes; needs pip install "sbnlib[cluster]" (--jobs is then ignored)
  --output-dir     default outputs for the cpu profile (the committed results), outputs/<profile> for the others
  --allow-missing  exit 0 even if a dataset's files are missing (it is still reported as not run)
  --ablation-datasets  run notebooks/ablation.ipynb on these datasets after their experiments (default
                   "fashion_mnist mnist_fmnist_mix"; a dataset not in --datasets, or that did not run, is skipped
                   with a note; --ablation-dataset NAME is the same option)
  --no-ablation    do not run the ablation notebook
  --readings-datasets  run notebooks/readings.ipynb (every reading of the paper with its random control) on these
                   datasets after their experiments (default "fashion_mnist cifar10 mnist_fmnist_mix")
  --no-readings    do not run the readings notebook
  --budget-check   train (default): the budget check (bn and sbn, and every reading that beats bn, at twice the
                   epochs) trains its runs; cached: it reads the runs that exist and a batch size without them
                   reads "not checked" (to render while the check's runs still accrue: scripts/accrue_runs.py --budget-only)
USAGE
}

# the datasets sbnlib knows (sbnlib.data.registry; tests/test_run_all.py checks that the two lists agree),
# here so that a misspelt name is refused before the virtual environment is set up
KNOWN_DATASETS="mnist fashion_mnist cifar10 cifar100 mnist_fmnist_mix"
known() { [[ " $KNOWN_DATASETS " == *" $1 "* ]]; }
profile=cpu; datasets="$KNOWN_DATASETS"; jobs=2; out=""; allow_missing=0; download=0
ablation="fashion_mnist mnist_fmnist_mix"
readings="fashion_mnist cifar10 mnist_fmnist_mix"
data_root="${SBN_DATA_ROOT:-}"; sched=(); budget_mode=train
need() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "error: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) need "$1" "${2:-}"; profile="$2"; shift 2 ;;
    --datasets) need "$1" "${2:-}"; datasets="$2"; shift 2 ;;
    --data-root) need "$1" "${2:-}"; data_root="$2"; shift 2 ;;
    --jobs) need "$1" "${2:-}"; jobs="$2"; shift 2 ;;
    --scheduler) need "$1" "${2:-}"; sched=(-p scheduler "$2"); shift 2 ;;
    --output-dir) need "$1" "${2:-}"; out="$2"; shift 2 ;;
    --allow-missing) allow_missing=1; shift ;;
    --download) download=1; shift ;;
    --ablation-datasets|--ablation-dataset) need "$1" "${2:-}"; ablation="$2"; shift 2 ;;
    --no-ablation) ablation=""; shift ;;
    --readings-datasets) need "$1" "${2:-}"; readings="$2"; shift 2 ;;
    --no-readings) readings=""; shift ;;
    --budget-check) need "$1" "${2:-}"; budget_mode="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$profile" in smoke|quick|cpu|paper) ;; *) echo "error: unknown profile '$profile'; choose smoke, quick, cpu or paper" >&2; exit 2 ;; esac
# only the cpu profile writes the committed outputs/; the others never overwrite them
[ -n "$out" ] || { [ "$profile" = cpu ] && out=outputs || out="outputs/$profile"; }
case "$budget_mode" in train|cached) ;; *) echo "error: --budget-check must be train or cached, got '$budget_mode'" >&2; exit 2 ;; esac
case "$jobs" in ''|*[!0-9]*|0*) echo "error: --jobs must be a positive integer, got '$jobs'" >&2; exit 2 ;; esac
for d in $datasets; do
  known "$d" || { echo "error: unknown dataset '$d'; choose from $KNOWN_DATASETS" >&2; exit 2; }
done
[ -n "${datasets// /}" ] || { echo "error: --datasets is empty" >&2; exit 2; }
for d in $ablation; do
  known "$d" || { echo "error: unknown dataset '$d' in --ablation-datasets; choose from $KNOWN_DATASETS" >&2; exit 2; }
done
for d in $readings; do
  known "$d" || { echo "error: unknown dataset '$d' in --readings-datasets; choose from $KNOWN_DATASETS" >&2; exit 2; }
done

# an unusable output directory is an option error too: before the (possibly long) set-up
mkdir -p "$out" 2>/dev/null && [ -w "$out" ] || { echo "error: output directory '$out' is not writable; choose another --output-dir" >&2; exit 2; }
# one run per output folder: a second one would race the first's result files, logs and tables
exec 9>"$out/.run_all.lock"
flock -n 9 || { echo "error: another ./run_all.sh is writing $out (it holds $out/.run_all.lock); wait for it to end or choose another --output-dir" >&2; exit 2; }
# Ctrl-C or SIGTERM: stop every process this script started (papermill; its kernel and the kernel's
# sweep workers follow their parent, sbnlib.experiments.sweep.die_with_parent), keep every finished result, exit 130
kill_tree() { local c; for c in $(pgrep -P "$1"); do kill_tree "$c"; done; kill -TERM "$1" 2>/dev/null; }
stop() { trap '' INT TERM; echo "interrupted: stopping the notebooks and their workers; finished runs are kept" >&2
         for c in $(pgrep -P $$); do kill_tree "$c"; done; wait; exit 130; }
trap stop INT TERM
python=$(scripts/bootstrap.sh experiments) || { echo "error: could not set up the virtual environment" >&2; exit 2; }
venv_bin=$(dirname "$python")
out=$(cd "$out" && pwd)
[ -n "$data_root" ] && export SBN_DATA_ROOT="$data_root"
pm_root=(); [ -n "$data_root" ] && pm_root=(-p data_root "$(cd "$data_root" 2>/dev/null && pwd || echo "$data_root")")
root_abs=$( [ -n "$data_root" ] && (cd "$data_root" 2>/dev/null && pwd || echo "$data_root") || echo "$PWD/data")
root_phys=$(cd "$root_abs" 2>/dev/null && pwd -P || echo "$root_abs")  # the path Python resolves (through links)
portable() { local t=${1//"$root_phys"/$(basename "$root_phys")}; t=${t//"$root_abs"/$(basename "$root_abs")}
             echo "${t//"$PWD"/.}"; }  # no machine paths in results

start=$(date +%s)
failed=(); missing=(); done_ok=(); with_data=()
status_json() { "$python" -c 'import sys; from sbnlib.assess.evidence import write_status; write_status(sys.argv[1], sys.argv[2], sys.argv[3])' "$@"; }
run_nb() {  # run_nb NOTEBOOK DATASET [papermill args...]: execute into $out/DATASET/, progress to the console
  local nb=$1 d=$2; shift 2
  {  # in the background, waited for: a signal then reaches the trap at once, not when the notebook ends
    "$venv_bin/papermill" "notebooks/$nb.ipynb" "$out/$d/$nb.ipynb" -p dataset "$d" -p profile "$profile" \
         -p output_dir "$out" "${pm_root[@]}" "$@" --log-output --no-progress-bar 2>&1 \
      | tee "$out/$d/$nb.log" | grep --line-buffered -E "(runs\)|assess): +[0-9]+%" | sed -u 's/^/      /'
    exit "${PIPESTATUS[0]}"
  } &
  wait $!
}
nb_failed() {  # nb_failed NOTEBOOK DATASET: say so with the log's tail, and mark the dataset failed in its status.json
  echo "   FAILED: $1 (log: $out/$2/$1.log)"; tail -n 5 "$out/$2/$1.log" | sed 's/^/     /'
  status_json "$out/$2" failed "$1.ipynb failed; see $2/$1.log"
}
# a notebook that ran: without run times, progress bars or machine paths (committed: a cached rerun leaves it
# byte-identical; sbnlib.experiments.notebooks), then as HTML. A failed notebook is left as papermill wrote it.
render() { "$python" -m sbnlib.experiments.notebooks "$1" || echo "  (could not stabilise $1)"
           "$venv_bin/jupyter" nbconvert --to html --log-level WARN "$1" >/dev/null 2>&1 || echo "  (HTML rendering of $1 failed)"; }

for d in $datasets; do
  echo "== $d ($profile profile)"
  mkdir -p "$out/$d"
  dl=(); [ $download -eq 1 ] && dl=(--download)
  if ! msg=$("$python" -m sbnlib check-data --dataset "$d" "${dl[@]}" 2>&1); then
    echo "   NOT RUN:"; echo "$msg" | grep -v '^warning' | sed 's/^/     /'  # the whole message: which files, and the fix
    status_json "$out/$d" missing "$(portable "$(echo "$msg" | grep -v '^warning' | sed 's/^error: //' | tr '\n' ' ')")"
    missing+=("$d"); continue
  fi
  echo "   $(echo "$msg" | grep -v '^warning' | tail -n 1)"
  with_data+=("$d")
  echo "   -> experiment.ipynb"
  if run_nb experiment "$d" -p jobs "$jobs" -p budget_check "$budget_mode" "${sched[@]}"; then
    grep -E "^[0-9]+ runs; " "$out/$d/experiment.log" | tail -n 1 | sed 's/^/      /'
    render "$out/$d/experiment.ipynb"
    done_ok+=("$d")
  else
    nb_failed experiment "$d"
    failed+=("$d")
  fi
done

extra_nb() {  # extra_nb NOTEBOOK DATASET [papermill args]: a notebook that reuses DATASET's experiment (its learning rates, its runs)
  if [[ " ${done_ok[*]} " == *" $2 "* ]]; then
    echo "== $1 on $2"
    if run_nb "$1" "$2" -p jobs "$jobs" "${sched[@]}" "${@:3}"; then
      render "$out/$2/$1.ipynb"
    else
      echo "   FAILED: $1 (log: $out/$2/$1.log)"; failed+=("$2 $1")
    fi
  else
    echo "== $1 on $2: NOT RUN ($2 was not among the datasets that ran)"
  fi
}
for d in $ablation; do extra_nb ablation "$d"; done
for d in $readings; do extra_nb readings "$d" -p budget_check "$budget_mode"; done

# The feasibility notebooks train nothing; they run after every experiment so that the recommendation in each
# feasibility report quotes the accuracy comparisons measured above, on all datasets.
for d in "${with_data[@]}"; do
  echo "== feasibility report: $d"
  if run_nb feasibility "$d"; then
    render "$out/$d/feasibility.ipynb"
  else
    nb_failed feasibility "$d"
    failed+=("$d feasibility")
  fi
done

echo "== summary (verdicts, figures and REPORT.md across datasets)"
if { "$venv_bin/papermill" notebooks/summary.ipynb "$out/summary.ipynb" -p datasets "$datasets" -p output_dir "$out" \
       --log-output --no-progress-bar 2>&1 | tee "$out/summary.log" | grep --line-buffered -E "summary: +[0-9]+%" \
       | sed -u 's/^/      /'; exit "${PIPESTATUS[0]}"; } & wait $!; then
  render "$out/summary.ipynb"
  echo "   report: $out/REPORT.md"
else
  echo "   FAILED: summary (log: $out/summary.log)"; failed+=(summary)
fi

elapsed=$(( $(date +%s) - start ))
echo "== done in ${elapsed}s: ran ${done_ok[*]:-nothing}; missing data: ${missing[*]:-none}; failed: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ] || exit 1
if [ ${#missing[@]} -gt 0 ] && [ $allow_missing -eq 0 ]; then
  echo "exit 3: dataset(s) not run for lack of data: ${missing[*]} (pass --allow-missing to accept)" >&2
  exit 3
fi
exit 0
