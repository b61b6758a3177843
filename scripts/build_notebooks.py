"""Write notebooks/*.ipynb from the cell lists below (run after editing; a test checks they agree).

    python scripts/build_notebooks.py          # write
    python scripts/build_notebooks.py --check  # exit 1 if a notebook differs from this source
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"

SETUP = """\
import matplotlib; matplotlib.use("agg")  # figures are shown from their files; no second, inline copy
from IPython.display import Image, Markdown, display
import pandas as pd
from sbnlib.experiments import pipelines as ex, report, studies
from sbnlib.experiments.sweep import die_with_parent
die_with_parent()  # run by papermill: stop (and stop the sweep's workers) when papermill is killed
pd.set_option("display.width", 200, "display.max_columns", 30)"""

FEASIBILITY = [
    new_markdown_cell("""\
# Feasibility: which training batches need BN? (no training)

The paper's *early-stage feasibility assessment*: before any training, cut the training set into
batches (a seeded batch plan), score every batch by its feature heterogeneity, fit a threshold on
the scores and call the batches above it the ones that *need* BN. This notebook shows, for one
dataset and each batch size, the score distribution, the threshold and the fraction of batches
that need BN, plus the most and least heterogeneous batches.

Run with papermill, e.g. `papermill notebooks/feasibility.ipynb out.ipynb -p dataset cifar10`."""),
    new_code_cell("""\
dataset = "mnist"        # mnist | fashion_mnist | cifar10 | cifar100 | mnist_fmnist_mix
profile = "cpu"          # smoke | quick | cpu | paper: batch sizes and subset sizes
batch_sizes = None       # None: the profile's
n_train = None           # None: the profile's training subset (the images the experiment trains on)
scorer = "feature_std"   # see sbnlib.scoring.SCORERS
threshold = "mean"       # mean | median | quantile | otsu | rate
data_root = None         # None: $SBN_DATA_ROOT, else ./data
download = False         # True: fetch missing files through torchvision (needs internet)
output_dir = None         # None: outputs/ for the cpu profile, outputs/<profile> for the others; relative to the repo root""", metadata={"tags": ["parameters"]}),
    new_code_cell(SETUP + """
P = ex.resolve_params(dataset, profile, batch_sizes=batch_sizes, n_train=n_train,
                      data_root=data_root, output_dir=output_dir)
ds = ex.load(P, download=download)
print(ds, "\\nprovenance:", ds.provenance["status"], "-", ds.provenance["note"])"""),
    new_markdown_cell("""\
## Scores, threshold and the fraction of batches that need BN

One row per batch size: the number of batches in the plan, the fitted threshold, the fraction of
batches whose score is above it, and the mean and standard deviation of the scores. Scores shrink
in spread as batches grow (a batch of B samples averages B draws), so the threshold splits ever
more similar batches at large B."""),
    new_code_cell("""\
result, table, figs = ex.feasibility(P, ds, scorer=scorer, threshold=threshold)
display(table)"""),
    new_markdown_cell("""\
## Score distributions

Histogram of batch scores at each batch size; the red line is the threshold. Batches to its right
are normalised by selective BN, the others skip BN."""),
    new_code_cell("""display(Image(str(P.out / "feasibility_scores.png")))"""),
    new_markdown_cell("""\
## Fraction of batches that need BN, per batch size

Left: the fraction above the threshold. Right: the score distribution (box: quartiles) with the
threshold (red)."""),
    new_code_cell("""display(Image(str(P.out / "feasibility_fraction.png")))"""),
    new_markdown_cell("""\
## Most and least heterogeneous batches

Each row is one batch (up to 8 of its images), its score at the left. The top rows are the batches
that selective BN normalises with most certainty, the bottom rows those that skip BN."""),
    new_code_cell("""display(Image(str(P.out / "feasibility_examples.png")))"""),
    new_markdown_cell("""\
## Ground truth, where it exists

For a dataset built as a mix of sources (`mnist_fmnist_mix`: MNIST digits and Fashion-MNIST items),
we know how mixed every batch is. What matters for the method is how a scorer orders **the batches
training actually forms**: every batch of the evaluation seeds' batch plans, with its minority-source
share (min of the two sources' shares). First table: the Spearman correlation between score and
minority share, per batch size (rows) and scorer (columns); second: the AUROC of batches with a
minority share of at least 25% against those of at most 5% (n/a where one group is empty: a random
batch of 32 from two equal sources is never nearly pure). Third, a second and differently built
line: the AUROC of batches drawn half from each source against batches drawn from one source, which
training never sees at B >= 8. The pixel-spread scorers are fooled because pure Fashion-MNIST batches
spread more than mixed ones; `spectral_split`, fitted on the training inputs without the sources,
scores a batch by its spread across the coarsest split of the data's modes."""),
    new_code_cell("""\
if "plan_ordering" in result:
    plan = pd.DataFrame(result["plan_ordering"]["rows"])
    print(result["plan_ordering"]["batches"])
    display(plan.pivot(index="batch_size", columns="scorer", values="spearman").round(3))
    display(plan.pivot(index="batch_size", columns="scorer", values="auroc").round(3))
if "domain_auroc" in result:
    print("balanced half/half batches vs pure batches (not the batches training forms):")
    display(pd.DataFrame(result["domain_auroc"]).set_index("batch_size"))
else:
    print(f"{dataset} has no known mix of sources; nothing to check")"""),
    new_markdown_cell("""\
## Should I use BN on this data?

The assessment in plain language, per batch size: how many batches are heterogeneous, what
selective BN would do with them, and a recommendation with the measured evidence it rests on: the
verdicts and accuracies of the benchmark experiments found under `output_dir`
(`<dataset>/verdicts.csv`, `accuracy.csv`, `REPORT.md`), or a note that there are none yet
(`run_all.sh` runs this notebook after every experiment, so that the evidence is complete). The
same report, as a self-contained HTML page, is written to `feasibility_report.html`; for your own
data run `python -m sbnlib assess --data PATH` (an image folder, a `.npy`/`.npz` array or a CSV)."""),
    new_code_cell("""\
from IPython.display import HTML
from sbnlib.assess.advice import add_recommendations
from sbnlib.assess.evidence import benchmark_evidence
from sbnlib.assess.html import report_html, write_html_report
add_recommendations(result, benchmark_evidence(P.output_dir))
write_html_report(result, P.out / "feasibility_report.html", stamped=False)  # committed: no clock in it
display(HTML(report_html(result, fragment=True, stamped=False)))"""),
]

EXPERIMENT = [
    new_markdown_cell("""\
# Experiment: traditional BN vs selective BN, one dataset

For every batch size and every paired seed (same seed = same initial weights and same batch order
for every method), train a small CNN with traditional BN (`bn`) and with selective BN (`sbn`:
normalise only the batches classified as heterogeneous before training; the others pass through
the BN layers unchanged), and with the controls: no normalisation (`none`), selective BN whose
skipped batches use the running statistics (`sbn_frozen`), selective BN on a random subset of
batches of the same size (`random`) and GroupNorm (`gn`). Then:

* the **accuracy table** (claim C1): mean ± std of final test accuracy per method; for sbn against
  bn, random and gn the paired difference with a 95% bootstrap CI, the Wilcoxon signed-rank
  p-value Holm-adjusted across batch sizes and the verdict (paired t-test p-values are in
  `comparisons_accuracy.csv`); and the fraction of batches normalised;
* the **stability analysis** (claim C2): BN transformation counts, training-loss volatility,
  gradient-norm coefficient of variation, an internal-covariate-shift probe, and the spread of
  final accuracy across seeds, each compared sbn vs bn with the same paired tests.

Finished runs are stored one file each under `outputs/<dataset>/runs/` (keyed by a hash of the
full configuration), so rerunning resumes and ends with the same numbers."""),
    new_code_cell("""\
dataset = "mnist"        # mnist | fashion_mnist | cifar10 | cifar100 | mnist_fmnist_mix
profile = "cpu"          # smoke | quick | cpu | paper
batch_sizes = None       # None: the profile's
seeds = None             # a count (seeds 0..n-1) or a list; None: the profile's
epochs = None
methods = None           # must include "bn" and "sbn"; None: the profile's
n_train = None
n_test = None
data_root = None         # None: $SBN_DATA_ROOT, else ./data
download = False         # True: fetch missing files through torchvision (needs internet)
output_dir = None         # None: outputs/ for the cpu profile, outputs/<profile> for the others; relative to the repo root
jobs = 1                 # worker processes (each run uses one thread, so results do not depend on jobs)
scheduler = None         # Dask scheduler address, e.g. tcp://host:8786; None: local processes
budget_check = "train"   # "train": the budget check trains its runs (2x epochs); "cached": read those that exist""",
                  metadata={"tags": ["parameters"]}),
    new_code_cell(SETUP + """
P = ex.resolve_params(dataset, profile, batch_sizes=batch_sizes, seeds=seeds, epochs=epochs,
                      methods=methods, n_train=n_train, n_test=n_test, data_root=data_root,
                      output_dir=output_dir, jobs=jobs, scheduler=scheduler)
ds = ex.load(P, download=download)
print(ds, "\\nprovenance:", ds.provenance["status"], "-", ds.provenance["note"])
for w in ds.provenance["warnings"]:
    print("WARNING:", w)
print("sweep:", P.sweep)"""),
    new_markdown_cell("""\
## The training regime, and each method's learning rate chosen on validation data

Every run uses the same recipe (printed above as `sweep`): SGD with Nesterov momentum, a linear
warm-up over the first 15% of the steps, then cosine decay to zero. A stratified 10% of the
training images is held out for validation. Each method gets its own peak learning rate per batch
size, chosen the same way for all: every value of the grid is trained on tuning seeds that are
not evaluation seeds, and the value with the best mean final **validation** accuracy is kept.
The test set plays no part in the choice. A choice at an edge of the grid (column `edge`) means
the grid should be wider."""),
    new_code_cell("""\
selection = ex.tune(P, ds)
display(selection[selection.chosen].pivot(index="batch_size", columns="method", values="lr"))
display(selection)"""),
    new_markdown_cell("## Training every (method, batch size, seed) at its selected learning rate"),
    new_code_cell("""\
results, df, wall_time = ex.run(P, selection)
print(f"{len(results)} runs; "
      f"{df.wall_time_s.sum():.0f} s of training in all; diverged: {int(df.diverged.sum())}")
budget_runs = ex.budget_check(P, selection, mode=budget_check)
out = ex.analyse(P, ds, results, df, selection, budget_runs)"""),
    new_markdown_cell("""\
## Accuracy table (claim C1)

Rows are batch sizes, method cells the final test accuracy (%) as mean ± std over paired seeds.
`sbn-bn diff` is the mean paired difference in percentage points with its 95% bootstrap CI; the
p-values are Holm-adjusted across batch sizes; the verdict follows the rule printed below. The
same columns follow for `sbn-random` (does choosing batches by heterogeneity beat choosing as many
at random?) and `sbn-gn`. The last column is the fraction of training batches that selective BN
normalised."""),
    new_code_cell("""\
print(report.C1_RULE)
display(out["accuracy"])"""),
    new_markdown_cell("""\
## Did every method converge?

A comparison is only meaningful where the baselines are trained to their plateau. Per batch size
and method (means over seeds): the learning rate used, the training accuracy on the last epoch's
batches, the final validation accuracy, and how much validation accuracy the last two epochs still
added. The last two columns come from the **budget check**: `bn` and `sbn` retrained at twice the
epochs on the tuning seeds, at their selected learning rates, read on validation data. Every batch
size is judged; a C1 verdict is *budget-sensitive* (shown, not counted) where the doubled budget
flips the sign of the paired difference or moves it by more than the cell's MDE, or where either
arm's learning rate lies at an open edge of the grid (table `budget_check` below). The learning
curves show every method's validation accuracy after every epoch."""),
    new_code_cell("""\
display(out["convergence"])
display(pd.read_csv(P.out / "budget_check.csv", comment="#"))
display(Image(str(P.out / "learning_curves.png")))"""),
    new_markdown_cell("""\
## Accuracy against batch size

Mean final test accuracy with the 95% confidence interval over seeds, per method. The paper's
claim C1 predicts the `sbn` line above the `bn` line, mostly at small batch sizes. A run that
diverged is left out of the means and counted in the legend."""),
    new_code_cell("""display(Image(str(P.out / "accuracy_vs_batch.png")))"""),
    new_markdown_cell("""\
## Every seed's accuracy

The means above, taken apart: one dot per seed, per batch size (columns) and method (colour);
a black-edged cross is a run that diverged. Look at whether a gap between `sbn` and `bn` is
carried by every seed (two separate clouds) or by one or two outlying seeds, and at how widely the
seeds of one method spread: a wide spread at small batch sizes is the instability C2 is about."""),
    new_code_cell("""display(Image(str(P.out / "accuracy_per_seed.png")))"""),
    new_markdown_cell("""\
## Stability analysis (claim C2)

BN transformations count one normalisation by one BN layer of one batch (mean over seeds).
For each stability metric (lower = more stable), the verdict and Holm-adjusted Wilcoxon p-value
of sbn vs bn:

* `loss_volatility`: standard deviation of the step-to-step changes of the training loss;
* `grad_norm_cv`: coefficient of variation of the global gradient norm over the steps;
* `ics_shift`: how far the inputs of the normalisation layers move between checkpoints on a fixed
  probe batch (in units of their own spread), a probe of internal covariate shift;
* `spread`: absolute deviation of a seed's final accuracy from its method's mean."""),
    new_code_cell("""\
print(report.C2_RULE)
display(out["stability"])
display(out["stability_metrics"])"""),
    new_markdown_cell("""\
## Training loss and stability metrics against batch size

The stability panels show the median over seeds with the interquartile range: these metrics are
heavy-tailed (a seed whose loss blows up reaches a volatility of 1e21), and a mean would follow
that one seed. A panel whose values span more than a factor of 30 is on a log scale (its axis
says so). Diverged runs have no stability metric; the legend counts them."""),
    new_code_cell("""\
display(Image(str(P.out / "loss_curves.png")))
display(Image(str(P.out / "stability.png")))"""),
    new_markdown_cell("""\
## Train/test consistency of selective BN

A network trained with BN skipped on some batches is evaluated here under three inference
policies: standard eval (every test batch normalised with BN's running statistics, which selective
BN gathered only from the batches it normalised), test batches of the training batch size scored
and normalised only when above the training threshold, and BN bypassed on every test batch. The
running-statistics drift says how far those statistics are from the statistics of the inputs they
normalise at inference (0 = exact; compare `bn`)."""),
    new_code_cell("""\
display(out["inference"]) if len(out["inference"]) else print("no run of this sweep recorded inference policies")"""),
    new_markdown_cell("""\
## Where selective BN loses accuracy: training or inference?

For the BN-based methods, the last epoch's training loss over all steps and split into the steps
that ran BN and those that skipped it, the last epoch's training accuracy, and the test accuracy
(means over seeds). If selective BN's training loss stays high, the network itself did not fit
(an optimisation failure, not a matter of running statistics); if the training loss is low and
only the test accuracy falls, inference is to blame. Compare `random`, which skips as many
batches chosen at random."""),
    new_code_cell("""\
display(out["collapse"]) if len(out["collapse"]) else print("no BN-based method in this sweep")"""),
    new_markdown_cell("""\
## Verdicts for this dataset

C1 and C2 per batch size, computed from the tables above by the stated rules; `C1 budget` says
whether twice the training would change C1. These feed the cross-dataset `summary.ipynb` and
`outputs/REPORT.md`."""),
    new_code_cell("""display(out["verdicts"])"""),
    new_markdown_cell("## Provenance"),
    new_code_cell("""for k, v in out["provenance"].items():
    print(f"{k}: {v}")"""),
]

SUMMARY = [
    new_markdown_cell("""\
# Summary: the paper's claims across datasets

Collects the verdicts that each dataset's `experiment.ipynb` computed and writes
`outputs/REPORT.md`. A dataset that was not run (for example, CIFAR-100 when its files are not
available offline) is listed with the reason."""),
    new_code_cell("""\
datasets = ["mnist", "fashion_mnist", "cifar10", "cifar100", "mnist_fmnist_mix"]
output_dir = "outputs"   # the folder the experiments wrote (outputs/<profile> for profiles other than cpu)""", metadata={"tags": ["parameters"]}),
    new_code_cell(SETUP + """
if isinstance(datasets, str):
    datasets = datasets.split()
verdicts, statuses, report_path, extra = studies.summary(datasets, output_dir)
sanity = extra["sanity"]
for d, st in statuses.items():
    print(f"{d:>14}: {st['status']}  {st.get('reason', '')}")"""),
    new_markdown_cell("""\
## Verdicts per dataset and batch size

C1: selective BN reaches better test accuracy than BN. C2: it normalises fewer batches and trains
more stably. Each cell is `supported`, `contradicted` or `inconclusive` by the rules below, which
are applied to the paired statistics; nothing here is typed by hand."""),
    new_code_cell("""\
print(report.C1_RULE, "\\n")
print(report.C2_RULE)
display(verdicts)
if len(verdicts):
    display(pd.crosstab(verdicts["dataset"], verdicts["c1"]).rename_axis(columns="C1"))
    display(pd.crosstab(verdicts["dataset"], verdicts["c2"]).rename_axis(columns="C2"))"""),
    new_markdown_cell("""\
## The verdicts at a glance

The same table as one heat map per claim (C1, C2, and the controls `sbn vs random` and
`sbn vs gn`): rows are datasets, columns batch sizes. Green (yes) = supported, red (no) =
contradicted, grey (?) = inconclusive; a C1 cell marked * is budget-sensitive (twice the training
would change it), shown and not counted; blank = not measured. The paper's claim C1 would show as a green band at the small
batch sizes of the first map; compare the `sbn vs random` map to see whether heterogeneity, rather
than skipping BN as such, decides anything."""),
    new_code_cell("""\
fig = report_path.parent / "summary_verdicts.png"
display(Image(str(fig))) if fig.exists() else print("no dataset produced results")"""),
    new_markdown_cell("""\
## Selective BN minus BN, per dataset

The paired accuracy difference (percentage points, 95% bootstrap CI) against batch size. Above 0
means selective BN did better; the black line at 0 is always in view, so a whole curve below it
reads at once as "selective BN lost at every batch size"."""),
    new_code_cell("""\
fig = report_path.parent / "summary_accuracy_diff.png"
display(Image(str(fig))) if fig.exists() else print("no dataset produced results")"""),
    new_markdown_cell("""\
## The answer, in words

The first screen of `REPORT.md`: the paper's question answered with numbers, every significant
win over BN anywhere and what it is owed to, then one short section per claim and check. `sbn vs
random` asks whether choosing the batches to normalise by heterogeneity beats choosing the same
number at random (if not, heterogeneity is not what drives the result); `sbn vs gn` whether
selective BN beats GroupNorm, the standard answer to small batches."""),
    new_code_cell("""\
display(Markdown("\\n".join(report.answer(extra["results"]))))
display(Markdown("\\n".join(report.claim_sections(extra["results"]))))"""),
    new_markdown_cell("""\
## Sanity reference: BN vs GroupNorm as the batch shrinks

Wu & He (2018) saw BN's ImageNet error rise from 23.6% at 32 images per batch to 34.7% at 2,
while GroupNorm stayed at 24.1%. If our own `bn` and `gn` baselines do not show BN losing more
than GroupNorm at small batches, selective BN has little room to help there. The table tests it
per dataset; the figure shows both methods against batch size. Note that every run trains for the
same number of epochs, so large batches take few steps (45 at B=128 in the `cpu` profile): methods
that need many steps (no normalisation, GroupNorm) can fall off at the large end for that reason."""),
    new_code_cell("""\
if len(sanity):
    display(sanity)
    print("\\n".join(report.sanity_sentences(sanity)))
    display(Image(str(report_path.parent / "sanity_bn_vs_gn.png")))
else:
    print("no dataset ran both bn and gn")
print("report written to", report_path)"""),
    new_markdown_cell("""\
## Where to read more

Each dataset's own report (`outputs/<dataset>/REPORT.md`) holds every table and figure of its
experiment, readings, ablation and feasibility notebooks."""),
    new_code_cell("""\
for r in extra["results"]:
    print(f"{r.name:>16}: {r.status['status']}" + (f"  -> {report_path.parent / r.name / 'REPORT.md'}" if r.ok else ""))"""),
]


ABLATION = [
    new_markdown_cell("""\
# Ablation: is it heterogeneity that matters?

On one dataset and a few small batch sizes, selective BN is trained with every scorer and every
threshold strategy, and with the `rate` strategy swept from 0 (never normalise) to 1 (always, which
is traditional BN). The **random control** normalises the same number of batches, chosen at random
(same seeds). If the heterogeneity criterion is what helps, the heterogeneity curve lies above the
random curve at the same fraction of batches normalised."""),
    new_code_cell("""\
dataset = "fashion_mnist"
profile = "cpu"          # smoke | quick | cpu | paper (the ablation grid of sbnlib.experiments.sweep.ABLATION[profile])
batch_sizes = None       # None: the profile's ablation batch sizes
seeds = None             # None: the profile's ablation seed count
scorers = None           # None: every registered scorer
strategies = None        # None: the profile's grid strategies (mean, median, otsu, quantile)
rates = None             # None: the profile's rate sweep
n_train = None
n_test = None
data_root = None         # None: $SBN_DATA_ROOT, else ./data
output_dir = None         # None: outputs/ for the cpu profile, outputs/<profile> for the others; relative to the repo root
jobs = 1
scheduler = None         # Dask scheduler address, e.g. tcp://host:8786; None: local processes""", metadata={"tags": ["parameters"]}),
    new_code_cell(SETUP + """
P = ex.resolve_params(dataset, profile, n_train=n_train, n_test=n_test, data_root=data_root,
                      output_dir=output_dir, jobs=jobs, scheduler=scheduler)
ds = ex.load(P)
print(ds, "\\nprovenance:", ds.provenance["status"])"""),
    new_markdown_cell("## Training the grid"),
    new_code_cell("""\
out = studies.ablation(P, ds, batch_sizes=batch_sizes, seeds=seeds, scorers=scorers, strategies=strategies, rates=rates)"""),
    new_markdown_cell("""\
## Accuracy against the fraction of batches normalised

One panel per batch size. Orange: batches normalised in order of heterogeneity (`rate` sweep);
grey: the same number of batches chosen at random; markers: each scorer / threshold strategy, at
the fraction of batches it normalised. Means with 95% confidence intervals over seeds."""),
    new_code_cell("""display(Image(str(P.out / "ablation.png")))"""),
    new_markdown_cell("""\
## Every selection, and heterogeneity vs random at the same rate

The first table lists each batch selection with the fraction of batches it normalised and its test
accuracy (%). The second compares, at each rate, heterogeneity-selected batches against random
ones with the paired tests and the verdict rule of the experiment notebook (differences as
fractions of the test set)."""),
    new_code_cell("""\
display(out["table"])
display(out["vs_random"])"""),
]


READINGS = [
    new_markdown_cell("""\
# Readings: where the selection acts, in which direction, and with which score

The abstract is all we have of the paper, and it allows more than one reading of selective BN. The
experiment notebook tests one: every BN layer passes the low-score batches through unchanged. Before
a claim is called contradicted, each other reading is trained here on the same paired seeds, with
its own **random control**: the same selection rule applied to as many batches chosen at random, so
that a difference to the control is the effect of choosing batches by heterogeneity, not of
normalising fewer of them. The readings (`sbnlib.experiments.readings.READINGS`):

| reading | what changes | why the abstract allows it |
|---|---|---|
| `identity` | nothing: every BN layer skips the low-score batches as identity | the project's default |
| `frozen` | skipped batches are normalised with the running statistics, affine kept | "bypassed" may keep the layer |
| `first` | only the first BN layer is selective; the others always normalise | BN as "a preprocessing step" |
| `input` | a BN on the input channels is the only selective layer; inner BN always on | "a pre-training processing" of the input batch |
| `input_bare` | that selective input BN is the network's only normalisation | the same, with no inner BN |
| `inverse` | the *least* heterogeneous batches are normalised, as many as `identity` | BN "redundant or even performance-degrading" for homogeneous data: the direction |
| `reformed` | batches are re-formed and re-scored every epoch | the classification need not be once |
| `best_scorer` | `identity` with the scorer that best detects mixtures of sources | "feature heterogeneity" is not defined |

Each method takes the learning rate selected for it on validation data in the experiment (the
inverse selection takes `sbn`'s, `random_frozen` takes `random`'s); runs are shared with the
experiment where the configuration is the same."""),
    new_code_cell("""\
dataset = "mnist_fmnist_mix"
profile = "cpu"          # smoke | quick | cpu | paper: the experiment's sweep (recipe, subset sizes)
batch_sizes = None       # None: the profile's readings plan (sbnlib.experiments.readings.PLAN: small batch sizes and one large)
seeds = None             # a count or a list; None: the readings plan's
readings = None          # None: every reading of sbnlib.experiments.readings.READINGS; or e.g. "identity inverse input"
n_train = None
n_test = None
data_root = None         # None: $SBN_DATA_ROOT, else ./data
output_dir = None         # None: outputs/ for the cpu profile, outputs/<profile> for the others; relative to the repo root
jobs = 1
scheduler = None         # Dask scheduler address, e.g. tcp://host:8786; None: local processes
budget_check = "train"   # "train": the budget check trains its runs (2x epochs); "cached": read those that exist""",
                  metadata={"tags": ["parameters"]}),
    new_code_cell(SETUP + """
from sbnlib.experiments import readings as rd
P = ex.resolve_params(dataset, profile, batch_sizes=batch_sizes, seeds=seeds, n_train=n_train, n_test=n_test,
                      data_root=data_root, output_dir=output_dir, jobs=jobs, scheduler=scheduler)
ds = ex.load(P)
print(ds, "\\nprovenance:", ds.provenance["status"])
display(pd.DataFrame([{"reading": n, "method": r.method, "control": r.control, "overrides": r.overrides, "what": r.text}
                      for n, r in rd.READINGS.items()]).set_index("reading"))"""),
    new_markdown_cell("## Training bn, every reading and every control"),
    new_code_cell("""\
out = studies.readings(P, ds, names=readings, budget_check=budget_check)
print(f"{len(out['frame'])} runs; diverged: {int(out['frame'].diverged.sum())}")"""),
    new_markdown_cell("""\
## The readings table

One row per reading and batch size. `reading acc`, `control acc` and `bn acc`: final test accuracy
(%) as mean ± std over the paired seeds. Then three paired comparisons, each with the difference in
percentage points, its 95% bootstrap CI, the Wilcoxon p-value Holm-adjusted across batch sizes, the
minimum effect the seeds could detect (MDE 80%) and the verdict:

* **reading - bn**: claim C1 under this reading (does it beat traditional BN?);
* **reading - control**: does choosing the batches by heterogeneity beat choosing as many at random?
  This is the test of the paper's idea under the reading; a reading that beats `bn` but not its
  control owes its gain to normalising fewer batches, not to the score;
* **reading - sbn**: the reading against the default reading, on the same seeds. For `inverse` this
  is the test of the direction: if the heterogeneous batches are the ones that need BN, normalising
  the homogeneous ones instead must do worse (a negative difference).

The last column is the fraction of training batches the reading normalised (its control normalises
exactly as many).

A fourth comparison, **reading - none** (no normalisation at all, from the evaluation sweep), says
whether a reading that beats `bn` owes it to less normalisation rather than to its selection.
Every win over `bn` is checked at twice the training (column `reading vs bn budget`; the
`readings_budget_check` table below): the reading, its control, `none` and `bn` retrained at twice
the epochs on the tuning seeds and read on validation data."""),
    new_code_cell("""\
print(report.C1_RULE)
display(out["table"])"""),
    new_markdown_cell("""\
## The readings at a glance

Left: each reading minus `bn`; right: each reading minus its random control. One marker per batch
size (mean paired difference, 95% bootstrap CI); a filled marker has a verdict (significant after
Holm and the interval on one side of 0), a hollow one is inconclusive. A reading supports the paper
where its markers sit right of 0 in both panels, mostly at small batch sizes; a claim is
contradicted only where every reading sits left of 0 against `bn`."""),
    new_code_cell("""display(Image(str(P.out / "readings.png")))"""),
    new_markdown_cell("## The budget check of every win over BN"),
    new_code_cell("""display(out["budget"]) if len(out["budget"]) else print("no reading beats bn significantly")"""),
    new_markdown_cell("## Provenance"),
    new_code_cell("""for k, v in out["provenance"].items():
    print(f"{k}: {v}")"""),
]


def _notebook(cells):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):  # stable ids, so regeneration is byte-identical
        c["id"] = f"cell-{i:02d}"
    return nb


NOTEBOOKS = {"feasibility.ipynb": FEASIBILITY, "experiment.ipynb": EXPERIMENT, "ablation.ipynb": ABLATION,
             "readings.ipynb": READINGS, "summary.ipynb": SUMMARY}


def main(check: bool = False) -> int:
    stale = []
    for name, cells in NOTEBOOKS.items():
        text = nbformat.writes(_notebook(cells)) + "\n"
        path = NB_DIR / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python scripts/build_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv))
