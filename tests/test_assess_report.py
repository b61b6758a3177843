"""The recommendation and its evidence (read from result files, never typed), and the
self-contained HTML report, rendered in headless Chromium (issue 6)."""
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sbnlib.assess import assess_data, evidence
from sbnlib.assess.advice import _ACTIONS, recommend
from sbnlib.assess.evidence import benchmark_evidence
from sbnlib.assess.figures import plot_benchmark_evidence
from sbnlib.assess.html import report_html
from sbnlib.cli import main
from sbnlib.experiments import report

from .conftest import REPO
from .test_userdata import make_folder

PROV = {"profile": "cpu", "data_status": "synthetic", "n_train": 1234, "last run finished (UTC)": "2026-01-02 03:04:05"}
PARAMS = {"epochs": 5, "methods": ["bn", "sbn", "random", "gn"]}


def _write_evidence(out, dataset, verdicts, numbers=()):
    """``<out>/<dataset>/evidence.json`` through the analysis's own writer, from frames shaped as
    ``analyse`` has them: ``verdicts`` (rows of the verdict table), ``numbers``: per batch size
    ``(sbn - bn difference in pp, fraction of batches normalised)``; every other number is made up
    around them."""
    comps = pd.DataFrame([{"batch_size": b, "baseline": base, "mean_diff": (d + k) / 100, "ci_low": (d + k - 1) / 100,
                           "ci_high": (d + k + 1) / 100} for b, d, _ in numbers for k, base in enumerate(("bn", "random", "gn"))])
    summary = pd.DataFrame([{"batch_size": b, "method": m, "mean": acc / 100, "std": sd / 100, "n": 7}
                            for b, _, _ in numbers for m, acc, sd in (("bn", 90 + b, 1), ("sbn", 80 + b, 2),
                                                                      ("random", 80, 3), ("gn", 91, 1))],
                           columns=["batch_size", "method", "mean", "std", "n"])
    frac = pd.Series({b: f for b, _, f in numbers}, dtype=float)
    record = report.evidence_record(dataset, PROV, PARAMS, 7, pd.DataFrame(verdicts), comps, summary, frac)
    evidence.write_evidence(out / dataset, record)
    return record


def _set_verdicts(out, old_new):
    """Rewrite every verdict ``old`` as ``new`` in the evidence files of ``out``."""
    for f in out.glob("*/evidence.json"):
        rec = json.loads(f.read_text())
        for r in rec["rows"]:
            r.update({k: old_new.get(v, v) for k, v in r.items() if isinstance(v, str)})
        f.write_text(json.dumps(rec))


@pytest.fixture
def results(tmp_path):
    """A results folder in the suite's layout, with made-up numbers that code must not know:
    mnist (controls, gn, random, every number), fashion_mnist and cifar10 (verdicts only),
    cifar100 (missing data); beside them rendered tables that say otherwise, which must not be read."""
    out = tmp_path / "results"
    _write_evidence(out, "mnist", [
        {"batch_size": 2, "C1": "contradicted", "C2": "contradicted", "sbn vs random": "contradicted", "sbn vs gn": "inconclusive"},
        {"batch_size": 4, "C1": "contradicted", "C2": "inconclusive", "sbn vs random": "inconclusive", "sbn vs gn": "contradicted"},
        {"batch_size": 8, "C1": "inconclusive", "C2": "inconclusive", "sbn vs random": "inconclusive", "sbn vs gn": "inconclusive"},
    ], numbers=[(2, -6.13, 0.485), (4, -1.23, 0.51), (8, -0.42, 0.5225)])
    _write_evidence(out, "fashion_mnist", [{"batch_size": 2, "C1": "inconclusive", "C2": "contradicted"},
                                           {"batch_size": 4, "C1": "supported", "C2": "supported"}])
    _write_evidence(out, "cifar10", [{"batch_size": 4, "C1": "contradicted", "C2": "contradicted"}])
    (out / "cifar100").mkdir()
    (out / "cifar100" / "status.json").write_text(json.dumps({"status": "missing", "reason": "files missing. Expected ..."}))
    # the rendered output, contradicting the evidence: the advice reads none of it
    (out / "mnist" / "accuracy.csv").write_text(
        "batch_size,bn,sbn,sbn-bn diff (pp),sbn-bn 95% CI (pp),C1 vs bn,sbn batches normalised\n"
        '2,11.00 ± 1.00,12.00 ± 1.00,+1.00,"[0.50, 1.50]",supported,10.0%\n')
    (out / "REPORT.md").write_text("| dataset | batch_size | C1 | C2 |\n|---|---|---|---|\n| mnist | 2 | supported | x |\n")
    return out


def _row(b, frac=0.18, n=100):
    return {"batch_size": b, "n_batches": n, "threshold": 0.5, "frac_needs_bn": frac}


def test_evidence_is_read_from_the_files(results):
    ev = benchmark_evidence(results)
    assert ev["available"] and ev["dir"] == str(results) and not ev["problems"]
    rows = {(r["dataset"], r["batch_size"]): r for r in ev["rows"]}
    assert set(rows) == {("mnist", 2), ("mnist", 4), ("mnist", 8), ("fashion_mnist", 2), ("fashion_mnist", 4), ("cifar10", 4)}
    assert rows["mnist", 2]["C1"] == "contradicted"  # evidence.json, not REPORT.md or accuracy.csv
    assert rows["mnist", 4]["diff_pp"] == {"bn": -1.23, "random": -0.23, "gn": 0.77}
    assert rows["mnist", 4]["ci_pp"]["bn"] == [-2.23, -0.23] and rows["mnist", 4]["frac_normalized"] == 0.51
    assert rows["mnist", 4]["accuracy_pct"]["gn"] == {"mean": 91.0, "std": 1.0}
    assert "sbn vs random" not in rows["fashion_mnist", 2] and rows["fashion_mnist", 2]["diff_pp"] == {}
    assert ev["datasets"]["mnist"] == {"profile": "cpu", "data_status": "synthetic", "n_train": 1234, "seeds": 7,
                                       "epochs": 5, "methods": ["bn", "sbn", "random", "gn"],
                                       "numbers_produced": "2026-01-02 03:04:05"}
    assert ev["not_run"]["cifar100"].startswith("missing")


def test_evidence_read_back_equals_what_was_written(tmp_path):
    verdicts = [{"batch_size": 2, "C1": "contradicted", "C1 budget": evidence.BUDGET_SENSITIVE, "C2": "inconclusive"}]
    record = _write_evidence(tmp_path, "mnist", verdicts, numbers=[(2, -3.5, 0.25)])
    assert json.loads((tmp_path / "mnist" / "evidence.json").read_text()) == record  # plain JSON: no NaN, no numpy
    ev = benchmark_evidence(tmp_path)
    assert [{k: v for k, v in r.items() if k != "dataset"} for r in ev["rows"]] == record["rows"]
    assert ev["datasets"]["mnist"] == {k: v for k, v in record.items() if k not in ("schema", "dataset", "rows")}
    assert recommend(_row(2), ev)["action"] == "no measured difference"  # a budget-sensitive verdict is not counted
    assert "twice the training changed the comparison" in recommend(_row(2), ev)["reason"]
    # deterministic: the same frames give the same bytes
    first = (tmp_path / "mnist" / "evidence.json").read_bytes()
    _write_evidence(tmp_path, "mnist", verdicts, numbers=[(2, -3.5, 0.25)])
    assert (tmp_path / "mnist" / "evidence.json").read_bytes() == first


def test_renamed_display_columns_change_nothing(results):
    before = benchmark_evidence(results)
    acc = results / "mnist" / "accuracy.csv"
    acc.write_text(acc.read_text().replace("sbn-bn 95% CI (pp)", "CI").replace("sbn-bn diff (pp)", "difference"))
    (results / "REPORT.md").unlink()
    assert benchmark_evidence(results) == before


@pytest.mark.parametrize("damage, problem", [
    (lambda rec: {**rec, "schema": 1}, "has schema 1; this sbnlib reads schema 2"),
    (lambda rec: {k: v for k, v in rec.items() if k != "schema"}, "has schema None"),
    (lambda rec: {**rec, "rows": [{"batch_size": "2", "C1": "supported"}]}, "integer batch_size"),
    (lambda rec: {**rec, "rows": [{**rec["rows"][0], "diff_pp": {"bn": "-6.13"}}]}, "numbers (or null)"),
    (lambda rec: "{not json", "unreadable"),
])
def test_a_bad_evidence_file_is_reported_not_misread(results, damage, problem):
    path = results / "mnist" / "evidence.json"
    bad = damage(json.loads(path.read_text()))
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    ev = benchmark_evidence(results)
    assert len(ev["problems"]) == 1 and str(path) in ev["problems"][0] and problem in ev["problems"][0]
    assert "mnist" not in ev["datasets"] and not any(r["dataset"] == "mnist" for r in ev["rows"])
    assert ev["available"]  # the other datasets still count


def test_a_dataset_that_ran_without_evidence_json_is_a_problem(results):
    (results / "mnist" / "evidence.json").unlink()
    (results / "mnist" / "status.json").write_text(json.dumps({"status": "ok", "reason": ""}))
    ev = benchmark_evidence(results)
    assert "mnist" not in ev["datasets"] and "mnist" not in ev["not_run"]
    assert ev["problems"] == [f"{results / 'mnist' / 'evidence.json'} is missing although mnist ran; "
                              "rerun its analysis to write it"]
    res = assess_data(np.random.default_rng(0).normal(size=(40, 3)), [4], evidence=results)
    assert "Left out: " + ev["problems"][0] in res["evidence_note"]


def test_plot_draws_the_numbers(results):
    ev = benchmark_evidence(results)
    ax = plot_benchmark_evidence(ev, [3]).axes[0]
    (line,) = [c for c in ax.containers if hasattr(c, "has_yerr")]  # only mnist has numbers
    assert list(line.lines[0].get_ydata()) == [-6.13, -1.23, -0.42]
    ends = sorted(float(y) for coll in line.lines[2] for seg in coll.get_segments() for y in seg[:, 1])
    assert ends == pytest.approx(sorted([-7.13, -5.13, -2.23, -0.23, -1.42, 0.58]))


def test_recommendations_quote_the_evidence(results):
    ev = benchmark_evidence(results)
    r2 = recommend(_row(2), ev)
    assert r2["action"] == "use BN"
    assert r2["headline"] == ("At batch size 2, 18% of the 100 batches are heterogeneous (score above the threshold 0.5): "
                              "selective BN would normalise those and skip BN on 82% of steps.")
    assert "On MNIST at B=2 selective BN was significantly less accurate than BN (C1 contradicted; " \
           "accuracy of selective BN minus BN: -6.1 pp)" in r2["reason"]
    assert "on Fashion-MNIST at B=2 the difference was not significant (C1 inconclusive)" in r2["reason"]
    assert "Heterogeneity-selected batches against randomly selected ones at the same rate: contradicted on MNIST." in r2["reason"]
    assert "normalised 48% of the batches (here: 18%)" in r2["reason"]
    r4 = recommend(_row(4, 0.5), ev)
    assert r4["action"] == "compare both"
    assert "On MNIST and CIFAR-10 at B=4 selective BN was significantly less accurate than BN (C1 contradicted; " \
           "accuracy of selective BN minus BN: -1.2 pp on MNIST)" in r4["reason"]
    assert "on Fashion-MNIST at B=4 selective BN was significantly more accurate than BN (C1 supported)" in r4["reason"]
    assert recommend(_row(8), ev)["action"] == "no measured difference"
    r3 = recommend(_row(3), ev)
    assert r3["evidence_batch_size"] == 4 and "B=4 (the nearest measured batch size; B=3 was not measured)" in r3["reason"]
    assert recommend(_row(64), ev)["evidence_batch_size"] == 8


def test_supported_evidence_and_no_evidence(tmp_path, results, monkeypatch):
    _set_verdicts(results, {"contradicted": "supported", "inconclusive": "supported"})
    rec = recommend(_row(2), benchmark_evidence(results))
    assert rec["action"] == "try selective BN" and "worth a trial" in rec["recommendation"]
    none = recommend(_row(4), benchmark_evidence(tmp_path / "empty"))
    assert none["action"] == "no evidence" and "evidence is unavailable" in none["reason"]
    res = assess_data(np.random.default_rng(0).normal(size=(40, 3)), [4], evidence=tmp_path / "empty")
    assert res["evidence"]["available"] is False and "evidence unavailable" in res["evidence_note"]
    # the library default reads no evidence, not even from an outputs/ in the working directory
    shutil.copytree(results, tmp_path / "cwd" / "outputs")
    monkeypatch.chdir(tmp_path / "cwd")
    res = assess_data(np.random.default_rng(0).normal(size=(40, 3)), [4])
    assert res["evidence"]["looked_in"] == [] and res["batch_sizes"][0]["recommendation"]["action"] == "no evidence"
    assert "no results folder was given" in res["evidence_note"]
    assert benchmark_evidence("auto")["dir"] == str(tmp_path / "cwd" / "outputs")  # what the command line's default reads


def test_committed_outputs_are_read_if_present():
    out = REPO / "outputs"
    files = sorted(out.glob("*/evidence.json"))
    if not files:
        pytest.skip(f"no evidence.json under {out} (written by the analysis since evidence.json exists)")
    ev = benchmark_evidence(out)
    assert ev["available"]
    got = {(r["dataset"], r["batch_size"]): r["C1"] for r in ev["rows"]}
    for f in files:
        if (f.parent / "verdicts.csv").is_file():
            for rec in pd.read_csv(f.parent / "verdicts.csv", comment="#").to_dict(orient="records"):
                assert got[f.parent.name, int(rec["batch_size"])] == rec["C1"]


# ---------------------------------------------------------------------------------------------
# The HTML report
# ---------------------------------------------------------------------------------------------

CHROME = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _chrome(tmp_path, *args):
    return subprocess.run([CHROME, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
                           f"--user-data-dir={tmp_path / 'chrome-profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_html_report_is_self_contained(tmp_path, results, capsys):
    make_folder(tmp_path / "imgs", n=12, size=8)
    rc = main(["assess", "--data", str(tmp_path / "imgs"), "--image-size", "8", "--batch-sizes", "2", "4", "8",
               "--evidence", str(results), "--out", str(tmp_path / "out")])
    assert rc == 0
    page = (tmp_path / "out" / "assess_imgs_feature_std_mean.html").read_text()
    res = json.loads((tmp_path / "out" / "assess_imgs_feature_std_mean.json").read_text())
    assert page.count("<img ") == page.count("src='data:image/png;base64,") == 3  # histograms, fraction, evidence
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", page)
    assert [row[0] for row in _recommendation_table(page)] == ["2", "4", "8"]
    assert "Should I use BN on imgs?" in page and "compare both" in page
    frag = report_html(res, fragment=True)
    assert frag.startswith("<div class='sbn-report'>") and "<script" not in frag
    assert "use standard BN, not selective BN" in capsys.readouterr().out


def _recommendation_table(page):
    """The cells of the per-batch-size table that follows the recommendation paragraph, one list per row
    (of the page as written or as Chromium serialises it, with double quotes)."""
    table = re.split(r"id=['\"]summary['\"]", page, maxsplit=1)[1].split("</table>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in table.split("<tr>")[2:]]


def test_html_report_says_the_recommendation_once(results):
    """Three batch sizes, one recommendation: one paragraph says it, a table gives each batch size's facts."""
    _set_verdicts(results, {"supported": "contradicted", "inconclusive": "contradicted"})
    res = assess_data(np.random.default_rng(0).normal(size=(64, 3)), [2, 4, 8], evidence=results)
    assert {r["recommendation"]["action"] for r in res["batch_sizes"]} == {"use BN"}
    page = report_html(res)
    assert page.count(_ACTIONS["use BN"]) == 1 and "Recommendation at B=" not in page
    assert page.count("class='summary'") == 1
    rows = _recommendation_table(page)
    assert [(r[0], r[1], r[-1]) for r in rows] == [(str(r["batch_size"]), f"{r['n_batches']:,}", "use BN")
                                                    for r in res["batch_sizes"]]
    assert rows[0][2] == f"{round(100 * res['batch_sizes'][0]['frac_needs_bn'])}%"
    assert rows[0][3] == "B=2" and rows[0][4].startswith("contradicted on MNIST")
    # a committed report carries no clock: made twice, it is the same page
    assert "generated" in page and "generated" not in report_html(res, stamped=False)
    assert report_html(res, stamped=False) == report_html(dict(res, elapsed_s=123.0), stamped=False)
    assert rows[0][5] == "-6.1 pp on MNIST"  # only MNIST's evidence has the difference


def test_html_report_mixed_recommendations_each_said_once(results):
    res = assess_data(np.random.default_rng(0).normal(size=(64, 3)), [2, 4, 8], evidence=results)
    page = report_html(res)
    actions = [r["recommendation"]["action"] for r in res["batch_sizes"]]
    assert actions == ["use BN", "compare both", "no measured difference"]
    for a in actions:
        assert page.count(_ACTIONS[a]) == 1, a  # in the one paragraph, "B=2: ... B=4: ..."
    assert [r[-1] for r in _recommendation_table(page)] == actions


@pytest.mark.skipif(CHROME is None, reason="headless Chromium is not installed (apt-get install -y chromium; "
                                            ".ci/run installs it)")
def test_html_report_renders_in_headless_chromium(tmp_path, results):
    make_folder(tmp_path / "imgs", n=12, size=8)
    rc = main(["assess", "--data", str(tmp_path / "imgs"), "--image-size", "8", "--batch-sizes", "2", "4",
               "--evidence", str(results), "--out", str(tmp_path / "out")])
    assert rc == 0
    html_path = tmp_path / "out" / "assess_imgs_feature_std_mean.html"
    res = json.loads(html_path.with_suffix(".json").read_text())
    # a narrow window: the evidence table (a column per method and per verdict) is wider than that
    dom = _chrome(tmp_path, "--virtual-time-budget=10000", "--window-size=800,1200", "--dump-dom", html_path.as_uri()).stdout
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded, dom[:2000]
    assert int(loaded.group(1)) == int(loaded.group(2)) == 3  # every figure decoded (naturalWidth > 0)
    width = re.search(r'data-page-width="(\d+)/(\d+)"', dom)  # the page's scrollWidth / clientWidth, measured by itself
    assert width and 0 < int(width.group(1)) <= int(width.group(2)) <= 800, width and width.group(0)
    assert res["summary"] in dom and dom.count(_ACTIONS["use BN"]) == 1
    assert [r[0] for r in _recommendation_table(dom)] == ["2", "4"]
    shot = tmp_path / "report.png"
    _chrome(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", html_path.as_uri())
    with Image.open(shot) as img:
        assert img.size == (1200, 2000)
        assert np.asarray(img.convert("L")).std() > 10  # not a blank page
    print(f"screenshot of the HTML report: {shot}")


def test_dataset_path_also_writes_the_report(shared_data, tmp_path, results):
    rc = main(["assess", "--dataset", "mnist", "--data-root", str(shared_data), "--n-train", "200", "--batch-sizes", "4",
               "--evidence", str(results), "--out", str(tmp_path)])
    assert rc == 0
    page = (tmp_path / "assess_mnist_feature_std_mean.html").read_text()
    assert "Should I use BN on MNIST?" in page and "benchmark dataset MNIST" in page
    res = json.loads((tmp_path / "assess_mnist_feature_std_mean.json").read_text())
    assert res["batch_sizes"][0]["recommendation"]["action"] == "compare both"


def test_feasibility_notebook_ends_with_the_report():
    nb = json.loads((REPO / "notebooks" / "feasibility.ipynb").read_text())
    last = "".join(nb["cells"][-1]["source"])
    assert "report_html(result" in last and "benchmark_evidence(P.output_dir)" in last
