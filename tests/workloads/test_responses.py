"""Fig. 7's analysis: the standard deviation of each 3x3 layer's response, after BN."""

import math

import pytest
import torch
from torch import nn

from workloads.analysis.responses import layer_responses, response_layers
from workloads.models import build_model


def count_block_3x3_convs(model: nn.Module) -> int:
    """3x3 convs inside the stages (the stem's conv is not in a block)."""
    return sum(
        1 for stage in model.stages() for m in stage.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    )


def trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial running statistics and affine terms, as a trained net has."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
    return model


@pytest.mark.parametrize("name, size", [("cifar_resnet14", 16), ("cifar_plain8", 16), ("resnet50", 64)])
def test_one_value_per_3x3_conv_in_the_blocks_all_finite(name, size):
    model = trained_looking(build_model(name, in_channels=1, num_classes=10))
    values = layer_responses(model, [torch.randn(4, 1, size, size)])
    assert len(values) == count_block_3x3_convs(model) == len(response_layers(model))
    assert all(math.isfinite(v) and v > 0 for v in values)


def test_layer_order_is_forward_order():
    names = [name for name, _ in response_layers(build_model("cifar_resnet14"))]
    assert names == [
        "layer1.0.bn1",
        "layer1.0.bn2",
        "layer1.1.bn1",
        "layer1.1.bn2",
        "layer2.0.bn1",
        "layer2.0.bn2",
        "layer2.1.bn1",
        "layer2.1.bn2",
        "layer3.0.bn1",
        "layer3.0.bn2",
        "layer3.1.bn1",
        "layer3.1.bn2",
    ]
    assert [name for name, _ in response_layers(build_model("resnet50"))][:2] == ["layer1.0.bn2", "layer1.1.bn2"]


def test_residual_and_plain_twins_with_the_same_weights_differ():
    residual = trained_looking(build_model("cifar_resnet14"))
    plain = build_model("cifar_plain14")
    plain.load_state_dict(residual.state_dict())  # option A: the same parameters, no shortcut ones
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    res_values, plain_values = layer_responses(residual, [x]), layer_responses(plain, [x])
    # The first layer sees the same input in both; later layers see the shortcut's sum or not.
    assert res_values[0] == pytest.approx(plain_values[0])
    assert res_values[2:] != pytest.approx(plain_values[2:])


def test_the_value_is_the_std_of_the_bn_output_over_all_batches_before_the_relu():
    model = trained_looking(build_model("cifar_resnet8"))
    batches = [torch.randn(3, 3, 8, 8), torch.randn(5, 3, 8, 8)]
    outputs = []
    handle = model.layer1[0].bn1.register_forward_hook(lambda m, i, o: outputs.append(o.clone()))
    model.train()
    values = layer_responses(model, batches)
    handle.remove()
    expected = torch.cat([o.flatten() for o in outputs]).double().std(unbiased=False)
    assert values[0] == pytest.approx(expected.item(), rel=1e-5)
    assert (torch.cat([o.flatten() for o in outputs]) < 0).any()  # read before the in-place ReLU
    assert model.training  # its mode is given back


def test_no_images_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        layer_responses(build_model("cifar_resnet8"), [])
