"""Ensemble members chosen in MLflow: an ensemble (or ablation) parent's runs, the best N of an
experiment, explicit run ids; each checked, and loaded from its checkpoint as a scoring ``Member``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from mlflow.exceptions import MlflowException

from orchestrator import tracking
from orchestrator.config import ExperimentConfig
from orchestrator.data import load_split, training_mean
from orchestrator.inference import Member
from workloads.data import dataset_spec
from workloads.engine import load_checkpoint


def parent_members(client, parent) -> list:
    """The training runs under an ensemble (or ablation) parent, sorted by run name."""
    if tracking.kind_of(parent) not in tracking.PARENT_KINDS:
        raise ValueError(
            f"run {parent.info.run_id} is not an ensemble parent run ({tracking.KIND} is {tracking.kind_of(parent)!r})"
        )
    children = tracking.child_runs(client, parent)
    if not children:
        raise ValueError(f"ensemble parent run {parent.info.run_id} has no member runs")
    return sorted(children, key=lambda r: r.info.run_name)


def best_runs(client, experiment: str, filter_string: str, best: int) -> list:
    """The ``best`` finished training runs of ``experiment`` matching ``filter_string``, lowest final
    validation top-5 error first (then top-1). Runs without a validation split are not ranked:
    ranking them by test error would choose members on the split the ensemble is reported on."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"unknown MLflow experiment {experiment!r}")
    finished = "attributes.status = 'FINISHED' and metrics.test_top5_error >= 0"
    ranked = f"{finished} and metrics.val_top5_error >= 0"

    def search(query: str, limit: int) -> list:
        try:
            return client.search_runs(
                [found.experiment_id],
                f"{query} and {filter_string}" if filter_string else query,
                order_by=["metrics.val_top5_error ASC", "metrics.val_top1_error ASC"],
                max_results=limit,
            )
        except MlflowException as error:
            raise ValueError(f"bad --filter {filter_string!r}: {str(error).splitlines()[0]}") from None

    runs = search(ranked, best)
    if len(runs) < best:
        unranked = len(search(finished, best + 1)) - len(runs)
        raise ValueError(
            f"--best {best}: only {len(runs)} finished run(s) with a validation split match in experiment "
            f"{experiment!r}"
            + (
                f" ({unranked}+ more have none: train with --set val_split=... to rank them, or name members "
                "with --runs/--parent)"
                if unranked > 0
                else ""
            )
        )
    return runs


def check_runs(runs: list) -> None:
    """Refuse duplicates, unfinished or failed runs, and members of different data sets."""
    ids = [r.info.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"a run is listed twice: {', '.join(ids)}")
    for run in runs:
        if run.info.status != "FINISHED":
            raise ValueError(
                f"run {tracking.run_name(run)} ({run.info.run_id}) is {run.info.status}, not FINISHED; "
                "only finished training runs can be ensemble members"
            )
    datasets = {tracking.run_name(r): r.data.tags.get(tracking.DATASET) for r in runs}
    if len(set(datasets.values())) > 1:
        raise ValueError(f"members were trained on different data sets: {datasets}")


def download_checkpoint(client, run, label: str, folder: Path) -> dict:
    """The run's ``label`` checkpoint file (``tracking.checkpoint_artifact``), downloaded into ``folder``
    and loaded."""
    artifact = tracking.checkpoint_artifact(label)
    target = folder / run.info.run_id
    target.mkdir(parents=True)
    try:
        local = Path(client.download_artifacts(run.info.run_id, artifact, str(target))).resolve()
    except (MlflowException, OSError):
        raise ValueError(f"run {tracking.run_name(run)} ({run.info.run_id}) has no checkpoint {artifact}") from None
    if not local.is_relative_to(target.resolve()):  # an artifact store must not write elsewhere
        raise ValueError(f"run {tracking.run_name(run)}: artifact {artifact} resolved outside {target}")
    try:
        return load_checkpoint(local)
    except ValueError as error:
        raise ValueError(
            f"run {tracking.run_name(run)} ({run.info.run_id}): checkpoint {artifact} is unusable: "
            f"{str(error).splitlines()[0]}"
        ) from None


def load_members(
    client, runs: list, label: str, folder: Path, data_root: str | None, reads: dict | None = None
) -> list[Member]:
    """Every run's checkpoint as a ``Member``: the model, its config and its training mean (the
    training split read into ``reads``, when given: ``data.load_splits``)."""
    names = [tracking.run_name(r) for r in runs]
    means: dict = {}
    members = []
    for run in runs:
        state = download_checkpoint(client, run, label, folder)
        config = ExperimentConfig(**state["config"])
        if data_root is not None:
            config = dataclasses.replace(config, data_root=data_root)
        name = (
            tracking.run_name(run)
            if names.count(tracking.run_name(run)) == 1
            else f"{tracking.run_name(run)}@{run.info.run_id[:8]}"
        )
        key = (config.dataset, config.data_root, config.val_split, config.train_subset, config.mean)
        if key not in means:  # the mean each member was trained with (its config's ``mean``): a
            # sharded set's (its shards' per-pixel mean image or per-channel one), else its training
            # split's (as for Table 6)
            if dataset_spec(config.dataset).sharded:
                from orchestrator.shards import run_mean  # Ray Data: only for sharded members

                means[key] = torch.from_numpy(run_mean(config))
            else:
                means[key] = training_mean(config, load_split(config, "train", reads).images)
        members.append(Member(name, run.info.run_id, config, state["model"], means[key]))
    classes = {m.name: m.num_classes for m in members}
    if len(set(classes.values())) > 1:
        raise ValueError(f"members have different class counts: {classes}")
    datasets = {m.name: m.config.dataset for m in members}
    if len(set(datasets.values())) > 1:
        raise ValueError(f"members were trained on different data sets: {datasets}")
    return members
