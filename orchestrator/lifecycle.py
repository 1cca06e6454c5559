"""One run's life inside a worker, from restore to its last metrics: the one epoch loop's parts.

``RunState`` holds a run's net, optimizer, resolved schedule, position and MLflow writer. The
single-run Ray Train worker (``worker.train_worker``) drives one per rank, the pack worker
(``packing.train_pack_worker``) one per member, stepping their fast trainers together, and
``bench/ddp_loop.py`` one per rank without MLflow. Each calls, in this order::

    restore(checkpoint)?  start()  { train_epoch() | a pack's step  ->  end_epoch(stats)  ->  save(folder)? }  finish()

and ``diverged(error)`` instead of going on when the loss went NaN/inf.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from orchestrator.build import build_run_model, fast_trainer, inject_nan
from orchestrator.checkpoints import restore_latest_good, save_state
from orchestrator.config import ExperimentConfig
from orchestrator.tracking import MetricsLog
from workloads.engine import (
    Recipe,
    broadcast_buffers,
    build_optimizer,
    compile_model,
    evaluate,
    plateau_decays,
    prepare_model,
    train_epoch,
)


def epoch_metrics(stats, test: dict, val: dict | None, epoch: int, epochs: int, recipe, image_size: int) -> dict:
    """What a run logs (and checkpoints) at the end of epoch ``epoch`` (1-based); ``val``: the
    validation split's evaluation, for a run with one."""
    held_out = (
        {} if val is None else {f"val_{k}": v for k, v in val.items() if k in ("loss", "top1_error", "top5_error")}
    )
    return held_out | {
        "epoch": epoch,
        "iteration": stats.end_iteration,
        "epochs": epochs,
        "total_iterations": recipe.total_iterations,
        "train_loss": stats.loss,
        "train_error": stats.top1_error,
        "test_loss": test["loss"],
        "test_top1_error": test["top1_error"],
        "test_top5_error": test["top5_error"],
        "images_per_second": stats.images_per_second,
        "image_size": image_size,
    }


def step_metrics(step: dict) -> dict:
    """What a run logs every ``log_every`` steps, from the engine's step record."""
    return {"train_loss_step": step["loss"], "train_error_step": step["train_error"], "lr": step["lr"]}


class RunState:
    """One run in one worker process. ``data``: this worker's ``orchestrator.data.RunData``.
    ``recipe``: the schedule the driver resolved (``build.run_recipe``; a dict as it travels),
    used as given (an epoch recipe, when the driver could not see the data, is turned into
    iterations of this worker's loader). ``run_id`` (with ``tracking_uri``): the MLflow run rank 0
    logs to; None logs nothing."""

    def __init__(
        self,
        config: ExperimentConfig,
        data,
        device: torch.device,
        recipe: Recipe | dict,
        *,
        rank: int = 0,
        world_size: int = 1,
        tracking_uri: str | None = None,
        run_id: str | None = None,
    ):
        self.config, self.data, self.device = config, data, device
        self.rank, self.world_size = rank, world_size
        on_gpu = device.type == "cuda"
        self.channels_last, self.autocast = on_gpu, torch.bfloat16 if on_gpu else None
        torch.manual_seed(config.seed + rank)
        recipe = recipe if isinstance(recipe, Recipe) else Recipe(**recipe)
        self.recipe = self.given = recipe.resolve(len(data.train))
        self.val_history: list[tuple[int, float]] = []  # (iteration, val top-1 error %) per epoch
        self.epochs = math.ceil(self.recipe.total_iterations / len(data.train))
        self.model = prepare_model(
            build_run_model(config, data.in_channels, data.num_classes), device, channels_last=on_gpu
        )
        # engine=fast: one worker (validated), the same batches and schedule, faster steps
        self.fast = (
            fast_trainer(config, self.model, data.train, self.recipe, device) if config.engine == "fast" else None
        )
        self.optimizer = self.fast.optimizer if self.fast else build_optimizer(self.model, self.recipe)
        self.iteration, self.epoch, self.metrics = 0, 0, {}
        self.log = MetricsLog(tracking_uri, run_id) if run_id is not None and rank == 0 else None

    def restore(self, checkpoint, member: str = "", adopt: bool = False) -> None:
        """Continue from the newest readable checkpoint (``member``: this run's folder in a pack's;
        ``adopt``: a sweep's trial may take a peer's, of another config: ``restore_latest_good``)."""
        self.iteration, self.epoch, fallback, restored = restore_latest_good(
            checkpoint, self.model, self.optimizer, self.config.hash(), member=member, adopt=adopt
        )
        self.val_history = [tuple(entry) for entry in restored.get("val_history", [])]
        self._follow_plateau()
        if self.fast:
            self.fast.bind_lr()
        if self.log:
            self.log.resume(restored, fallback)

    def start(self) -> None:
        """After any restore: the start on record, fault injection, then ``torch.compile`` and DDP."""
        if self.log:
            self.log.started(self.epoch)
        if self.config.inject_nan is not None:
            inject_nan(self.model, self.config.inject_nan, self.rank, start_iteration=self.iteration)
        if self.config.compile and not self.fast:
            self.model = compile_model(self.model)
        if dist.is_initialized() and self.world_size > 1:
            on_gpu = self.device.type == "cuda"
            self.model = DistributedDataParallel(self.model, device_ids=[self.device.index] if on_gpu else None)

    def train_epoch(self):
        """Train epoch ``self.epoch``; the engine's stats, or ``DivergenceError`` (on every rank alike)."""
        if self.fast:
            return self.fast.train_epoch(self.epoch, self.iteration)
        on_step = (lambda m: self.log.add(step_metrics(m), m["iteration"])) if self.log else None
        return train_epoch(
            self.model,
            self.data.train,
            self.optimizer,
            self.recipe,
            start_iteration=self.iteration,
            device=self.device,
            epoch=self.epoch,
            autocast_dtype=self.autocast,
            channels_last=self.channels_last,
            on_step=on_step,
            log_every=self.config.log_every,
        )

    def end_epoch(self, stats) -> dict:
        """After an epoch's steps: evaluate, log (never waiting for an unreachable server: the metrics
        stay pending) and return the epoch's metrics."""
        if self.fast and self.log:  # the fast trainer keeps its step records until the epoch ends
            for step in self.fast.logged_steps(self.config.log_every):
                self.log.add(step_metrics(step), step["iteration"])
        self.iteration, self.epoch = stats.end_iteration, self.epoch + 1
        broadcast_buffers(self.model)  # evaluate (and checkpoint) rank 0's model on every shard
        test = evaluate(self.model, self.data.test, self.device, self.autocast)
        val = evaluate(self.model, self.data.val, self.device, self.autocast) if self.data.val is not None else None
        self.metrics = epoch_metrics(stats, test, val, self.epoch, self.epochs, self.recipe, self.data.image_size)
        if val is not None:
            self.val_history.append((self.iteration, val["top1_error"]))
            self._follow_plateau()
        if self.log:
            self.log.add(self.metrics, self.iteration)
            self.log.flush()
        return self.metrics

    def _follow_plateau(self) -> None:
        """``schedule="plateau"``: the lr divisions its validation history calls for so far."""
        recipe = self.given
        if recipe.schedule == "plateau":
            decays = plateau_decays(self.val_history, recipe.plateau_patience, recipe.plateau_min_delta, recipe.total)
            self.recipe = dataclasses.replace(recipe, milestones=decays)

    def saves_after(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (1-based) ends with a checkpoint: every ``checkpoint_every``, and the last."""
        return epoch % self.config.checkpoint_every == 0 or epoch == self.epochs

    def save(self, folder: str) -> None:
        """Write the run's checkpoint file into ``folder``, with the metrics MLflow does not have yet."""
        save_state(
            folder,
            self.config,
            self.model,
            self.optimizer,
            self.iteration,
            self.epoch,
            self.metrics | {"val_history": [list(entry) for entry in self.val_history]},
            self.log.unlogged() if self.log else [],
        )

    def diverged(self, error) -> None:
        """Record a divergence (``DivergenceError`` or its text) on the run."""
        if self.log:
            self.log.diverged(error)

    def finish(self) -> None:
        """After the last checkpoint, so waiting out (or giving up on) the server risks no training;
        a retry restores that checkpoint, with what is still unlogged, and ends up here again."""
        if self.log:
            self.log.flush(final=True)
