"""Read Parquet shards (from ``python -m orchestrator.prepare``) with Ray Data, decoded on CPU workers
or, for ImageNet training, on the consumer's device.

The decode/augment functions are the pure ones in ``workloads.data.decode``; Ray Data runs them in
``map_batches`` tasks, streaming, while the trainer consumes earlier batches. ``read_rows`` skips
that step and ``iter_device_train`` decodes and augments each batch of rows where it is consumed
(``workloads.data.device_decode``: nvJPEG on a GPU). For a Ray Train run:

    train = read_shards(out, "train", augment="imagenet-train", mean=mean)
    trainer = TorchTrainer(loop, datasets={"train": train}, ...)
    # in the worker loop, each epoch:
    for images, labels in iter_torch(ray.train.get_dataset_shard("train"), 256, device=device): ...

    # or decoded on the worker's device (JPEG shards): datasets={"train": read_rows(out, "train")}, then
    for images, labels in iter_device_train(ray.train.get_dataset_shard("train"), 256, mean=mean, device=device): ...

Ray Train splits the dataset across workers (``get_dataset_shard``); every pass re-runs the
pipeline, so unseeded augmentation differs per epoch.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import numpy as np
import ray.data
import torch

from orchestrator.config import ExperimentConfig
from orchestrator.data import EVAL_BATCH, RunData, manifest_of
from workloads.data import dataset_spec
from workloads.data.decode import center_view_batch, decode_batch, imagenet_train_batch
from workloads.data.device_decode import device_train_batch
from workloads.data.shards import resolve_output, shard_files

AUGMENTS = {None: decode_batch, "imagenet-train": imagenet_train_batch, "center": center_view_batch}


def read_shards(
    out: str,
    split: str = "train",
    *,
    augment: str | None = None,
    mean=None,
    seed: int | None = None,
    batch_size: int = 32,
    num_cpus: float = 1.0,
) -> ray.data.Dataset:
    """A ``ray.data.Dataset`` of decoded rows from the finished shards of ``out/<split>``.

    ``augment``: None gives ``{"image": uint8 [C,H,W], "label": int64}`` rows (same-sized images,
    e.g. CIFAR); "imagenet-train" the paper's training augmentation and "center" the single-crop
    evaluation view, both float32 [3,224,224] minus ``mean`` ([3] or [3,224,224], [0,1] units).
    ``seed`` (imagenet-train only): None draws fresh randomness every pass; an int fixes each
    image's crop as a function of (seed, key). ``batch_size``: rows per decode task call;
    ``num_cpus``: CPUs reserved per decode task. Raises FileNotFoundError / ValueError when the
    folder holds no manifest or unfinished shards.
    """
    if augment not in AUGMENTS:
        raise ValueError(f"augment {augment!r}; valid: {list(AUGMENTS)}")
    if augment is not None and mean is None:
        raise ValueError(f"augment {augment!r} needs mean ([3] or [3,224,224], [0,1] units)")
    if seed is not None and augment != "imagenet-train":
        raise ValueError(f"seed is only used by augment='imagenet-train', got augment {augment!r}")
    kwargs = {} if augment is None else {"mean": np.asarray(mean, dtype=np.float32)}
    if seed is not None:
        kwargs["seed"] = seed
    return read_rows(out, split).map_batches(
        AUGMENTS[augment], fn_kwargs=kwargs, batch_size=batch_size, batch_format="numpy", num_cpus=num_cpus
    )


def read_rows(out: str, split: str = "train") -> ray.data.Dataset:
    """A ``ray.data.Dataset`` of the finished shards' rows of ``out/<split>`` as stored: ``key``,
    ``image`` (the file's bytes; raw pixels with their ``shape`` for raw shards) and ``label``.
    Raises FileNotFoundError / ValueError when the folder holds no manifest or unfinished shards."""
    fs, base = resolve_output(out)
    manifest, paths = shard_files(fs, posixpath.join(base, split))
    columns = ["key", "image", "label"] + (["shape"] if manifest["plan"]["image_format"] == "raw" else [])
    return ray.data.read_parquet(paths, filesystem=fs).select_columns(columns)


def iter_torch(
    data,
    batch_size: int,
    *,
    device: str | torch.device = "cpu",
    drop_last: bool = False,
    local_shuffle_buffer_size: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` torch batches of a Dataset from ``read_shards`` or of a Ray Train worker's
    ``ray.train.get_dataset_shard(...)``; ``local_shuffle_buffer_size`` rows mix across shards."""
    for batch in data.iter_torch_batches(
        batch_size=batch_size, device=device, drop_last=drop_last, local_shuffle_buffer_size=local_shuffle_buffer_size
    ):
        yield batch["image"], batch["label"]


def iter_device_train(
    data, batch_size: int, *, mean, device: str | torch.device, drop_last: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` batches of JPEG rows (a Dataset from ``read_rows`` of encoded shards, or a Ray
    Train worker's shard of one), decoded and augmented on ``device`` as the paper does
    (``device_train_batch``): float32 [B,3,224,224] minus ``mean`` ([3], [0,1] units), int64 [B]."""
    for batch in data.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=drop_last):
        yield device_train_batch(batch, mean, device)


def ray_datasets(config: ExperimentConfig) -> dict:
    """The Ray Data pipelines a sharded run hands to its TorchTrainer (empty for in-memory data)."""
    spec = dataset_spec(config.dataset)
    if not spec.sharded:
        return {}
    train = (
        read_rows(config.data_root, spec.splits["train"])
        if config.decode == "device"
        else read_shards(config.data_root, spec.splits["train"], augment=spec.train_augment, mean=spec.mean)
    )
    return {
        "train": train,
        "test": read_shards(config.data_root, spec.splits["test"], augment=spec.eval_view, mean=spec.mean),
    }


def sharded_run_data(config: ExperimentConfig, per_worker_batch: int, world_size: int, device: torch.device) -> RunData:
    """A sharded run's loaders in a Ray Train worker: its shards of the pipelines of ``ray_datasets``."""
    spec = dataset_spec(config.dataset)
    manifest = manifest_of(config, spec.splits["train"])
    return RunData(
        ShardLoader(
            "train",
            per_worker_batch,
            manifest["rows"] // world_size,
            device,
            drop_last=True,
            decode=config.decode,
            mean=spec.mean,
        ),
        ShardLoader("test", EVAL_BATCH, None, device, drop_last=False),
        spec.channels,
        len(manifest["classes"]),
        spec.image_size,
    )


class ShardLoader:
    """This worker's split of a Ray Data pipeline, as the engine's loader: ``(images, labels)``
    batches, ``len()`` batches per epoch. Ray Train splits every dataset equally over the workers,
    so with ``drop_last`` every rank runs the same number of steps. Each pass reruns the pipeline:
    a new shuffle of the read order and new random crops, so ``set_epoch`` has nothing to do.

    ``decode="cpu"``: the pipeline yields finished tensors. ``decode="device"``: it yields JPEG rows
    (``read_rows``), decoded and augmented here on ``device`` (ImageNet training augmentation).
    ``data``: the pipeline to read; None (in a Ray Train worker) is this worker's shard of ``name``.
    ``mean``: the data set's per-channel mean, for ``decode="device"``.
    """

    def __init__(
        self,
        name: str,
        batch_size: int,
        rows: int | None,
        device: torch.device,
        drop_last: bool,
        decode: str = "cpu",
        data=None,
        mean: tuple[float, ...] | None = None,
    ):
        self.name, self.batch_size, self.rows = name, batch_size, rows
        self.device, self.drop_last, self.decode, self.data, self.mean = device, drop_last, decode, data, mean

    def set_epoch(self, epoch: int) -> None:
        """Nothing to choose: the pipeline reshuffles and re-augments on every pass."""

    def __len__(self) -> int:
        if self.rows is None:
            raise TypeError(f"the {self.name} shard loader has no fixed length")
        return self.rows // self.batch_size

    def __iter__(self):
        import ray.train

        shard = self.data if self.data is not None else ray.train.get_dataset_shard(self.name)
        if self.decode == "device":
            batches = iter_device_train(
                shard, self.batch_size, mean=self.mean, device=self.device, drop_last=self.drop_last
            )
        else:
            batches = iter_torch(shard, self.batch_size, device=self.device, drop_last=self.drop_last)
        limit = len(self) if self.rows is not None else None
        for i, batch in enumerate(batches):
            if limit is not None and i >= limit:
                break  # the same number of steps on every rank, whatever the split's remainder
            yield batch
