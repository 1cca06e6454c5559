"""The baseline of ``ray_overhead.py``: the worker's training loop under plain torch DDP, no Ray.

Launched by ``ray_overhead.py`` as ``torchrun --standalone --nproc-per-node W bench/ddp_loop.py
CONFIG_JSON OUTPUT_JSON``. Every rank builds its data shard, model and optimizer exactly as
``orchestrator.worker.train_worker`` does (same functions, same seeds), wraps the model in
``DistributedDataParallel`` on gloo (nccl with ``use_gpu``) and runs ``train_epoch`` then
``evaluate`` per epoch. What it leaves out is what the comparison is about: Ray Train, the
checkpoint reports and MLflow. Rank 0 writes each epoch's images/s (all ranks together) to
OUTPUT_JSON.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from orchestrator.config import ExperimentConfig  # noqa: E402
from orchestrator.data import build_run_data  # noqa: E402
from orchestrator.worker import build_run_model, resolved_recipe  # noqa: E402
from workloads.engine import broadcast_buffers, build_optimizer, evaluate, get_recipe, prepare_model, train_epoch  # noqa: E402


def main(config_json: str, output_json: str) -> None:
    config = ExperimentConfig(**json.loads(Path(config_json).read_text()))
    dist.init_process_group("nccl" if config.use_gpu else "gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}") if config.use_gpu else torch.device("cpu")
    on_gpu = device.type == "cuda"
    autocast = torch.bfloat16 if on_gpu else None
    torch.manual_seed(config.seed + rank)
    recipe = get_recipe(config.recipe, **config.recipe_overrides)
    data = build_run_data(config, recipe.per_worker_batch(world_size), rank, world_size, device)
    recipe = resolved_recipe(config, len(data.train))
    model = prepare_model(build_run_model(config, data.in_channels, data.num_classes), device, channels_last=on_gpu)
    optimizer = build_optimizer(model, recipe)
    model = DistributedDataParallel(model, device_ids=[device.index] if on_gpu else None)
    speeds, iteration = [], 0
    for epoch in range(math.ceil(recipe.total_iterations / len(data.train))):
        stats = train_epoch(model, data.train, optimizer, recipe, start_iteration=iteration, device=device,
                            epoch=epoch, autocast_dtype=autocast, channels_last=on_gpu, log_every=config.log_every)
        iteration = stats.end_iteration
        broadcast_buffers(model)
        evaluate(model, data.test, device, autocast)
        speeds.append(stats.images_per_second)
    if rank == 0:
        Path(output_json).write_text(json.dumps({"images_per_second": speeds, "world_size": world_size,
                                                 "threads": torch.get_num_threads()}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
