"""Norm registry and model family."""
import pytest
import torch
from torch import nn

from sbnlib.experiments.models import MODELS, build_model
from sbnlib.layers import SelectiveBatchNorm1d, SelectiveBatchNorm2d
from sbnlib.norms import NORM_LAYERS, create_norm, register_norm

EXPECTED = {
    "none": nn.Identity,
    "bn": nn.BatchNorm2d,
    "sbn": SelectiveBatchNorm2d,
    "sbn_frozen": SelectiveBatchNorm2d,
    "gn": nn.GroupNorm,
}


@pytest.mark.parametrize("norm", sorted(EXPECTED))
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)])
def test_every_model_takes_every_norm(model, norm, in_shape):
    torch.manual_seed(0)
    net = build_model(model, in_shape, 10, norm=norm)
    out = net(torch.randn(4, *in_shape))
    assert out.shape == (4, 10)
    kinds = {type(m) for m in net.modules()}
    want = EXPECTED[norm]
    if model == "mlp" and norm in ("bn", "sbn", "sbn_frozen"):
        want = {"bn": nn.BatchNorm1d}.get(norm, SelectiveBatchNorm1d)
    assert want in kinds
    if norm != "bn":
        assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and not hasattr(m, "skip_mode")
                       for m in net.modules())


def test_same_seed_same_initial_weights_across_bn_sbn_gn():
    """Paired runs: norm layers consume no randomness, so conv/linear weights agree."""
    nets = {}
    for norm in ("bn", "sbn", "sbn_frozen", "gn"):
        torch.manual_seed(7)
        nets[norm] = build_model("cnn_s", (3, 32, 32), 10, norm=norm)
    convs = {k: [m.weight for m in v.modules() if isinstance(m, (nn.Conv2d, nn.Linear))] for k, v in nets.items()}
    for k in convs:
        assert all(torch.equal(a, b) for a, b in zip(convs["bn"], convs[k])), k


def test_groupnorm_groups_divide_channels():
    gn = create_norm("gn", 48)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 8
    assert create_norm("gn", 12).num_groups == 6
    assert create_norm("sbn_frozen", 4).skip_mode == "frozen"
    assert isinstance(create_norm("sbn", 4, dims=1), SelectiveBatchNorm1d)


def test_register_a_new_norm_without_touching_models():
    register_norm("test_ln")(lambda c, dims: nn.GroupNorm(1, c))
    try:
        net = build_model("cnn_s", (1, 28, 28), 10, norm="test_ln")
        assert sum(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in net.modules()) == 3
    finally:
        del NORM_LAYERS["test_ln"]


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown norm 'ln'.*'bn'"):
        build_model("cnn", (1, 28, 28), 10, norm="ln")
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        build_model("resnet", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="already registered"):
        register_norm("bn")(lambda c, d: None)


def test_cnn_is_channels_last_and_takes_either_input_layout():
    torch.manual_seed(0)
    m = build_model("cnn_s", (3, 32, 32), 10, norm="bn").eval()
    conv = next(p for p in m.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        a, b = m(x), m(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(a, b)
