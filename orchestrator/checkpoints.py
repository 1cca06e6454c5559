"""A run's checkpoints in Ray Train's storage: writing one, and restoring the newest readable one.

Each checkpoint folder holds the run's ``tracking.CHECKPOINT_FILE`` (a pack's: one sub-folder per
member run), the file ``workloads.engine`` writes and reads.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import pyarrow.fs
import ray.train

from orchestrator.config import ExperimentConfig
from orchestrator.tracking import CHECKPOINT_FILE
from workloads.engine import CheckpointError, load_checkpoint, make_checkpoint, restore_checkpoint, save_checkpoint


def kept_checkpoints(latest: ray.train.Checkpoint) -> list[ray.train.Checkpoint]:
    """``latest`` (what Ray Train resumes from), then the run's older kept checkpoints, newest first.

    Ray Train keeps a run's checkpoints side by side in its storage folder, named
    ``checkpoint_<date>_<time>.<microseconds>``, so their names sort by age.
    """
    fs = latest.filesystem
    folder, name = posixpath.split(latest.path.rstrip("/"))
    older = [
        info.path
        for info in fs.get_file_info(pyarrow.fs.FileSelector(folder))
        if info.type == pyarrow.fs.FileType.Directory
        and info.base_name.startswith("checkpoint_")
        and info.base_name < name
    ]
    return [latest] + [ray.train.Checkpoint(path, filesystem=fs) for path in sorted(older, reverse=True)]


def restore_latest_good(
    latest: ray.train.Checkpoint, model, optimizer, config_hash: str, member: str = "", adopt: bool = False
) -> tuple[int, int, str | None, dict]:
    """Restore the newest readable checkpoint of the run: ``(iteration, epoch, note, metrics)``.

    A corrupt, truncated or missing newest file (a crash or a full disk mid-write) falls back to the
    previous kept checkpoint, and so on; ``note`` then names what was skipped. A checkpoint of another
    config is not a fallback case: that error is raised. With none readable, the error names the newest.
    ``member``: the sub-folder of each checkpoint that holds this run's file (packed runs share one
    checkpoint, a folder per run).
    ``adopt`` (sweeps only: a PBT trial taking a better peer's checkpoint, its lr perturbed): a
    checkpoint of another config is taken too, weights, optimizer and position; its metrics still
    waiting for MLflow belong to the peer's run and are dropped.
    """
    skipped = []
    for checkpoint in kept_checkpoints(latest):
        try:
            with checkpoint.as_directory() as folder:
                state = load_checkpoint(Path(folder) / member / CHECKPOINT_FILE)
            iteration, epoch = restore_checkpoint(
                state, model, optimizer, expected_config_hash=None if adopt else config_hash, restore_rng=False
            )
        except (CheckpointError, FileNotFoundError) as error:
            reason = error.reason if isinstance(error, CheckpointError) else "missing"
            skipped.append(f"{posixpath.join(checkpoint.path, member, CHECKPOINT_FILE)} ({reason})")
            continue
        note = (
            (
                f"resumed from {checkpoint.path} (epoch {epoch}); unreadable newer checkpoint(s) skipped: "
                + "; ".join(skipped)
            )
            if skipped
            else None
        )
        if adopt and state["config_hash"] != config_hash:
            return iteration, epoch, note, {k: v for k, v in state["metrics"].items() if k != "unlogged"}
        return iteration, epoch, note, state["metrics"]
    raise CheckpointError(f"no readable checkpoint to resume from: {'; '.join(skipped)}")


def save_state(
    folder: str, config: ExperimentConfig, model, optimizer, iteration: int, epoch: int, metrics: dict, unlogged: list
) -> None:
    """Write the run's checkpoint file into ``folder``, with the metrics not yet in MLflow (``unlogged``)."""
    state = make_checkpoint(
        model,
        optimizer,
        iteration=iteration,
        epoch=epoch,
        config_hash=config.hash(),
        config=config.to_dict(),
        metrics=metrics | {"unlogged": unlogged},
    )
    save_checkpoint(state, posixpath.join(folder, CHECKPOINT_FILE))
