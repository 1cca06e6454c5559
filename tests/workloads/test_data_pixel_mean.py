"""ImageNet's per-pixel mean image (Sec. 3.4): written by ``write_shards`` (``prepare``) beside the
train manifest, resumably, and subtracted as a [3,224,224] image by every decode path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from tests.workloads.data_fixtures import smooth_rgb, write_odd_files
from workloads.data import center_view_batch, imagenet_train_batch, open_source, write_shards
from workloads.data.device_decode import device_train_batch
from workloads.data.shards import PIXEL_MEAN, PIXEL_SUMS, read_pixel_mean


def _tree(root: Path) -> None:
    """train/<wnid>/: 5 JPEGs of ImageNet-like aspect in two classes, plus the odd files in the
    second (CMYK and a PNG named .JPEG are kept, truncated and zero-byte ones quarantined)."""
    for label, wnid in enumerate(("n01440764", "n01443537")):
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for i in range(3 - label):
            pixels = smooth_rgb((60 + 7 * i, 80 - 5 * i), seed=10 * label + i)
            Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    write_odd_files(root / "train" / "n01443537")


def _write(root: Path, out: Path, **kw) -> dict:
    return write_shards(open_source("imagenet", "train", root), str(out), shard_size=2, max_bad_fraction=0.3, **kw)


def _independent_mean(root: Path, folder: Path) -> np.ndarray:
    """The definition, computed here without the module: every stored image (the shards' keys),
    shorter side resized to 256 (antialiased bilinear), central 224x224, [0,1] units, averaged."""
    keys = [k for p in sorted(folder.glob("part-*.parquet")) for k in pq.read_table(p)["key"].to_pylist()]
    total = np.zeros((3, 224, 224))
    for key in keys:
        with Image.open(root / key) as image:
            pixels = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
        h, w = pixels.shape[-2:]
        size = [256, round(w * 256 / h)] if h <= w else [round(h * 256 / w), 256]  # the other side rounded
        view = TF.center_crop(TF.resize(pixels, size, antialias=True), [224, 224])
        total += view.double().numpy() / 255.0
    return total / len(keys)


def test_prepare_writes_the_train_mean_image_beside_the_manifest(tmp_path):
    _tree(tmp_path / "src")
    summary = _write(tmp_path / "src", tmp_path / "out")
    folder = tmp_path / "out" / "train"
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["pixel_mean"]
    assert summary["pixel_mean"].endswith(f"train/{PIXEL_MEAN}") and entry["file"] == PIXEL_MEAN
    assert entry["shape"] == [3, 224, 224] and entry["images"] == manifest["rows"] == 5 + 2  # 2 quarantined
    mean = np.load(folder / PIXEL_MEAN)
    assert mean.dtype == np.float32 and mean.shape == (3, 224, 224)
    assert np.allclose(mean, _independent_mean(tmp_path / "src", folder), atol=1e-6)
    assert np.array_equal(read_pixel_mean(pafs.LocalFileSystem(), str(folder)), mean)
    assert not (folder / PIXEL_SUMS).exists()  # the per-shard sums are gone once the mean is written
    # Only ImageNet's train split gets one: val is scored with the train mean.
    _write(tmp_path / "src", tmp_path / "other", pixel_mean=False)
    assert json.loads((tmp_path / "other" / "train" / "manifest.json").read_text())["pixel_mean"] is None
    assert read_pixel_mean(pafs.LocalFileSystem(), str(tmp_path / "other" / "train")) is None


def test_an_interrupted_prepare_resumes_to_the_same_mean_without_decoding_kept_shards_again(tmp_path):
    _tree(tmp_path / "src")
    whole = _write(tmp_path / "src", tmp_path / "whole")
    stopped = tmp_path / "stopped" / "train"

    def stop(event):
        if event.index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path / "src", tmp_path / "stopped", on_shard=stop)
    assert len(list((stopped / PIXEL_SUMS).glob("*.npy"))) == 2  # shards 0 and 1 summed
    assert (
        not (stopped / PIXEL_MEAN).exists()
        and json.loads((stopped / "manifest.json").read_text())["pixel_mean"] is None
    )
    resumed = _write(tmp_path / "src", tmp_path / "stopped")
    assert resumed["kept"] == [0, 1]
    assert (stopped / PIXEL_MEAN).read_bytes() == (Path(whole["folder"]) / PIXEL_MEAN).read_bytes()
    assert (stopped / "manifest.json").read_bytes() == (Path(whole["folder"]) / "manifest.json").read_bytes()


def test_shards_written_before_the_mean_existed_get_it_from_the_kept_shards(tmp_path):
    _tree(tmp_path / "src")
    _write(tmp_path / "src", tmp_path / "out")
    folder = tmp_path / "out" / "train"
    expected = (folder / PIXEL_MEAN).read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "pixel_mean"}))
    (folder / PIXEL_MEAN).unlink()
    assert read_pixel_mean(pafs.LocalFileSystem(), str(folder)) is None  # such shards: per-channel mean
    summary = _write(tmp_path / "src", tmp_path / "out")
    assert summary["written"] == [] and (folder / PIXEL_MEAN).read_bytes() == expected


def test_a_mean_file_that_does_not_match_its_manifest_is_refused(tmp_path):
    _tree(tmp_path / "src")
    _write(tmp_path / "src", tmp_path / "out")
    folder = tmp_path / "out" / "train"
    np.save(folder / PIXEL_MEAN, np.zeros((3, 224, 224), np.float32))
    with pytest.raises(ValueError, match="pixel_mean.npy: checksum differs from the manifest's; rerun"):
        read_pixel_mean(pafs.LocalFileSystem(), str(folder))


def test_every_decode_path_subtracts_the_mean_image_pixel_by_pixel(tmp_path):
    """The same seeded augmentation with a mean image and with zeros differs by exactly the image."""
    _tree(tmp_path / "src")
    _write(tmp_path / "src", tmp_path / "out")
    folder = tmp_path / "out" / "train"
    mean = np.load(folder / PIXEL_MEAN)
    batch = {k: np.asarray(v, dtype=object) for k, v in pq.read_table(next(folder.glob("part-*"))).to_pydict().items()}
    batch["label"] = batch["label"].astype(np.int64)
    zeros = np.zeros((3,), np.float32)
    for with_mean, without in [
        (imagenet_train_batch(batch, mean, seed=4)["image"], imagenet_train_batch(batch, zeros, seed=4)["image"]),
        (center_view_batch(batch, mean)["image"], center_view_batch(batch, zeros)["image"]),
        (
            device_train_batch(batch, mean, "cpu", seed=4)[0].numpy(),
            device_train_batch(batch, zeros, "cpu", seed=4)[0].numpy(),
        ),
    ]:
        assert np.allclose(with_mean, without - mean[None], atol=1e-5)
