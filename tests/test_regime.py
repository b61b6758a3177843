"""The credible training regime (issue 11): schedule, validation split, learning-rate selection on
validation data only, minimum detectable effect, compact records and their schema version."""
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as st

from sbnlib.data import validation_split
from sbnlib.experiments import pipelines as ex
from sbnlib.experiments import probes, records
from sbnlib.experiments.config import SCHEMA_VERSION, TrainConfig, lr_at
from sbnlib.experiments.records import StepLog
from sbnlib.experiments.stats import chosen_learning_rates, min_detectable_effect, select_learning_rates
from sbnlib.experiments.sweep import (
    DATASET_PARAMS,
    PROFILES,
    experiment_configs,
    load_result,
    profile_params,
    result_path,
    tuning_configs,
    widening_configs,
)
from sbnlib.experiments.train import train, training_data


def _cfg(**kw):
    base = dict(dataset="toy", method="bn", batch_size=8, epochs=3, seed=3, lr=0.05, model="cnn_s",
                schedule="warmup_cosine", warmup_frac=0.2, nesterov=True, val_frac=0.1)
    base.update(kw)
    return TrainConfig(**base)


def test_warmup_cosine_schedule_at_known_steps():
    c = _cfg(lr=0.1, schedule="warmup_cosine", warmup_frac=0.2, lr_scaling="none")
    assert lr_at(c, 0, 100) == pytest.approx(0.1 / 20)  # first warm-up step
    assert lr_at(c, 19, 100) == pytest.approx(0.1)  # end of the 20 warm-up steps: the peak
    assert lr_at(c, 20, 100) == pytest.approx(0.1)  # cosine starts at the peak
    assert lr_at(c, 60, 100) == pytest.approx(0.05)  # half-way through the decay: half the peak
    assert lr_at(c, 99, 100) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 79 / 80)))
    assert 0 < lr_at(c, 99, 100) < 1e-3
    assert all(lr_at(c, s, 100) >= lr_at(c, s + 1, 100) for s in range(20, 99))  # monotone decay
    # the peak follows the batch-size scaling: sqrt(128/32) = 2
    big = _cfg(lr=0.1, batch_size=128, lr_scaling="sqrt", lr_ref_batch=32)
    assert lr_at(big, round(0.2 * 50) - 1, 50) == pytest.approx(0.2)
    assert lr_at(_cfg(lr=0.1, schedule="constant", lr_scaling="none"), 37, 100) == 0.1


@pytest.mark.parametrize("bad", [dict(schedule="step"), dict(warmup_frac=1.0), dict(val_frac=0.6),
                                 dict(val_frac=-0.1), dict(nesterov=1), dict(nesterov=True, momentum=0.0)])
def test_bad_regime_parameters(bad):
    with pytest.raises(ValueError):
        _cfg(**bad).validate()


def test_the_trainer_uses_and_records_the_scheduled_rate(toy, monkeypatch):
    seen = []
    real_step = torch.optim.SGD.step

    def spy(self, *a, **k):  # the rate the optimizer actually applies at each step
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    c = _cfg()
    r = train(c, dataset=toy)
    n = r["steps"]["n"]
    assert n == 3 * ((240 - 24) // 8) and len(seen) == n
    assert seen == pytest.approx([lr_at(c, s, n) for s in range(n)])
    assert r["steps"]["lr"] == pytest.approx([lr_at(c, s, n) for s in r["steps"]["at"]], rel=1e-5)


def test_validation_split_is_stratified_disjoint_and_seeded():
    y = torch.arange(1000) % 10
    tr, va = validation_split(y, 0.1, seed=0)
    assert len(va) == 100 and len(tr) == 900
    assert not set(tr.tolist()) & set(va.tolist()) and sorted(tr.tolist() + va.tolist()) == list(range(1000))
    assert torch.bincount(y[va]).tolist() == [10] * 10  # stratified
    assert torch.equal(va, validation_split(y, 0.1, seed=0)[1])
    assert not torch.equal(va, validation_split(y, 0.1, seed=1)[1])
    tr0, va0 = validation_split(y, 0.0, seed=0)
    assert len(va0) == 0 and len(tr0) == 1000


def test_training_data_holds_out_validation_images_the_trainer_never_steps_on(toy):
    c = _cfg()
    d = training_data(c, dataset=toy)
    assert d.x_train.shape[0] == 216 and d.x_val.shape[0] == 24
    tr, va = validation_split(toy[0].y_train, 0.1, seed=c.data_seed)
    assert torch.equal(d.x_train, toy[1][tr]) and torch.equal(d.x_val, toy[1][va])  # disjoint index sets
    assert torch.equal(d.x_test, toy[2])


def test_test_set_is_read_once_at_the_end_and_validation_every_epoch(toy, monkeypatch):
    calls = []
    real = probes.evaluate

    def spy(model, x, y, batch_size=1000):
        calls.append(x.shape[0])
        return real(model, x, y, batch_size)

    monkeypatch.setattr(records, "evaluate", spy)  # the epoch and final records evaluate
    r = train(_cfg(method="bn"), dataset=toy)
    n_val, n_test = 24, 120
    assert calls[:3] == [n_val] * 3 and calls[3] == n_test and calls.count(n_test) == 1
    assert [e["val_acc"] for e in r["epochs"]] == pytest.approx([e["val_acc"] for e in r["epochs"]])
    assert r["final_val_acc"] == r["epochs"][-1]["val_acc"] and "test_acc" not in r["epochs"][-1]


def _tuning_frame():
    rows = []
    for m in ("bn", "sbn"):
        for lr, val, test in ((0.05, 0.80, 0.95), (0.1, 0.90, 0.50), (0.2, 0.85, 0.99)):
            for s in (100, 101):
                rows.append(dict(method=m, batch_size=8, lr=lr, seed=s, final_val_acc=val + 0.01 * (s - 100),
                                 final_test_acc=test, diverged=False))
    return pd.DataFrame(rows)


def test_selection_reads_validation_accuracy_only():
    df = _tuning_frame()
    sel = select_learning_rates(df)
    assert chosen_learning_rates(sel) == {("bn", 8): 0.1, ("sbn", 8): 0.1}
    # scrambling every test accuracy changes nothing; dropping the column is allowed
    assert select_learning_rates(df.assign(final_test_acc=np.random.default_rng(0).random(len(df)))).equals(sel)
    assert select_learning_rates(df.drop(columns="final_test_acc")).equals(sel)
    row = sel[sel.chosen & (sel.method == "bn")].iloc[0]
    assert row.val_acc_mean == pytest.approx(0.905) and row.n_seeds == 2 and row.edge == ""


def test_selection_flags_grid_edges_and_breaks_ties_to_the_smaller_rate():
    df = pd.DataFrame(dict(method="bn", batch_size=4, lr=[0.05, 0.05, 0.2, 0.2], seed=[1, 2, 1, 2],
                           final_val_acc=[0.5, 0.5, 0.5, 0.5], diverged=False))
    sel = select_learning_rates(df)
    chosen = sel[sel.chosen].iloc[0]
    assert chosen.lr == 0.05 and chosen.edge == "low"
    df.loc[df.lr == 0.2, "final_val_acc"] = [0.6, np.nan]  # a missing value counts as 0: mean 0.3
    assert select_learning_rates(df).query("chosen").lr.item() == 0.05


def test_tuning_uses_other_seeds_and_a_validation_split():
    p = profile_params("cpu")
    cfgs = tuning_configs("mnist", p)
    assert {c.seed for c in cfgs} == set(p["tune_seeds"]) and not set(p["tune_seeds"]) & set(range(p["seeds"]))
    assert {c.lr for c in cfgs} == set(p["lr_grid"]) and max(p["lr_grid"]) / min(p["lr_grid"]) >= 4
    assert len(p["lr_grid"]) >= 3 and len(p["tune_seeds"]) >= 2 and all(c.val_frac > 0 for c in cfgs)
    assert len(cfgs) == len(p["methods"]) * len(p["batch_sizes"]) * len(p["lr_grid"]) * len(p["tune_seeds"])
    with pytest.raises(ValueError, match="also evaluation seeds"):
        tuning_configs("mnist", dict(p, tune_seeds=[0, 100]))
    with pytest.raises(ValueError, match="validation split"):
        tuning_configs("mnist", dict(p, val_frac=0.0))


def test_evaluation_runs_take_each_methods_selected_rate():
    p = profile_params("smoke")
    lr_for = {(m, b): 0.01 * (i + 1) for i, (m, b) in enumerate((m, b) for m in p["methods"] for b in p["batch_sizes"])}
    cfgs = experiment_configs("mnist", p, lr_for=lr_for)
    assert all(c.lr == lr_for[(c.method, c.batch_size)] for c in cfgs)
    with pytest.raises(ValueError, match="no learning rate was selected"):
        experiment_configs("mnist", p, lr_for={("bn", 4): 0.1})


def test_cpu_profile_uses_the_recipe():
    for name in ("quick", "cpu"):
        p = PROFILES[name]
        assert p["schedule"] == "warmup_cosine" and p["nesterov"] and p["val_frac"] > 0, name
    assert PROFILES["cpu"]["epochs"] >= 3 and set(PROFILES["cpu"]["methods"]) == set(PROFILES["quick"]["methods"])


def test_a_dataset_can_replace_its_profiles_parameters(monkeypatch, tmp_path):
    monkeypatch.setitem(DATASET_PARAMS, "smoke", {"cifar10": {"epochs": 3}})
    assert profile_params("smoke", "cifar10")["epochs"] == 3
    assert profile_params("smoke", "mnist")["epochs"] == profile_params("smoke")["epochs"] == PROFILES["smoke"]["epochs"]
    assert profile_params("smoke", "cifar10", epochs=2)["epochs"] == 2  # the caller's override wins
    assert ex.resolve_params("cifar10", "smoke", output_dir=str(tmp_path)).sweep["epochs"] == 3
    assert ex.resolve_params("mnist", "smoke", output_dir=str(tmp_path)).sweep["epochs"] == PROFILES["smoke"]["epochs"]
    for profile, datasets in DATASET_PARAMS.items():  # the real entries name known profiles and parameters
        for params in datasets.values():
            assert profile in PROFILES and set(params) <= set(PROFILES[profile]), (profile, params)


def test_min_detectable_effect_has_the_stated_power():
    n, sd, alpha = 8, 0.02, 0.05 / 5
    mde = min_detectable_effect(sd, n, alpha)
    rng = np.random.default_rng(0)
    d = rng.normal(mde, sd, size=(20000, n))  # pairs whose true mean difference is the MDE
    t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
    power = np.mean(np.abs(t) > st.t.ppf(1 - alpha / 2, n - 1))
    assert power == pytest.approx(0.8, abs=0.015)
    # large n: the normal approximation (z_{1-a/2} + z_{0.8}) sd / sqrt(n)
    assert min_detectable_effect(1.0, 400) == pytest.approx((1.959964 + 0.841621) / 20, rel=0.01)
    assert math.isnan(min_detectable_effect(0.0, 8)) and math.isnan(min_detectable_effect(1.0, 1))


def test_compact_series_are_chunk_means_and_metrics_use_the_full_series():
    log = StepLog()
    loss = np.arange(1000, dtype=float)
    for i, v in enumerate(loss):
        log.add(v, 2.0, i % 4 == 0, 0.1 * (1000 - i) / 1000)
    c = log.compact(points=100)
    assert c["n"] == 1000 and len(c["loss"]) == 100 and c["at"][:2] == [0, 10]
    assert c["loss"][0] == pytest.approx(4.5) and c["bn_on"][0] == pytest.approx(0.3)
    assert c["lr"][1] == pytest.approx(0.1 * 990 / 1000)
    m = log.metrics(steps_per_epoch=500, diverged=False)
    assert m["loss_volatility"] == pytest.approx(0.0) and m["grad_norm_cv"] == pytest.approx(0.0)
    assert m["last_epoch_loss"] == pytest.approx(loss[500:].mean())
    assert m["last_epoch_loss_bn_on"] == pytest.approx(loss[500:][::4].mean())
    assert log.metrics(500, diverged=True)["loss_volatility"] is None
    assert StepLog().metrics(10, diverged=False)["last_epoch_loss_bn_off"] is None


def test_records_carry_the_schema_version_and_older_ones_are_recomputed(toy, tmp_path):
    c = _cfg(epochs=1)
    r = train(c, dataset=toy)
    assert r["schema_version"] == SCHEMA_VERSION and len(json.dumps(r)) < 40000
    path = result_path(tmp_path, c)
    path.write_text(json.dumps(r))
    assert load_result(path, c) == json.loads(json.dumps(r))
    path.write_text(json.dumps({**r, "schema_version": SCHEMA_VERSION - 1}))
    with pytest.warns(UserWarning, match="schema version"):
        assert load_result(path, c) is None
    old = dict(r)
    del old["schema_version"]
    path.write_text(json.dumps(old))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert load_result(path, c) is None and "schema version None" in str(w[0].message)


def test_a_choice_at_an_edge_widens_the_grid_for_that_method_and_batch_size_only():
    p = dict(profile_params("cpu"), lr_grid=[0.05, 0.1, 0.2], lr_widen=1)
    df = _tuning_frame()  # bn and sbn at B=8: both choose 0.1, inside the grid
    assert widening_configs("mnist", p, select_learning_rates(df)) == []
    df.loc[(df.method == "sbn") & (df.lr == 0.05), "final_val_acc"] = 0.99  # sbn now chooses the low edge
    more = widening_configs("mnist", p, select_learning_rates(df))
    assert {(c.method, c.batch_size, c.lr) for c in more} == {("sbn", 8, 0.025)}
    assert sorted(c.seed for c in more) == p["tune_seeds"]
    # once 0.025 is tried and wins, the low edge lies lr_widen=1 step beyond the grid: no further step
    extra = pd.DataFrame([dict(method="sbn", batch_size=8, lr=0.025, seed=s, final_val_acc=1.0, diverged=False)
                          for s in (100, 101)])
    sel = select_learning_rates(pd.concat([df, extra], ignore_index=True))
    assert sel.query("chosen and method == 'sbn'").lr.item() == 0.025
    assert sel.query("chosen and method == 'sbn'").edge.item() == "low"
    assert widening_configs("mnist", p, sel) == []
    assert widening_configs("mnist", dict(p, lr_widen=2), sel)[0].lr == 0.0125
    # the high edge doubles
    df2 = _tuning_frame()
    df2.loc[(df2.method == "bn") & (df2.lr == 0.2), "final_val_acc"] = 0.99
    assert {c.lr for c in widening_configs("mnist", p, select_learning_rates(df2))} == {0.4}


def test_the_accuracy_notes_say_which_runs_diverged_and_where():
    df = pd.DataFrame({"method": ["bn", "sbn_frozen", "sbn_frozen", "sbn_frozen"], "batch_size": [32, 32, 128, 128],
                       "seed": [0, 7, 1, 7], "diverged": [False, True, True, True]})
    P = ex.Params(dataset="mnist_fmnist_mix", profile="cpu", sweep={}, data_root=None, output_dir=".", jobs=1)
    notes = ex._accuracy_notes(P, df)
    assert "Diverged runs (sbn_frozen 1 at B=32; sbn_frozen 2 at B=128)" in notes and "No run diverged" not in notes
    assert "every batch size is judged" in notes.lower() and "budget-sensitive" in notes
    assert "No run diverged." in ex._accuracy_notes(P, df.assign(diverged=False))
