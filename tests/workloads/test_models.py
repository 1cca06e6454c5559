"""The paper's ResNet family: shapes, gradients, parameter and multiply-add counts, torchvision parity."""

import pytest
import torch
import torchvision

from workloads.analysis import count_multiply_adds, count_parameters
from workloads.models import build_model, list_models, parse_model_name

# Table 6 (millions of parameters) and Table 1 (billions of multiply-adds at 224x224).
TABLE6_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}
TABLE1_GMACS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}


def _input_for(name: str) -> torch.Tensor:
    # ImageNet nets are fully convolutional up to the average pool: 64x64 is enough to exercise
    # every stage (the last map is 2x2) at a fraction of 224x224's cost on 2 CPU cores.
    size = 32 if name.startswith("cifar") else 64
    return torch.randn(2, 3, size, size)


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_over_registry(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7)
    out = model(_input_for(name))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_plain_1202_is_buildable_but_its_gradients_explode():
    # Why the registry lists plain nets only up to 110 (Fig. 6): at 1202 layers the gradient
    # reaching the first layers overflows float32, the degradation problem at its extreme.
    torch.manual_seed(0)
    model = build_model("cifar_plain1202")
    model(torch.randn(2, 3, 32, 32)).logsumexp(dim=1).sum().backward()
    first = model.conv1.weight.grad
    assert not torch.isfinite(first).all() or first.abs().max() > 1e30


@pytest.mark.parametrize("depth", TABLE6_PARAMS_M)
def test_cifar_parameter_counts_match_table6(depth):
    params = count_parameters(build_model(f"cifar_resnet{depth}"))
    assert params == pytest.approx(TABLE6_PARAMS_M[depth] * 1e6, rel=0.02)


@pytest.mark.parametrize("name", [n for n in list_models() if "plain" in n])
def test_plain_nets_with_option_a_have_the_parameters_of_their_residual_twins(name):
    twin = name.replace("plain", "resnet")
    assert count_parameters(build_model(name, shortcut="A")) == count_parameters(build_model(twin, shortcut="A"))


def test_shortcut_options_add_parameters_in_the_papers_order():
    a, b, c = (count_parameters(build_model("resnet34", shortcut=s)) for s in "ABC")
    assert a < b < c
    # Option B on ResNet-34 adds exactly three projections (conv + BN) where dimensions increase.
    projections = sum(k.endswith("downsample.0.weight") for k in build_model("resnet34", shortcut="B").state_dict())
    assert projections == 3
    # Option C projects every one of the 16 blocks' shortcuts.
    projections = sum(k.endswith("downsample.0.weight") for k in build_model("resnet34", shortcut="C").state_dict())
    assert projections == 16


@pytest.mark.parametrize("depth", TABLE1_GMACS)
def test_multiply_adds_match_table1(depth):
    macs = count_multiply_adds(build_model(f"resnet{depth}", stride_placement="paper"), (3, 224, 224))
    assert macs / 1e9 == pytest.approx(TABLE1_GMACS[depth], rel=0.05)


def test_torchvision_stride_placement_costs_more_for_bottlenecks_only():
    for depth in (18, 50):
        paper = count_multiply_adds(build_model(f"resnet{depth}", stride_placement="paper"), (3, 224, 224))
        tv = count_multiply_adds(build_model(f"resnet{depth}", stride_placement="torchvision"), (3, 224, 224))
        assert (tv > paper) == (depth >= 50)


def test_option_a_shortcut_is_zero_padded_subsampled_identity():
    block = build_model("cifar_resnet20").layer2[0]
    x = torch.randn(1, 16, 8, 8)
    y = block.downsample(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0


def test_plain_net_ignores_its_input_through_no_shortcut():
    # With the residual branch zeroed, a residual block passes x through, a plain block outputs 0.
    for name, expect_identity in (("cifar_resnet8", True), ("cifar_plain8", False)):
        block = build_model(name).layer1[0].eval()
        torch.nn.init.zeros_(block.bn2.weight)
        x = torch.rand(1, 16, 8, 8)
        y = block(x)
        assert torch.allclose(y, x) if expect_identity else torch.count_nonzero(y) == 0


def test_in_channels_for_grayscale():
    model = build_model("cifar_resnet20", in_channels=1, num_classes=10)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_torchvision_checkpoints_load_and_give_the_same_outputs(depth):
    torch.manual_seed(depth)
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    # Randomise BN's affine parameters and running statistics too, so every tensor matters.
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    ours = build_model(f"resnet{depth}", shortcut="B", stride_placement="torchvision")
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference.eval()(x)
        got = ours.eval()(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_paper_stride_placement_moves_the_bottleneck_stride_to_the_first_1x1():
    paper = build_model("resnet50", stride_placement="paper").layer2[0]
    tv = build_model("resnet50", stride_placement="torchvision").layer2[0]
    assert (paper.conv1.stride, paper.conv2.stride) == ((2, 2), (1, 1))
    assert (tv.conv1.stride, tv.conv2.stride) == ((1, 1), (2, 2))


@pytest.mark.parametrize("name", ["cifar_resnet26", "cifar_plain14", "cifar_resnet8"])
def test_any_6n_plus_2_cifar_depth_builds(name):
    spec = parse_model_name(name)
    n = (spec.depth - 2) // 6
    model = build_model(name)
    weighted = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())
    assert weighted == 6 * n + 2  # option A adds no weighted layers


@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("resnet19", {}, "valid: 18, 34, 50, 101, 152"),
        ("cifar_resnet21", {}, "not 6n+2"),
        ("vgg16", {}, "unknown model 'vgg16'"),
        ("resnet50", {"shortcut": "D"}, "unknown shortcut 'D'; valid: A, B, C"),
        ("resnet50", {"stride_placement": "v2"}, "valid: paper, torchvision"),
        ("resnet50", {"dropout": 0.5}, "unknown model option(s) dropout"),
        ("plain34", {"shortcut": "C"}, "plain net"),
        ("cifar_resnet20", {"num_classes": 0}, "num_classes must be a positive integer"),
    ],
)
def test_bad_names_and_options_are_refused_with_the_valid_choices(name, overrides, message):
    with pytest.raises(ValueError) as error:
        build_model(name, **overrides)
    assert message in str(error.value)
