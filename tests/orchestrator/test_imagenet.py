"""ImageNet's path end to end: an ILSVRC-layout tree -> Parquet shards (prepare) -> Ray Data ->
a data-parallel ResNet-18 run on 224x224 crops, tracked in MLflow."""

from __future__ import annotations

import numpy as np
from mlflow.tracking import MlflowClient
from PIL import Image

from orchestrator.config import load_config, parse_overrides
from orchestrator.prepare import prepare
from orchestrator.train import train

WNIDS = ("n01440764", "n01443537")  # the first two ILSVRC2012 classes (tench, goldfish)


def write_imagenet_tree(root, per_class: dict[str, int]) -> None:
    """JPEGs in train/<wnid>/ and val/<wnid>/, ImageNet-like aspect; the class is the dominant colour."""
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (75, 100, 3))
                pixels[..., label] += 180
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{wnid}_{i}.JPEG", quality=90)


def test_resnet18_trains_on_prepared_imagenet_shards(ray_local, tmp_path):
    write_imagenet_tree(tmp_path / "ilsvrc", {"train": 16, "val": 4})
    for split in ("train", "val"):
        prepare("imagenet", str(tmp_path / "shards"), split=split, data_root=str(tmp_path / "ilsvrc"),
                echo=lambda line: None)
    # Half a CPU per worker leaves the other core to Ray Data's decode and augment tasks.
    config = load_config("imagenet", parse_overrides([
        f"data_root={tmp_path / 'shards'}", f"storage_path={tmp_path / 'runs'}", "use_gpu=false",
        "workers=2", "cpus_per_worker=0.5", "recipe.batch_size=8", "recipe.total=2",
        "recipe.milestones=[1]", "recipe.unit=epoch", "log_every=1"]))
    lines = []
    summary = train(config, echo=lines.append)

    assert summary.status == "FINISHED", summary.error
    client = MlflowClient(summary.tracking_uri)
    history = client.get_metric_history(summary.run_id, "epoch")
    # 32 training images, global batch 8: 4 steps an epoch, 2 epochs.
    assert [(m.value, m.step) for m in sorted(history, key=lambda m: m.step)] == [(1, 4), (2, 8)]
    metrics = client.get_run(summary.run_id).data.metrics
    assert metrics["image_size"] == 224
    assert 0 <= metrics["test_top1_error"] <= 100 and metrics["test_top5_error"] == 0  # 2 classes
    assert any("epoch 2/2" in line for line in lines)
