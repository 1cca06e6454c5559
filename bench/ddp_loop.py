"""The baseline of ``ray_overhead.py``: the worker's training loop under plain torch DDP, no Ray.

Launched by ``ray_overhead.py`` as ``torchrun --standalone --nproc-per-node W bench/ddp_loop.py
CONFIG_JSON OUTPUT_JSON``. Every rank builds its data shard, model and optimizer exactly as
``orchestrator.worker.train_worker`` does: the same ``lifecycle.RunState`` (net, seeds, DDP on gloo,
nccl with ``use_gpu``, ``train_epoch`` then ``evaluate`` per epoch). What it leaves out is what the
comparison is about: Ray Train, the checkpoint reports and MLflow. Rank 0 writes each epoch's images/s
(all ranks together) to OUTPUT_JSON.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from orchestrator.build import run_recipe  # noqa: E402
from orchestrator.config import ExperimentConfig  # noqa: E402
from orchestrator.data import build_run_data  # noqa: E402
from orchestrator.lifecycle import RunState  # noqa: E402


def main(config_json: str, output_json: str) -> None:
    config = ExperimentConfig(**json.loads(Path(config_json).read_text()))
    dist.init_process_group("nccl" if config.use_gpu else "gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}") if config.use_gpu else torch.device("cpu")
    recipe = run_recipe(config)
    data = build_run_data(config, recipe.per_worker_batch(world_size), rank, world_size, device)
    run = RunState(config, data, device, recipe, rank=rank, world_size=world_size)  # no run_id: no MLflow
    run.start()
    speeds = []
    while run.epoch < run.epochs:
        stats = run.train_epoch()
        run.end_epoch(stats)
        speeds.append(stats.images_per_second)
    if rank == 0:
        Path(output_json).write_text(
            json.dumps({"images_per_second": speeds, "world_size": world_size, "threads": torch.get_num_threads()})
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
