"""The Ray Train worker loop: one data-parallel rank of one training run.

Everything it trains with comes from ``workloads`` (data, model, recipe, train step, evaluation,
checkpoint state); this module only wires it to Ray Train (rank, device, checkpoints, reports)
and to the run's MLflow record (rank 0 only). Workers print nothing: the driver reports progress.
"""

from __future__ import annotations

import math
import os
import posixpath
import tempfile
from pathlib import Path

import pyarrow.fs
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from orchestrator import tracking
from orchestrator.config import ExperimentConfig
from orchestrator.data import build_run_data
from workloads.engine import (CheckpointError, DivergenceError, broadcast_buffers, build_optimizer, compile_model,
                              evaluate, get_recipe, load_checkpoint, make_checkpoint, prepare_model,
                              recipe_for_depth, restore_checkpoint, save_checkpoint, train_epoch)
from workloads.engine.fast_cifar import FastCifarTrainer
from workloads.models import build_model, parse_model_name

CHECKPOINT_FILE = "state.pt"


def build_run_model(config: ExperimentConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    options = {"stride_placement": config.stride_placement, "in_channels": in_channels,
               "num_classes": num_classes}
    if config.shortcut is not None:
        options["shortcut"] = config.shortcut
    return build_model(config.model, **options)


def resolved_recipe(config: ExperimentConfig, iterations_per_epoch: int):
    recipe = get_recipe(config.recipe, **config.recipe_overrides)
    return recipe_for_depth(recipe, parse_model_name(config.model).depth).resolve(iterations_per_epoch)


class MetricsLog:
    """Rank 0's MLflow writer. One ``log_batch`` per epoch, skipping steps already logged.

    A worker killed mid-epoch restarts from the last checkpoint and redoes that epoch; the steps
    logged before the kill are not logged twice (exactly-once per step, by a high-water mark
    read from the run when the worker starts). If the tracking server is unreachable, training
    goes on: the metrics stay pending (and ride in each checkpoint, ``unlogged``, so a restart
    does not lose them) until a later flush gets through; the run's last flush (``final``) waits
    for the server up to ``tracking.tracking_patience_s()``, then fails the run.
    """

    def __init__(self, tracking_uri: str, run_id: str):
        tracking.fail_fast()
        self.client = tracking.MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        history = tracking.retrying(lambda: self.client.get_metric_history(run_id, "epoch"),
                                    "reading the run's logged epochs")
        self.logged_up_to = max((m.step for m in history), default=-1)
        self.pending: list[list] = []  # [step, timestamp in ms, {metric: value}], by step

    def add(self, metrics: dict, step: int, timestamp_ms: int | None = None) -> None:
        # The timestamp is fixed here, so a batch resent after a timeout that did land repeats
        # exactly what is stored, which MLflow's SQL store drops instead of duplicating.
        if step > self.logged_up_to:
            self.pending.append([step, timestamp_ms or tracking.now_ms(), metrics])

    def resume(self, restored: dict, fallback: str | None) -> None:
        """After a restore from a checkpoint holding ``restored`` metrics: what was pending when it
        was taken (MLflow was down) is pending again, and a fallback past unreadable newer
        checkpoints is noted on the run."""
        for step, timestamp, metrics in restored.get("unlogged", []):
            self.add(metrics, step, timestamp)
        if fallback:
            self.tag({tracking.CHECKPOINT_FALLBACK: fallback}, "recording the checkpoint fallback")

    def diverged(self, error) -> None:
        """Record a divergence (``DivergenceError`` or its text) on the run, after what is pending."""
        self.flush(final=True)
        self.tag({tracking.DIVERGED: str(error)}, "recording the divergence")

    def tag(self, tags: dict, doing: str) -> None:
        tracking.retrying(lambda: tracking.set_tags(self.client, self.run_id, tags), doing)

    def unlogged(self) -> list[list]:
        """What is pending, as a checkpoint can hold it (primitives only)."""
        return [[step, ts, dict(metrics)] for step, ts, metrics in self.pending]

    def flush(self, final: bool = False) -> bool:
        """Send the pending steps, oldest first, whole steps per batch (so a failure part-way sends
        none twice); returns whether all went. ``final`` waits for the server instead."""
        while self.pending:
            count, size = 0, 0
            for _, _, metrics in self.pending:  # MLflow takes at most 1000 metrics per batch
                if count and size + len(metrics) > 1000:
                    break
                count, size = count + 1, size + len(metrics)
            batch = [tracking.Metric(k, float(v), ts, step)
                     for step, ts, metrics in self.pending[:count] for k, v in metrics.items()]
            try:
                if final:
                    tracking.retrying(lambda: self.client.log_batch(self.run_id, metrics=batch),
                                      "logging the run's last metrics")
                else:
                    self.client.log_batch(self.run_id, metrics=batch)
            except Exception as error:  # noqa: BLE001 - kept for the next flush when transient
                if final or not tracking.is_transient(error):
                    raise
                return False
            self.logged_up_to = self.pending[count - 1][0]
            del self.pending[:count]
        return True


def kept_checkpoints(latest: ray.train.Checkpoint) -> list[ray.train.Checkpoint]:
    """``latest`` (what Ray Train resumes from), then the run's older kept checkpoints, newest first.

    Ray Train keeps a run's checkpoints side by side in its storage folder, named
    ``checkpoint_<date>_<time>.<microseconds>``, so their names sort by age.
    """
    fs = latest.filesystem
    folder, name = posixpath.split(latest.path.rstrip("/"))
    older = [info.path for info in fs.get_file_info(pyarrow.fs.FileSelector(folder))
             if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_")
             and info.base_name < name]
    return [latest] + [ray.train.Checkpoint(path, filesystem=fs) for path in sorted(older, reverse=True)]


def restore_latest_good(latest: ray.train.Checkpoint, model, optimizer, config_hash: str,
                        member: str = "") -> tuple[int, int, str | None, dict]:
    """Restore the newest readable checkpoint of the run: ``(iteration, epoch, note, metrics)``.

    A corrupt, truncated or missing newest file (a crash or a full disk mid-write) falls back to the
    previous kept checkpoint, and so on; ``note`` then names what was skipped. A checkpoint of another
    config is not a fallback case: that error is raised. With none readable, the error names the newest.
    ``member``: the sub-folder of each checkpoint that holds this run's file (packed runs share one
    checkpoint, a folder per run).
    """
    skipped = []
    for checkpoint in kept_checkpoints(latest):
        try:
            with checkpoint.as_directory() as folder:
                state = load_checkpoint(Path(folder) / member / CHECKPOINT_FILE)
            iteration, epoch = restore_checkpoint(state, model, optimizer, expected_config_hash=config_hash,
                                                  restore_rng=False)
        except (CheckpointError, FileNotFoundError) as error:
            reason = error.reason if isinstance(error, CheckpointError) else "missing"
            skipped.append(f"{posixpath.join(checkpoint.path, member, CHECKPOINT_FILE)} ({reason})")
            continue
        note = (f"resumed from {checkpoint.path} (epoch {epoch}); unreadable newer checkpoint(s) skipped: "
                + "; ".join(skipped)) if skipped else None
        return iteration, epoch, note, state["metrics"]
    raise CheckpointError(f"no readable checkpoint to resume from: {'; '.join(skipped)}")


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


def fast_trainer(config: ExperimentConfig, model: torch.nn.Module, loader, recipe,
                 device: torch.device) -> FastCifarTrainer:
    """The ``engine=fast`` trainer of a one-worker run over ``loader``'s resident data: the same
    batches and schedule as ``train_epoch`` over that loader."""
    on_gpu = device.type == "cuda"
    return FastCifarTrainer(model, loader.images, loader.labels, recipe, device=device, mean=loader.mean,
                            seed=config.seed, pad=loader.pad, autocast_dtype=torch.bfloat16 if on_gpu else None,
                            channels_last=on_gpu, compile=config.compile,
                            # inject_nan's hook is Python: a CUDA graph replay would skip it
                            cuda_graph=False if config.inject_nan else None)


def save_state(path: str, config: ExperimentConfig, model, optimizer, iteration: int, epoch: int, metrics: dict,
               log: MetricsLog) -> None:
    """Write the run's checkpoint file, with the metrics not yet in MLflow (``unlogged``)."""
    state = make_checkpoint(model, optimizer, iteration=iteration, epoch=epoch, config_hash=config.hash(),
                            config=config.to_dict(), metrics=metrics | {"unlogged": log.unlogged()})
    save_checkpoint(state, path)


def epoch_metrics(stats, test: dict, epoch: int, epochs: int, recipe, image_size: int) -> dict:
    """What a run logs (and checkpoints) at the end of epoch ``epoch`` (1-based)."""
    return {"epoch": epoch, "iteration": stats.end_iteration, "epochs": epochs,
            "total_iterations": recipe.total_iterations, "train_loss": stats.loss,
            "train_error": stats.top1_error, "test_loss": test["loss"],
            "test_top1_error": test["top1_error"], "test_top5_error": test["top5_error"],
            "images_per_second": stats.images_per_second, "image_size": image_size}


def step_metrics(step: dict) -> dict:
    """What a run logs every ``log_every`` steps, from the engine's step record."""
    return {"train_loss_step": step["loss"], "train_error_step": step["train_error"], "lr": step["lr"]}


def train_worker(loop_config: dict) -> None:
    """Ray Train's ``train_loop_per_worker``: ``loop_config`` holds the resolved config as a dict,
    the MLflow ``tracking_uri`` and the ``run_id`` that rank 0 logs to."""
    config = ExperimentConfig(**loop_config["config"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device() if config.use_gpu else torch.device("cpu")
    on_gpu = device.type == "cuda"
    torch.manual_seed(config.seed + rank)

    recipe = get_recipe(config.recipe, **config.recipe_overrides)
    data = build_run_data(config, recipe.per_worker_batch(world_size), rank, world_size, device)
    train_loader, test_loader = data.train, data.test
    recipe = resolved_recipe(config, len(train_loader))
    epochs = math.ceil(recipe.total_iterations / len(train_loader))

    model = build_run_model(config, data.in_channels, data.num_classes)
    model = prepare_model(model, device, channels_last=on_gpu)
    autocast = torch.bfloat16 if on_gpu else None
    fast = None
    if config.engine == "fast":  # one worker (validated): same batches and schedule, faster steps
        fast = fast_trainer(config, model, train_loader, recipe, device)
    optimizer = fast.optimizer if fast else build_optimizer(model, recipe)
    iteration, epoch, fallback, restored = 0, 0, None, {}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        iteration, epoch, fallback, restored = restore_latest_good(checkpoint, model, optimizer, config.hash())
        if fast:
            fast.bind_lr()
    if config.inject_nan is not None:
        inject_nan(model, config.inject_nan, rank, start_iteration=iteration)
    if config.compile and not fast:
        model = compile_model(model)
    if dist.is_initialized() and world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if on_gpu else None)

    log = MetricsLog(loop_config["tracking_uri"], loop_config["run_id"]) if rank == 0 else None
    if log:
        log.resume(restored, fallback)
    on_step = (lambda m: log.add(step_metrics(m), m["iteration"])) if log else None
    while epoch < epochs:
        try:
            if fast:
                stats = fast.train_epoch(epoch, iteration)
                for step in fast.logged_steps(config.log_every) if on_step else ():
                    on_step(step)
            else:
                stats = train_epoch(model, train_loader, optimizer, recipe, start_iteration=iteration,
                                    device=device, epoch=epoch, autocast_dtype=autocast,
                                    channels_last=on_gpu, on_step=on_step, log_every=config.log_every)
        except DivergenceError as error:
            # Every rank raised at the same step. End normally, so Ray does not retry a
            # deterministic failure; rank 0 records it on the run, and the driver marks it failed.
            if log:
                log.diverged(error)
            return
        iteration, epoch = stats.end_iteration, epoch + 1
        broadcast_buffers(model)  # evaluate (and checkpoint) rank 0's model on every shard
        test = evaluate(model, test_loader, device, autocast)
        metrics = epoch_metrics(stats, test, epoch, epochs, recipe, data.image_size)
        save = epoch % config.checkpoint_every == 0 or epoch == epochs
        if log:
            log.add(metrics, iteration)
            log.flush()  # never waits: an unreachable server leaves them pending
        if rank == 0 and save:
            with tempfile.TemporaryDirectory() as folder:
                save_state(os.path.join(folder, CHECKPOINT_FILE), config, model, optimizer, iteration, epoch,
                           metrics, log)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            # A barrier: every rank reports as often as rank 0 does.
            ray.train.report(metrics)
    if log:
        # After the last checkpoint, so waiting out (or giving up on) the server risks no training;
        # a retry restores that checkpoint, with what is still unlogged, and ends up here again.
        log.flush(final=True)
