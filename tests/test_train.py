"""Trainer: determinism, paired methods, selection rules, counts, divergence, validation."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from sbnlib.experiments.config import METHODS, TrainConfig, config_hash
from sbnlib.experiments.train import train


def _cfg(**kw):
    base = dict(dataset="toy", method="sbn", batch_size=8, epochs=2, seed=3, lr=0.05, model="cnn_s")
    base.update(kw)
    return TrainConfig(**base)


def _numbers(r):
    return {k: r[k] for k in ("status", "final_test_acc", "final_test_loss", "epochs", "steps", "bn")}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_same_config_and_seed_give_bitwise_identical_metrics(toy, method):
    a = train(_cfg(method=method), dataset=toy)
    b = train(_cfg(method=method), dataset=toy)
    assert _numbers(a) == _numbers(b)
    assert a["status"] == "ok" and len(a["steps"]["loss"]) == 2 * (240 // 8)
    json.dumps(a)  # the record is JSON-serialisable


def test_a_record_names_the_cpu_its_numbers_come_from(toy):
    """Bitwise determinism holds on one machine; another CPU may dispatch other kernels, so the record says which."""
    m = train(_cfg(), dataset=toy)["machine"]
    assert m["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and m["cpu"].strip()


def test_different_seed_gives_different_run(toy):
    assert train(_cfg(seed=1), dataset=toy)["steps"]["loss"] != train(_cfg(seed=2), dataset=toy)["steps"]["loss"]


@pytest.mark.parametrize("method", ["sbn", "sbn_frozen", "random"])
def test_selective_bn_that_normalises_every_batch_is_bn(toy, method):
    """Paired seeds + a layer identical to nn.BatchNorm: rate=1 reproduces the bn run bitwise."""
    bn = train(_cfg(method="bn"), dataset=toy)
    sel = train(_cfg(method=method, threshold="rate", threshold_rate=1.0), dataset=toy)
    assert sel["steps"]["loss"] == bn["steps"]["loss"]
    assert sel["steps"]["grad_norm"] == bn["steps"]["grad_norm"]
    assert sel["final_test_acc"] == bn["final_test_acc"]
    assert sel["bn"]["layer_batches_normalized"] == bn["bn"]["layer_batches_normalized"]


def test_sbn_follows_the_classification_and_counts_transformations(toy):
    r = train(_cfg(method="sbn", threshold="rate", threshold_rate=0.25), dataset=toy)
    on = np.array(r["steps"]["bn_on"], dtype=bool)
    n_batches = 240 // 8
    assert on[:n_batches].sum() == round(0.25 * n_batches)
    assert np.array_equal(on[:n_batches], on[n_batches:])  # fixed plan: same decisions each epoch
    assert r["bn"]["layers"] == 3
    assert r["bn"]["batches_normalized"] == on.sum()
    assert r["bn"]["layer_batches_normalized"] == 3 * on.sum()
    assert r["bn"]["layer_batches_skipped"] == 3 * (~on).sum()
    assert r["bn"]["frac_normalized"] == pytest.approx(on.mean())


def test_random_control_has_the_same_rate_but_other_batches(toy):
    s = train(_cfg(method="sbn"), dataset=toy)
    r = train(_cfg(method="random"), dataset=toy)
    assert sum(s["steps"]["bn_on"]) == sum(r["steps"]["bn_on"])
    assert s["steps"]["bn_on"] != r["steps"]["bn_on"]


def test_bn_gn_none_normalise_every_or_no_batch(toy):
    assert train(_cfg(method="bn", epochs=1), dataset=toy)["bn"]["layer_batches_normalized"] == 3 * 30
    for m in ("gn", "none"):
        bn = train(_cfg(method=m, epochs=1), dataset=toy)["bn"]
        assert bn["layers"] == 0 and bn["batches_normalized"] == 0


def test_reform_batches_rescores_every_epoch(toy):
    r = train(_cfg(reform_batches=True, epochs=3), dataset=toy)
    thresholds = [e["threshold"] for e in r["epochs"]]
    assert len(set(thresholds)) == 3
    fixed = train(_cfg(epochs=3), dataset=toy)
    assert len({e["threshold"] for e in fixed["epochs"]}) == 1


def test_divergence_is_recorded_not_raised(toy):
    r = train(_cfg(method="none", lr=100.0, epochs=3), dataset=toy)  # the largest rate TrainConfig accepts
    assert r["status"] == "diverged"
    assert r["diverged_at_step"] is not None and r["diverged_at_step"] < 3 * 30
    assert len(r["steps"]["loss"]) == r["diverged_at_step"] + 1
    assert not np.isfinite(r["steps"]["loss"][-1]) or not np.isfinite(r["steps"]["grad_norm"][-1])
    json.dumps(r)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(method="ssbn"), "unknown method 'ssbn'"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(batch_size=2.5), "batch_size must be an integer"),
        (dict(epochs=0), "epochs must be"),
        (dict(scorer="x"), "unknown scorer"),
        (dict(threshold="x"), "unknown threshold"),
        (dict(lr=-1.0), "lr must be"),
        (dict(n_train=10, batch_size=32), "larger than n_train=10"),
        (dict(model="vgg"), "unknown model"),
    ],
)
def test_bad_config(kw, match, toy):
    with pytest.raises(ValueError, match=match):
        train(_cfg(**kw), dataset=toy)


def test_batch_larger_than_training_set(toy):
    with pytest.raises(ValueError, match="larger than the 240 training samples"):
        train(_cfg(batch_size=256), dataset=toy)


def test_config_hash_is_stable_and_sensitive():
    assert config_hash(_cfg()) == config_hash(_cfg())
    assert config_hash(_cfg()) != config_hash(_cfg(seed=4))
    assert len(config_hash(_cfg())) == 16
    assert set(dataclasses.asdict(_cfg())) >= {"dataset", "method", "batch_size", "seed", "scorer", "threshold"}


def test_lr_scaling_rules():
    assert _cfg(batch_size=8, lr=0.04, lr_scaling="none").effective_lr == 0.04
    assert _cfg(batch_size=8, lr=0.04, lr_scaling="sqrt", lr_ref_batch=32).effective_lr == pytest.approx(0.02)
    assert _cfg(batch_size=64, lr=0.04, lr_scaling="linear", lr_ref_batch=32).effective_lr == pytest.approx(0.08)
    with pytest.raises(ValueError, match="unknown lr_scaling 'cubic'"):
        _cfg(lr_scaling="cubic").validate()


def test_shift_probe_records_checkpoints_without_changing_training(toy):
    plain = train(_cfg(method="bn"), dataset=toy)
    probed = train(_cfg(method="bn", probe_points=6), dataset=toy)
    assert probed["steps"] == plain["steps"] and probed["final_test_acc"] == plain["final_test_acc"]
    assert probed["probe"]["step"] == [10, 20, 30, 40, 50, 60]
    assert all(v > 0 and np.isfinite(v) for v in probed["probe"]["shift"])
    assert plain["probe"] == {"step": [], "shift": []}
    none = train(_cfg(method="none", probe_points=3), dataset=toy)  # probes the empty norm slots too
    assert len(none["probe"]["shift"]) == 3


def test_inference_policies_of_selective_bn(toy):
    every = train(_cfg(method="sbn", threshold="rate", threshold_rate=1.0), dataset=toy)["inference"]
    assert every["running"] == every["selected"]  # threshold -inf: every test batch normalised
    assert every["selected_frac_normalized"] == 1.0
    never = train(_cfg(method="sbn", threshold="rate", threshold_rate=0.0), dataset=toy)
    inf = never["inference"]
    assert inf["selected"] == inf["bypass"] and inf["selected_frac_normalized"] == 0.0
    assert inf["running"] == never["final_test_acc"]
    assert train(_cfg(method="random"), dataset=toy)["inference"]["selected"] is None
    assert set(train(_cfg(method="bn"), dataset=toy)["inference"]) == {"running_stats_drift"}
    assert train(_cfg(method="gn"), dataset=toy)["inference"]["running_stats_drift"] is None


def test_running_stats_drift_is_small_for_bn_and_large_when_bn_never_updates_them(toy):
    bn = train(_cfg(method="bn", epochs=3), dataset=toy)["inference"]["running_stats_drift"]
    never = train(_cfg(method="sbn", threshold="rate", threshold_rate=0.0), dataset=toy)
    assert 0 < bn < never["inference"]["running_stats_drift"]
