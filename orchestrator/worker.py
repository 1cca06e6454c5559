"""The Ray Train worker loop: one data-parallel rank of one training run.

What it trains with comes from ``workloads`` through ``lifecycle.RunState`` (net, schedule, steps,
evaluation, checkpoint file, MLflow metrics); this module only wires that to Ray Train: rank and
device, the checkpoint to resume from, and a report per epoch. Workers print nothing: the driver
reports progress.
"""

from __future__ import annotations

import tempfile

import ray.train
import ray.train.torch
import torch

from orchestrator.config import ExperimentConfig
from orchestrator.data import build_run_data
from orchestrator.lifecycle import RunState
from workloads.engine import DivergenceError, Recipe

TRAINED = "trained_iterations"  # reported with each epoch: iterations that epoch trained (a sweep's budget)


def train_worker(loop_config: dict) -> None:
    """Ray Train's ``train_loop_per_worker``: ``loop_config`` holds the resolved config and recipe as
    dicts, the MLflow ``tracking_uri`` and the ``run_id`` that rank 0 logs to, and a sweep's trials
    add ``start``, a checkpoint to begin from when Ray Train has none of its own (the trial's in
    Tune, maybe a PBT peer's, whose weights are adopted whatever its config hash), and ``pause_at``:
    epochs after whose report rank 0 waits for a word on ``gate`` (the scheduler's verdict:
    continue), the other ranks at their next collective."""
    config = ExperimentConfig(**loop_config["config"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device() if config.use_gpu else torch.device("cpu")
    recipe = Recipe(**loop_config["recipe"])
    data = build_run_data(config, recipe.per_worker_batch(world_size), rank, world_size, device)
    run = RunState(
        config,
        data,
        device,
        recipe,
        rank=rank,
        world_size=world_size,
        tracking_uri=loop_config["tracking_uri"],
        run_id=loop_config["run_id"],
    )
    own = ray.train.get_checkpoint()  # this Ray Train run's own, after a worker restart
    start = loop_config.get("start")
    if own is not None or start is not None:
        run.restore(own or start, adopt=own is None)
    run.start()
    while run.epoch < run.epochs:
        before = run.iteration
        try:
            stats = run.train_epoch()
        except DivergenceError as error:
            # Every rank raised at the same step. End normally, so Ray does not retry a
            # deterministic failure; rank 0 records it on the run, and the driver marks it failed.
            run.diverged(error)
            return
        metrics = run.end_epoch(stats) | {TRAINED: run.iteration - before}
        if rank == 0 and run.saves_after(run.epoch):
            with tempfile.TemporaryDirectory() as folder:
                run.save(folder)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            # A barrier: every rank reports as often as rank 0 does.
            ray.train.report(metrics)
        if rank == 0 and run.epoch in loop_config.get("pause_at", ()):
            loop_config["gate"].get()
    run.finish()
