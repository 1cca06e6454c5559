"""Test-set evaluation: loss and top-1 / top-5 error, summed over ranks holding disjoint shards."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..metrics import topk_correct
from .wrapping import unwrap_model


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
    *,
    channels_last: bool = False,
) -> dict:
    """Evaluate `model` (in eval mode) over `loader`'s (images, labels) batches.

    Returns {"loss": mean cross-entropy per image, "top1_error", "top5_error": percent 0-100,
    "count": images}. When torch.distributed is initialised the sums are all-reduced, so with
    disjoint shards per rank every rank gets the whole set's numbers (a collective: all ranks must
    call it). Shards may differ in size: the plain module inside DDP is used, so no per-batch
    collective runs. The model's train/eval mode is restored afterwards.
    """
    device = torch.device(device)
    net = unwrap_model(model)
    was_training = net.training
    net.eval()
    # [loss summed over images, top-1 correct, top-5 correct, images]; float64 keeps counts exact.
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    try:
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = net(images)
            sums[0] += F.cross_entropy(logits.float(), labels, reduction="sum")
            sums[1:3] += topk_correct(logits, labels, ks=(1, 5))
            sums[3] += labels.shape[0]
    finally:
        net.train(was_training)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    loss_sum, correct1, correct5, count = sums.cpu().tolist()
    if count == 0:
        raise ValueError("evaluate got no samples (on any rank)")
    return {
        "loss": loss_sum / count,
        "top1_error": 100.0 * (count - correct1) / count,
        "top5_error": 100.0 * (count - correct5) / count,
        "count": int(count),
    }
