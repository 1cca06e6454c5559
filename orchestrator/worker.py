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
import torch.distributed as dist
from ray.util.queue import Empty

from orchestrator.config import ExperimentConfig
from orchestrator.data import build_run_data
from orchestrator.lifecycle import RunState
from workloads.engine import DivergenceError, Recipe

TRAINED = "trained_iterations"  # reported with each epoch: iterations that epoch trained (a sweep's budget)
# s: how long rank 0 waits at a pause for the scheduler's verdict (a ruling takes seconds: a
# controller poll, 2 s, and Tune's step); past it the trial is taken for gone and the run fails.
VERDICT_TIMEOUT_S = 600.0


def train_worker(loop_config: dict) -> None:
    """Ray Train's ``train_loop_per_worker``: ``loop_config`` holds the resolved config and recipe as
    dicts, the MLflow ``tracking_uri`` and the ``run_id`` that rank 0 logs to, and a sweep's trials
    add ``start``, a checkpoint to begin from when Ray Train has none of its own (the trial's in
    Tune, maybe a PBT peer's, whose weights are adopted whatever its config hash), and ``pause_at``:
    epochs after whose report every rank waits for the scheduler's verdict on ``gate``
    (``await_verdict``): train on, or stop there."""
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
        if run.epoch in loop_config.get("pause_at", ()) and not await_verdict(
            loop_config["gate"], run.epoch, rank, device
        ):
            break  # the sweep's scheduler stopped the trial here: it trains no further
    run.finish()


def await_verdict(gate, epoch: int, rank: int, device: torch.device) -> bool:
    """The sweep scheduler's verdict on ``epoch`` (True: train on), read by rank 0 from ``gate``
    and broadcast, so every rank goes on or stops together. Fails, saying so, when no word comes
    in VERDICT_TIMEOUT_S."""
    verdict = True
    if rank == 0:
        try:
            verdict = bool(gate.get(timeout=VERDICT_TIMEOUT_S))
        except Empty:
            raise RuntimeError(
                f"no verdict from the sweep's scheduler on epoch {epoch} in {VERDICT_TIMEOUT_S:.0f} s: "
                "its trial is gone"
            ) from None
    if dist.is_initialized() and dist.get_world_size() > 1:
        word = torch.tensor([int(verdict)], device=device)
        dist.broadcast(word, src=0)
        verdict = bool(word.item())
    return verdict
