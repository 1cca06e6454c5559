"""The paper's optimizer: SGD with momentum and weight decay."""

from __future__ import annotations

import torch
from torch import nn

from .recipes import Recipe
from .schedule import lr_at

_NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def build_optimizer(
    model: nn.Module,
    recipe: Recipe,
    *,
    fused: bool | None = None,
    foreach: bool | None = None,
) -> torch.optim.SGD:
    """SGD(momentum, weight decay) over `model`'s trainable parameters, as `recipe` says.

    Weight decay goes on every parameter, as in the paper, unless `recipe.no_decay_bn` is set:
    then BatchNorm weights and biases form a second group with weight decay 0.
    `fused` / `foreach` pick torch's multi-tensor kernels (None: torch's default choice).
    The lr starts at `lr_at(recipe, 0)` (an iteration-based recipe is needed); the train loop
    rewrites it before every step.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("model has no trainable parameters")
    groups: list[dict] = [{"params": trainable, "weight_decay": recipe.weight_decay}]
    if recipe.no_decay_bn:
        norm_ids = {
            id(p)
            for module in model.modules()
            if isinstance(module, _NORM_LAYERS)
            for p in module.parameters(recurse=False)
        }
        groups = [
            {"params": [p for p in trainable if id(p) not in norm_ids], "weight_decay": recipe.weight_decay},
            {"params": [p for p in trainable if id(p) in norm_ids], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(
        groups,
        lr=lr_at(recipe, 0),
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        fused=fused,
        foreach=foreach,
    )
