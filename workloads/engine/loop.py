"""One training epoch, readable top to bottom.

Host syncs happen only at log steps and at the end of the epoch: per-step loss and error are
summed on the device, and the non-finite check (`divergence.py`) is agreed on at those points.
Under torch.distributed every rank must run the same number of steps (DDP needs that anyway);
the collectives at log steps run whether or not this rank has an `on_step` callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .divergence import NonFiniteWatch
from .recipes import Recipe
from .schedule import lr_at, set_lr


@dataclass(frozen=True)
class EpochStats:
    """What one `train_epoch` call did. Loss and error are over all ranks' training batches."""

    iterations: int  # optimizer steps taken by this call
    end_iteration: int  # global steps completed in the run = index of the next step
    loss: float  # mean cross-entropy per image (NaN if no step was taken)
    top1_error: float  # percent of training images misclassified, as seen (augmented, train mode)
    images: int  # images trained on, all ranks together
    seconds: float  # wall time of the call
    images_per_second: float  # all ranks together
    finished: bool  # end_iteration reached recipe.total_iterations


def train_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    recipe: Recipe,
    *,
    start_iteration: int,
    device: torch.device | str,
    epoch: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    on_step: Callable[[dict], None] | None = None,
    log_every: int = 50,
) -> EpochStats:
    """Train over `loader` once, or until `recipe.total_iterations` global steps are done.

    `loader` yields (images [B, C, H, W] float, labels [B] int64) per worker; B is
    `recipe.per_worker_batch(world_size)`. If `epoch` is given and the loader has `set_epoch`,
    it is called first (shuffling per epoch). Step i (0-based, global) uses `lr_at(recipe, i)`.
    `autocast_dtype` (e.g. torch.bfloat16) turns on autocast; `channels_last` converts each batch
    (convert the model with `prepare_model` too). Every `log_every` steps, `on_step` gets
    dict(iteration=steps completed, loss=mean loss and train_error=percent error over the steps
    since the last log (all ranks), lr=lr of the last step).
    Raises DivergenceError on every rank, at the same step, if any rank's loss is non-finite.
    """
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    device = torch.device(device)
    total = recipe.total_iterations
    if epoch is not None and hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    model.train()
    watch = NonFiniteWatch(device)
    # Device-side sums [loss * images, misclassified images, images]: since the last log step,
    # and over the epoch. float64 keeps the counts exact.
    window = torch.zeros(3, dtype=torch.float64, device=device)
    epoch_sums = torch.zeros(3, dtype=torch.float64, device=device)
    iteration = start_iteration
    started = time.perf_counter()

    batches = iter(loader) if iteration < total else iter(())
    for images, labels in batches:
        lr = lr_at(recipe, iteration)
        set_lr(optimizer, lr)
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)

        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(images)
            loss = F.cross_entropy(logits, labels)  # autocast runs it in float32
        watch.observe(iteration, loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        window[0] += loss.detach() * labels.shape[0]
        window[1] += (logits.detach().argmax(dim=1) != labels).sum()
        window[2] += labels.shape[0]
        iteration += 1

        if iteration % log_every == 0:
            watch.check()
            epoch_sums += window
            loss_sum, wrong, seen = _sum_over_ranks(window).tolist()
            window.zero_()
            if on_step is not None:
                on_step(dict(iteration=iteration, loss=loss_sum / seen, train_error=100.0 * wrong / seen, lr=lr))
        if iteration >= total:
            break

    watch.check()
    epoch_sums += window
    loss_sum, wrong, seen = _sum_over_ranks(epoch_sums).tolist()
    seconds = time.perf_counter() - started
    return EpochStats(
        iterations=iteration - start_iteration,
        end_iteration=iteration,
        loss=loss_sum / seen if seen else float("nan"),
        top1_error=100.0 * wrong / seen if seen else float("nan"),
        images=int(seen),
        seconds=seconds,
        images_per_second=seen / seconds if seconds > 0 else 0.0,
        finished=iteration >= total,
    )


def _sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """`values` summed over all ranks (a copy; the input is untouched), on the host."""
    values = values.clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()
