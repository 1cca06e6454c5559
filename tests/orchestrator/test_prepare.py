"""python -m orchestrator.prepare and the Ray Data reading path (orchestrator.shards), end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from orchestrator import cli, prepare
from orchestrator.shards import iter_torch, read_shards
from tests.workloads.data_fixtures import write_cifar10, write_odd_files, write_png_tree
from workloads.data import center_view, decode_image_file, imagenet_train_batch

ROOT = Path(__file__).resolve().parents[2]


def _keys(folder: Path) -> list[str]:
    return [
        key
        for path in sorted(folder.glob("part-*.parquet"))
        for key in pq.read_table(path, columns=["key"])["key"].to_pylist()
    ]


def _collect(dataset, batch_size=4) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*iter_torch(dataset, batch_size))
    return torch.cat(images), torch.cat(labels)


@pytest.fixture
def ordered(ray_local):
    """Ray Data keeps the shards' row order (tests compare row by row)."""
    context = ray_local.data.DataContext.get_current()
    old = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    yield
    context.execution_options.preserve_order = old


def test_cifar_pickles_to_shards_to_ray_tensors_exactly(tmp_path, ordered, capsys):
    images, labels = write_cifar10(tmp_path / "src", per_batch=6)["train"]  # 30 images
    out, summary = tmp_path / "shards", tmp_path / "summary.json"
    argv = [
        "--dataset",
        "cifar10",
        "--data-root",
        str(tmp_path / "src"),
        "--out",
        str(out),
        "--shard-size",
        "8",
        "--json",
        str(summary),
    ]
    assert prepare.main(argv) == 0
    assert "[train] shard 1/4 part-00000-of-00004.parquet: 8 rows, 0.0 MB, " in capsys.readouterr().out
    index = [int(k.split("/")[1]) for k in _keys(out / "train")]
    x, y = _collect(read_shards(str(out), "train"))
    assert x.dtype == torch.uint8 and x.shape == (30, 3, 32, 32)
    assert torch.equal(x, torch.from_numpy(images[index])) and torch.equal(y, torch.from_numpy(labels[index]))

    # Resume: only the deleted shard is written again.
    (out / "train" / "part-00002-of-00004.parquet").unlink()
    assert prepare.main(argv) == 0
    assert json.loads(summary.read_text())["written"] == [2]
    assert "shard 1/4 part-00000-of-00004.parquet: 8 rows, 0.0 MB, kept" in capsys.readouterr().out


def test_jpeg_tree_with_odd_files_through_ray_views_and_augmentation(tmp_path, ordered):
    tree = tmp_path / "tree"
    write_png_tree(tree, ["cat", "dog"], per_class=2, size=8, suffix=".JPEG")  # lossless PNGs named .JPEG
    write_odd_files(tree / "dog")  # CMYK, PNG as .JPEG, truncated, zero bytes
    out = (tmp_path / "shards").as_uri()  # a pyarrow filesystem URI, as for s3://
    prepare.prepare(
        "folder", out, split="val", data_root=str(tree), shard_size=3, max_bad_fraction=0.5, echo=lambda line: None
    )
    keys = _keys(tmp_path / "shards" / "val")
    assert keys == ["cat/0000.JPEG", "cat/0001.JPEG", "dog/0000.JPEG", "dog/0001.JPEG", "dog/cmyk.JPEG", "dog/png.JPEG"]
    mean = torch.tensor([0.4, 0.5, 0.6])
    x, y = _collect(read_shards(out, "val", augment="center", mean=mean))
    expected = torch.cat([center_view(decode_image_file(tree / k), mean) for k in keys])
    assert torch.equal(x, expected) and y.tolist() == [0, 0, 1, 1, 1, 1]

    x, y = _collect(read_shards(out, "val", augment="imagenet-train", mean=mean, seed=3))
    first_shard = pq.read_table(tmp_path / "shards" / "val" / "part-00000-of-00003.parquet")
    rows = {k: np.array(v, dtype=object) for k, v in first_shard.to_pydict().items()}
    direct = imagenet_train_batch(rows, mean.numpy(), seed=3)  # the same rows outside Ray, same seed
    assert x.shape == (6, 3, 224, 224) and x.dtype == torch.float32
    assert torch.equal(x[:3], torch.from_numpy(direct["image"]))


def test_unfinished_or_missing_shards_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json in .*nowhere/train"):
        read_shards(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"augment 'crop'; valid: \[None, 'imagenet-train', 'center'\]"):
        read_shards(str(tmp_path), augment="crop")


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--help"])
    assert exit_info.value.code == 0 and "Examples:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "mnist", "--out", "x"], "error: unknown data set 'mnist'; valid: ['cifar10', 'cifar10-jpeg', "),
        (
            ["--dataset", "cifar10", "--data-root", "/nonexistent", "--out", "x"],
            "error: CIFAR-10 python batches (cifar-10-batches-py): expected a directory at /nonexistent, found none",
        ),
    ],
    ids=["unknown-dataset", "missing-root"],
)
def test_bad_inputs_are_one_line_with_exit_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(prepare.main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_too_many_corrupt_files_exit_2_leaving_only_whole_shards(tmp_path):
    write_png_tree(tmp_path / "tree", ["a"], per_class=3)
    write_odd_files(tmp_path / "tree" / "a")  # sorted after the PNGs: inputs 3-6 of 7
    argv = [
        "--dataset",
        "folder",
        "--data-root",
        str(tmp_path / "tree"),
        "--out",
        str(tmp_path / "out"),
        "--split",
        "val",
        "--shard-size",
        "4",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.prepare", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(
        "error: 2 of 7 inputs are corrupt so far, more than --max-bad-fraction 0.001 "
        "allows (0); e.g. a/empty.JPEG: zero bytes"
    )
    # Shard 0 (3 PNGs + the CMYK JPEG) is written; shard 1 (zero-byte, PNG-as-JPEG, truncated) is not,
    # and no temp file is left behind.
    left = sorted(p.name for p in (tmp_path / "out" / "val").iterdir())
    assert left == ["manifest.json", "part-00000-of-00002.parquet"]


def test_imagenet_train_prepare_writes_the_mean_image_the_definition_gives(tmp_path):
    from tests.workloads.test_data_pixel_mean import _independent_mean, _tree

    _tree(tmp_path / "src")
    lines = []
    prepare.prepare(
        "imagenet",
        str(tmp_path / "out"),
        data_root=str(tmp_path / "src"),
        shard_size=2,
        max_bad_fraction=0.3,
        echo=lines.append,
    )
    folder = tmp_path / "out" / "train"
    assert lines[-1] == f"[train] per-pixel mean image of its 7 images: {folder / 'pixel_mean.npy'}"
    assert np.allclose(np.load(folder / "pixel_mean.npy"), _independent_mean(tmp_path / "src", folder), atol=1e-6)
