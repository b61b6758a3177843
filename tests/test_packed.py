"""Packed engine: S seeds as one wide model equal S single models (issue 12).

Tolerances. The packed model computes the same sums as the single models in another order (a
grouped convolution, a batched matrix product), so one forward pass agrees to a few float32 ulps
(relative 1e-7 .. 3e-7 measured; asserted 1e-5 on logits of order 1). Over training steps such a
difference is amplified by the training dynamics themselves, not by the packing: a single run
whose initial weights are moved by one ulp departs from the unmoved run by the same amount
(measured on the toy task at lr=0.02: at most 4e-5 relative in the loss over 50 steps, packed or
one-ulp-perturbed alike; at lr=0.05, B=4 one seed's trajectory jumps to 3e-4 .. 5e-2 at step 18 in
both). The 50-step comparison therefore runs at lr=0.02 and allows 1e-3: 25x what rounding gives,
and 50-2000x below what a semantic slip gives (an identity-skipped seed whose BN affine parameters
get weight decay and stale momentum departs by 5e-2 .. 2.6 within 50 steps).
"""
import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from sbnlib.experiments.config import TrainConfig, config_dict, config_hash
from sbnlib.experiments.models import build_model
from sbnlib.experiments.packed import PackedBatchNorm, pack, pack_inputs, train_packed, unpack
from sbnlib.experiments.train import train
from sbnlib.layers import selective_bn

from .conftest import make_toy_dataset

NORMS = ["bn", "sbn", "sbn_frozen", "gn", "none"]
SEEDS = [3, 0, 7]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _singles(norm, model="cnn_s", in_shape=(1, 8, 8), seeds=SEEDS):
    out = []
    for s in seeds:
        torch.manual_seed(s)  # as the single-seed trainer builds its model
        out.append(build_model(model, in_shape, 4, norm=norm))
    return out


def _assert_state_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    for la, lb in zip(a.modules(), b.modules()):
        assert getattr(la, "n_normalized", None) == getattr(lb, "n_normalized", None)
        assert getattr(la, "n_skipped", None) == getattr(lb, "n_skipped", None)


@pytest.mark.parametrize("model", ["cnn_s", "mlp"])
@pytest.mark.parametrize("norm", NORMS)
def test_pack_unpack_round_trips_bitwise(norm, model):
    singles = _singles(norm, model)
    for i, m in enumerate(singles):  # non-trivial selective counters travel too
        for layer in m.modules():
            if hasattr(layer, "n_skipped"):
                layer.n_normalized, layer.n_skipped = 5 + i, 2 * i
    packed = pack(singles)
    for a, b in zip(singles, unpack(packed)):
        _assert_state_equal(a, b)
    again = pack(unpack(packed))
    assert all(torch.equal(x, y) for x, y in zip(packed.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("model", ["cnn_s", "mlp"])
@pytest.mark.parametrize("batch", [2, 8])
@pytest.mark.parametrize("norm", NORMS)
def test_initial_outputs_and_batch_statistics_equal_the_single_models(norm, batch, model):
    """Training-mode forward (batch statistics; a mixed on/off mask for the selective norms),
    then eval mode: outputs, input gradients and running statistics equal the single models'."""
    singles = _singles(norm, model)
    packed = pack(copy.deepcopy(singles))
    on = torch.tensor([True, False, True])
    for m in packed.modules():
        if isinstance(m, PackedBatchNorm) and m.skip_mode is not None:
            m.enabled = on
    x = torch.randn(batch, len(SEEDS), 1, 8, 8, generator=torch.Generator().manual_seed(batch)) * 2 + 0.5
    for training in (True, False):
        packed.train(training)
        xp = x.clone().requires_grad_(True)
        out = packed(pack_inputs(xp))
        out.pow(2).sum().backward()
        for s, m in enumerate(singles):
            m.train(training)
            xs = x[:, s].clone().requires_grad_(True)
            with selective_bn(m, enabled=bool(on[s]) or norm not in ("sbn", "sbn_frozen")):
                ref = m(xs)
            ref.pow(2).sum().backward()
            torch.testing.assert_close(out[:, s], ref, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(xp.grad[:, s], xs.grad, rtol=1e-4, atol=1e-6)
    for a, b in zip(singles, unpack(packed)):
        sa, sb = a.state_dict(), b.state_dict()
        for k in sa:
            torch.testing.assert_close(sb[k], sa[k], rtol=1e-5, atol=1e-7, msg=k)
        assert [getattr(la, "n_skipped", None) for la in a.modules()] == \
               [getattr(lb, "n_skipped", None) for lb in b.modules()]


def test_a_seed_with_nan_weights_leaves_the_others_alone():
    singles = _singles("sbn")
    packed = pack(singles)
    x = pack_inputs(torch.randn(4, 3, 1, 8, 8))
    before = packed(x).detach()
    with torch.no_grad():
        for p in packed.parameters():
            p.unflatten(0, (3, -1))[1] = float("nan")
    out = packed(x)
    out[:, [0, 2]].sum().backward()
    assert out[:, 1].isnan().all()
    torch.testing.assert_close(out[:, [0, 2]], before[:, [0, 2]], rtol=0, atol=0)
    for p in packed.parameters():
        g = p.grad.unflatten(0, (3, -1))
        assert g[[0, 2]].isfinite().all()


def _toy(n_train):
    ds = make_toy_dataset(n_train=n_train, n_test=60)
    return ds, ds.normalize(ds.x_train), ds.normalize(ds.x_test)


def _cfgs(method, batch, seeds=SEEDS, engine="packed", **kw):
    base = dict(dataset="toy", method=method, batch_size=batch, epochs=1, lr=0.02, probe_points=5)
    base.update(kw)
    return [TrainConfig(**base, seed=s, engine=engine) for s in seeds]


def _one_ulp_run(cfg, data, monkeypatch):
    """The single-seed run of ``cfg`` with every initial weight moved up by one float32 ulp: how far
    rounding alone moves this run (the yardstick of the comparisons below)."""
    import sbnlib.experiments.train

    build = sbnlib.experiments.train.build_model

    def nudged(*args, **kw):
        model = build(*args, **kw)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
        return model

    with monkeypatch.context() as m:
        m.setattr(sbnlib.experiments.train, "build_model", nudged)
        return train(cfg, dataset=data)


def _assert_within_rounding(packed, single, nudged, floor):
    """``packed`` departs from ``single`` by at most ``floor`` (absolute) or 20x what one ulp does."""
    dev = np.max(np.abs(np.subtract(packed, single)))
    assert dev <= max(floor, 20 * np.max(np.abs(np.subtract(nudged, single)))), dev


REGIME = dict(schedule="warmup_cosine", nesterov=True, val_frac=0.2)  # issue 11's training regime


METHODS = ["bn", "sbn", "sbn_frozen", "random", "gn", "none"]
CASES = ([(m, b, {}) for b in (2, 8) for m in METHODS] + [(m, 4, REGIME) for m in ("bn", "sbn")]
         + [("sbn", 4, dict(scope="input"))])  # an input BN layer, the only one switched


@pytest.mark.parametrize("method,batch,regime", CASES, ids=lambda v: "regime" if v == REGIME else "-".join(map(str, v.values())) if isinstance(v, dict) else str(v))
def test_fifty_steps_match_the_single_seed_trainer(method, batch, regime, monkeypatch):
    n_train = round(50 * batch / (1 - regime.get("val_frac", 0)))  # 50 steps after the validation split
    data = _toy(n_train)
    packed = train_packed(_cfgs(method, batch, **regime), dataset=data)
    for p, cfg in zip(packed, _cfgs(method, batch, engine="single", **regime)):
        r, q = train(cfg, dataset=data), _one_ulp_run(cfg, data, monkeypatch)
        assert len(p["steps"]["loss"]) == len(r["steps"]["loss"]) == 50
        assert p["steps"]["bn_on"] == r["steps"]["bn_on"]  # same plan, same selection decisions
        assert [e.get("threshold") for e in p["epochs"]] == [e.get("threshold") for e in r["epochs"]]
        assert p["bn"] == r["bn"] and p["status"] == r["status"] == "ok"
        assert p["probe"]["step"] == r["probe"]["step"]
        # the record keeps 6 significant digits: the first step, before any amplification, agrees to those
        np.testing.assert_allclose(p["steps"]["loss"][0], r["steps"]["loss"][0], rtol=1e-5)
        for key in ("loss", "grad_norm"):
            _assert_within_rounding(p["steps"][key], r["steps"][key], q["steps"][key], 1e-3)
        _assert_within_rounding(p["probe"]["shift"], r["probe"]["shift"], q["probe"]["shift"], 1e-3)
        _assert_within_rounding(p["final_test_acc"], r["final_test_acc"], q["final_test_acc"], 1 / 60)
        assert set(p) == set(r) | {"packed_group"} and set(p["inference"]) == set(r["inference"])


def test_packed_runs_are_bitwise_reproducible_and_carry_their_engine():
    data = _toy(64)
    a = train_packed(_cfgs("sbn", 4), dataset=data)
    b = train_packed(_cfgs("sbn", 4), dataset=data)
    strip = ("wall_time_s", "loop_time_s", "produced")
    assert [json.dumps({k: v for k, v in r.items() if k not in strip}, sort_keys=True) for r in a] == \
           [json.dumps({k: v for k, v in r.items() if k not in strip}, sort_keys=True) for r in b]
    single = _cfgs("sbn", 4, engine="single")
    for r, cfg in zip(a, single):
        assert r["config"]["engine"] == "packed"
        assert r["config_hash"] != config_hash(cfg)
        assert r["config"] == {**config_dict(cfg), "engine": "packed"}
        assert "engine" not in config_dict(cfg)  # single runs keep the keys (and files) they had before the field
        json.dumps(r)


def test_a_seeds_numbers_do_not_depend_on_which_seeds_are_packed_beside_it():
    """Grouped kernels compute each group alike: at one group size, a seed's record is the same
    whatever seeds (or learning rates) share its group; a lone seed is packed beside a copy of itself."""
    data = _toy(64)
    key = ("steps", "metrics", "epochs", "final_test_acc", "probe", "inference", "bn")
    three = train_packed(_cfgs("sbn", 4, seeds=[3, 0, 7]), dataset=data)
    others = train_packed(_cfgs("sbn", 4, seeds=[5, 9, 3]), dataset=data)
    mixed = train_packed(_cfgs("sbn", 4, seeds=[3, 1]) + _cfgs("sbn", 4, seeds=[4], lr=0.08), dataset=data)
    assert [others[2][k] for k in key] == [three[0][k] for k in key] == [mixed[0][k] for k in key]
    pair = train_packed(_cfgs("sbn", 4, seeds=[0, 8]), dataset=data)
    alone = train_packed(_cfgs("sbn", 4, seeds=[0]), dataset=data)
    assert [alone[0][k] for k in key] == [pair[0][k] for k in key]
    assert [len(r["packed_group"]) for r in three + pair + alone] == [3, 3, 3, 2, 2, 2]  # a lone seed's ghost counts


def test_the_group_size_moves_a_seeds_numbers_by_rounding_at_most():
    """With S times the channels some CPU kernels sum in another order (on 28x28 images at B=8,
    groups of 2 and 4 differ in the last bits of the loss), so a seed's numbers may depend on its
    group's size, by float rounding only: the yardstick of the single-run comparison above."""
    ds = make_toy_dataset(n_train=80, n_test=40, size=28)
    data = (ds, ds.normalize(ds.x_train), ds.normalize(ds.x_test))
    two = train_packed(_cfgs("bn", 8, seeds=[0, 1], probe_points=0), dataset=data)
    four = train_packed(_cfgs("bn", 8, seeds=[0, 1, 2, 3], probe_points=0), dataset=data)
    assert (len(two[0]["packed_group"]), len(four[0]["packed_group"])) == (2, 4)
    for a, b in zip(two, four):
        np.testing.assert_allclose(a["steps"]["loss"], b["steps"]["loss"], rtol=1e-5)
        np.testing.assert_allclose(a["steps"]["grad_norm"], b["steps"]["grad_norm"], rtol=1e-5)
        assert a["steps"]["bn_on"] == b["steps"]["bn_on"] and a["final_test_acc"] == b["final_test_acc"]


def test_a_diverging_seed_stops_where_its_single_run_stops_and_the_others_go_on():
    data = _toy(96)
    cfgs = _cfgs("none", 8, seeds=[0, 1, 2, 3], lr=2.0, epochs=2, probe_points=0)
    packed = train_packed(cfgs, dataset=data)
    single = [train(dataclasses.replace(c, engine="single"), dataset=data) for c in cfgs]
    assert [r["status"] for r in single] == ["diverged", "diverged", "ok", "ok"]  # the setting's premise
    for p, r in zip(packed, single):
        assert (p["status"], p["diverged_at_step"]) == (r["status"], r["diverged_at_step"])
        assert len(p["steps"]["loss"]) == len(r["steps"]["loss"]) and len(p["epochs"]) == len(r["epochs"])
        n = len(r["steps"]["loss"]) - (r["status"] == "diverged")  # the finite part
        # losses up to 1e16 on the way: rounding grows with them, hence 1e-2 here
        np.testing.assert_allclose(p["steps"]["loss"][:n], r["steps"]["loss"][:n], rtol=1e-2)
        assert p["epochs"][-1]["train_acc"] == r["epochs"][-1]["train_acc"]  # the same steps counted
        json.dumps(p)


def test_a_learning_rate_selection_trains_as_one_group():
    """The seeds of a learning-rate selection (several rates, several seeds) pack together: each run
    matches its single run within rounding, is bitwise the run packed with its own rate alone, and
    records the learning rate of its own schedule."""
    data = _toy(round(50 * 4 / 0.8))
    lrs, seeds = [0.01, 0.04], [0, 1]
    cfgs = [c for lr in lrs for c in _cfgs("sbn", 4, seeds=seeds, lr=lr, **REGIME)]
    mixed = train_packed(cfgs, dataset=data)
    key = ("steps", "metrics", "epochs", "final_test_acc", "probe", "inference", "bn")
    for k, lr in enumerate(lrs):
        alone = train_packed(_cfgs("sbn", 4, seeds=seeds, lr=lr, **REGIME), dataset=data)
        assert [[r[x] for x in key] for r in alone] == [[r[x] for x in key] for r in mixed[2 * k:2 * k + 2]]
    for p, cfg in zip(mixed, cfgs):
        single = train(dataclasses.replace(cfg, engine="single"), dataset=data)
        assert p["steps"]["lr"] == single["steps"]["lr"] and p["config"]["lr"] == cfg.lr
        np.testing.assert_allclose(p["steps"]["loss"], single["steps"]["loss"], rtol=1e-3, atol=1e-3)
    assert mixed[0]["steps"]["lr"] != mixed[2]["steps"]["lr"]  # the two rates really differ


def test_units_pack_a_learning_rate_selection_together():
    from sbnlib.experiments.sweep import _units

    configs = [c for lr in (0.01, 0.02, 0.04, 0.08) for c in _cfgs("bn", 2, seeds=[100, 101], lr=lr)]
    configs += _cfgs("bn", 8, seeds=[100, 101], lr=0.01) + _cfgs("bn", 8, seeds=[100, 101], lr=0.02) \
        + _cfgs("bn", 8, seeds=[100, 101], lr=0.04)
    units = _units(configs, range(len(configs)))
    assert [len(u) for u in units] == [8, 4, 2]  # pack_size(2) = 16 > 8; pack_size(8) = 4


@pytest.mark.parametrize("change,match", [
    (dict(batch_size=8), "differ only in the seed"),
    (dict(seed=3), "distinct"),
])
def test_a_group_is_one_configuration_with_distinct_seeds(change, match):
    cfgs = _cfgs("bn", 4, seeds=[3, 5])
    cfgs[1] = dataclasses.replace(cfgs[1], **change)
    with pytest.raises(ValueError, match=match):
        train_packed(cfgs, dataset=_toy(32))


def test_engine_is_validated_and_packed_needs_sgd():
    with pytest.raises(ValueError, match="unknown engine 'fast'"):
        TrainConfig(engine="fast").validate()
    with pytest.raises(ValueError, match="optimizer='sgd'"):
        TrainConfig(engine="packed", optimizer="adam").validate()


def test_units_group_packed_seeds_of_one_configuration_up_to_the_pack_size():
    from sbnlib.experiments.packed import pack_size
    from sbnlib.experiments.sweep import _units

    configs = (_cfgs("bn", 2, seeds=range(10)) + _cfgs("sbn", 2, seeds=range(3)) + _cfgs("bn", 16, seeds=range(3))
               + _cfgs("bn", 128, seeds=range(2)) + _cfgs("bn", 2, seeds=range(2), engine="single"))
    units = _units(configs, range(len(configs)))
    assert pack_size(2) >= 10 and pack_size(16) == 2 and pack_size(32) == 1
    assert [[configs[i].seed for i in u] for u in units] == [list(range(10)), [0, 1, 2], [0, 1], [2], [0], [1],
                                                             [0], [1]]
    assert all(len({(configs[i].method, configs[i].batch_size, configs[i].engine) for i in u}) == 1 for u in units)
    assert _units(configs, [12, 3, 11]) == [[12, 11], [3]]  # only the runs asked for, in their order


def test_sweep_trains_packed_groups_and_caches_every_run(tmp_path, monkeypatch):
    from sbnlib.experiments import sweep
    from sbnlib.experiments import train as train_mod
    from sbnlib.experiments.sweep import result_path, run_configs

    data = _toy(64)
    monkeypatch.setattr(train_mod, "_prepared", lambda *a: data)  # the toy task stands in for a dataset
    groups = []

    def spy(cfgs, **kw):
        groups.append([(c.method, c.seed) for c in cfgs] + ([len(kw["group"])] if kw.get("group") else []))
        return train_packed(cfgs, **kw)

    monkeypatch.setattr(sweep, "train_packed", spy)  # as the sweep calls it
    configs = _cfgs("bn", 4) + _cfgs("sbn", 4) + _cfgs("sbn", 4, seeds=[5], engine="single")
    first = run_configs(configs, tmp_path, progress=False)
    assert sorted(groups) == [[("bn", s) for s in SEEDS], [("sbn", s) for s in SEEDS]]
    assert [r["config"].get("engine", "single") for r in first] == ["packed"] * 6 + ["single"]
    assert first[4]["packed_group"] == [config_hash(c) for c in configs[3:6]]
    victim = result_path(tmp_path, configs[4])  # sbn, seed 0
    victim.unlink()
    groups.clear()
    again = run_configs(configs, tmp_path, progress=False)
    assert groups == [[("sbn", 0), 3]]  # only the missing run is trained, at the size of its lost group, ...
    strip = ("wall_time_s", "loop_time_s", "produced")
    assert json.dumps({k: v for k, v in again[4].items() if k not in strip}, sort_keys=True) == \
           json.dumps({k: v for k, v in first[4].items() if k not in strip}, sort_keys=True)  # ... to the same record
    assert all(result_path(tmp_path, c).exists() for c in configs)


def test_a_lost_run_is_retrained_in_a_group_of_the_size_it_had(tmp_path, monkeypatch):
    """On 28x28 images a seed's last bits may depend on its group's size, so a sweep retrains a run
    whose file was lost beside ghost copies up to the size its surviving group-mates record."""
    from sbnlib.experiments import train as train_mod
    from sbnlib.experiments.sweep import result_path, run_configs

    ds = make_toy_dataset(n_train=80, n_test=40, size=28)
    monkeypatch.setattr(train_mod, "_prepared", lambda *a: (ds, ds.normalize(ds.x_train), ds.normalize(ds.x_test)))
    configs = _cfgs("bn", 8, seeds=[0, 1, 2, 3], probe_points=0)
    first = run_configs(configs, tmp_path, progress=False)
    for lost in (configs[1], configs[2]):
        result_path(tmp_path, lost).unlink()
    again = run_configs(configs, tmp_path, progress=False)
    strip = ("wall_time_s", "loop_time_s", "produced")
    for a, b in zip(first, again):
        assert json.dumps({k: v for k, v in a.items() if k not in strip}, sort_keys=True) == \
               json.dumps({k: v for k, v in b.items() if k not in strip}, sort_keys=True)
    assert [len(r["packed_group"]) for r in again] == [4] * 4
    with pytest.raises(ValueError, match="are not members of the group"):
        train_packed(configs[:2], dataset=(ds, ds.normalize(ds.x_train), ds.normalize(ds.x_test)),
                     group=[config_hash(configs[0])])
