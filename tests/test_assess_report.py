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

from sbnlib.advice import _ACTIONS, benchmark_evidence, recommend, report_html
from sbnlib.assess import assess_data
from sbnlib.cli import main

from .conftest import REPO
from .test_userdata import make_folder

PROV = ("# dataset: {d}\n# data_status: synthetic\n# profile: cpu\n# n_train: 1234\n# seeds: 7\n"
        '# parameters: {{"epochs": 5, "methods": ["bn", "sbn", "random", "gn"]}}\n')


def _csv(path, d, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PROV.format(d=d) + pd.DataFrame(rows).to_csv(index=False))


@pytest.fixture
def results(tmp_path):
    """A results folder in the suite's layout, with made-up numbers that code must not know:
    mnist (new columns: controls, gn, random), fashion_mnist (older columns, no accuracy.csv),
    cifar10 (only in REPORT.md's verdict table), cifar100 (missing data)."""
    out = tmp_path / "results"
    _csv(out / "mnist" / "verdicts.csv", "mnist", [
        {"batch_size": 2, "dataset": "mnist", "C1": "contradicted", "C2": "contradicted", "sbn vs random": "contradicted", "sbn vs gn": "inconclusive"},
        {"batch_size": 4, "dataset": "mnist", "C1": "contradicted", "C2": "inconclusive", "sbn vs random": "inconclusive", "sbn vs gn": "contradicted"},
        {"batch_size": 8, "dataset": "mnist", "C1": "inconclusive", "C2": "inconclusive", "sbn vs random": "inconclusive", "sbn vs gn": "inconclusive"},
    ])
    _csv(out / "mnist" / "accuracy.csv", "mnist", [
        {"batch_size": b, "bn": f"9{b}.00 ± 1.00", "sbn": f"8{b}.00 ± 2.00", "random": "80.00 ± 3.00", "gn": "91.00 ± 1.00",
         "sbn-bn diff (pp)": d, "sbn-bn 95% CI (pp)": f"[{d - 1:.2f}, {d + 1:.2f}]", "C1 vs bn": "ignored",
         "sbn batches normalised": f"{n}%"}
        for b, d, n in ((2, -6.13, 48.5), (4, -1.23, 51.0), (8, -0.42, 52.25))])
    _csv(out / "fashion_mnist" / "verdicts.csv", "fashion_mnist", [
        {"batch_size": 2, "dataset": "fashion_mnist", "C1": "inconclusive", "C2": "contradicted"},
        {"batch_size": 4, "dataset": "fashion_mnist", "C1": "supported", "C2": "supported"},
    ])
    (out / "cifar100").mkdir()
    (out / "cifar100" / "status.json").write_text(json.dumps({"status": "missing", "reason": "files missing. Expected ..."}))
    (out / "REPORT.md").write_text(
        "# report\n\n| dataset | status | detail |\n|---|---|---|\n| mnist | ok | |\n| cifar100 | missing | no files |\n\n"
        "| dataset | batch_size | C1 | C2 |\n|---|---|---|---|\n| mnist | 2 | supported | x |\n| cifar10 | 4 | contradicted | contradicted |\n")
    return out


def _row(b, frac=0.18, n=100):
    return {"batch_size": b, "n_batches": n, "threshold": 0.5, "frac_needs_bn": frac}


def test_evidence_is_read_from_the_files(results):
    ev = benchmark_evidence(results)
    assert ev["available"] and ev["dir"] == str(results) and not ev["problems"]
    rows = {(r["dataset"], r["batch_size"]): r for r in ev["rows"]}
    assert set(rows) == {("mnist", 2), ("mnist", 4), ("mnist", 8), ("fashion_mnist", 2), ("fashion_mnist", 4), ("cifar10", 4)}
    assert rows["mnist", 2]["C1"] == "contradicted"  # verdicts.csv wins over REPORT.md
    assert rows["mnist", 4]["sbn-bn diff (pp)"] == -1.23 and rows["mnist", 4]["accuracy"]["gn"] == "91.00 ± 1.00"
    assert "sbn vs random" not in rows["fashion_mnist", 2] and rows["cifar10", 4]["C1"] == "contradicted"
    assert ev["datasets"]["mnist"] == {"status": "ok", "profile": "cpu", "n_train": 1234, "seeds": 7, "epochs": 5,
                                       "methods": ["bn", "sbn", "random", "gn"], "data_status": "synthetic", "numbers produced": None}
    assert ev["not_run"]["cifar100"].startswith("missing")


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


def test_supported_evidence_and_no_evidence(tmp_path, results):
    for f in results.glob("*/verdicts.csv"):
        f.write_text(f.read_text().replace("contradicted", "supported").replace("inconclusive", "supported"))
    (results / "REPORT.md").unlink()
    rec = recommend(_row(2), benchmark_evidence(results))
    assert rec["action"] == "try selective BN" and "worth a trial" in rec["recommendation"]
    none = recommend(_row(4), benchmark_evidence(tmp_path / "empty"))
    assert none["action"] == "no evidence" and "evidence is unavailable" in none["reason"]
    res = assess_data(np.random.default_rng(0).normal(size=(40, 3)), [4], evidence=tmp_path / "empty")
    assert res["evidence"]["available"] is False and "evidence unavailable" in res["evidence_note"]


def test_committed_outputs_are_read_if_present():
    out = REPO / "outputs"
    files = sorted(out.glob("*/verdicts.csv"))
    if not files:
        pytest.skip(f"no committed results under {out}")
    ev = benchmark_evidence(out)
    assert ev["available"] and not ev["problems"]
    got = {(r["dataset"], r["batch_size"]): r["C1"] for r in ev["rows"]}
    for f in files:
        for rec in pd.read_csv(f, comment="#").to_dict(orient="records"):
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
    for f in results.glob("*/verdicts.csv"):
        f.write_text(f.read_text().replace("supported", "contradicted").replace("inconclusive", "contradicted"))
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
    assert rows[0][5] == "-6.1 pp on MNIST"  # only MNIST's accuracy.csv has the difference


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
