"""Learning rate as a pure function of the global iteration, applied without a torch scheduler.

A pure function keeps resume trivial (the lr depends only on the iteration stored in the
checkpoint, not on scheduler state) and makes the schedule independent of the world size.
"""

from __future__ import annotations

import bisect

import torch

from .recipes import Recipe


def lr_at(recipe: Recipe, iteration: int) -> float:
    """Learning rate for the optimizer step with 0-based global index `iteration`.

    Warm-up (when on) covers iterations [0, warmup_iterations); after it the base lr is divided
    by `lr_decay_factor` once per milestone reached (iteration >= milestone).
    """
    recipe._require_iterations("lr_at")
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    if recipe.warmup and iteration < recipe.warmup_iterations:
        return recipe.warmup_lr
    passed = bisect.bisect_right(recipe.milestones, iteration)
    # Divide (not multiply by 0.1) so 0.1 -> 0.01 -> 0.001 come out exact in binary floats.
    return recipe.lr / recipe.lr_decay_factor**passed


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write `lr` into every param group (host-side only: no device work, no sync)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
