"""ImageNet's path end to end: an ILSVRC-layout tree -> Parquet shards (prepare) -> Ray Data ->
a data-parallel ResNet-18 run on 224x224 crops decoded and augmented on each worker's device (the
imagenet preset's ``decode: device``; the CPU here), tracked in MLflow; then that run and a ResNet-34
evaluated over the val shards with the paper's 10-crop and multi-scale views (Ray tasks, one per
member and shard file), and the comparison report mapping them to Tables 3, 4 and 5.

Built once per module: training one ImageNet net here takes minutes of this 2-core machine, so
the run is shared, and the ResNet-34 member is its initialisation (see ``untrained_member``).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from orchestrator import cli, comparison, ensemble, tracking
from orchestrator.build import build_run_model
from orchestrator.config import ExperimentConfig, load_config, parse_overrides
from orchestrator.data import subset_indices
from orchestrator.prepare import prepare
from orchestrator.shards import ShardLoader, run_mean, sharded_run_data
from orchestrator.tracking import CHECKPOINT_FILE
from orchestrator.training import train
from workloads import ensemble as ensemble_math
from workloads.data.decode import decode_images
from workloads.engine import load_checkpoint, make_checkpoint, save_checkpoint

WNIDS = ("n01440764", "n01443537")  # the first two ILSVRC2012 classes (tench, goldfish)
VAL_PER_CLASS = 2  # 4 val images, one per shard file: scoring stitches the files back in order
MULTISCALE_SUBSET = 2  # val images scored multi-scale: ~5 s each for a ResNet-34 on one core


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


def write_imagenet_shards(folder, per_class: dict[str, int], shard_size: dict[str, int]) -> None:
    """``write_imagenet_tree`` in folder/ilsvrc, prepared into folder/shards, split by split."""
    write_imagenet_tree(folder / "ilsvrc", per_class)
    for split in per_class:
        prepare(
            "imagenet",
            str(folder / "shards"),
            split=split,
            data_root=str(folder / "ilsvrc"),
            shard_size=shard_size[split],
            echo=lambda line: None,
        )


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A tiny ILSVRC tree (16 train images a class, 2 val) and its shards: the module's folder."""
    folder = tmp_path_factory.mktemp("imagenet")
    write_imagenet_shards(folder, {"train": 16, "val": VAL_PER_CLASS}, {"train": 1000, "val": 1})
    return folder


def run_config(folder, *overrides: str) -> ExperimentConfig:
    """A CPU-sized ResNet-18 run of the imagenet preset on the module's shards."""
    # Half a CPU per worker leaves the other core to Ray Data's read and evaluation-view tasks.
    return load_config(
        "imagenet",
        parse_overrides(
            [
                "model=resnet18",
                "name=imagenet-resnet18",
                f"data_root={folder / 'shards'}",
                f"storage_path={folder / 'runs'}",
                "use_gpu=false",
                "workers=2",
                "cpus_per_worker=0.5",
                "recipe.batch_size=8",
                "recipe.total=2",
                "recipe.milestones=[1]",
                "recipe.unit=epoch",
                "log_every=1",
                *overrides,
            ]
        ),
    )


@pytest.fixture(scope="module")
def imagenet(ray_local, shards):
    """One ResNet-18 trained on the shards, decoded on its workers: (folder, summary, lines)."""
    lines: list[str] = []
    return shards, train(run_config(shards, "decode=device"), echo=lines.append), lines


@pytest.mark.parametrize("decode", ["device", "cpu"])
def test_shard_loader_yields_augmented_batches_whose_labels_are_their_rows(ray_local, shards, decode):
    """A one-worker run's training loader, as its worker builds it: with decode=device the rows
    arrive undecoded and the loader decodes and augments them on its device (the CPU here), minus
    the per-pixel mean image prepare stored with the train shards."""
    config = run_config(shards, f"decode={decode}")
    loader = sharded_run_data(config, 8, 1, torch.device("cpu"), rank=0).train
    assert isinstance(loader, ShardLoader) and loader.mean.shape == (3, 224, 224)
    assert np.array_equal(loader.mean, np.load(shards / "shards" / "train" / "pixel_mean.npy"))
    loader.set_epoch(1)
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    for images, labels in batches:
        assert images.shape == (8, 3, 224, 224) and images.dtype == torch.float32 and images.device.type == "cpu"
        assert labels.dtype == torch.int64
        # Each image's dominant colour is its class (write_imagenet_tree): images and labels stay paired.
        assert torch.equal(images.mean(dim=(2, 3))[:, : len(WNIDS)].argmax(1), labels)
    assert torch.cat([labels for _, labels in batches]).bincount().tolist() == [16, 16]


def test_resnet18_trains_on_prepared_imagenet_shards(imagenet):
    _, summary, lines = imagenet
    assert summary.status == "FINISHED", summary.error
    client = MlflowClient(summary.tracking_uri)
    assert client.get_run(summary.run_id).data.params["decode"] == "device"
    history = client.get_metric_history(summary.run_id, "epoch")
    # 32 training images, global batch 8: 4 steps an epoch, 2 epochs.
    assert [(m.value, m.step) for m in sorted(history, key=lambda m: m.step)] == [(1, 4), (2, 8)]
    metrics = client.get_run(summary.run_id).data.metrics
    assert metrics["image_size"] == 224
    assert 0 <= metrics["test_top1_error"] <= 100 and metrics["test_top5_error"] == 0  # 2 classes
    assert any("epoch 2/2" in line for line in lines)


def untrained_member(folder, summary) -> str:
    """A finished ResNet-34 B run on the same shards whose checkpoint is its initialisation, logged
    the way a training run logs itself (params, tags, checkpoints/last): the evaluator and compare
    read it like any member, and its model has Table 3 and 4 cells, which ResNet-18 B has not."""
    config = load_config(
        "imagenet",
        parse_overrides(
            [
                "model=resnet34",
                "name=resnet34-init",
                f"data_root={folder / 'shards'}",
                f"storage_path={folder / 'runs'}",
                "use_gpu=false",
            ]
        ),
    )
    client = tracking.connect(summary.tracking_uri)
    run, _ = tracking.get_or_create_run(
        client,
        tracking.ensure_experiment(client, config.experiment),
        config.name,
        run_name=config.name,
        tags=tracking.training_tags(config),
    )
    tracking.log_params(client, run.info.run_id, config.to_dict())
    torch.manual_seed(1)
    model = build_run_model(config, 3, len(WNIDS))
    state = make_checkpoint(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        iteration=0,
        epoch=0,
        config_hash=config.hash(),
        config=config.to_dict(),
        metrics={},
    )
    path = save_checkpoint(state, folder / "resnet34-init" / CHECKPOINT_FILE)
    client.log_artifact(run.info.run_id, str(path), "checkpoints/last")
    tracking.finish(client, run.info.run_id, ok=True)
    return run.info.run_id


@pytest.fixture(scope="module")
def evaluations(imagenet):
    """``python -m orchestrator.ensemble evaluate`` twice over the val shards: the ResNet-18 run and
    the ResNet-34 with 10-crop on every val image, the ResNet-34 alone multi-scale on a subset."""
    folder, summary, _ = imagenet
    assert summary.status == "FINISHED", summary.error
    ids = {"resnet18": summary.run_id, "resnet34": untrained_member(folder, summary)}
    out = {}
    for view, runs, extra in (
        ("10crop", [ids["resnet18"], ids["resnet34"]], []),
        ("multiscale", [ids["resnet34"]], ["--test-subset", str(MULTISCALE_SUBSET)]),
    ):
        code = ensemble.main(
            [
                "evaluate",
                "--runs",
                ",".join(runs),
                "--view",
                view,
                "--tracking-uri",
                summary.tracking_uri,
                "--out",
                str(folder / view),
                "--json",
                str(folder / f"{view}.json"),
                *extra,
            ]
        )
        assert code == 0
        out[view] = json.loads((folder / f"{view}.json").read_text())
    return {"ids": ids, "uri": summary.tracking_uri, "folder": folder, **out}


def direct_probabilities(evaluations, run_id: str, view: str, subset: int | None) -> tuple:
    """``(probabilities, labels)`` of one member computed here, in one process, with the workloads
    functions: its checkpoint from MLflow, every val shard read and decoded in manifest order."""
    folder = evaluations["folder"]
    state = load_checkpoint(
        MlflowClient(evaluations["uri"]).download_artifacts(
            run_id, f"checkpoints/last/{CHECKPOINT_FILE}", str(folder / "direct" / run_id)
        )
    )
    model = build_run_model(ExperimentConfig(**state["config"]), 3, len(WNIDS))
    model.load_state_dict(state["model"])
    manifest = json.loads((folder / "shards" / "val" / "manifest.json").read_text())
    batch = {"image": [], "key": [], "label": []}
    for shard in manifest["shards"]:
        rows = pq.read_table(folder / "shards" / "val" / shard["file"]).to_pydict()
        for column in batch:
            batch[column] += rows[column]
    keep = subset_indices(len(batch["label"]), subset).tolist()
    images = decode_images(batch)
    # The mean image prepare stored with the train shards: the one the member trained with.
    mean = torch.from_numpy(np.load(folder / "shards" / "train" / "pixel_mean.npy"))
    assert torch.equal(mean, torch.from_numpy(run_mean(ExperimentConfig(**state["config"]))))
    probabilities = ensemble_math.image_probabilities(model, [images[i] for i in keep], mean, view)
    return probabilities, torch.tensor(batch["label"])[keep]


@pytest.mark.parametrize(
    "view, members, direct, images",
    [
        ("10crop", 2, "resnet18", 2 * VAL_PER_CLASS),
        ("multiscale", 1, "resnet34", MULTISCALE_SUBSET),
    ],
)
def test_imagenet_views_give_one_vector_per_image_and_the_metrics_follow(evaluations, view, members, direct, images):
    result = evaluations[view]
    table = pq.read_table(result["parquet"])
    assert result["view"] == view and result["dataset"] == "imagenet" and len(result["members"]) == members
    assert table.num_rows == result["images"] == images
    labels = torch.tensor(table.column("label").to_pylist())
    stored = {
        m["name"]: torch.tensor(np.stack(table.column(m["name"]).to_numpy(zero_copy_only=False)))
        for m in result["members"]
    }
    logged = MlflowClient(evaluations["uri"]).get_run(result["run_id"]).data.metrics
    for name, probabilities in stored.items():
        assert probabilities.shape == (images, len(WNIDS))
        assert torch.allclose(probabilities.sum(1), torch.ones(images), atol=1e-5)
        errors = ensemble_math.errors(probabilities, labels)
        assert (logged[f"member.{name}.top1_error"], logged[f"member.{name}.top5_error"]) == pytest.approx(
            (errors["top1_error"], errors["top5_error"])
        )
    errors = ensemble_math.errors(ensemble_math.combine(list(stored.values())), labels)
    assert (logged["ensemble_top1_error"], logged["ensemble_top5_error"]) == pytest.approx(
        (errors["top1_error"], errors["top5_error"])
    )
    # One member recomputed here, in one process: the distributed per-shard scoring changes nothing.
    name = next(m["name"] for m in result["members"] if m["model"] == direct)
    probabilities, direct_labels = direct_probabilities(
        evaluations, evaluations["ids"][direct], view, MULTISCALE_SUBSET if view == "multiscale" else None
    )
    assert torch.equal(direct_labels, labels)
    assert torch.allclose(stored[name], probabilities, atol=1e-5)


def test_parity_table_maps_views_to_tables_3_and_4_and_the_ensemble_to_table_5(evaluations):
    client = MlflowClient(evaluations["uri"])
    selection = comparison.select_runs(client, experiment="resnet-orchestrator")
    report = comparison.compare(
        client, evaluations["uri"], selection, evaluations["folder"] / "report", fig7=False, echo=lambda line: None
    )
    rows = {(r["model"], r["view"]): r for r in report["parity"]}
    assert set(report["evaluation_run_ids"]) == {evaluations[v]["run_id"] for v in ("10crop", "multiscale")}
    ten_crop = client.get_run(evaluations["10crop"]["run_id"]).data.metrics
    multiscale = client.get_run(evaluations["multiscale"]["run_id"]).data.metrics
    r34 = tracking.metric_name("resnet34-init")

    cell = rows["resnet34", "multiscale"]
    assert (cell["paper_table"], cell["paper_top1_error"], cell["paper_top5_error"]) == ("Table 4", 21.84, 5.71)
    assert cell["test_top1_error"] == multiscale[f"member.{r34}.top1_error"]
    assert cell["diff_top5"] == pytest.approx(multiscale[f"member.{r34}.top5_error"] - 5.71)
    assert cell["run_ids"] == [evaluations["ids"]["resnet34"]]
    assert cell["evaluation_run_ids"] == [evaluations["multiscale"]["run_id"]]
    cell = rows["resnet34", "10crop"]
    assert (cell["paper_table"], cell["paper_top1_error"], cell["paper_top5_error"]) == ("Table 3", 24.52, 7.46)
    assert cell["test_top1_error"] == ten_crop[f"member.{r34}.top1_error"]
    assert rows["resnet18", "10crop"]["paper_table"] is None  # Table 2's ResNet-18 has shortcut A
    assert rows["resnet18", "center"]["run_ids"] == [evaluations["ids"]["resnet18"]]  # the training run

    ensembles = [r for r in report["parity"] if r["model"] == "ensemble"]
    assert len(ensembles) == 1  # the multi-scale evaluation has one member: no ensemble
    assert (ensembles[0]["view"], ensembles[0]["paper_table"], ensembles[0]["paper_top5_error"]) == (
        "10crop",
        "Table 5",
        3.57,
    )
    assert ensembles[0]["paper_top1_error"] is None
    assert (ensembles[0]["test_top1_error"], ensembles[0]["test_top5_error"]) == (
        ten_crop["ensemble_top1_error"],
        ten_crop["ensemble_top5_error"],
    )
    assert sorted(ensembles[0]["run_ids"]) == sorted(evaluations["ids"].values())
    stored = pq.read_table(evaluations["folder"] / "report" / "parity.parquet").to_pylist()
    assert [(r["model"], r["view"], r["paper_table"]) for r in stored] == [
        (r["model"], r["view"], r["paper_table"]) for r in report["parity"]
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data-root", "{folder}/ilsvrc"], "no manifest.json in {folder}/ilsvrc/train"),
        (["--shards", "2"], "--shards 2: imagenet members are scored one task per val shard file"),
        (["--view", "10crop", "--test-subset", "0"], "--test-subset must be >= 1, got 0"),
    ],
)
def test_bad_imagenet_evaluations_are_one_error_line(evaluations, tmp_path, capsys, extra, message):
    folder = evaluations["folder"]
    with pytest.raises(SystemExit) as exit_:
        cli.run(
            ensemble.main,
            [
                "evaluate",
                "--runs",
                evaluations["ids"]["resnet34"],
                "--tracking-uri",
                evaluations["uri"],
                "--out",
                str(tmp_path / "out"),
                "--json",
                str(tmp_path / "out.json"),
                *[a.format(folder=folder) for a in extra],
            ],
        )
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: ") and message.format(folder=folder) in err
    assert list(tmp_path.iterdir()) == []
