"""Parameter and multiply-add counts, as the paper reports them (Table 1, Table 6)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BN's running statistics are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_multiply_adds(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-adds of one forward pass of one image of ``input_size`` (C, H, W).

    Counts convolutions and matrix products, as the paper's FLOPs do (BN, ReLU, pooling and the
    shortcut additions are a rounding error next to them). ``torch.utils.flop_counter`` reports
    2 FLOPs per multiply-add. The model runs on the meta device (shapes only), so this costs no
    compute and leaves ``model`` untouched.
    """
    # deepcopy first: ``Module.to("meta")`` would discard the caller's weights.
    meta_model = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(torch.empty(1, *input_size, device="meta"))
    return counter.get_total_flops() // 2
