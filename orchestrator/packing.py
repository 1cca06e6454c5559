"""Packed trials: several one-worker ``engine=fast`` runs trained in one Ray Train worker, on one GPU.

A CIFAR net at batch 128 leaves most of an H100/H200 idle, and trials sharing a GPU as separate
processes were measured slower than one after another (docs/PERFORMANCE.md). So ``ablate --pack
N`` hands Tune one trial per N runs: one worker that steps every run's ``FastCifarTrainer`` on its
own CUDA stream (``workloads.engine.packed``), measured 1.9x faster for the Table 6 matrix.

Each run keeps its identity: its own MLflow run (metrics, tags, checkpoints, model), its own seed
and data order, and exactly the computation it would do alone. The runs share one Ray Train run
(named by its members) and one checkpoint per epoch, a folder per member. A run that diverges is
recorded as diverged and dropped; the others go on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import tempfile
from pathlib import Path

import ray.train
import ray.train.torch
import torch

from orchestrator.config import ExperimentConfig
from orchestrator.data import build_run_data
from orchestrator.lifecycle import RunState
from workloads.engine import DivergenceError, Recipe
from workloads.engine.packed import PackedTrainers

PACK_FILE = "pack.json"  # in each pack checkpoint: the members that diverged before it, with why


def pack_key(config: ExperimentConfig) -> tuple:
    """Runs with the same key can share a worker: the same data (so the same steps per epoch), the
    same schedule length and the same device."""
    return (
        config.dataset,
        config.data_root,
        config.train_subset,
        config.test_subset,
        config.recipe,
        json.dumps(config.recipe_overrides, sort_keys=True),
        config.use_gpu,
        config.gpus_per_worker,
        config.cpus_per_worker,
        config.storage_path,
        config.tracking_uri,
    )


def check_packable(configs: list[ExperimentConfig], pack: int) -> None:
    if pack < 1:
        raise ValueError(f"pack must be >= 1, got {pack}")
    if pack == 1:
        return
    for config in configs:
        if config.engine != "fast":
            raise ValueError(
                f"pack {pack} needs engine=fast trials (one worker, in-memory data); "
                f"trial {config.name} has engine {config.engine!r} (set engine=fast, or pack 1)"
            )


def pack_name(ablation: str, members: list[str]) -> str:
    """The Ray Train run of a pack, named by its members: rerunning the same pending members
    resumes it; another set of members is another run."""
    digest = hashlib.sha256("\n".join(sorted(members)).encode()).hexdigest()[:10]
    return f"{ablation}-pack-{digest}"


def group(configs: list[ExperimentConfig], pack: int) -> list[list[int]]:
    """Indices of ``configs`` in packs of at most ``pack``, in matrix order, each of one ``pack_key``."""
    by_key: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        by_key.setdefault(pack_key(config), []).append(i)
    return [members[i : i + pack] for members in by_key.values() for i in range(0, len(members), pack)]


# --- the driver's view of one member's result ----------------------------------------------------


@dataclasses.dataclass
class MemberResult:
    """One member's part of a pack's ``ray.train.Result``, as ``trainer.record_result`` reads one."""

    metrics: dict
    checkpoint: ray.train.Checkpoint | None
    best_checkpoints: list
    error: BaseException | None


def member_result(result: ray.train.Result | None, name: str) -> MemberResult | None:
    if result is None:
        return None

    def part(checkpoint):
        return ray.train.Checkpoint(posixpath.join(checkpoint.path, name), filesystem=checkpoint.filesystem)

    members = (result.metrics or {}).get("members", {})
    best = [
        (part(c), m["members"][name]) for c, m in result.best_checkpoints or [] if name in (m or {}).get("members", {})
    ]
    last = part(result.checkpoint) if result.checkpoint is not None and name in members else None
    return MemberResult(members.get(name, {}), last, best, result.error)


# --- the worker ------------------------------------------------------------------------------------


def train_pack_worker(loop_config: dict) -> None:
    """Ray Train's ``train_loop_per_worker`` of a pack (one worker): ``loop_config`` holds the
    members (``{"config", "recipe", "run_id"}`` each) and the MLflow ``tracking_uri``. Each member is a
    ``RunState``, as a run alone; only the steps are taken together (``PackedTrainers``)."""
    specs = loop_config["members"]
    first = ExperimentConfig(**specs[0]["config"])
    device = ray.train.torch.get_device() if first.use_gpu else torch.device("cpu")
    data = build_run_data(first, Recipe(**specs[0]["recipe"]).batch_size, 0, 1, device)  # one worker: the whole batch
    runs = [
        RunState(
            ExperimentConfig(**spec["config"]),
            data,
            device,
            spec["recipe"],
            tracking_uri=loop_config["tracking_uri"],
            run_id=spec["run_id"],
        )
        for spec in specs
    ]
    epochs = runs[0].epochs

    epoch, gone = 0, {}  # members that diverged: name -> the divergence
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            pack_file = Path(folder) / PACK_FILE
            gone = json.loads(pack_file.read_text())["diverged"] if pack_file.exists() else {}
        restored = {}
        for run in runs:
            if run.config.name in gone:  # again (the rerun reopened its run); retraining would diverge again
                run.diverged(gone[run.config.name])
            else:
                run.restore(checkpoint, member=run.config.name)
                restored[run.config.name] = run.epoch
        if len(set(restored.values())) > 1:
            # Only when a member's newest file was unreadable and it fell back alone: the pack
            # steps in lockstep, so it cannot go on from two epochs.
            raise RuntimeError(
                f"packed runs restored from different epochs {restored}; delete the newer "
                f"checkpoint folders in {posixpath.dirname(checkpoint.path)} to resume together"
            )
        epoch = max(restored.values(), default=0)
    for run in runs:
        run.start()
    active = [run for run in runs if run.config.name not in gone]
    packed = PackedTrainers([run.fast for run in active]) if active else None
    while epoch < epochs and active:
        outcomes = packed.train_epoch_each(epoch, [run.iteration for run in active])
        epoch += 1
        reports = {}
        for run, outcome in zip(active, outcomes):
            if isinstance(outcome, DivergenceError):
                run.diverged(outcome)
                gone[run.config.name] = str(outcome)
                continue
            if isinstance(outcome, Exception):
                raise outcome
            reports[run.config.name] = run.end_epoch(outcome)
        if len(reports) < len(active):
            active = [run for run in active if run.config.name in reports]
            packed = PackedTrainers([run.fast for run in active]) if active else None
        if not runs[0].saves_after(epoch):
            ray.train.report({"members": reports})
            continue
        with tempfile.TemporaryDirectory() as folder:
            for run in active:
                run.save(os.path.join(folder, run.config.name))
            Path(folder, PACK_FILE).write_text(json.dumps({"diverged": gone}))
            ray.train.report({"members": reports}, checkpoint=ray.train.Checkpoint.from_directory(folder))
    for run in active:
        run.finish()  # after the last checkpoint, as a run alone does
