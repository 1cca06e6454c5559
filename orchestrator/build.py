"""What one run trains with, built from its config: the net, the recipe resolved for its data, the
``engine=fast`` trainer, and the reliability tests' NaN injection. Ray-free: the results table,
the report and the benches build nets the same way the workers do."""

from __future__ import annotations

import torch

from orchestrator.config import ExperimentConfig
from workloads.engine import get_recipe, recipe_for_depth
from workloads.engine.fast_cifar import FastCifarTrainer
from workloads.models import build_model, parse_model_name


def build_run_model(config: ExperimentConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    options = {"stride_placement": config.stride_placement, "in_channels": in_channels, "num_classes": num_classes}
    if config.shortcut is not None:
        options["shortcut"] = config.shortcut
    return build_model(config.model, **options)


def per_worker_batch(config: ExperimentConfig, world_size: int) -> int:
    """Images per step on each of ``world_size`` workers (the recipe's batch is global)."""
    return get_recipe(config.recipe, **config.recipe_overrides).per_worker_batch(world_size)


def resolved_recipe(config: ExperimentConfig, iterations_per_epoch: int):
    """The schedule the run trains with: its recipe and overrides, the depth rule (warm-up for 110+
    layers), and epochs turned into iterations of ``iterations_per_epoch``."""
    recipe = get_recipe(config.recipe, **config.recipe_overrides)
    return recipe_for_depth(recipe, parse_model_name(config.model).depth).resolve(iterations_per_epoch)


def fast_trainer(
    config: ExperimentConfig, model: torch.nn.Module, loader, recipe, device: torch.device
) -> FastCifarTrainer:
    """The ``engine=fast`` trainer of a one-worker run over ``loader``'s resident data: the same
    batches and schedule as ``train_epoch`` over that loader."""
    on_gpu = device.type == "cuda"
    return FastCifarTrainer(
        model,
        loader.images,
        loader.labels,
        recipe,
        device=device,
        mean=loader.mean,
        seed=config.seed,
        pad=loader.pad,
        autocast_dtype=torch.bfloat16 if on_gpu else None,
        channels_last=on_gpu,
        compile=config.compile,
        # inject_nan's hook is Python: a CUDA graph replay would skip it
        cuda_graph=False if config.inject_nan else None,
    )


def inject_nan(model: torch.nn.Module, spec: str, rank: int, start_iteration: int) -> None:
    """Make this rank's logits NaN at global iteration ``ITERATION`` of ``spec`` ("RANK:ITERATION")."""
    target_rank, target_iteration = (int(part) for part in spec.split(":"))
    if rank != target_rank:
        return
    calls = iter(range(start_iteration, 2**62))

    def hook(module, inputs, output):
        # Training forwards only: evaluation runs the same module under inference mode.
        if module.training and next(calls) == target_iteration:
            return output * float("nan")
        return output

    model.register_forward_hook(hook)
