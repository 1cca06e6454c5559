"""Packed trials (``ablate --pack N``): several engine=fast runs trained together by one worker.

The end-to-end test is real: Ray Tune + Ray Train + MLflow on sqlite + Fashion-MNIST. On the CPU
the pack's runs step in turn (no CUDA streams), which is the same interleaving the GPU runs.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import ray.train
import torch

from orchestrator import packing
from orchestrator.ablation import ablate, place_trials
from orchestrator.build import build_run_model, run_recipe
from orchestrator.checkpoints import restore_latest_good
from orchestrator.config import parse_overrides
from orchestrator.data import build_run_data
from orchestrator.matrix import Ablation, expand, load_ablation
from orchestrator.tracking import CHECKPOINT_FILE, MlflowClient
from tests.orchestrator.conftest import TINY
from workloads.engine import (
    CheckpointError,
    build_optimizer,
    evaluate,
    get_recipe,
    make_checkpoint,
    prepare_model,
    save_checkpoint,
)
from workloads.engine.fast_cifar import FastCifarTrainer
from workloads.models import build_model

FAST = TINY + ["engine=fast", "workers=1"]
ROOT = Path(__file__).resolve().parents[2]


def tiny(tmp_path: Path, **axes) -> Ablation:
    overrides = parse_overrides(FAST) | {"storage_path": str(tmp_path / "runs")}
    return load_ablation("smoke", overrides, name="packed", axes={"depth": "[8]", **axes})


def test_packs_are_cut_in_matrix_order_per_shared_data_and_named_by_their_members(tmp_path):
    configs = [t.config for t in tiny(tmp_path, seed="[0, 1, 2]").trials]  # plain8, resnet8 x 3 seeds
    assert packing.group(configs, 4) == [[0, 1, 2, 3], [4, 5]]
    other_data = [dataclasses.replace(c, train_subset=1024) if i % 2 else c for i, c in enumerate(configs)]
    assert packing.group(other_data, 4) == [[0, 2, 4], [1, 3, 5]]
    assert packing.pack_name("a", ["x", "y"]) == packing.pack_name("a", ["y", "x"]) != packing.pack_name("a", ["x"])


def test_only_engine_fast_runs_can_be_packed(tmp_path):
    loop = [dataclasses.replace(t.config, engine="loop") for t in tiny(tmp_path).trials]
    with pytest.raises(ValueError, match=r"pack 2 needs engine=fast trials .* has engine 'loop'"):
        packing.check_packable(loop, 2)
    packing.check_packable(loop, 1)
    with pytest.raises(ValueError, match=r"pack must be an integer >= 1, got 0"):
        expand({"matrix": {"depth": [8]}, "pack": 0}, {}, name="x")


def test_the_cli_refuses_a_pack_of_loop_runs_in_one_line(tmp_path):
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.ablate",
            "--pack",
            "2",
            "--set",
            "workers=1",
            "--storage-path",
            str(tmp_path / "runs"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2
    assert cli.stderr.strip().splitlines() == [
        "error: pack 2 needs engine=fast trials (one worker, in-memory data); trial smoke-cifar_plain8-s0 has "
        "engine 'loop' (set engine=fast, or pack 1)"
    ]
    assert not (tmp_path / "runs").exists()  # refused before anything was written
    dry = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.ablate",
            "--pack",
            "3",
            "--set",
            "workers=1",
            "--set",
            "engine=fast",
            "--dry-run",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "pack of 3:",
        "  smoke-cifar_plain8-s0",
        "  smoke-cifar_resnet8-A-s0",
        "  smoke-cifar_plain32-s0",
        "pack of 1:",
        "  smoke-cifar_resnet32-A-s0",
    ]


def test_a_member_restores_from_its_own_folder_of_the_pack_checkpoint(tmp_path):
    recipe = get_recipe("smoke")
    models = {name: build_model("cifar_resnet8", in_channels=1) for name in ("a", "b")}
    for epoch, folder in ((1, "checkpoint_2026-11-27_10-00-00.000001"), (2, "checkpoint_2026-11-27_10-00-01.000001")):
        for name, model in models.items():
            state = make_checkpoint(
                model,
                build_optimizer(model, recipe),
                iteration=4 * epoch,
                epoch=epoch,
                config_hash="h",
                config={},
                metrics={"epoch": epoch},
            )
            save_checkpoint(state, tmp_path / folder / name / CHECKPOINT_FILE)
    (tmp_path / folder / "b" / CHECKPOINT_FILE).write_bytes(b"torn")  # b's newest file is unreadable
    latest = ray.train.Checkpoint(str(tmp_path / folder))
    fresh = build_model("cifar_resnet8", in_channels=1)
    iteration, epoch, note, _ = restore_latest_good(latest, fresh, build_optimizer(fresh, recipe), "h", member="a")
    assert (iteration, epoch, note) == (8, 2, None)
    iteration, epoch, note, _ = restore_latest_good(latest, fresh, build_optimizer(fresh, recipe), "h", member="b")
    assert (iteration, epoch) == (4, 1) and f"{folder}/b/{CHECKPOINT_FILE}" in note
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        restore_latest_good(latest, fresh, build_optimizer(fresh, recipe), "h", member="c")


@pytest.mark.timeout(600)
def test_a_pack_trains_each_run_as_alone_and_drops_only_the_one_that_diverges(ray_local, tmp_path):
    # plain8 and resnet8, each clean and with NaN logits from iteration 5 (epoch 2 of 2): 4 runs, 1 pack.
    ablation = dataclasses.replace(tiny(tmp_path, inject_nan="[null, '0:5']"), pack=4)
    lines: list[str] = []
    summary = ablate(ablation, echo=lines.append)

    assert "[packed] 4 runs packed into 1 trial(s) of up to 4" in lines
    rows = {row["trial"]: row for row in summary["trials"]}
    diverged = sorted(name for name in rows if "inject_nan=0:5" in name)
    assert summary["failed"] == diverged and len(diverged) == 2
    for name in diverged:
        assert rows[name]["status"] == "FAILED"
        assert "non-finite training loss nan at iteration 5" in rows[name]["error"]
    client = MlflowClient(place_trials(ablation)[0].config.tracking_uri)
    clean = [t for t in place_trials(ablation) if "inject_nan=None" in t.name]
    for trial in clean:
        run_id = rows[trial.name]["run_id"]
        assert rows[trial.name]["status"] == "FINISHED", rows[trial.name]["error"]
        assert sorted(m.value for m in client.get_metric_history(run_id, "epoch")) == [1, 2]
        assert {a.path for a in client.list_artifacts(run_id)} >= {"checkpoints"}
    # One Ray Train run for the pack, a folder per run in its checkpoints; the last one holds only
    # the runs still training, and names the diverged ones.
    (pack_folder,) = Path(clean[0].config.storage_path).glob("packed-pack-*")
    last = sorted(p for p in pack_folder.glob("checkpoint_*") if p.is_dir())[-1]
    assert sorted(p.name for p in last.iterdir() if p.is_dir()) == sorted(t.name for t in clean)

    # The packed resnet8 computed exactly what the same run computes alone: the worker's own data,
    # model and fast trainer, in this process, one thread as its Ray worker had. (That a single fast
    # run through Ray Train equals this is test_train.py's fast-engine test.)
    resnet = next(t for t in clean if "resnet8" in t.name)
    alone = run_alone(resnet.config)
    run_id = rows[resnet.name]["run_id"]
    for key in ("train_loss", "test_loss", "test_top1_error"):
        packed = [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
        assert packed == pytest.approx(alone[key], rel=1e-4, abs=1e-5), key


def run_alone(config) -> dict:
    """Per-epoch train_loss / test_loss / test_top1_error of ``config`` trained alone, as a one-worker
    ``engine=fast`` run does it (``train_worker``), without Ray."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(config.seed)
        recipe = run_recipe(config)
        data = build_run_data(config, recipe.batch_size, 0, 1, torch.device("cpu"))
        model = prepare_model(build_run_model(config, data.in_channels, data.num_classes), "cpu")
        fast = FastCifarTrainer(
            model,
            data.train.images,
            data.train.labels,
            recipe,
            device="cpu",
            mean=data.train.mean,
            seed=config.seed,
            pad=data.train.pad,
        )
        out, iteration = {"train_loss": [], "test_loss": [], "test_top1_error": []}, 0
        for epoch in range(recipe.total_iterations // len(data.train)):
            stats = fast.train_epoch(epoch, iteration)
            iteration = stats.end_iteration
            test = evaluate(model, data.test, "cpu")
            out["train_loss"].append(stats.loss)
            out["test_loss"].append(test["loss"])
            out["test_top1_error"].append(test["top1_error"])
        return out
    finally:
        torch.set_num_threads(threads)
