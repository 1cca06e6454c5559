"""Sharded training splits are read in a new, seeded order every epoch (orchestrator.shards,
workloads.data.shards.rank_windows): the same for the same seed and epoch, continued by a resumed
run, and one sequence whatever the rank count. On the tiny ILSVRC tree, 8 shards of 4 images."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pyarrow.parquet as pq
import pytest
import torch

from orchestrator.shards import EpochOrder, ShardLoader, read_epoch, sharded_run_data
from tests.orchestrator.test_imagenet import run_config, write_imagenet_shards
from workloads.data.shards import rank_windows, read_manifest, resolve_output, window_table

ROWS, SHARD_SIZE = 32, 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The tiny tree's train split as 8 shards, and its val split (sharded_run_data reads both)."""
    folder = tmp_path_factory.mktemp("order")
    write_imagenet_shards(folder, {"train": ROWS // 2, "val": 1}, {"train": SHARD_SIZE, "val": SHARD_SIZE})
    return folder


def keys(folder, seed: int, epoch: int, rank: int = 0, world_size: int = 1, column: str = "key") -> list:
    """Rank ``rank``'s part of the epoch's order, read with pyarrow alone (no Ray)."""
    fs, base = resolve_output(str(folder / "shards"))
    train = f"{base}/train"
    windows = rank_windows(read_manifest(fs, train), seed, epoch, rank, world_size)
    return [k for w in windows for k in window_table(fs, train, w, ["key", "label"]).column(column).to_pylist()]


def test_every_epoch_is_a_new_order_of_all_rows_and_the_same_seed_and_epoch_repeat_it(folder):
    stored = [k for p in sorted((folder / "shards" / "train").glob("part-*.parquet")) for k in pq.read_table(p)["key"]]
    epochs = [keys(folder, 0, epoch) for epoch in range(3)]
    for order in epochs:
        assert sorted(order) == sorted(str(k) for k in stored) and len(order) == ROWS
    assert len({tuple(order) for order in epochs}) == 3  # three epochs, three orders
    assert epochs[1] == keys(folder, 0, 1)  # the same seed and epoch: the same order
    assert keys(folder, 1, 1) != epochs[1]  # another seed: another order
    # Rows of one window are mixed, not read in file order: no epoch keeps the stored order.
    assert all(order != [str(k) for k in stored] for order in epochs)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_read_equal_disjoint_parts_of_the_one_sequence(folder, world_size):
    whole = keys(folder, 5, 2)
    parts = [keys(folder, 5, 2, rank, world_size) for rank in range(world_size)]
    per_rank = ROWS // world_size
    assert [len(p) for p in parts] == [per_rank] * world_size  # lockstep: the same count on every rank
    assert sum(parts, []) == whole[: per_rank * world_size]  # 1 rank or W: one sequence
    assert not set(parts[0]) & set(parts[1])


def test_read_epoch_keeps_the_order_through_ray_data(ray_local, folder):
    rows = read_epoch(str(folder / "shards"), "train", seed=5, epoch=2, rank=1, world_size=2)
    assert [str(k) for k in rows.to_pandas()["key"]] == keys(folder, 5, 2, 1, 2)


def test_a_resumed_loader_continues_the_order_of_the_run_it_resumes(ray_local, folder):
    """Rank 1 of 2 of a run with seed 3: epochs 0 and 1 from one loader, then epoch 1 again from a
    new loader, as a run restored after epoch 0 builds it (its engine calls set_epoch(1))."""
    config = run_config(folder, "decode=device", "seed=3")
    data = sharded_run_data(config, 4, 2, torch.device("cpu"), rank=1)
    assert isinstance(data.train.order, EpochOrder) and (data.train.order.seed, data.train.order.rank) == (3, 1)
    assert len(data.train) == ROWS // 2 // 4

    def labels(loader, epoch):
        loader.set_epoch(epoch)
        return torch.cat([y for _, y in loader]).tolist()

    run = [labels(data.train, epoch) for epoch in (0, 1)]
    resumed = sharded_run_data(config, 4, 2, torch.device("cpu"), rank=1).train
    assert labels(resumed, 1) == run[1]
    # The labels follow the rows of that epoch's order, batch after batch.
    for epoch in (0, 1):
        assert run[epoch] == keys(folder, 3, epoch, 1, 2, column="label")
    assert Counter(keys(folder, 3, 0, 1, 2)) != Counter(keys(folder, 3, 1, 1, 2))  # other rows, too


def test_a_loader_without_an_order_reads_its_pipeline_as_it_comes(ray_local, folder):
    rows = read_epoch(str(folder / "shards"), "train", seed=0, epoch=0)
    loader = ShardLoader(
        "train", 8, ROWS, torch.device("cpu"), drop_last=True, decode="device", data=rows, mean=[0.5] * 3
    )
    loader.set_epoch(4)  # nothing to choose: the pipeline is given
    assert torch.cat([y for _, y in loader]).tolist() == keys(folder, 0, 0, column="label")


def test_mean_pixel_needs_the_mean_image_prepare_stores_and_channel_does_not(folder, tmp_path):
    import json
    import shutil

    import numpy as np

    from orchestrator.data import data_shape
    from orchestrator.shards import run_mean
    from workloads.data import IMAGENET_MEAN

    config = run_config(folder)
    assert run_mean(config).shape == (3, 224, 224)  # prepare stored it: the paper's per-pixel mean
    channel = dataclasses.replace(config, mean="channel")
    assert np.allclose(run_mean(channel), IMAGENET_MEAN) and channel.hash() != config.hash()
    # Shards prepared before the mean image existed: refused in the driver, with the fix named.
    old = tmp_path / "old"
    shutil.copytree(folder / "shards", old)
    manifest = old / "train" / "manifest.json"
    manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "pixel_mean"}))
    stale = dataclasses.replace(config, data_root=str(old))
    with pytest.raises(
        ValueError, match=r"train holds no per-pixel mean image .* rerun the same python -m orchestrator.prepare"
    ):
        data_shape(stale)
    with pytest.raises(ValueError, match=r"or set mean=channel"):
        run_mean(stale)
    assert data_shape(dataclasses.replace(stale, mean="channel"))[0] == 3
