"""What one run trains with, built from its config: the net, the recipe resolved for its data, the
``engine=fast`` trainer, and the reliability tests' NaN injection. Ray-free: the results table,
the report and the benches build nets the same way the workers do."""

from __future__ import annotations

import os

import torch

from orchestrator.config import ExperimentConfig
from orchestrator.data import train_images
from workloads.engine import Recipe
from workloads.engine.fast_cifar import FastCifarTrainer
from workloads.models import build_model


def build_run_model(config: ExperimentConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    options = {"stride_placement": config.stride_placement, "in_channels": in_channels, "num_classes": num_classes}
    if config.shortcut is not None:
        options["shortcut"] = config.shortcut
    return build_model(config.model, **options)


def run_recipe(config: ExperimentConfig) -> Recipe:
    """The schedule the run trains with, resolved once, in the driver: its recipe, overrides and
    depth rule (``ExperimentConfig.effective_recipe``), epochs turned into iterations of the global
    batch. An epoch is ``train images // batch_size`` iterations on any number of workers (each
    rank takes ``images // workers`` images in batches of ``batch_size // workers``). Driving a
    remote cluster whose nodes alone hold the data, an epoch recipe stays in epochs and the workers
    turn it. Logged as the run's ``recipe.*`` params and handed to its workers as is."""
    recipe = config.effective_recipe()
    if recipe.unit == "iteration":
        return recipe
    try:
        images = train_images(config)
    except FileNotFoundError:
        if not os.environ.get("RAY_ADDRESS"):
            raise
        return recipe
    if images < recipe.batch_size:
        raise ValueError(f"{images} training images of {config.name!r} give no batch of {recipe.batch_size}")
    return recipe.resolve(images // recipe.batch_size)


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
