"""Layer responses (the paper's Fig. 7): the standard deviation of each 3x3 layer's output.

"The responses are the outputs of each 3x3 layer, after BN and before other nonlinearity
(ReLU/addition)." So the hooks sit on the BatchNorm after every 3x3 conv inside the blocks:
``bn1`` and ``bn2`` of a ``BasicBlock``, ``bn2`` of a ``Bottleneck``. The stem and the shortcut
projections are not 3x3 layers of a block and are left out. Residual nets show smaller responses
than their plain twins, and deeper ResNets smaller still.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from workloads.models.resnet import BasicBlock, Bottleneck, ResNet

FIG7_IMAGES = 256  # test images per Fig. 7 analysis, by default


def response_layers(model: ResNet) -> list[tuple[str, nn.BatchNorm2d]]:
    """``(name, bn)`` of the BatchNorm after each 3x3 conv of every block, in forward order."""
    layers = []
    for name, module in model.named_modules():  # registration order is forward order here
        if isinstance(module, BasicBlock):
            layers += [(f"{name}.bn1", module.bn1), (f"{name}.bn2", module.bn2)]
        elif isinstance(module, Bottleneck):
            layers.append((f"{name}.bn2", module.bn2))
    return layers


def layer_responses(model: ResNet, batches: Iterable[torch.Tensor]) -> list[float]:
    """The standard deviation of each 3x3 layer's response over every element (images, channels,
    positions) of ``batches``, in the order of ``response_layers``. The model runs in eval mode
    (BN with its running statistics, as at test time) and is returned to its former mode."""
    layers = response_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no BasicBlock/Bottleneck 3x3 layers to analyse")
    # Per layer: element count, sum and sum of squares, in float64 so that millions of elements
    # do not lose the variance to cancellation.
    totals = torch.zeros(len(layers), 3, dtype=torch.float64)

    def record(index: int):
        def hook(module, inputs, output):
            # Read now: BasicBlock.bn1's output goes through an in-place ReLU right after this.
            values = output.detach().double()
            totals[index] += torch.stack(
                [torch.tensor(values.numel(), dtype=torch.float64), values.sum().cpu(), values.square().sum().cpu()]
            )

        return hook

    handles = [bn.register_forward_hook(record(i)) for i, (_, bn) in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    count, total, squares = totals.unbind(1)
    if not count.all():
        raise ValueError("no images were given: every batch was empty")
    variance = (squares / count - (total / count).square()).clamp_min(0)
    return variance.sqrt().tolist()
