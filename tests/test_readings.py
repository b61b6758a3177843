"""Issue 13: selection scopes, the inverse selection, a scorer that sees mixtures of sources, and
the readings registry, its configurations, its table and one tiny end-to-end run."""
import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from sbnlib import data
from sbnlib.assess import assess, assess_data, domain_auroc, domain_auroc_table
from sbnlib.experiments import readings as rd
from sbnlib.experiments.config import LATER_FIELDS, METHODS, SCOPES, TrainConfig, config_dict, config_hash
from sbnlib.experiments.models import build_model
from sbnlib.experiments.probes import switched_layers
from sbnlib.experiments.train import _selection, train
from sbnlib.layers import SelectiveBatchNorm2d, selective_bn, selective_layers
from sbnlib.scoring import SCORERS, fit_scorer, score_batches

from .conftest import REPO, make_toy_dataset


def _cfg(**kw):
    base = dict(dataset="toy", method="sbn", batch_size=8, epochs=1, seed=3, lr=0.05, model="cnn_s")
    return TrainConfig(**{**base, **kw}).validate()


# ---------------------------------------------------------------------------------------------
# 1. Scope: which layers switch
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["cnn_s", "mlp"])
@pytest.mark.parametrize("scope", list(SCOPES))
def test_each_scope_switches_its_layers_and_leaves_the_others_normalising(model, scope):
    cfg = _cfg(scope=scope, model=model)
    norm, input_norm = cfg.norms
    torch.manual_seed(0)
    net = build_model(model, (1, 8, 8), 4, norm=norm, input_norm=input_norm).train()
    layers = list(selective_layers(net))
    inner = 3 if model == "cnn_s" else 2  # one per hidden layer
    assert len(layers) == {"all": inner, "first": inner, "input": inner + 1, "input_bare": 1}[scope]
    if scope.startswith("input"):  # the input BN sits first and normalises the image's one channel
        assert layers[0].num_features == 1 and isinstance(layers[0], SelectiveBatchNorm2d)
    if scope == "input_bare":  # and it is the only normalisation of the network
        assert sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()) == 1
    switched = switched_layers(net, scope)
    assert switched == (layers if scope == "all" else layers[:1])
    with selective_bn(switched, enabled=False):
        net(torch.randn(8, 1, 8, 8))
    assert [m.n_skipped for m in layers] == [int(m in switched) for m in layers]
    assert [m.n_normalized for m in layers] == [int(m not in switched) for m in layers]


@pytest.mark.parametrize("scope,skipped_per_step", [("all", 3), ("first", 1), ("input", 1), ("input_bare", 1)])
def test_the_trainer_skips_only_the_scoped_layers(toy, scope, skipped_per_step):
    r = train(_cfg(scope=scope), dataset=toy)
    bn = r["bn"]
    assert 0 < bn["batches_skipped"] < bn["batches_skipped"] + bn["batches_normalized"]
    assert bn["layer_batches_skipped"] == skipped_per_step * bn["batches_skipped"]
    steps = bn["batches_skipped"] + bn["batches_normalized"]
    assert bn["layer_batches_normalized"] + bn["layer_batches_skipped"] == bn["layers"] * steps
    assert r["inference"]["bypass"] is not None and r["config"].get("scope", "all") == scope  # "all": left out


def test_plain_bn_and_the_default_scope_are_unchanged():
    """No input norm adds no module and leaves the initial weights; the default scope is left out of the
    stored configuration and its hash (every earlier result keeps its key); another scope changes both."""
    torch.manual_seed(0)
    plain = build_model("cnn_s", (1, 8, 8), 4, norm="bn")
    torch.manual_seed(0)
    with_input = build_model("cnn_s", (1, 8, 8), 4, norm="bn", input_norm="bn")
    assert len(list(with_input.modules())) == len(list(plain.modules())) + 1
    convs = [[m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)] for net in (plain, with_input)]
    assert all(torch.equal(a, b) for a, b in zip(*convs))  # paired seeds: the same start with or without it
    c = _cfg(method="bn")
    old = {k: v for k, v in dataclasses.asdict(c).items() if k not in LATER_FIELDS}  # scope, engine at defaults
    assert config_dict(c) == old
    assert config_hash(c) == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    first = _cfg(scope="first")
    assert config_dict(first)["scope"] == "first" and config_hash(first) != config_hash(_cfg())
    with pytest.raises(ValueError, match="needs a selective method"):
        _cfg(method="bn", scope="input")
    with pytest.raises(ValueError, match="unknown scope"):
        _cfg(scope="middle")


# ---------------------------------------------------------------------------------------------
# 2. The inverse selection: as many batches as sbn, the least heterogeneous ones
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("threshold,rate", [("mean", None), ("rate", 0.25), ("rate", 0.7)])
def test_inverse_normalises_the_lowest_scores_at_sbns_rate(threshold, rate):
    scores = torch.tensor([5.0, 1.0, 9.0, 3.0, 3.0, 8.0, 0.5, 7.0, 2.0, 6.0], dtype=torch.float64)
    x = scores.repeat_interleave(4)[:, None]  # batch i of the plan holds 4 copies of its score
    plan = torch.arange(40).reshape(10, 4)
    first = lambda b: b[:, 0, 0]  # noqa: E731  (scores a batch by its first value)
    masks = {m: _selection(_cfg(method=m, batch_size=4, threshold=threshold, threshold_rate=rate), x, plan, 0, first)[0]
             for m in ("sbn", "sbn_inverse")}
    k = int(masks["sbn"].sum())
    assert 0 < k < 10 and int(masks["sbn_inverse"].sum()) == k
    assert set(np.flatnonzero(masks["sbn"])) == set(np.argsort(-scores.numpy(), kind="stable")[:k].tolist())
    assert set(np.flatnonzero(masks["sbn_inverse"])) == set(np.argsort(scores.numpy(), kind="stable")[:k].tolist())
    assert METHODS["sbn_inverse"].norm == "sbn" and METHODS["random_frozen"].norm == "sbn_frozen"


# ---------------------------------------------------------------------------------------------
# 3. A scorer that sees a mixture of sources
# ---------------------------------------------------------------------------------------------

def _two_sources(n=600, d=20, seed=0):
    """Source 0: a wide blob; source 1: a compact one far from it. Pure batches of source 0 spread more
    than mixed ones in every feature, so pixel spread cannot tell mixed from pure; the gap can."""
    g = torch.Generator().manual_seed(seed)
    domain = torch.arange(n) % 2
    x = torch.where(domain[:, None] == 0, 2.0 * torch.randn(n, d, generator=g),
                    12.0 / d ** 0.5 + 0.5 * torch.randn(n, d, generator=g))
    return x.reshape(n, 1, 4, 5), domain


def test_spectral_split_scores_every_mixed_batch_above_every_pure_one():
    x, domain = _two_sources()
    score = fit_scorer("spectral_split", x)
    idx = [torch.nonzero(domain == s).flatten() for s in (0, 1)]
    pure = torch.stack([idx[i % 2][8 * i: 8 * i + 8] for i in range(20)])
    mixed = torch.stack([torch.cat([idx[0][4 * i: 4 * i + 4], idx[1][4 * i + 100: 4 * i + 104]]) for i in range(20)])
    s_pure, s_mixed = score_batches(x, 8, score, order=pure), score_batches(x, 8, score, order=mixed)
    assert s_mixed.min() > s_pure.max()


def test_spectral_split_is_deterministic_and_leaves_the_global_generator_alone():
    x, _ = _two_sources()
    batches = x[:64].reshape(8, 8, 1, 4, 5).double()
    state = torch.get_rng_state()
    a = fit_scorer("spectral_split", x)(batches)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, fit_scorer("spectral_split", x)(batches))
    assert torch.equal(score_batches(x, 8, "spectral_split"), score_batches(x, 8, fit_scorer("spectral_split", x)))


def test_auroc_table_on_a_synthetic_mixture_ranks_spectral_split_first():
    x, domain = _two_sources()
    table = domain_auroc_table(x, domain, [1, 2, 8], n_batches=100)
    assert list(table.index) == [2, 8] and list(table.columns) == sorted(SCORERS)
    assert table.loc[8, rd.BEST_SCORER] >= 0.99
    assert table.loc[8, "feature_std"] < 0.9  # pixel spread is fooled by the wide source
    assert all(table.loc[b, rd.BEST_SCORER] == table.loc[b].max() for b in (2, 8))
    assert table.loc[8, "feature_std"] == domain_auroc(x, domain, 8, "feature_std", n_batches=100)["auroc"]


def test_assess_fits_once_on_all_inputs_and_assess_data_once_per_call(monkeypatch):
    x, _ = _two_sources()
    res = assess(x, [4, 8], "spectral_split")
    from sbnlib.batches import make_batch_plan

    fitted = fit_scorer("spectral_split", x)
    for row in res["batch_sizes"]:
        b = row["batch_size"]
        assert row["scores"] == score_batches(x, b, fitted, order=make_batch_plan(600, b, seed=0)).tolist()
    calls = []
    real = SCORERS["spectral_split"]
    monkeypatch.setitem(SCORERS, "spectral_split", lambda xs, seed=0: calls.append(xs.shape) or real(xs, seed=seed))
    out = assess_data(x.numpy(), [4, 8], "spectral_split", chunk_mb=0.01, evidence=None)  # many chunks
    assert len(calls) == 1 and calls[0][0] == 600 and all(r["n_batches"] == 600 // r["batch_size"] for r in out["batch_sizes"])


def test_feasibility_writes_one_auroc_column_per_scorer(tmp_path, monkeypatch):
    from sbnlib.experiments import pipelines as ex
    _, domain = _two_sources(n=200)
    ds = dataclasses.replace(make_toy_dataset(n_train=200), domain_train=domain)
    monkeypatch.setitem(data.DERIVED, "toy_mix", lambda **kw: ds)
    P = ex.resolve_params("toy_mix", "smoke", batch_sizes=[4, 8], n_train=200, output_dir=str(tmp_path))
    res, _, _ = ex.feasibility(P, ds)
    table = pd.read_csv(tmp_path / "toy_mix" / "feasibility_auroc.csv", comment="#", index_col="batch_size")
    assert list(table.index) == [4, 8] and list(table.columns) == sorted(SCORERS)
    assert [r["batch_size"] for r in res["domain_auroc"]] == [4, 8]
    # issue 27: the batches training sees, ranked by their minority share (smoke: 2 seeds, val_frac 0.1)
    n_tr = 200 - 20
    spearman = pd.read_csv(tmp_path / "toy_mix" / "feasibility_plan_ordering.csv", comment="#", index_col="batch_size")
    assert list(spearman.index) == [4, 8]
    assert list(spearman.columns) == ["n_batches", "minority_share_mean", *sorted(SCORERS)]
    assert list(spearman.n_batches) == [2 * (n_tr // 4), 2 * (n_tr // 8)]
    plan_auroc = pd.read_csv(tmp_path / "toy_mix" / "feasibility_plan_auroc.csv", comment="#", index_col="batch_size")
    assert list(plan_auroc.columns) == ["n_batches", "n_share_ge_25pct", "n_share_le_5pct", *sorted(SCORERS)]
    po = res["plan_ordering"]
    assert po["seeds"] == [0, 1] and po["n_train_images"] == n_tr
    assert len(po["rows"]) == 2 * len(SCORERS)
    assert "never sees" in (tmp_path / "toy_mix" / "feasibility_auroc.md").read_text()
    json.dumps(res, allow_nan=False)  # n/a is null in the JSON, not NaN


def _shifted_sources(n=400, d=20, frac1=0.3, seed=0):
    """Two equally wide sources far apart, source 1 a ``frac1`` minority: batches of a random plan have
    every minority share from 0 up, and a batch spreads more the more mixed it is."""
    g = torch.Generator().manual_seed(seed)
    domain = (torch.rand(n, generator=g) < frac1).long()
    x = torch.randn(n, d, generator=g) + 4.0 * domain[:, None]
    return x.reshape(n, 1, 4, 5), domain


def test_plan_ordering_ranks_the_plan_batches_by_their_minority_share():
    from scipy.stats import mannwhitneyu, spearmanr

    from sbnlib.assess import plan_ordering_table
    from sbnlib.batches import make_batch_plan

    x, domain = _shifted_sources()
    table = plan_ordering_table(x, domain, [1, 4, 8], scorers=["feature_std", "spectral_split"], seeds=[0, 3])
    assert list(table.index.get_level_values("batch_size").unique()) == [4, 8]  # B=1 left out
    for b in (4, 8):
        # the batches are exactly the plans' of the seeds, pooled in seed order
        plan = torch.cat([make_batch_plan(400, b, seed=0), make_batch_plan(400, b, seed=3)])
        ones = domain[plan].sum(1).numpy()
        share = np.minimum(ones, b - ones) / b
        high, low = share >= 0.25, share <= 0.05
        assert high.any() and low.any()
        for name in ("feature_std", "spectral_split"):
            row = table.loc[(b, name)]
            s = score_batches(x, b, fit_scorer(name, x), order=plan).numpy()
            assert row.n_batches == 2 * (400 // b) and row.minority_share_mean == pytest.approx(share.mean())
            assert row.n_high == high.sum() and row.n_low == low.sum()
            assert row.spearman == pytest.approx(spearmanr(s, share).statistic)
            u = mannwhitneyu(s[high], s[low]).statistic
            assert row.auroc == pytest.approx(u / (high.sum() * low.sum()))
            assert row.spearman > 0.5 and row.auroc > 0.9  # both scorers see these mixtures
    # deterministic
    pd.testing.assert_frame_equal(table, plan_ordering_table(x, domain, [4, 8], ["feature_std", "spectral_split"],
                                                             seeds=[0, 3]))


def test_plan_ordering_is_nan_where_a_group_is_empty():
    from sbnlib.assess import plan_ordering_table

    x, domain = _shifted_sources(frac1=0.5)
    table = plan_ordering_table(x, domain, [64], scorers=["feature_std"])
    row = table.loc[(64, "feature_std")]
    assert row.n_low == 0 and row.n_high == 6 and np.isnan(row.auroc)  # no nearly pure batch of 64
    pure = plan_ordering_table(x, torch.zeros(400, dtype=torch.long), [4], scorers=["feature_std"])
    row = pure.loc[(4, "feature_std")]  # one source only: share 0 everywhere
    assert row.n_high == 0 and row.n_low == 100 and np.isnan(row.auroc) and np.isnan(row.spearman)
    with pytest.raises(ValueError, match="0 or 1"):
        plan_ordering_table(x, domain + 1, [4], scorers=["feature_std"])


# ---------------------------------------------------------------------------------------------
# 4. Readings: registry, configurations, table, one end-to-end run
# ---------------------------------------------------------------------------------------------

def test_registry_holds_the_readings_of_the_issue():
    want = {"identity": ("sbn", {}), "frozen": ("sbn_frozen", {}), "first": ("sbn", {"scope": "first"}),
            "input": ("sbn", {"scope": "input"}), "input_bare": ("sbn", {"scope": "input_bare"}),
            "inverse": ("sbn_inverse", {}), "reformed": ("sbn", {"reform_batches": True}),
            "best_scorer": ("sbn", {"scorer": rd.BEST_SCORER})}
    assert {n: (r.method, r.overrides) for n, r in rd.READINGS.items()} == want
    for r in rd.READINGS.values():
        assert set(r.overrides) <= set(rd.READING_FIELDS)
        assert METHODS[r.control].selection == "random" and METHODS[r.control].norm == METHODS[r.method].norm


def test_the_plan_keeps_only_the_batch_sizes_a_dataset_trains():
    # a dataset that trains fewer batch sizes (DATASET_PARAMS) has no learning rate at the others
    assert rd.plan_for("cpu", {"batch_sizes": [4, 8, 32, 128]}) == {"batch_sizes": [4, 8, 128], "seeds": 8}
    assert rd.plan_for("cpu", {"batch_sizes": [2, 4, 8, 32, 128]}) == rd.PLAN["cpu"]


PARAMS = dict(epochs=1, n_train=200, scorer="feature_std", threshold="mean", val_frac=0.1, lr=0.01)


def test_configs_pair_every_reading_with_its_control_at_borrowed_rates():
    lr_for = {(m, b): lr for b in (4, 8) for m, lr in (("bn", 0.1), ("sbn", 0.2), ("sbn_frozen", 0.3), ("random", 0.4))}
    configs = rd.readings_configs("mnist", PARAMS, batch_sizes=[4, 8], seeds=2, lr_for=lr_for)
    assert len({config_hash(c) for c in configs}) == len(configs)  # shared runs appear once
    by = {(c.method, c.scope, c.scorer, c.reform_batches, c.batch_size, c.seed): c for c in configs}
    for r in rd.READINGS.values():
        f = {**rd.base_fields(PARAMS), **r.overrides}
        for m in (r.method, r.control):
            c = by[(m, f["scope"], f["scorer"], f["reform_batches"], 8, 1)]
            assert c.lr == lr_for[(rd.LR_FROM.get(m, m), 8)]
    assert by[("sbn_inverse", "all", "feature_std", False, 4, 0)].lr == 0.2  # sbn's rate
    assert by[("random_frozen", "all", "feature_std", False, 4, 0)].lr == 0.4  # random's rate
    # bn, then per reading its method and control, minus the shared default control (inverse's)
    assert len(configs) == 2 * 2 * (1 + 2 * len(rd.READINGS) - 1)
    with pytest.raises(ValueError, match="no learning rate"):
        rd.readings_configs("mnist", PARAMS, batch_sizes=[4], seeds=2, lr_for={("bn", 4): 0.1})
    with pytest.raises(ValueError, match="unknown or no reading"):
        rd.readings_configs("mnist", PARAMS, batch_sizes=[4], seeds=2, names=["sideways"])


def _rows(method, acc, frac, seeds=8, **fields):
    base = {"scope": "all", "scorer": "feature_std", "reform_batches": False, **fields}
    return [{"method": method, "batch_size": b, "seed": s, "final_test_acc": acc + 0.001 * s * (b == 4),
             "frac_normalized": frac, "diverged": False, **base} for b in (4, 32) for s in range(seeds)]


def test_readings_table_from_synthetic_rows():
    df = pd.DataFrame(_rows("bn", 0.90, 1.0) + _rows("sbn", 0.88, 0.4) + _rows("random", 0.89, 0.4)
                      + _rows("sbn_inverse", 0.93, 0.4) + _rows("sbn", 0.50, 0.3, scope="first")  # another reading
                      + _rows("random", 0.70, 0.3, scope="first"))
    out = rd.readings_table(df, n_boot=2000)
    t = out["table"]
    assert list(t.index) == [("identity", 4), ("identity", 32), ("first", 4), ("first", 32), ("inverse", 4),
                             ("inverse", 32)]  # readings without runs are left out
    ident, first, inv = t.loc[("identity", 32)], t.loc[("first", 32)], t.loc[("inverse", 32)]
    assert ident["reading acc (%)"] == "88.00 ± 0.00" and first["reading acc (%)"] == "50.00 ± 0.00"
    assert (ident["reading-bn diff (pp)"], ident["reading-control diff (pp)"]) == (-2.0, -1.0)
    assert (ident["reading vs bn"], ident["reading vs control"]) == ("contradicted", "contradicted")
    assert pd.isna(ident["reading vs sbn"])  # the default reading is not compared with itself
    assert (first["reading-control diff (pp)"], first["reading-sbn diff (pp)"]) == (-20.0, -38.0)
    assert (inv["reading-bn diff (pp)"], inv["reading-sbn diff (pp)"]) == (3.0, 5.0)
    assert (inv["reading vs bn"], inv["reading vs sbn"], inv["reading vs control"]) == ("supported",) * 3
    assert (inv["reading batches normalised"], first["reading batches normalised"]) == ("40.0%", "30.0%")
    c = out["comparisons"]
    row = c[(c.reading == "inverse") & (c.baseline == "control") & (c.batch_size == 4)].iloc[0]
    assert row["mean_diff"] == pytest.approx(0.04) and row["n"] == 8 and row["p_wilcoxon_holm"] < 0.05


def test_a_tiny_readings_run_end_to_end(tmp_path, monkeypatch):
    from sbnlib.experiments import pipelines as ex
    from sbnlib.experiments import studies
    ds = make_toy_dataset()
    monkeypatch.setitem(data.DERIVED, "toy_readings", lambda **kw: ds)
    P = ex.resolve_params("toy_readings", "smoke", batch_sizes=[8], output_dir=str(tmp_path))
    lr_for = {(m, 8): 0.05 for m in ("bn", "sbn", "sbn_frozen", "random")}
    out = studies.readings(P, ds, batch_sizes=[8], seeds=2, lr_for=lr_for, progress=False)
    assert [n for n, _ in out["table"].index] == list(rd.READINGS)
    for f in ("readings.csv", "readings.md", "readings.png"):
        assert (tmp_path / "toy_readings" / f).exists(), f
    df = out["frame"]
    assert len(df) == len(list((tmp_path / "toy_readings" / "runs").glob("*.json"))) == 2 * (2 * len(rd.READINGS))
    default = df[(df.scope == "all") & (df.scorer == "feature_std") & ~df.reform_batches]
    frac = default.set_index(["method", "seed"])["frac_normalized"]
    for seed in (0, 1):  # the inverse and the random controls normalise exactly as many batches as sbn
        assert 0 < frac[("sbn", seed)] < 1
        assert frac[("sbn_inverse", seed)] == frac[("sbn", seed)] == frac[("random", seed)] == frac[("random_frozen", seed)]
    md = (tmp_path / "toy_readings" / "readings.md").read_text()
    assert "| input_bare | 8 |" in md and "synthetic" in md
    # the cost counts the runs the evaluation sweep lacks: all but bn, sbn, sbn_frozen and random at the default fields
    cost = json.loads((tmp_path / "toy_readings" / "readings_cost.json").read_text())
    shared = df.method.isin(["bn", "sbn", "sbn_frozen", "random"]) & (df.scope == "all") & \
        (df.scorer == "feature_std") & ~df.reform_batches
    assert cost["runs"] == len(df) and cost["runs_beyond_the_evaluation_sweep"] == int((~shared).sum()) == len(df) - 8
    assert cost["training_time_s"] == pytest.approx(df[~shared].wall_time_s.sum(), abs=0.1)
    row = studies._cost_table(tmp_path, ["toy_readings"], {"toy_readings": {}}).iloc[0]
    assert row["readings runs"] == len(df) - 8 and 3600 * row["readings (h)"] == pytest.approx(cost["training_time_s"])
    (tmp_path / "toy_readings" / "readings_cost.json").write_text("[1, 2")  # a damaged file: named, with the fix
    with pytest.raises(ex.ParameterError, match="readings_cost.json.*rerun notebooks/readings.ipynb"):
        studies._cost_table(tmp_path, ["toy_readings"], {"toy_readings": {}})


def test_readings_notebook_has_parameters_and_narrative():
    nb = json.loads((REPO / "notebooks" / "readings.ipynb").read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "readings = None" in "".join(tagged[0]["source"])
    text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert all(f"`{name}`" in text for name in rd.READINGS)  # the narrative explains every reading
    assert "studies.readings(P, ds" in "".join("".join(c["source"]) for c in nb["cells"])
