"""Your own data (issue 6): image folders, .npy / .npz arrays and CSV files through the readers,
the streaming assessment and the CLI; the report's numbers against a direct computation with
sbnlib.scoring / sbnlib.threshold; bad files give one clear error, or are skipped and counted."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sbnlib.assess import assess, assess_data
from sbnlib.assess.readers import open_source
from sbnlib.assess.sources import UserDataError
from sbnlib.assess.streaming import scan, standardize_array
from sbnlib.batches import make_batch_plan
from sbnlib.cli import main
from sbnlib.scoring import score_batches
from sbnlib.threshold import classify_batches, fit_threshold

BS = [2, 4, 7, 16]


# ---------------------------------------------------------------------------------------------
# Builders and the direct computation
# ---------------------------------------------------------------------------------------------

def make_folder(root, classes=("ant", "bee", "cat"), n=20, size=12, mode="RGB", seed=0, sizes=None):
    """root/<class>/<i>.png; per-image brightness gains so that batches differ. Returns the images
    as stored (N, H, W[, C]) uint8, in ImageFolder order (classes sorted, files sorted)."""
    rng = np.random.default_rng(seed)
    stored = []
    for c in sorted(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            s = size if sizes is None else sizes[i % len(sizes)]
            shape = (s, s) if mode == "L" else (s, s, len(mode))
            a = (rng.uniform(0, 1, shape) * rng.uniform(0.2, 1.0) * 255).astype(np.uint8)
            Image.fromarray(a, mode=None).convert(mode).save(root / c / f"{i:03d}.png")
            stored.append(a)
    return np.stack(stored) if sizes is None else stored


def direct(x: np.ndarray, batch_sizes, per_channel: bool, seed=0, threshold="mean"):
    """The assessment written out: standardise with whole-array float64 statistics, then the
    public scorer and threshold on each batch size's plan."""
    x64 = x.astype(np.float64)
    axes = (0, *range(2, x.ndim)) if per_channel else (0,)
    mean, std = x64.mean(axes, keepdims=True), x64.std(axes, keepdims=True)
    std[std == 0] = 1.0
    xs = torch.from_numpy(((x64 - mean) / std).astype(np.float32))
    out = {}
    for b in batch_sizes:
        s = score_batches(xs, b, "feature_std", order=make_batch_plan(x.shape[0], b, seed=seed))
        t = fit_threshold(s, threshold)
        out[b] = {"scores": s.numpy(), "threshold": t, "n_batches": s.numel(),
                  "n_needs_bn": int(classify_batches(s, t).sum())}
    return out


def check_against_direct(result, ref):
    for r in result["batch_sizes"]:
        d = ref[r["batch_size"]]
        assert r["n_batches"] == d["n_batches"] == len(r["scores"])
        np.testing.assert_allclose(r["scores"], d["scores"], rtol=2e-5, atol=1e-6)
        assert r["threshold"] == pytest.approx(d["threshold"], rel=1e-5)
        assert r["n_needs_bn"] == d["n_needs_bn"]
        assert r["frac_needs_bn"] == pytest.approx(d["n_needs_bn"] / d["n_batches"])


def run_cli(args, capsys):
    rc = main(["assess", *map(str, args)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_error(err: str) -> str:
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Numbers against the direct computation, and identical scores in memory and streamed
# ---------------------------------------------------------------------------------------------

def test_image_folder_numbers_match_direct_computation(tmp_path):
    imgs = make_folder(tmp_path / "imgs", size=12)  # stored at the assessed size: no resizing
    res = assess_data(tmp_path / "imgs", BS, image_size=12, evidence=None, chunk_mb=0.01)
    assert res["input"]["kind"] == "image folder" and res["input"]["n_used"] == 60
    assert res["input"]["item_shape"] == [3, 12, 12] and res["input"]["n_classes"] == 3
    x = imgs.transpose(0, 3, 1, 2).astype(np.float32)  # ImageFolder order, channels first
    check_against_direct(res, direct(x, BS, per_channel=True))
    # streamed in chunks of ~2 images == the whole standardised set in memory (identical scores)
    mem = assess(standardize_array(x), BS)
    for a, b in zip(res["batch_sizes"], mem["batch_sizes"]):
        assert np.array_equal(a["scores"], b["scores"]) and a["threshold"] == b["threshold"]


def test_mixed_image_sizes_are_resized_and_grey_images_have_one_channel(tmp_path):
    stored = make_folder(tmp_path / "g", classes=("a", "b"), n=6, mode="L", sizes=[9, 16, 31])
    src = open_source(tmp_path / "g", image_size=8)
    sc = scan(src)
    x = src.read(sc.ids)
    assert x.shape == (12, 1, 8, 8)
    want = np.asarray(Image.fromarray(stored[1]).resize((8, 8), Image.BILINEAR), dtype=np.float32)
    assert np.array_equal(x[1, 0], want)
    res = assess_data(tmp_path / "g", [4], image_size=8, evidence=None)
    assert "resized to 8x8" in res["input"]["resize"] and res["input"]["channels"] == 1


@pytest.mark.parametrize("kind", ["npy", "npy_fortran", "npy_float64", "npz", "npz_compressed", "tensor"])
def test_arrays_match_direct_computation_and_in_memory_path(tmp_path, kind):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(300, 2, 5, 5)) * rng.uniform(0.2, 3, size=(300, 1, 1, 1)) + [[[[1.0]], [[-4.0]]]]).astype(np.float32)
    data = {"npz": tmp_path / "x.npz", "npz_compressed": tmp_path / "xc.npz",
            "tensor": torch.from_numpy(x)}.get(kind, tmp_path / "x.npy")
    if kind == "npy":
        np.save(data, x)
    elif kind == "npy_fortran":  # rows not contiguous on disk
        np.save(data, np.asfortranarray(x))
    elif kind == "npy_float64":  # read rows of 8-byte values, converted to float32 as the in-memory path does
        np.save(data, x.astype(np.float64))
    elif kind == "npz":
        np.savez(data, images=x, labels=np.arange(300))  # two arrays: "images" is picked by name
    elif kind == "npz_compressed":
        np.savez_compressed(data, x)
    res = assess_data(data, BS, evidence=None, chunk_mb=0.004)
    assert res["input"]["n_used"] == 300 and res["input"]["standardisation"] == "per channel"
    check_against_direct(res, direct(x, BS, per_channel=True))
    mem = assess(standardize_array(x), BS)
    for a, b in zip(res["batch_sizes"], mem["batch_sizes"]):
        assert np.array_equal(a["scores"], b["scores"])


def test_channels_last_array_is_transposed(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 6, 6, 3)).astype(np.float32) * [1.0, 5.0, 0.1]
    np.save(tmp_path / "hwc.npy", x)
    res = assess_data(tmp_path / "hwc.npy", [4, 8], evidence=None)
    assert res["input"]["item_shape"] == [3, 6, 6] and "(N, H, W, C)" in res["input"]["layout"]
    check_against_direct(res, direct(x.transpose(0, 3, 1, 2), [4, 8], per_channel=True))


def test_csv_with_header_and_label_column_matches_direct_computation(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(150, 4)) * [1, 10, 100, 0.1] + [0, 5, -50, 2]).astype(np.float32)
    x[:, 3] = 2.0  # a constant feature: centred, left at 0
    labels = rng.choice(["setosa", "virginica"], 150)
    path = tmp_path / "iris like.csv"
    with open(path, "w") as f:
        f.write("a,b,species,c,d\n")
        for row, lab in zip(x, labels):
            f.write(",".join([repr(float(row[0])), repr(float(row[1])), lab, repr(float(row[2])), repr(float(row[3]))]) + "\n")
    out = tmp_path / "out"
    rc, stdout, _ = run_cli(["--data", path, "--label-column", "species", "--batch-sizes", *BS, "--out", out], capsys)
    assert rc == 0
    res = json.loads((out / "assess_iris_like_feature_std_mean.json").read_text())
    assert res["input"]["label_column"] == "species" and res["input"]["item_shape"] == [4]
    assert res["input"]["n_constant"] == 1 and res["input"]["standardisation"] == "per feature"
    check_against_direct(res, direct(x, BS, per_channel=False))
    for r in res["batch_sizes"]:
        assert f"{r['frac_needs_bn']:>8.1%}" in stdout
    assert (out / "assess_iris_like_feature_std_mean.html").exists()
    # no header, tab-separated, the label column by index: the same numbers
    with open(tmp_path / "plain.tsv", "w") as f:
        for row, lab in zip(x, labels):
            f.write("\t".join([lab] + [repr(float(v)) for v in row]) + "\n")
    res2 = assess_data(tmp_path / "plain.tsv", BS, label_column=0, evidence=None)
    assert "none detected" in res2["input"]["header"]
    for a, b in zip(res["batch_sizes"], res2["batch_sizes"]):
        assert np.array_equal(a["scores"], b["scores"])


# ---------------------------------------------------------------------------------------------
# Bad inputs: one clear error naming the file (row, column); --skip-bad skips and counts
# ---------------------------------------------------------------------------------------------

def test_unreadable_image_and_skip_bad(tmp_path, capsys):
    imgs = make_folder(tmp_path / "imgs", n=10, size=8)
    (tmp_path / "imgs" / "bee" / "005b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "imgs" / "cat" / "notes.txt").write_text("ignored: not an image extension")
    out = tmp_path / "out"
    rc, _, err = run_cli(["--data", tmp_path / "imgs", "--image-size", 8, "--batch-sizes", 4, "--out", out], capsys)
    line = one_error(err)
    assert rc == 2 and "bee/005b.png" in line and "unreadable image" in line and "--skip-bad" in line
    assert not out.exists() or not list(out.iterdir())
    rc, stdout, _ = run_cli(["--data", tmp_path / "imgs", "--image-size", 8, "--batch-sizes", 4, 8,
                             "--skip-bad", "--out", out], capsys)
    assert rc == 0 and "skipped 1 bad item (--skip-bad)" in stdout
    res = json.loads((out / "assess_imgs_feature_std_mean.json").read_text())
    assert res["skipped"]["count"] == 1 and res["skipped"]["by_reason"] == {"unreadable image": 1}
    assert res["input"]["n_items"] == 31 and res["input"]["n_used"] == 30 and res["input"]["n_ignored_files"] == 1
    check_against_direct(res, direct(imgs.transpose(0, 3, 1, 2).astype(np.float32), [4, 8], per_channel=True))
    page = (out / "assess_imgs_feature_std_mean.html").read_text()
    assert "skipped (--skip-bad)" in page and "unreadable image 1" in page


def test_empty_class_and_mixed_channel_counts(tmp_path, capsys):
    make_folder(tmp_path / "imgs", n=8, size=8)
    (tmp_path / "imgs" / "dog").mkdir()  # an empty class
    rc, _, err = run_cli(["--data", tmp_path / "imgs", "--batch-sizes", 4, "--out", tmp_path / "o"], capsys)
    line = one_error(err)
    assert rc == 2 and "empty class" in line and "dog" in line
    (tmp_path / "imgs" / "dog").rmdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "imgs" / "bee" / "grey.png")
    rc, _, err = run_cli(["--data", tmp_path / "imgs", "--batch-sizes", 4, "--out", tmp_path / "o"], capsys)
    line = one_error(err)
    assert rc == 2 and "bee/grey.png" in line and "mixed channel counts" in line and "--channels" in line
    assert "has 1" in line and "ant/000.png has 3" in line
    rc, _, _ = run_cli(["--data", tmp_path / "imgs", "--batch-sizes", 4, "--channels", 3, "--out", tmp_path / "o"], capsys)
    assert rc == 0  # converted to RGB
    (tmp_path / "imgs" / "dog").mkdir()
    res = assess_data(tmp_path / "imgs", [4], skip_bad=True, evidence=None)
    assert res["skipped"]["by_reason"] == {"empty class folder": 1, "mixed channel counts": 1}
    assert res["input"]["n_used"] == 24


def test_nan_in_array_names_row_and_column_and_skip_bad(tmp_path, capsys):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(80, 6)).astype(np.float32)
    x[17, 3] = np.nan
    x[40, 0] = np.inf
    np.save(tmp_path / "feat.npy", x)
    rc, _, err = run_cli(["--data", tmp_path / "feat.npy", "--batch-sizes", 4, "--out", tmp_path / "o"], capsys)
    line = one_error(err)
    assert rc == 2 and "feat.npy" in line and "NaN at row 17, column 3" in line
    res = assess_data(tmp_path / "feat.npy", [4, 8], skip_bad=True, evidence=None)
    assert res["skipped"]["by_reason"] == {"NaN": 1, "infinite value": 1} and res["input"]["n_used"] == 78
    check_against_direct(res, direct(np.delete(x, [17, 40], axis=0), [4, 8], per_channel=False))
    img = rng.normal(size=(20, 1, 4, 4)).astype(np.float32)
    img[5, 0, 2, 1] = np.nan
    with pytest.raises(UserDataError, match=r"NaN at row 5 \(element \[5, 0, 2, 1\]\)"):
        assess_data(img, [4], evidence=None)


@pytest.mark.parametrize("cell, message", [
    ("abc", "line 5 (data row 4), column 2 ('b'): 'abc' is not a number"),
    ("nan", "line 5 (data row 4), column 2 ('b'): NaN"),
    ("", "line 5 (data row 4), column 2 ('b'): empty cell"),
])
def test_bad_csv_cells_name_row_and_column(tmp_path, capsys, cell, message):
    rows = [["1", "2", "3"], ["4", "5", "6"], ["7", "8", "9"], ["1", cell, "3"]] + [[str(i), str(i * 2 % 7), "1"] for i in range(12)]
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n" + "\n".join(",".join(r) for r in rows) + "\n")
    rc, _, err = run_cli(["--data", path, "--batch-sizes", 2, "--out", tmp_path / "o"], capsys)
    line = one_error(err)
    assert rc == 2 and "t.csv " + message in line
    res = assess_data(path, [2], skip_bad=True, evidence=None)
    assert res["skipped"]["count"] == 1 and res["input"]["n_used"] == 15 and res["input"]["n_items"] == 16


def test_other_bad_inputs_are_one_clear_error(tmp_path, capsys):
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "two.npz", a=rng.normal(size=(10, 3)), b=rng.normal(size=(10, 3)))
    np.save(tmp_path / "small.npy", rng.normal(size=(10, 3)))
    np.save(tmp_path / "flat.npy", rng.normal(size=10))
    (tmp_path / "h.csv").write_text("x,y\n1,2\n3,4\n")
    (tmp_path / "ragged.csv").write_text("1,2\n3,4,5\n")
    (tmp_path / "notes.bin").write_bytes(b"...")
    (tmp_path / "latin.csv").write_bytes("x,y\n1,2\n\xe9,3\n".encode("latin-1"))
    cases = [
        (["--data", tmp_path / "two.npz"], "holds 2 arrays (a, b); choose one with --array-key"),
        (["--data", tmp_path / "two.npz", "--array-key", "c"], "has no array 'c'"),
        (["--data", tmp_path / "small.npy", "--batch-sizes", 4, 16], "batch size 16 is larger than the 10 usable items"),
        (["--data", tmp_path / "flat.npy"], "expected shape (N, features...)"),
        (["--data", tmp_path / "h.csv", "--label-column", "label"], "no column 'label' to use as the label column (columns: x, y)"),
        (["--data", tmp_path / "ragged.csv"], "ragged.csv line 2 (data row 2): 3 cells, expected 2"),
        (["--data", tmp_path / "notes.bin"], "notes.bin: unknown kind of data"),
        (["--data", tmp_path / "latin.csv"], "latin.csv: cannot be read as text"),
        (["--data", tmp_path / "nowhere"], "nowhere does not exist"),
        (["--data", tmp_path / "small.npy", "--n-train", 5], "--n-train apply to --dataset only"),
    ]
    for args, message in cases:
        out = tmp_path / "o"
        rc, _, err = run_cli([*args, "--out", out], capsys)
        assert rc == 2 and message in one_error(err), (args, err)
        assert not out.exists() or not list(out.iterdir())
    res = assess_data(tmp_path / "two.npz", [2], array_key="b", evidence=None)
    assert res["input"]["array_key"] == "b"


def test_no_class_folders(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(UserDataError, match="no class folders.*holds 1 images directly"):
        open_source(tmp_path)


def test_reads_are_bounded_by_the_chunk_and_block_sizes(tmp_path):
    """Pass 1 reads blocks of about STATS_BLOCK_ELEMENTS values, pass 2 chunks of about chunk_mb:
    never the whole input, however large it is."""
    from sbnlib.assess.arrays import ArraySource
    from sbnlib.assess.streaming import STATS_BLOCK_ELEMENTS

    x = np.random.default_rng(6).normal(size=(3000, 2, 16, 16)).astype(np.float32)  # 1.5M values
    np.save(tmp_path / "x.npy", x)
    seen = {"block": 0, "read": 0, "reads": 0}

    class Counting(ArraySource):
        def blocks(self, block_items):
            for ids, xb, bad in super().blocks(block_items):
                seen["block"] = max(seen["block"], len(ids))
                yield ids, xb, bad

        def read(self, ids):
            seen["read"], seen["reads"] = max(seen["read"], len(ids)), seen["reads"] + 1
            return super().read(ids)

    chunk_mb = 0.1  # 26,214 float32 values = 51 items of 512 values
    # B=64 and 128 are larger than a chunk: their batches are completed across two and three chunks
    res = assess_data(Counting(tmp_path / "x.npy"), [4, 32, 64, 128], chunk_mb=chunk_mb, evidence=None)
    assert seen["block"] == STATS_BLOCK_ELEMENTS // 512 == 2048
    assert seen["read"] == 51 and seen["reads"] == -(-3000 // 51)  # 3000 = the items in full batches of 4
    ref = assess(standardize_array(x), [4, 32, 64, 128])
    for a, b in zip(res["batch_sizes"], ref["batch_sizes"]):
        assert np.array_equal(a["scores"], b["scores"])


def test_read_rows_reads_runs_and_names_a_short_file(tmp_path):
    """Pass 2 reads rows of a file with plain reads (one per run of consecutive ids), not a memory map."""
    from sbnlib.assess.arrays import read_rows

    x = np.arange(10 * 6, dtype=np.int16).reshape(10, 2, 3)
    (tmp_path / "rows.bin").write_bytes(b"HEAD" + x.tobytes())
    ids = np.array([7, 0, 1, 2, 9, 4, 4])
    assert np.array_equal(read_rows(tmp_path / "rows.bin", 4, (2, 3), x.dtype, ids), x[ids])
    assert read_rows(tmp_path / "rows.bin", 4, (2, 3), x.dtype, np.array([], dtype=np.int64)).shape == (0, 2, 3)
    with pytest.raises(UserDataError, match="rows.bin: the file is shorter than its header says"):
        read_rows(tmp_path / "rows.bin", 4, (2, 3), x.dtype, np.array([3, 10]))
