"""Distributed inference over Ray: every member's class probabilities on one image set.

The images go into Ray's object store once; each member's weights once. The work is cut into
(member x shard) Ray tasks, each of which rebuilds the member's model (one replica per task, on one
GPU or ``cpus`` CPU cores) and scores its shard with ``workloads.ensemble.view_probabilities``.
More nodes run more tasks at once, so scoring scales with the cluster; the driver only stitches
the shards back together in image order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import ray
import torch

from orchestrator.config import ExperimentConfig
from orchestrator.worker import build_run_model
from workloads.ensemble import view_probabilities


@dataclass(frozen=True)
class Member:
    """One model to score: its name (a column of the probability table), weights and config."""

    name: str
    run_id: str
    config: ExperimentConfig
    weights: dict  # the model's state_dict
    mean: torch.Tensor  # per-pixel training mean [C,H,W], [0,1] units, as the run trained with

    @property
    def in_channels(self) -> int:
        return self.weights["conv1.weight"].shape[1]

    @property
    def num_classes(self) -> int:
        return self.weights["fc.weight"].shape[0]


@ray.remote
def _score_shard(config: dict, weights: dict, mean: torch.Tensor, images: np.ndarray, start: int,
                 stop: int, view: str, batch_size: int, use_gpu: bool, threads: int) -> np.ndarray:
    torch.set_num_threads(threads)  # as many as the task reserved, not every core of the node
    config = ExperimentConfig(**config)
    model = build_run_model(config, weights["conv1.weight"].shape[1], weights["fc.weight"].shape[0])
    model.load_state_dict(weights)
    shard = torch.from_numpy(np.array(images[start:stop]))  # a writable copy of the shared images
    device = "cuda" if use_gpu else "cpu"
    return view_probabilities(model, shard, mean, view, batch_size=batch_size, device=device).numpy()


def default_shards(use_gpu: bool, cpus: float) -> int:
    """Shards per member: one per GPU, or per ``cpus`` CPU cores, that the cluster has."""
    resources = ray.cluster_resources()
    slots = resources.get("GPU", 0) if use_gpu else resources.get("CPU", 1) // cpus
    if use_gpu and slots < 1:
        raise ValueError("--gpu given but the Ray cluster has no GPU")
    return max(1, int(slots))


def score_members(members: list[Member], images: torch.Tensor, view: str, *, use_gpu: bool = False,
                  cpus: float = 1.0, shards: int | None = None, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Each member's probabilities ``[N, classes]`` (float32) on uint8 ``images`` [N,C,H,W], in image
    order; the member's views are averaged first (see ``workloads.ensemble``)."""
    shards = shards or default_shards(use_gpu, cpus)
    step = math.ceil(len(images) / shards)
    bounds = [(start, min(start + step, len(images))) for start in range(0, len(images), step)]
    images_ref = ray.put(images.numpy())
    resources = {"num_gpus": 1, "num_cpus": cpus} if use_gpu else {"num_cpus": cpus}
    threads = max(1, int(cpus))
    pending = {}
    for member in members:
        weights_ref = ray.put(member.weights)
        pending[member.name] = [
            _score_shard.options(**resources).remote(member.config.to_dict(), weights_ref, member.mean,
                                                     images_ref, start, stop, view, batch_size, use_gpu,
                                                     threads)
            for start, stop in bounds]
    return {name: torch.from_numpy(np.concatenate(ray.get(refs))) for name, refs in pending.items()}
