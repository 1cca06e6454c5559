"""A run's data: in-memory data sets resident on each worker's device, or Parquet shards streamed
through Ray Data (ImageNet).

- In memory (Fashion-MNIST, CIFAR-10, class-folder trees, synthetic): every worker loads the
  split, keeps it on its device as one uint8 tensor and takes its shard of each epoch there
  (``workloads.data.ResidentLoader``); the mean image is the training split's per-pixel mean.
  With ``val_split``, the held-out images (``workloads.data.splits``) leave the training split
  before ``train_subset`` and the mean, and are evaluated every epoch for model selection.
- Sharded (``imagenet``, loaders in ``orchestrator.shards``; ``data_root`` is the output of
  ``python -m orchestrator.prepare`` with ``train/`` and ``val/`` splits): each worker reads its
  part of a new seeded order of the training shards every epoch, and Ray Train hands it its
  shard of the evaluation pipeline. ``decode="cpu"``: decode and augment on CPU Ray Data
  workers. ``decode="device"``: the training rows are decoded and augmented on the worker's own
  device; evaluation's center view stays on the CPU (one pass an epoch over the val split, much
  smaller than training's). The mean (``mean``) is the per-pixel mean image ``prepare`` stored
  beside the train shards, or the per-channel constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from orchestrator.config import ExperimentConfig
from workloads.data import (
    ResidentLoader,
    dataset_spec,
    load_dataset,
    per_pixel_mean,
    split_size,
    validation_size,
    validation_split,
)

SUBSET_SEED = 0  # the same training subset for every seed of a run, so seeds compare
EVAL_BATCH = 256  # images per evaluation batch on each worker


def subset_indices(total: int, limit: int | None) -> torch.Tensor:
    """The indices, ascending, of a fixed random subset of ``limit`` of ``total`` images (all when
    ``limit`` is None or not smaller)."""
    if limit is None or limit >= total:
        return torch.arange(total)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(SUBSET_SEED))
    return order[:limit].sort().values


def load_split(config: ExperimentConfig, split: str, reads: dict | None = None):
    """An in-memory split: "train" and "val" (the held-out part of the training split, when
    ``val_split`` is set), cut to ``train_subset``; "test", cut to ``test_subset``. ``reads``: as
    for ``load_splits``."""
    return load_splits(config, split, reads=reads)[0]


def load_splits(config: ExperimentConfig, *splits: str, reads: dict | None = None) -> list:
    """``load_split`` of each of ``splits``, reading each of the data set's files once: "train" and
    "val" are cut from the same read (cifar10-jpeg: 50,000 JPEGs to decode, 10-26 s on one core).
    ``reads``: a dict the caller shares between calls, so that later calls reuse what earlier
    ones read (keyed by data set, file split and root)."""
    if "val" in splits and config.val_split is None:
        raise ValueError(f"run {config.name!r} has no validation split (val_split is null)")
    read: dict = {} if reads is None else reads
    out = []
    for split in splits:
        source = "test" if split == "test" else "train"
        key = (config.dataset, source, config.data_root)
        if key not in read:
            read[key] = load_dataset(config.dataset, source, root=config.data_root)
        data = read[key]
        if split != "test" and config.val_split is not None:
            train, val = validation_split(data.labels, config.val_split)
            data = data.subset(val if split == "val" else train)
        limit = {"train": config.train_subset, "test": config.test_subset}.get(split)
        if limit is not None and limit < len(data):
            data = data.subset(subset_indices(len(data), limit))
        out.append(data)
    return out


@dataclass(frozen=True)
class ShardedSplit:
    """A sharded test split as evaluation tasks read it: each shard file with the rows to score."""

    data_root: str
    files: list[tuple[str, list[int] | None]]  # (path in data_root's filesystem, its rows; None: all)
    labels: torch.Tensor  # int64 [N], in the order of ``files`` and their rows
    num_classes: int


def sharded_test_split(config: ExperimentConfig) -> ShardedSplit:
    """The val shards of a sharded run's ``data_root``, cut to ``test_subset`` (a fixed random
    subset of the rows in shard order). Only the label column is read here: the images stay in
    the files for the tasks that score them."""
    import pyarrow.parquet as pq

    fs, manifest, paths = _split_files(config, dataset_spec(config.dataset).splits["test"])
    labels = [
        torch.tensor(pq.read_table(p, columns=["label"], filesystem=fs).column("label").to_numpy()) for p in paths
    ]
    keep = subset_indices(sum(map(len, labels)), config.test_subset)
    files, start = [], 0
    for path, file_labels in zip(paths, labels):
        rows = keep[(keep >= start) & (keep < start + len(file_labels))] - start
        if len(rows):
            files.append((path, None if len(rows) == len(file_labels) else rows.tolist()))
        start += len(file_labels)
    return ShardedSplit(config.data_root, files, torch.cat(labels)[keep], len(manifest["classes"]))


def training_mean(config: ExperimentConfig, images: torch.Tensor) -> torch.Tensor:
    """The mean an in-memory run subtracts ([0,1] units), from its training ``images`` (uint8
    [N,C,H,W]): their per-pixel mean image [C,H,W], or with ``mean=channel`` its average [C,1,1]."""
    mean = per_pixel_mean(images)
    return mean if config.mean == "pixel" else mean.mean(dim=(1, 2), keepdim=True)


def missing_pixel_mean(config: ExperimentConfig) -> str:
    """Why a sharded run with ``mean=pixel`` cannot start: its train shards hold no mean image."""
    folder = dataset_spec(config.dataset).splits["train"]
    return (
        f"{config.data_root}/{folder} holds no per-pixel mean image (prepared before prepare computed it): "
        "rerun the same python -m orchestrator.prepare command to add it, or set mean=channel"
    )


def train_images(config: ExperimentConfig) -> int:
    """Images in the run's training split (after ``val_split`` and ``train_subset``)."""
    spec = dataset_spec(config.dataset)
    if spec.sharded:
        return manifest_of(config, spec.splits["train"])["rows"]
    total = split_size(config.dataset, "train", root=config.data_root)  # what load_split's cuts leave
    if config.val_split is not None:
        total -= validation_size(config.val_split, total)
    return total if config.train_subset is None else min(total, config.train_subset)


@dataclass
class RunData:
    train: object  # iterable of (images, labels) batches with set_epoch and len
    test: object
    in_channels: int
    num_classes: int
    image_size: int
    val: object = None  # the validation split's batches, when the run has one


def data_shape(config: ExperimentConfig) -> tuple[int, int, int]:
    """(in_channels, num_classes, image_size), read from the data itself (shards: the manifests),
    so a wrong path or an unprepared folder fails here, in the driver."""
    spec = dataset_spec(config.dataset)
    if spec.sharded:
        manifests = [manifest_of(config, folder) for folder in spec.splits.values()]
        image_format = manifests[0]["plan"]["image_format"]
        if config.mean == "pixel" and spec.pixel_mean and not manifests[0].get("pixel_mean"):
            raise ValueError(missing_pixel_mean(config))
        if config.decode == "device" and image_format != "encoded":
            raise ValueError(
                f"decode 'device' decodes JPEG bytes, but {config.data_root}/{spec.splits['train']} holds "
                f"{image_format!r} pixels (prepare --format {image_format}); use decode=cpu, or prepare "
                "the train split again with --format encoded into another --out"
            )
        return spec.channels, len(manifests[0]["classes"]), spec.image_size
    data = load_split(config, "test")
    if config.val_split is not None:
        train_images(config)  # a val_split too large for the training split fails here
    return data.in_channels, data.num_classes, data.image_size


def build_run_data(
    config: ExperimentConfig, per_worker_batch: int, rank: int, world_size: int, device: torch.device
) -> RunData:
    """This worker's training and test loaders."""
    spec = dataset_spec(config.dataset)
    if spec.sharded:
        from orchestrator.shards import sharded_run_data

        return sharded_run_data(config, per_worker_batch, world_size, device, rank)
    train, test, *val = load_splits(config, "train", "test", *(["val"] if config.val_split is not None else []))
    mean = training_mean(config, train.images)
    train_loader = ResidentLoader(
        train.images,
        train.labels,
        per_worker_batch,
        train=True,
        mean=mean,
        device=device,
        rank=rank,
        world_size=world_size,
        seed=config.seed,
    )

    def evaluation(split):
        return ResidentLoader(
            split.images,
            split.labels,
            EVAL_BATCH,
            train=False,
            mean=mean,
            device=device,
            rank=rank,
            world_size=world_size,
        )

    if len(train_loader) == 0:
        raise ValueError(f"{len(train)} training images give no batch of {per_worker_batch} per worker")
    return RunData(
        train_loader,
        evaluation(test),
        train.in_channels,
        train.num_classes,
        train.image_size,
        evaluation(val[0]) if val else None,
    )


def manifest_of(config: ExperimentConfig, folder: str) -> dict:
    return _split_files(config, folder)[1]


def _split_files(config: ExperimentConfig, folder: str) -> tuple:
    """``(filesystem, manifest, shard paths)`` of one split folder of a sharded run's data root."""
    from workloads.data.shards import resolve_output, shard_files

    if not config.data_root:
        raise FileNotFoundError(
            f"data set {config.dataset!r} reads Parquet shards: pass --data-root "
            "DIR_OR_URI, the --out of python -m orchestrator.prepare --dataset imagenet"
        )
    fs, base = resolve_output(config.data_root)
    manifest, paths = shard_files(fs, f"{base.rstrip('/')}/{folder}")
    return fs, manifest, paths
