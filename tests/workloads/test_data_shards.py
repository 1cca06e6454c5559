"""Parquet shards (pyarrow only, no Ray): exact round trips, quarantine, determinism, resume."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from tests.workloads.data_fixtures import (
    smooth_rgb,
    write_cifar10,
    write_fashion_mnist,
    write_odd_files,
    write_png_tree,
)
from workloads.data import (
    decode_batch,
    decode_image_file,
    imagenet_train_batch,
    list_shard_datasets,
    open_source,
    write_shards,
)


def _jpeg_tree(root: Path) -> None:
    """root/a/000{0,1,2}.jpg, root/b/000{0,1}.jpg plus ImageNet's odd files in b: CMYK, PNG named
    .JPEG, truncated, zero bytes (9 inputs, 2 corrupt)."""
    for label, name in enumerate("ab"):
        (root / name).mkdir(parents=True)
        for i in range(3 - label):
            Image.fromarray(smooth_rgb((30 + 2 * i, 40), seed=10 * label + i)).save(
                root / name / f"{i:04d}.jpg", format="JPEG", quality=90
            )
    write_odd_files(root / "b")


def _rows(folder: Path) -> dict:
    """All rows of all shards in ``folder`` as one dict of columns, in shard order."""
    tables = [pq.read_table(p) for p in sorted(folder.glob("part-*.parquet"))]
    columns = {}
    for table in tables:
        for name, values in table.to_pydict().items():
            columns.setdefault(name, []).extend(values)
    return columns


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.mark.parametrize("dataset", ["cifar10", "fashion-mnist"])
def test_tensor_sources_round_trip_to_exact_pixels(tmp_path, dataset):
    if dataset == "cifar10":
        expected = write_cifar10(tmp_path / "src", per_batch=7)["train"]  # 35 train images, Python-2 pickles
    else:
        images, labels = write_fashion_mnist(tmp_path / "src", n_train=35)["train"]
        expected = (images[:, None], labels)
    summary = write_shards(open_source(dataset, "train", tmp_path / "src"), str(tmp_path / "out"), shard_size=12)
    folder = tmp_path / "out" / "train"
    assert summary["shards"] == 3 and summary["written"] == [0, 1, 2] and summary["rows"] == 35
    rows = _rows(folder)
    batch = decode_batch({k: np.array(v, dtype=object if k == "image" else None) for k, v in rows.items()})
    index = [int(key.split("/")[1]) for key in rows["key"]]
    assert sorted(index) == list(range(35)) and index != list(range(35))  # the train split is shuffled
    np.testing.assert_array_equal(batch["image"], expected[0][index])
    np.testing.assert_array_equal(batch["label"], expected[1][index])
    assert set(rows["split"]) == {"train"}
    manifest = _manifest(folder)
    assert manifest["complete"] and manifest["plan"]["image_format"] == "raw"
    assert list(manifest["class_counts"].values()) == np.bincount(expected[1], minlength=10).tolist()
    assert [s["rows"] for s in manifest["shards"]] == [12, 12, 11]


def test_file_tree_keeps_bytes_as_on_disk_and_quarantines_corrupt_files(tmp_path):
    _jpeg_tree(tmp_path / "tree")
    summary = write_shards(
        open_source("folder", "val", tmp_path / "tree"), str(tmp_path / "out"), shard_size=4, max_bad_fraction=0.25
    )
    folder = tmp_path / "out" / "val"
    rows = _rows(folder)
    # Eval splits keep the source order (class, then file name); corrupt files are left out.
    assert rows["key"] == [
        "a/0000.jpg",
        "a/0001.jpg",
        "a/0002.jpg",
        "b/0000.jpg",
        "b/0001.jpg",
        "b/cmyk.JPEG",
        "b/png.JPEG",
    ]
    assert rows["label"] == [0, 0, 0, 1, 1, 1, 1]
    for key, data in zip(rows["key"], rows["image"]):
        assert data == (tmp_path / "tree" / key).read_bytes()
    decoded = decode_batch({"image": np.array(rows["image"][5:], dtype=object), "label": np.array([1, 1])})
    for image, key in zip(decoded["image"], rows["key"][5:]):  # CMYK and PNG-as-JPEG, both 30x40 RGB
        np.testing.assert_array_equal(image, decode_image_file(tmp_path / "tree" / key).numpy())
    manifest = _manifest(folder)
    assert summary["quarantined"] == 2 and manifest["class_counts"] == {"a": 3, "b": 4}
    assert {q["key"]: q["label"] for q in manifest["quarantined"]} == {"b/empty.JPEG": 1, "b/truncated.JPEG": 1}
    assert all(q["reason"] for q in manifest["quarantined"])
    # Shards hold inputs 0-3, 4-7, 8: a corrupt file leaves its shard short, here the last one empty.
    assert [s["rows"] for s in manifest["shards"]] == [4, 3, 0]


def test_raw_format_of_a_file_tree_stores_decoded_pixels_and_shape(tmp_path):
    images, labels = write_png_tree(tmp_path / "tree", ["x", "y"], per_class=3, size=8)
    write_shards(open_source("folder", "test", tmp_path / "tree"), str(tmp_path / "out"), image_format="raw")
    rows = _rows(tmp_path / "out" / "test")
    assert rows["shape"] == [[3, 8, 8]] * 6
    batch = decode_batch({k: np.array(v, dtype=object if k == "image" else None) for k, v in rows.items()})
    np.testing.assert_array_equal(batch["image"], images)
    np.testing.assert_array_equal(batch["label"], labels)


def test_imagenet_train_layout_keys_are_relative_to_the_root(tmp_path):
    write_png_tree(tmp_path / "train", ["n02", "n01"], per_class=2, suffix=".JPEG")
    write_shards(open_source("imagenet", "train", tmp_path), str(tmp_path / "out"))
    rows = _rows(tmp_path / "out" / "train")
    assert sorted(zip(rows["key"], rows["label"])) == [
        ("train/n01/0000.JPEG", 0),
        ("train/n01/0001.JPEG", 0),
        ("train/n02/0000.JPEG", 1),
        ("train/n02/0001.JPEG", 1),
    ]


def test_same_input_gives_byte_identical_shards_locally_and_through_a_file_uri(tmp_path):
    _jpeg_tree(tmp_path / "tree")
    source = open_source("folder", "train", tmp_path / "tree")
    write_shards(source, str(tmp_path / "one"), shard_size=3, max_bad_fraction=0.25)
    write_shards(source, (tmp_path / "two").as_uri(), shard_size=3, max_bad_fraction=0.25)
    one = {p.name: p.read_bytes() for p in (tmp_path / "one" / "train").iterdir()}
    two = {p.name: p.read_bytes() for p in (tmp_path / "two" / "train").iterdir()}
    assert sorted(one) == ["manifest.json"] + [f"part-{i:05d}-of-00003.parquet" for i in range(3)]
    assert one == two


def test_rerun_rewrites_only_missing_or_damaged_shards(tmp_path):
    write_cifar10(tmp_path / "src", per_batch=4)
    source = open_source("cifar10", "test", tmp_path / "src")  # 4 images: shards of 1
    folder = tmp_path / "out" / "test"
    write_shards(source, str(tmp_path / "out"), shard_size=1)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.glob("part-*")}
    (folder / "part-00001-of-00004.parquet").unlink()
    (folder / "part-00002-of-00004.parquet").write_bytes(b"damaged")
    summary = write_shards(source, str(tmp_path / "out"), shard_size=1)
    assert summary["written"] == [1, 2] and summary["kept"] == [0, 3]
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.glob("part-*")}
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    assert after["part-00000-of-00004.parquet"][1] == before["part-00000-of-00004.parquet"][1]
    with pytest.raises(ValueError, match=r"differs in \['shard_size'\]"):
        write_shards(source, str(tmp_path / "out"), shard_size=2)


def test_too_many_corrupt_files_stop_before_their_shard_is_written(tmp_path):
    _jpeg_tree(tmp_path / "tree")
    source = open_source("folder", "val", tmp_path / "tree")
    with pytest.raises(
        ValueError,
        match=r"1 of 9 inputs are corrupt so far, more than --max-bad-fraction "
        r"0.001 allows \(0\); e.g. b/empty.JPEG: zero bytes",
    ):
        write_shards(source, str(tmp_path / "out"), shard_size=4)
    folder = tmp_path / "out" / "val"
    # Shard 0 (all good) is complete and recorded; shard 1 (with the zero-byte file) was never written.
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "part-00000-of-00003.parquet"]
    assert not _manifest(folder)["complete"] and len(_manifest(folder)["shards"]) == 1
    summary = write_shards(source, str(tmp_path / "out"), shard_size=4, max_bad_fraction=0.25)
    assert summary["kept"] == [0] and summary["written"] == [1, 2]


def test_bad_options_name_the_value_and_the_choices(tmp_path):
    write_cifar10(tmp_path / "src", per_batch=2)
    source = open_source("cifar10", "test", tmp_path / "src")
    with pytest.raises(ValueError, match=r"valid format for it: 'raw'"):
        write_shards(source, str(tmp_path / "out"), image_format="encoded")
    with pytest.raises(ValueError, match=r"shard size 0"):
        write_shards(source, str(tmp_path / "out"), shard_size=0)
    valid = repr(list_shard_datasets()).replace("[", r"\[")
    with pytest.raises(ValueError, match=r"unknown data set 'mnist'; valid: " + valid):
        open_source("mnist")
    with pytest.raises(ValueError, match=r"cifar10-jpeg split 'val'; valid: \['test', 'train'\]"):
        open_source("cifar10-jpeg", "val", tmp_path)
    with pytest.raises(FileNotFoundError, match="class-folder image tree"):
        open_source("folder", "train", tmp_path / "nowhere")


def _encoded_batch(n: int) -> dict:
    data = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(smooth_rgb((30, 40), seed=i)).save(buffer, format="JPEG")
        data.append(buffer.getvalue())
    return {
        "key": np.array([f"k{i}" for i in range(n)], dtype=object),
        "image": np.array(data, dtype=object),
        "label": np.arange(n),
    }


def test_imagenet_train_batch_is_a_function_of_seed_and_key_not_of_batching():
    batch = _encoded_batch(4)
    mean = np.full(3, 0.5, dtype=np.float32)
    whole = imagenet_train_batch(batch, mean, seed=7)
    halves = [
        imagenet_train_batch({k: v[s] for k, v in batch.items()}, mean, seed=7) for s in (slice(0, 2), slice(2, 4))
    ]
    assert whole["image"].shape == (4, 3, 224, 224) and whole["image"].dtype == np.float32
    np.testing.assert_array_equal(whole["image"], np.concatenate([h["image"] for h in halves]))
    np.testing.assert_array_equal(whole["label"], np.arange(4))
    assert not np.array_equal(whole["image"], imagenet_train_batch(batch, mean, seed=8)["image"])
    assert not np.array_equal(imagenet_train_batch(batch, mean)["image"], imagenet_train_batch(batch, mean)["image"])


def test_decode_batch_refuses_mixed_sizes_without_a_crop():
    batch = _encoded_batch(1)
    buffer = io.BytesIO()
    Image.fromarray(smooth_rgb((20, 20))).save(buffer, format="PNG")
    batch = {"image": np.array([batch["image"][0], buffer.getvalue()], dtype=object), "label": np.array([0, 1])}
    with pytest.raises(ValueError, match=r"different shapes \[\(3, 20, 20\), \(3, 30, 40\)\]"):
        decode_batch(batch)
    assert torch.equal(
        torch.from_numpy(decode_batch({k: v[1:] for k, v in batch.items()})["image"][0]),
        torch.from_numpy(smooth_rgb((20, 20))).permute(2, 0, 1),
    )
