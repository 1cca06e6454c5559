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


def plateau_decays(history: list[tuple[int, float]], patience: int, min_delta: float, total: int) -> tuple[int, ...]:
    """The iterations at which a ``schedule="plateau"`` run divides its lr, from its validation
    history ``[(iteration at the end of the epoch, val top-1 error %), ...]``.

    An evaluation that is not ``min_delta`` points below the best since the last division counts
    towards ``patience``; at ``patience`` in a row the lr is divided from that iteration on, and
    the count starts again. A pure function of the history, so a resumed run (its history is in
    its checkpoint) divides where an uninterrupted one would. Divisions at or after ``total`` are
    dropped: there is no step left to take at the lower rate.
    """
    decays, best, stale = [], float("inf"), 0
    for iteration, error in history:
        if error < best - min_delta:
            best, stale = error, 0
            continue
        stale += 1
        if stale >= patience:
            if iteration < total:
                decays.append(iteration)
            best, stale = error, 0
    return tuple(decays)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write `lr` into every param group (host-side only: no device work, no sync)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
