"""Read Parquet shards (from ``python -m orchestrator.prepare``) with Ray Data, decoded on CPU workers
or, for ImageNet training, on the consumer's device.

The decode/augment functions are the pure ones in ``workloads.data.decode``; Ray Data runs them in
``map_batches`` tasks, streaming, while the trainer consumes earlier batches. ``read_rows`` skips
that step and ``iter_device_train`` decodes and augments each batch of rows where it is consumed
(``workloads.data.device_decode``: nvJPEG on a GPU). In a Ray Train worker, each epoch:

    rows = read_epoch(out, "train", seed=seed, epoch=epoch, rank=rank, world_size=world_size)
    for images, labels in iter_device_train(rows, 256, mean=mean, device=device): ...
    # or decoded on CPU Ray Data workers:
    train = read_epoch(out, "train", seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                       augment="imagenet-train", mean=mean)
    for images, labels in iter_torch(train, 256, device=device): ...

A training run does not hand Ray Train its training split: each worker reads its own part of
every epoch's order (``read_epoch``, ``ShardLoader(order=EpochOrder(...))``). The order is one
sequence of all the split's rows, new every epoch and a function of (run seed, epoch) alone: the
shard files permuted, then the rows of each group of ``WINDOW_FILES`` consecutive files permuted
(a local shuffle over ~2,000 rows; ``prepare`` already mixed the classes into every shard). Rank r
of W reads positions [r*n, (r+1)*n) of it, n = rows // W. So:

- every epoch differs, and the same seed and epoch give the same order;
- a resumed run, whose engine calls ``set_epoch`` with the epoch restored from its checkpoint,
  reads the order it would have read without stopping;
- the ranks' parts, concatenated in rank order, are the same sequence on any rank count (what
  changes with W is which rows share a step, not which rows an epoch holds or their order);
- every rank gets the same row count, so data-parallel steps stay in lockstep.

Why not Ray Train's ``get_dataset_shard`` (``streaming_split``): it hands each worker whichever
blocks finish next, so which rows a rank sees depends on timing and on the rank count, and Ray
Data's own ``FileShuffleConfig`` reseeds every execution from a counter that starts at 0 in each
new process, so a resumed run would replay epoch 0's order. Nor every W-th row (as
``ResidentLoader`` does in memory): each rank would read every file, W times the I/O of one pass.
The evaluation split, whose order does not matter, still goes through ``get_dataset_shard``.
Augmentation randomness stays fresh every batch (not resumable, and not meant to be).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import ray.data
import torch

from orchestrator.config import ExperimentConfig
from orchestrator.data import EVAL_BATCH, RunData, manifest_of, missing_pixel_mean
from workloads.data import dataset_spec
from workloads.data.decode import center_view_batch, decode_batch, imagenet_train_batch
from workloads.data.device_decode import device_train_batch
from workloads.data.shards import (
    WINDOW_FILES,
    rank_windows,
    read_pixel_mean,
    resolve_output,
    shard_files,
    window_table,
)

AUGMENTS = {None: decode_batch, "imagenet-train": imagenet_train_batch, "center": center_view_batch}
ROWS_PER_BLOCK = 256  # rows per block a window read hands on: ~28 MB of ImageNet JPEGs


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
    _check_augment(augment, mean, seed)
    return _decoded(read_rows(out, split), augment, mean, seed, batch_size, num_cpus)


def _check_augment(augment: str | None, mean, seed: int | None = None) -> None:
    if augment not in AUGMENTS:
        raise ValueError(f"augment {augment!r}; valid: {list(AUGMENTS)}")
    if augment is not None and mean is None:
        raise ValueError(f"augment {augment!r} needs mean ([3] or [3,224,224], [0,1] units)")
    if seed is not None and augment != "imagenet-train":
        raise ValueError(f"seed is only used by augment='imagenet-train', got augment {augment!r}")


def _decoded(rows: ray.data.Dataset, augment, mean, seed, batch_size: int, num_cpus: float) -> ray.data.Dataset:
    """``rows`` decoded (and augmented) in ``map_batches`` tasks."""
    kwargs = {} if augment is None else {"mean": np.asarray(mean, dtype=np.float32)}
    if seed is not None:
        kwargs["seed"] = seed
    return rows.map_batches(
        AUGMENTS[augment], fn_kwargs=kwargs, batch_size=batch_size, batch_format="numpy", num_cpus=num_cpus
    )


def read_rows(out: str, split: str = "train") -> ray.data.Dataset:
    """A ``ray.data.Dataset`` of the finished shards' rows of ``out/<split>`` as stored: ``key``,
    ``image`` (the file's bytes; raw pixels with their ``shape`` for raw shards) and ``label``.
    Raises FileNotFoundError / ValueError when the folder holds no manifest or unfinished shards."""
    fs, base = resolve_output(out)
    manifest, paths = shard_files(fs, posixpath.join(base, split))
    return ray.data.read_parquet(paths, filesystem=fs).select_columns(_columns(manifest))


def _columns(manifest: dict) -> list[str]:
    return ["key", "image", "label"] + (["shape"] if manifest["plan"]["image_format"] == "raw" else [])


def _window_rows(batch: dict, *, fs, folder: str, windows: list, columns: list[str]):
    """Map function: the rows of each window named in ``batch``, in order, in blocks of ROWS_PER_BLOCK."""
    for index in batch["window"].tolist():
        table = window_table(fs, folder, windows[index], columns)
        for start in range(0, table.num_rows, ROWS_PER_BLOCK):
            yield table.slice(start, ROWS_PER_BLOCK)


def read_epoch(
    out: str,
    split: str = "train",
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    augment: str | None = None,
    mean=None,
    window_files: int = WINDOW_FILES,
    batch_size: int = 32,
    num_cpus: float = 1.0,
) -> ray.data.Dataset:
    """Rank ``rank`` of ``world_size``'s part of epoch ``epoch``'s order of ``out/<split>``, in that
    order (see the module's docstring): the rows as stored (``key``, ``image``, ``label``, and
    ``shape`` for raw shards) with ``augment=None``, else decoded as ``read_shards`` decodes them.

    One read task per window (its files read whole, permuted, cut to this rank's part), then the
    decode tasks; Ray Data keeps the order (``preserve_order`` on this dataset's context only).
    """
    _check_augment(augment, mean)
    fs, base = resolve_output(out)
    folder = posixpath.join(base, split)
    manifest, _ = shard_files(fs, folder)
    windows = rank_windows(manifest, seed, epoch, rank, world_size, window_files)
    if not windows:
        raise ValueError(f"{folder}: {manifest['rows']} rows give none to each of {world_size} ranks")
    items = ray.data.from_items([{"window": i} for i in range(len(windows))], override_num_blocks=len(windows))
    items.context.execution_options.preserve_order = True  # shared by the datasets derived from it
    rows = items.map_batches(
        _window_rows,
        fn_kwargs={"fs": fs, "folder": folder, "windows": windows, "columns": _columns(manifest)},
        batch_size=1,
        batch_format="numpy",
        num_cpus=num_cpus,
    )
    return rows if augment is None else _decoded(rows, augment, mean, None, batch_size, num_cpus)


@dataclass(frozen=True, eq=False)
class EpochOrder:
    """What a training worker reads each epoch: ``read_epoch``'s arguments but the epoch."""

    out: str
    split: str
    seed: int
    rank: int = 0
    world_size: int = 1
    augment: str | None = None  # None: the rows as stored (decode on the device)
    mean: object = None  # for ``augment``: [3] or [3,224,224], [0,1] units
    window_files: int = WINDOW_FILES

    def dataset(self, epoch: int) -> ray.data.Dataset:
        return read_epoch(
            self.out,
            self.split,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
            augment=self.augment,
            mean=self.mean,
            window_files=self.window_files,
        )


def run_mean(config: ExperimentConfig) -> np.ndarray:
    """The mean a sharded run subtracts ([0,1] units): with ``mean=pixel`` (for data sets whose spec
    has one) the training split's per-pixel mean image (float32 [3,224,224], written by ``prepare``,
    Sec. 3.4's "per-pixel mean"), else the spec's per-channel mean ([3]). Shards prepared before
    the image existed are refused for ``mean=pixel`` (``data.missing_pixel_mean`` says how to fix it)."""
    spec = dataset_spec(config.dataset)
    if config.mean == "channel" or not spec.pixel_mean:
        return np.asarray(spec.mean, dtype=np.float32)
    manifest_of(config, spec.splits["train"])  # a folder prepare never wrote says so, not "no mean image"
    fs, base = resolve_output(config.data_root)
    image = read_pixel_mean(fs, posixpath.join(base, spec.splits["train"]))
    if image is None:
        raise ValueError(missing_pixel_mean(config))
    return image


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
    (``device_train_batch``): float32 [B,3,224,224] minus ``mean`` ([3] or [3,224,224], [0,1] units), int64 [B]."""
    for batch in data.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=drop_last):
        yield device_train_batch(batch, mean, device)


def ray_datasets(config: ExperimentConfig) -> dict:
    """The Ray Data pipelines a sharded run hands to its TorchTrainer (empty for in-memory data): the
    evaluation split only. Each worker reads its part of the training split itself, in an order
    set per epoch (``sharded_run_data``), which Ray Train's split could not keep."""
    spec = dataset_spec(config.dataset)
    if not spec.sharded:
        return {}
    mean = run_mean(config)
    return {"test": read_shards(config.data_root, spec.splits["test"], augment=spec.eval_view, mean=mean)}


def sharded_run_data(
    config: ExperimentConfig, per_worker_batch: int, world_size: int, device: torch.device, rank: int | None = None
) -> RunData:
    """A sharded run's loaders in a Ray Train worker: its part of each epoch's training order
    (``EpochOrder``, seeded by ``config.seed``) and its shard of the evaluation pipeline of
    ``ray_datasets``. ``rank``: this worker's; None asks Ray Train's context."""
    spec = dataset_spec(config.dataset)
    manifest = manifest_of(config, spec.splits["train"])
    if rank is None:
        import ray.train

        rank = ray.train.get_context().get_world_rank()
    mean = run_mean(config)
    order = EpochOrder(
        config.data_root,
        spec.splits["train"],
        config.seed,
        rank,
        world_size,
        augment=None if config.decode == "device" else spec.train_augment,
        mean=mean,
    )
    return RunData(
        ShardLoader(
            "train",
            per_worker_batch,
            manifest["rows"] // world_size,
            device,
            drop_last=True,
            decode=config.decode,
            mean=mean,
            order=order,
        ),
        ShardLoader("test", EVAL_BATCH, None, device, drop_last=False),
        spec.channels,
        len(manifest["classes"]),
        spec.image_size,
    )


class ShardLoader:
    """A worker's batches of a sharded split, as the engine's loader: ``(images, labels)`` batches,
    ``len()`` batches per epoch.

    ``order`` (training): each epoch, ``set_epoch``'s part of that epoch's order (``EpochOrder``;
    the engine calls ``set_epoch`` before every epoch, with the restored epoch after a resume).
    Every rank gets ``rows`` rows, so with ``drop_last`` every rank runs the same number of steps.
    ``data``: a pipeline to read as it comes; None with no ``order`` (evaluation in a Ray Train
    worker) is this worker's shard of the Ray Train dataset ``name``.

    ``decode="cpu"``: the pipeline yields finished tensors. ``decode="device"``: it yields JPEG rows,
    decoded and augmented here on ``device`` (ImageNet training augmentation) minus ``mean``
    ([3] or [3,224,224], [0,1] units).
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
        mean=None,
        order: EpochOrder | None = None,
    ):
        self.name, self.batch_size, self.rows = name, batch_size, rows
        self.device, self.drop_last, self.decode, self.data, self.mean = device, drop_last, decode, data, mean
        self.order, self.epoch = order, 0

    def set_epoch(self, epoch: int) -> None:
        """Read epoch ``epoch``'s order next (with ``order``; a pipeline as it comes has none)."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.rows is None:
            raise TypeError(f"the {self.name} shard loader has no fixed length")
        return self.rows // self.batch_size

    def __iter__(self):
        if self.order is not None:
            shard = self.order.dataset(self.epoch)
        elif self.data is not None:
            shard = self.data
        else:
            import ray.train

            shard = ray.train.get_dataset_shard(self.name)
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
