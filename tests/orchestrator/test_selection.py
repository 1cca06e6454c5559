"""Model selection on held-out training images, never on the reported test split: the validation
split, the best checkpoint, the plateau schedule and its resume, and the recipe a run is given.

Ray-free (one process, real Fashion-MNIST); the Ray Train run that logs all of it is in test_train.
"""

from __future__ import annotations

import dataclasses

import pytest
import ray.train
import torch

from orchestrator import tracking
from orchestrator.build import run_recipe
from orchestrator.config import load_config
from orchestrator.data import build_run_data, load_split, train_images
from orchestrator.lifecycle import RunState
from orchestrator.trainer import best_checkpoint
from workloads.data import per_pixel_mean
from workloads.engine import lr_at

# ResNet-8 on 512 Fashion-MNIST images (4 iterations an epoch of batch 128), 500 held out.
SMALL = {"model": "cifar_resnet8", "train_subset": 512, "test_subset": 200, "val_split": 500.0, "workers": 1}


def test_validation_images_leave_the_training_split_and_its_mean():
    config = load_config("smoke", SMALL)
    full = load_split(dataclasses.replace(config, val_split=None, train_subset=None), "train")
    rest = load_split(dataclasses.replace(config, train_subset=None), "train")
    val = load_split(config, "val")
    assert len(val) == 500 and len(rest) == len(full) - 500
    assert torch.bincount(val.labels).tolist() == [50] * 10  # every class gives its share
    # No held-out image is trained on: none of them is among the training images.
    held = {bytes(image.numpy()) for image in val.images}
    assert not any(bytes(image.numpy()) in held for image in load_split(config, "train").images)
    # The carve does not depend on the run's seed (runs of several seeds hold out the same images).
    assert load_split(dataclasses.replace(config, seed=3), "val").images.equal(val.images)
    # The mean a run subtracts is its training images' (the held-out ones are not in it).
    data = build_run_data(config, 128, 0, 1, torch.device("cpu"))
    assert data.train.mean.equal(per_pixel_mean(load_split(config, "train").images))
    assert len(data.val) == 2  # 500 images in evaluation batches of 256


def test_a_worker_reads_each_file_split_once_for_its_train_val_and_test_loaders(dataset_reads):
    """cifar10-jpeg's training split is 50,000 JPEGs to decode, ~10 s on the H200 machine's host
    (60,000 took 12.6 s there): read twice, for train and for val, it cost that much more of the
    109 s a ResNet-20 run spent starting."""
    data = build_run_data(load_config("smoke", SMALL), 128, 0, 1, torch.device("cpu"))
    assert sorted(dataset_reads) == ["test", "train"]
    assert len(data.train) == 4 and len(data.val) == 2 and len(data.test) == 1


def test_mean_channel_subtracts_the_training_mean_image_averaged_over_its_pixels():
    config = load_config("smoke", SMALL)
    channel = dataclasses.replace(config, mean="channel")
    pixel_mean = build_run_data(config, 128, 0, 1, torch.device("cpu")).train.mean
    channel_mean = build_run_data(channel, 128, 0, 1, torch.device("cpu")).train.mean
    assert pixel_mean.shape == (1, 28, 28) and channel_mean.shape == (1, 1, 1)
    assert channel_mean.flatten() == pytest.approx(pixel_mean.mean().item(), abs=1e-6)
    assert channel.hash() != config.hash()


def test_a_val_split_larger_than_the_training_split_fails_in_the_driver():
    from orchestrator.data import data_shape

    with pytest.raises(ValueError, match=r"val_split 60000 holds out 60000 of 60000 training images"):
        data_shape(load_config("smoke", {"val_split": 60000.0}))


def test_the_driver_resolves_an_epoch_recipe_into_iterations_of_the_global_batch():
    config = load_config("smoke", SMALL | {"recipe_overrides": {"unit": "epoch", "total": 6, "milestones": [2, 4]}})
    recipe = run_recipe(config)
    assert train_images(config) == 512
    assert (recipe.unit, recipe.total, recipe.milestones) == ("iteration", 24, (8, 16))
    # What the MLflow params list: every field, in iterations.
    params = tracking.training_params(config, recipe)
    assert params["recipe.total"] == 24 and params["recipe.milestones"] == [8, 16] and params["recipe.lr"] == 0.1
    assert params["recipe"] == "smoke" and params["recipe_overrides"] == {
        "unit": "epoch",
        "total": 6,
        "milestones": [2, 4],
    }


def test_without_local_data_an_epoch_recipe_stays_in_epochs_only_when_driving_a_remote_cluster(tmp_path, monkeypatch):
    # The data lives on the cluster's nodes alone: this driver cannot count an epoch's iterations.
    config = load_config(
        "imagenet",
        {
            "data_root": str(tmp_path / "on-the-nodes"),
            "recipe_overrides": {"unit": "epoch", "total": 6, "milestones": [3, 5]},
        },
    )
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(FileNotFoundError):
        run_recipe(config)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    recipe = run_recipe(config)
    assert (recipe.unit, recipe.total) == ("epoch", 6)  # the workers turn it into iterations


def _checkpoint(tmp_path, name: str) -> ray.train.Checkpoint:
    (tmp_path / name).mkdir()
    return ray.train.Checkpoint.from_directory(str(tmp_path / name))


def _result(checkpoints: list) -> ray.train.Result:
    """A run's result as Ray Train returns it: kept checkpoints oldest first, the last one latest."""
    return ray.train.Result(
        metrics=checkpoints[-1][1], checkpoint=checkpoints[-1][0], error=None, path="", best_checkpoints=checkpoints
    )


def test_the_best_checkpoint_is_chosen_on_validation_never_on_test(tmp_path):
    a, b, c = (_checkpoint(tmp_path, f"checkpoint_{i}") for i in range(3))
    with_val = _result(
        [
            (a, {"test_top1_error": 10.0, "val_top1_error": 30.0}),  # best on test: must not win
            (b, {"test_top1_error": 20.0, "val_top1_error": 12.0}),
            (c, {"test_top1_error": 15.0, "val_top1_error": 12.0}),  # ties with b: the latest wins
        ]
    )
    assert best_checkpoint(with_val) == (c, tracking.BEST_BY_VALIDATION)
    no_val = _result([(a, {"test_top1_error": 10.0}), (b, {"test_top1_error": 20.0})])
    assert best_checkpoint(no_val) == (b, tracking.BEST_IS_LAST)


def _run(config, data) -> RunState:
    torch.set_num_threads(1)
    return RunState(config, data, torch.device("cpu"), run_recipe(config))


@pytest.mark.timeout(300)
def test_plateau_divides_the_lr_on_validation_error_and_a_resumed_run_divides_where_it_would_have(tmp_path):
    # patience 1 and a min_delta no improvement can reach: every epoch after the first ends a plateau.
    plateau = {"schedule": "plateau", "milestones": [], "total": 16, "plateau_patience": 1, "plateau_min_delta": 100.0}
    config = load_config("smoke", SMALL | {"recipe_overrides": plateau})
    data = build_run_data(config, 128, 0, 1, torch.device("cpu"))
    run = _run(config, data)
    run.start()
    epochs = [run.end_epoch(run.train_epoch()) for _ in range(3)]
    assert all({"val_top1_error", "val_top5_error", "val_loss"} <= set(m) for m in epochs)
    # The history it decides on is the validation error of each epoch's end.
    assert run.val_history == [(m["iteration"], m["val_top1_error"]) for m in epochs]
    assert run.recipe.milestones == (8, 12)  # divided at the end of epochs 2 and 3 (4 iterations each)
    assert [lr_at(run.recipe, i) for i in (7, 8, 12)] == pytest.approx([0.1, 0.01, 0.001])
    (tmp_path / "checkpoint_1").mkdir()
    run.save(str(tmp_path / "checkpoint_1"))

    resumed = _run(config, data)
    assert resumed.recipe.milestones == ()  # a fresh start has no division yet
    resumed.restore(ray.train.Checkpoint.from_directory(str(tmp_path / "checkpoint_1")))
    assert (resumed.epoch, resumed.iteration) == (3, 12)
    assert resumed.val_history == run.val_history and resumed.recipe.milestones == (8, 12)


def test_greedy_ensemble_selection_picks_only_on_a_validation_split_every_member_held_out():
    from types import SimpleNamespace

    from orchestrator.ensemble_eval import report_lines, shared_validation, summarize

    def member(name, val_split):
        return SimpleNamespace(name=name, config=SimpleNamespace(val_split=val_split))

    assert shared_validation([member("a", 500.0), member("b", 500.0)], sharded=False)[0] == 500.0
    for members, sharded, why in (
        ([member("a", 500.0)], True, "sharded data sets have no validation split"),
        ([member("a", None), member("b", None)], False, "held out no validation split"),
        ([member("a", 500.0), member("b", None)], False, "different validation splits (a: 500.0, b: None)"),
    ):
        val_split, selection = shared_validation(members, sharded)
        assert val_split is None and selection.startswith("skipped: ") and why in selection
    # Without validation rows the members and the ensemble are still scored, greedy selection is not.
    labels = torch.tensor([0, 1, 1, 0])
    probabilities = {"a": torch.eye(2)[labels], "b": torch.eye(2)[1 - labels]}
    summary = summarize(probabilities, labels, torch.zeros(4, dtype=torch.bool), None, "skipped: no split")
    assert [m["top1_error"] for m in summary["members"]] == [0.0, 100.0] and "members" not in summary["greedy"]
    assert report_lines(summary)[-1] == "greedy forward selection skipped: no split"
    # With validation rows it picks there, blind to the test rows: "b" is right on the val rows and
    # wrong on the test rows, "a" the other way round, so greedy takes "b" and reports its test error.
    validation = torch.tensor([False, False, True, True])
    probabilities = {"a": torch.eye(2)[torch.tensor([0, 1, 0, 1])], "b": torch.eye(2)[torch.tensor([1, 0, 1, 0])]}
    summary = summarize(probabilities, labels, validation, None, "on val")
    assert summary["images"] == 2 and [m["top1_error"] for m in summary["members"]] == [0.0, 100.0]
    assert summary["greedy"]["members"] == ["b"] and summary["greedy"]["test"]["top1_error"] == 100.0


@pytest.mark.parametrize(
    "cut", [{}, {"val_split": 0.1}, {"val_split": 500.0, "train_subset": 100}, {"train_subset": 10**6}]
)
def test_train_images_counts_what_load_split_leaves(cut):
    config = load_config("smoke", {"train_subset": None} | cut)
    assert train_images(config) == len(load_split(config, "train"))


def test_the_drivers_data_check_decodes_only_the_test_split(tmp_path, monkeypatch):
    """The driver checks a cifar10-jpeg run's val_split against its training split's file count:
    decoding those 50,000 JPEGs took ~10 s of a run's start-up on the H200 machine, 26 s here."""
    from PIL import Image

    from orchestrator.data import data_shape
    from workloads.data import registry

    for split, count in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(tmp_path / split / cls / f"{i}.jpg")
    decoded, real = [], registry.load_image_tree
    monkeypatch.setattr(registry, "load_image_tree", lambda source: decoded.append(source.root.name) or real(source))
    config = load_config("smoke", {"dataset": "cifar10-jpeg", "data_root": str(tmp_path), "val_split": 4.0})
    assert data_shape(config) == (3, 2, 32)
    assert decoded == ["test"]
    assert train_images(config) == 8
    with pytest.raises(ValueError, match=r"val_split 12 holds out 12 of 12 training images"):
        data_shape(dataclasses.replace(config, val_split=12.0))
