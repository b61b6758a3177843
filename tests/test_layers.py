"""SelectiveBatchNorm: bitwise equality with nn.BatchNorm when normalising, both skip modes."""
import copy

import pytest
import torch
from torch import nn

from sbnlib import SelectiveBatchNorm1d, SelectiveBatchNorm2d, convert_to_selective, selective_bn
from sbnlib.layers import SelectiveBatchNorm3d, bn_counts, reset_bn_counts

CASES = [
    # (reference class, selective class, input shape)
    (nn.BatchNorm1d, SelectiveBatchNorm1d, (8, 5)),
    (nn.BatchNorm1d, SelectiveBatchNorm1d, (4, 5, 7)),
    (nn.BatchNorm1d, SelectiveBatchNorm1d, (2, 3)),
    (nn.BatchNorm2d, SelectiveBatchNorm2d, (4, 3, 6, 5)),
    (nn.BatchNorm2d, SelectiveBatchNorm2d, (2, 6, 3, 3)),
    (nn.BatchNorm2d, SelectiveBatchNorm2d, (16, 2, 1, 1)),
    (nn.BatchNorm3d, SelectiveBatchNorm3d, (2, 3, 2, 3, 4)),
]
OPTIONS = [
    dict(),
    dict(affine=False),
    dict(momentum=None),
    dict(track_running_stats=False),
    dict(momentum=0.3, eps=1e-3),
]


def _pair(ref_cls, sel_cls, c, opts, seed=0):
    torch.manual_seed(seed)
    ref = ref_cls(c, **opts)
    if ref.affine:  # non-trivial affine parameters
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.uniform_(-0.5, 0.5)
    sel = sel_cls(c, **opts)
    sel.load_state_dict(ref.state_dict())
    return ref, sel


def _step(layer, x, g):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    (y * g).sum().backward()
    return y.detach(), x.grad


def _assert_same_params_and_buffers(ref, sel):
    for (n1, p1), (n2, p2) in zip(ref.named_parameters(), sel.named_parameters()):
        assert n1 == n2
        assert torch.equal(p1, p2), n1
        assert torch.equal(p1.grad, p2.grad), f"grad of {n1}"
    b1, b2 = dict(ref.named_buffers()), dict(sel.named_buffers())
    assert b1.keys() == b2.keys()
    for k in b1:
        assert torch.equal(b1[k], b2[k]), k


@pytest.mark.parametrize("ref_cls,sel_cls,shape", CASES)
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_enabled_is_bitwise_identical_to_torch(ref_cls, sel_cls, shape, opts):
    ref, sel = _pair(ref_cls, sel_cls, shape[1], opts)
    gen = torch.Generator().manual_seed(1)
    for step in range(3):  # several training steps: running stats and num_batches_tracked evolve
        x = torch.randn(shape, generator=gen) * 3 + 1
        g = torch.randn(shape, generator=gen)
        y1, gx1 = _step(ref, x, g)
        with selective_bn(sel, enabled=True):
            y2, gx2 = _step(sel, x, g)
        assert torch.equal(y1, y2), f"output differs at step {step}"
        assert torch.equal(gx1, gx2), f"input grad differs at step {step}"
        _assert_same_params_and_buffers(ref, sel)
    ref.eval(), sel.eval()
    x = torch.randn(shape, generator=gen)
    g = torch.randn(shape, generator=gen)
    y1, gx1 = _step(ref, x, g)
    y2, gx2 = _step(sel, x, g)  # eval, switch at its default (on): plain BN eval
    assert torch.equal(y1, y2) and torch.equal(gx1, gx2)
    _assert_same_params_and_buffers(ref, sel)
    assert sel.n_normalized == 3 and sel.n_skipped == 0


def test_state_dict_keys_match_torch():
    assert nn.BatchNorm2d(4).state_dict().keys() == SelectiveBatchNorm2d(4).state_dict().keys()


def test_identity_skip_passes_input_and_leaves_stats():
    torch.manual_seed(0)
    sel = SelectiveBatchNorm2d(3, skip_mode="identity")
    sel(torch.randn(4, 3, 5, 5))  # one normalised batch first, so stats are not at their init
    before = {k: v.clone() for k, v in sel.state_dict().items()}
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    with selective_bn(sel, enabled=False):
        y = sel(x)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert sel.weight.grad is None and sel.bias.grad is None  # affine not applied
    for k, v in sel.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert (sel.n_normalized, sel.n_skipped) == (1, 1)


@pytest.mark.parametrize("sel_cls,shape", [(SelectiveBatchNorm1d, (6, 4)), (SelectiveBatchNorm2d, (3, 4, 2, 5))])
def test_frozen_skip_uses_running_stats_without_updating(sel_cls, shape):
    torch.manual_seed(0)
    sel = sel_cls(4, skip_mode="frozen")
    for _ in range(2):
        sel(torch.randn(shape) * 2 + 3)
    with torch.no_grad():
        sel.weight.uniform_(0.5, 1.5)
        sel.bias.uniform_(-1, 1)
    before = {k: v.clone() for k, v in sel.state_dict().items()}
    x = torch.randn(shape) * 2 + 3
    with selective_bn(sel, enabled=False):
        y = sel(x)
    view = (1, -1) + (1,) * (len(shape) - 2)
    expect = (x - sel.running_mean.view(view)) / torch.sqrt(sel.running_var.view(view) + sel.eps)
    expect = expect * sel.weight.view(view) + sel.bias.view(view)
    torch.testing.assert_close(y, expect, rtol=1e-6, atol=1e-6)
    for k, v in sel.state_dict().items():
        if k not in ("weight", "bias"):
            assert torch.equal(v, before[k]), k
    # frozen skip equals the layer's own eval-mode output
    sel.eval()
    assert torch.equal(y, sel(x))
    y.sum().backward() if y.requires_grad else None


def test_eval_with_the_switch_off_applies_the_skip_mode():
    torch.manual_seed(0)
    ident, frozen = SelectiveBatchNorm2d(3), SelectiveBatchNorm2d(3, skip_mode="frozen")
    for m in (ident, frozen):
        m(torch.randn(4, 3, 5, 5) * 2 + 1)
        m.eval()
    x = torch.randn(2, 3, 5, 5)
    normal = frozen(x)
    with selective_bn(ident, enabled=False), selective_bn(frozen, enabled=False):
        assert torch.equal(ident(x), x)
        assert torch.equal(frozen(x), normal)
    assert ident.n_skipped == 0 and frozen.n_skipped == 0  # eval batches are not counted


def test_frozen_skip_gradients_reach_affine_parameters():
    sel = SelectiveBatchNorm2d(2, skip_mode="frozen")
    with selective_bn(sel, enabled=False):
        sel(torch.randn(3, 2, 4, 4)).pow(2).sum().backward()
    assert sel.weight.grad is not None and sel.weight.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="skip_mode"):
        SelectiveBatchNorm2d(3, skip_mode="bogus")
    with pytest.raises(ValueError, match="track_running_stats"):
        SelectiveBatchNorm2d(3, skip_mode="frozen", track_running_stats=False)
    with pytest.raises(ValueError, match="expected 4D input"):
        SelectiveBatchNorm2d(3)(torch.randn(2, 3))
    with pytest.raises(ValueError, match="expected 4D input"), selective_bn(SelectiveBatchNorm2d(3), False) as m:
        m(torch.randn(2, 3))


def _net():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, momentum=None)),
        nn.Flatten(), nn.LazyLinear(6) if False else nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6),
    )


def test_convert_to_selective_copies_everything_and_matches():
    torch.manual_seed(0)
    ref = _net()
    ref(torch.randn(5, 3, 8, 8))  # move running stats off their init
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
    sel = convert_to_selective(copy.deepcopy(ref), skip_mode="frozen")
    kinds = [type(m).__name__ for m in sel.modules() if "BatchNorm" in type(m).__name__]
    assert kinds == ["SelectiveBatchNorm2d", "SelectiveBatchNorm2d", "SelectiveBatchNorm1d"]
    assert all(m.skip_mode == "frozen" for m in sel.modules() if hasattr(m, "skip_mode"))
    assert sel[3][1].momentum is None
    sd1, sd2 = ref.state_dict(), sel.state_dict()
    assert sd1.keys() == sd2.keys()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    x = torch.randn(5, 3, 8, 8)
    assert torch.equal(ref(x), sel(x))
    ref.eval(), sel.eval()
    assert torch.equal(ref(x), sel(x))
    assert sel.training is False and sel[1].training is False


def test_convert_shares_affine_parameters_like_syncbatchnorm():
    bn = nn.BatchNorm2d(3)
    sel = convert_to_selective(bn)
    assert isinstance(sel, SelectiveBatchNorm2d)
    assert sel.weight is bn.weight and sel.bias is bn.bias
    assert sel.running_mean is not bn.running_mean and torch.equal(sel.running_mean, bn.running_mean)


def test_context_manager_sets_all_layers_restores_and_counts():
    model = convert_to_selective(_net())
    layers = [m for m in model.modules() if isinstance(m, (SelectiveBatchNorm1d, SelectiveBatchNorm2d))]
    x = torch.randn(5, 3, 8, 8)
    with selective_bn(model, enabled=False):
        assert not any(m.enabled for m in layers)
        model(x)
    assert all(m.enabled for m in layers)
    model(x)
    with pytest.raises(RuntimeError), selective_bn(model, enabled=False):
        raise RuntimeError("boom")
    assert all(m.enabled for m in layers)  # restored after an exception too
    assert bn_counts(model) == {"layers": 3, "layer_batches_normalized": 3, "layer_batches_skipped": 3}
    model.eval()
    model(x)  # eval batches are not counted
    assert bn_counts(model)["layer_batches_normalized"] == 3
    reset_bn_counts(model)
    assert bn_counts(model)["layer_batches_skipped"] == 0


def test_skipped_network_equals_network_without_bn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 2, 3))
    sel = convert_to_selective(copy.deepcopy(net))
    plain = nn.Sequential(net[0], nn.Identity(), net[2], net[3])
    x = torch.randn(2, 1, 7, 7)
    with selective_bn(sel, enabled=False):
        assert torch.equal(sel(x), plain(x))
