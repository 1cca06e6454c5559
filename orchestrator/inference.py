"""Distributed inference over Ray: every member's class probabilities on one image set.

Each member's weights go into Ray's object store once. The work is cut into (member x shard) Ray
tasks, each of which rebuilds the member's model (one replica per task, on one GPU or ``cpus`` CPU
cores) and scores its shard. More nodes run more tasks at once, so scoring scales with the
cluster; the driver only stitches the shards back together in image order.

- In-memory data sets (``score_members``): the images go into the object store once; a shard is
  a slice of them, scored with ``workloads.ensemble.view_probabilities``.
- Sharded data sets (``score_shards``, ImageNet val): a shard is one Parquet file, which its task
  reads itself (the driver never holds the images), a batch of rows at a time (about
  ``batch_size`` views' worth): the rows' JPEGs decoded together on the task's device
  (``decode_rows``: nvJPEG on a GPU), the ImageNet views of the whole batch built there and scored
  in batched forward passes (``workloads.ensemble.batch_probabilities``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import ray
import torch

from orchestrator.build import build_run_model
from orchestrator.config import ExperimentConfig
from orchestrator.data import ShardedSplit
from workloads.data.decode import decode_images
from workloads.data.device_decode import decode_jpegs
from workloads.data.shards import resolve_output
from workloads.ensemble import VIEWS_PER_IMAGE, batch_probabilities, view_probabilities


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


def _member_model(config: dict, weights: dict, threads: int) -> torch.nn.Module:
    torch.set_num_threads(threads)  # as many as the task reserved, not every core of the node
    model = build_run_model(ExperimentConfig(**config), weights["conv1.weight"].shape[1], weights["fc.weight"].shape[0])
    model.load_state_dict(weights)
    return model


@ray.remote
def _score_shard(
    config: dict,
    weights: dict,
    mean: torch.Tensor,
    images: np.ndarray,
    start: int,
    stop: int,
    view: str,
    batch_size: int,
    use_gpu: bool,
    threads: int,
) -> np.ndarray:
    model = _member_model(config, weights, threads)
    shard = torch.from_numpy(np.array(images[start:stop]))  # a writable copy of the shared images
    device = "cuda" if use_gpu else "cpu"
    return view_probabilities(model, shard, mean, view, batch_size=batch_size, device=device).numpy()


def decode_rows(batch: dict, device: torch.device | str) -> list[torch.Tensor]:
    """Shard rows (``pyarrow`` columns as lists) -> every row's uint8 ``[3,H,W]`` image on ``device``:
    encoded rows decoded together there (``decode_jpegs``: nvJPEG on a GPU, libjpeg on the CPU; a
    row in another format through PIL), raw rows (with ``shape``) reshaped and moved."""
    if "shape" in batch:
        return [image.to(device) for image in decode_images(batch)]
    return decode_jpegs(batch, device)


@ray.remote
def _score_file(
    config: dict,
    weights: dict,
    mean: torch.Tensor,
    data_root: str,
    path: str,
    rows: list[int] | None,
    view: str,
    use_gpu: bool,
    threads: int,
    batch_size: int,
) -> np.ndarray:
    device = torch.device("cuda" if use_gpu else "cpu")
    model = _member_model(config, weights, threads).to(device).eval()
    fs, _ = resolve_output(data_root)
    table = pq.read_table(path, filesystem=fs, columns=image_columns(pq.read_schema(path, filesystem=fs)))
    if rows is not None:
        table = table.take(rows)
    # Rows decoded at a time: enough for about batch_size views. A task holds their views at once:
    # 10-crop, 250 float32 views of 0.6 MB, ~150 MB; multi-scale, 25 4:3 images at all five scales
    # and mirrored, ~29 MB each, ~0.7 GB.
    rows_at_once = max(1, batch_size // VIEWS_PER_IMAGE[view])
    out = [
        batch_probabilities(model, decode_rows(batch.to_pydict(), device), mean, view, batch_size=batch_size).cpu()
        for batch in table.to_batches(max_chunksize=rows_at_once)
    ]
    return torch.cat(out).numpy()


def image_columns(schema) -> list[str]:
    """What scoring reads of a shard: the images, their keys (named in decode errors) and, for raw
    shards, their shapes; not the labels, which the driver has."""
    return [c for c in ("image", "key", "shape") if c in schema.names]


def default_shards(use_gpu: bool, cpus: float) -> int:
    """Shards per member: one per GPU, or per ``cpus`` CPU cores, that the cluster has."""
    resources = ray.cluster_resources()
    slots = resources.get("GPU", 0) if use_gpu else resources.get("CPU", 1) // cpus
    if use_gpu and slots < 1:
        raise ValueError("--gpu given but the Ray cluster has no GPU")
    return max(1, int(slots))


def score_members(
    members: list[Member],
    images: torch.Tensor,
    view: str,
    *,
    use_gpu: bool = False,
    cpus: float = 1.0,
    shards: int | None = None,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Each member's probabilities ``[N, classes]`` (float32) on uint8 ``images`` [N,C,H,W], in image
    order; the member's views are averaged first (see ``workloads.ensemble``)."""
    shards = shards or default_shards(use_gpu, cpus)
    step = math.ceil(len(images) / shards)
    bounds = [(start, min(start + step, len(images))) for start in range(0, len(images), step)]
    images_ref = ray.put(images.numpy())
    pending = {}
    for member in members:
        weights_ref = ray.put(member.weights)
        pending[member.name] = [
            _score_shard.options(**_resources(use_gpu, cpus)).remote(
                member.config.to_dict(),
                weights_ref,
                member.mean,
                images_ref,
                start,
                stop,
                view,
                batch_size,
                use_gpu,
                max(1, int(cpus)),
            )
            for start, stop in bounds
        ]
    return _gather(pending)


def score_shards(
    members: list[Member],
    split: ShardedSplit,
    view: str,
    *,
    use_gpu: bool = False,
    cpus: float = 1.0,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Each member's probabilities ``[N, classes]`` (float32) on the rows of ``split``, in its
    order: one task per (member, shard file), forward passes of up to ``batch_size`` 224x224 views
    (fewer of larger ones); the member's views are averaged first."""
    pending = {}
    for member in members:
        weights_ref = ray.put(member.weights)
        pending[member.name] = [
            _score_file.options(**_resources(use_gpu, cpus)).remote(
                member.config.to_dict(),
                weights_ref,
                member.mean,
                split.data_root,
                path,
                rows,
                view,
                use_gpu,
                max(1, int(cpus)),
                batch_size,
            )
            for path, rows in split.files
        ]
    return _gather(pending)


def _resources(use_gpu: bool, cpus: float) -> dict:
    # "DEFAULT": the tasks take the cluster's free resources even when started from inside a
    # placement group (an ablate trial's function, which holds only a sliver of the head node),
    # instead of being captured into it, where they could never fit.
    resources = {"num_gpus": 1, "num_cpus": cpus} if use_gpu else {"num_cpus": cpus}
    return resources | {"scheduling_strategy": "DEFAULT"}


def _gather(pending: dict[str, list]) -> dict[str, torch.Tensor]:
    """Every member's shards, waited for and put back together in image order."""
    return {name: torch.from_numpy(np.concatenate(ray.get(refs))) for name, refs in pending.items()}
