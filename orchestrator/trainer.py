"""Build one run's ``TorchTrainer`` (Ray Train V2) and turn its ``Result`` into an MLflow record.

Shared by ``orchestrator.train`` (one run) and ``orchestrator.ablate`` (one run per Tune trial).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import mlflow.pytorch
import ray.exceptions
import ray.train
import torch
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig, WorkerGroupError

from orchestrator import storage, tracking
from orchestrator.build import build_run_model
from orchestrator.config import ExperimentConfig
from orchestrator.data import data_shape
from orchestrator.resources import DEFAULT_WAIT_MINUTES, run_demand, start_timeout_failures
from orchestrator.run_trainer import RunTrainer
from orchestrator.shards import ray_datasets
from orchestrator.worker import train_worker
from workloads.data import dataset_spec
from workloads.engine import Recipe, load_checkpoint

METRIC_KEYS = (
    "train_loss",
    "train_error",
    "test_loss",
    "test_top1_error",
    "test_top5_error",
    "val_top1_error",
    "val_top5_error",
    "images_per_second",
    "epoch",
    "iteration",
)


@dataclass
class RunSummary:
    """What a finished (or failed) run leaves behind; also the CLI's ``--json`` payload."""

    name: str
    run_id: str
    status: str  # FINISHED or FAILED
    tracking_uri: str
    storage_path: str
    metrics: dict = field(default_factory=dict)
    checkpoints: dict = field(default_factory=dict)  # "last"/"best" -> Ray checkpoint path
    artifacts: dict = field(default_factory=dict)  # "last"/"best"/"model" -> MLflow artifact URI
    error: str | None = None
    warning: str | None = None  # e.g. unreadable checkpoints skipped on resume
    best_by: str | None = None  # how the "best" checkpoint was chosen (tracking.BEST_BY)


def check_data(config: ExperimentConfig) -> tuple[int, int, int]:
    """Load the test split here, so a wrong data path fails in one line before Ray starts; returns
    the data's (in_channels, num_classes, image_size).

    Driving a remote cluster ($RAY_ADDRESS), the data may live only on its nodes: then a missing
    path is left for the workers to report, and the shape is the one the data set's spec states.
    """
    storage.check(config.data_root, "--data-root")
    try:
        return data_shape(config)
    except FileNotFoundError:
        if not os.environ.get("RAY_ADDRESS"):
            raise
        return dataset_spec(config.dataset).shape()


def scaling_config(config: ExperimentConfig) -> ScalingConfig:
    demand = run_demand(config, config.name)  # what ``resources.ensure`` checked the cluster for
    return ScalingConfig(num_workers=demand.count, use_gpu=config.use_gpu, resources_per_worker=demand.bundle)


def build_trainer(
    config: ExperimentConfig,
    run_id: str,
    tracking_uri: str,
    recipe: Recipe | None,
    callbacks: list | None = None,
    loop: tuple[Callable, dict] | None = None,
    wait_s: float = DEFAULT_WAIT_MINUTES * 60,
) -> RunTrainer:
    """A trainer whose name and storage are the run's: rerunning it resumes from its checkpoint.
    ``recipe``: the run's ``build.run_recipe``. ``loop``: another ``(train_loop_per_worker, its config)``
    than one run's (a pack's: its members carry their recipes). A worker group that cannot be
    placed (its node lost, none coming back) fails the run after about ``wait_s``."""
    _, start_retries = start_timeout_failures(wait_s)
    train_fn, loop_config = loop or (
        train_worker,
        {"config": config.to_dict(), "recipe": recipe.to_dict(), "run_id": run_id, "tracking_uri": tracking_uri},
    )
    return RunTrainer(
        train_fn,
        train_loop_config=loop_config,
        datasets=ray_datasets(config),
        scaling_config=scaling_config(config),
        run_config=RunConfig(
            name=config.name,
            storage_path=config.resolved_storage_path(),
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
            failure_config=FailureConfig(max_failures=config.max_failures, controller_failure_limit=start_retries),
            callbacks=callbacks or [],
            # Ray Train logs every report at INFO; the driver prints its own progress instead.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


def fit(
    config: ExperimentConfig,
    run_id: str | None,
    tracking_uri: str,
    recipe: Recipe | None,
    callbacks: list | None = None,
    restart_ray: Callable[[], None] | None = None,
    echo=print,
    loop: tuple[Callable, dict] | None = None,
    wait_s: float = DEFAULT_WAIT_MINUTES * 60,
) -> tuple[ray.train.Result | None, BaseException | None]:
    """``(result, error)`` of training the run to the end.

    Ray Train retries its workers' failures itself (``max_failures``), but a Ray process of the run
    dying at some moments (a worker killed while the controller waits on it: measured in the long
    chaos test) ends ``fit()`` with a ``RayActorError`` or a ``ControllerError`` caused by one. That
    is infrastructure, not the training. With ``restart_ray`` (the driver's own private Ray), the
    run is fitted again under the same name after a fresh Ray start (the dead run's placement group
    would otherwise hold its CPUs: without a dashboard Ray cannot clean it up), so it resumes from
    its latest checkpoint, up to ``max_failures`` more times.
    """
    attempt = 0
    while True:
        try:
            return build_trainer(config, run_id, tracking_uri, recipe, callbacks, loop, wait_s).fit(), None
        except Exception as failure:  # noqa: BLE001 - recorded in MLflow by the caller
            if restart_ray is None or attempt == config.max_failures or not _a_ray_process_died(failure):
                return None, failure
        attempt += 1
        echo(
            f"[{config.name}] a Ray process of the run died; restarting Ray and resuming from the latest "
            f"checkpoint (retry {attempt} of {config.max_failures})"
        )
        restart_ray()


def _a_ray_process_died(error: BaseException) -> bool:
    """Whether ``error`` comes from a Ray actor's process dying, other than in the worker group's own
    training (a ``WorkerGroupError``: Ray Train has spent ``max_failures`` on those already)."""
    pending, seen = [error], set()
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen or isinstance(e, WorkerGroupError):
            continue
        seen.add(id(e))
        if isinstance(e, ray.exceptions.RayActorError):
            return True
        pending += [e.__cause__, e.__context__, getattr(e, "controller_failure", None)]
    return False


def run_folder(config: ExperimentConfig) -> Path | None:
    """The local folder Ray Train keeps this run's checkpoints in (None for remote storage)."""
    if storage.is_remote(config.storage_path):
        return None
    return Path(config.resolved_storage_path()) / config.name


def discard_run_storage(config: ExperimentConfig) -> None:
    folder = run_folder(config)
    if folder is not None and folder.exists():
        shutil.rmtree(folder)


def best_checkpoint(result: ray.train.Result):
    """``(checkpoint, how it was chosen)``: the kept checkpoint with the lowest validation top-1 error
    (the latest among equals), or, for a run without a validation split, the last one: the test
    split is what gets reported, so nothing is selected on it."""
    kept = list(reversed(result.best_checkpoints or []))  # newest first
    scored = [
        (metrics["val_top1_error"], i, checkpoint)
        for i, (checkpoint, metrics) in enumerate(kept)
        if "val_top1_error" in metrics
    ]
    if scored:
        return min(scored, key=lambda c: c[:2])[2], tracking.BEST_BY_VALIDATION
    return result.checkpoint, tracking.BEST_IS_LAST


def summary_of(client, run, config: ExperimentConfig) -> RunSummary:
    """The summary of a run that already finished, read back from MLflow."""
    run_id = run.info.run_id
    artifacts = {
        label: tracking.runs_uri(run_id, tracking.checkpoint_artifact(label)) for label in tracking.CHECKPOINT_LABELS
    }
    return RunSummary(
        name=config.name,
        run_id=run_id,
        status=run.info.status,
        tracking_uri=config.resolved_tracking_uri(),
        storage_path=config.resolved_storage_path(),
        metrics={k: v for k, v in run.data.metrics.items() if k in METRIC_KEYS},
        artifacts=artifacts | {"model": tracking.runs_uri(run_id, tracking.MODEL_ARTIFACT)},
        best_by=run.data.tags.get(tracking.BEST_BY),
    )


def record_result(
    client, config: ExperimentConfig, run_id: str, result: ray.train.Result | None, error: BaseException | None = None
) -> RunSummary:
    """Close the MLflow run from ``result``: checkpoints and the model as artifacts, status, tags.
    An unreachable tracking server is waited for (``tracking.tracking_patience_s()``): the training
    is done and its checkpoints are safe, only its record is missing."""
    return tracking.retrying(lambda: _record_result(client, config, run_id, result, error), "closing the run")


def _record_result(
    client, config: ExperimentConfig, run_id: str, result: ray.train.Result | None, error: BaseException | None
) -> RunSummary:
    summary = RunSummary(
        name=config.name,
        run_id=run_id,
        status="FAILED",
        tracking_uri=config.resolved_tracking_uri(),
        storage_path=config.resolved_storage_path(),
    )
    metrics = dict(result.metrics or {}) if result is not None else {}
    if error is None and result is not None and result.error is not None:
        error = result.error
    tags = client.get_run(run_id).data.tags
    diverged = tags.get(tracking.DIVERGED)
    summary.warning = tags.get(tracking.CHECKPOINT_FALLBACK)
    if error is None and diverged:
        summary.error = diverged
    elif error is not None:
        summary.error = _one_line(error)
    summary.metrics = {k: metrics[k] for k in METRIC_KEYS if k in metrics}
    if summary.error is None and result is not None and result.checkpoint is not None:
        summary.checkpoints = {"last": result.checkpoint.path}
        best, chosen_by = best_checkpoint(result)
        summary.checkpoints["best"] = best.path
        tracking.set_tags(client, run_id, {tracking.BEST_BY: chosen_by})
        summary.best_by = chosen_by
        summary.artifacts = log_checkpoints(client, run_id, config, result.checkpoint, best)
        summary.status = "FINISHED"
    tracking.finish(client, run_id, ok=summary.status == "FINISHED", error=summary.error)
    return summary


def log_checkpoints(client, run_id: str, config: ExperimentConfig, last, best) -> dict:
    """Upload the last and best checkpoints and the final model (``mlflow.pytorch``) to the run."""
    artifacts = {}
    for label, checkpoint in (("last", last), ("best", best)):
        if checkpoint is None:
            continue
        with checkpoint.as_directory() as folder:
            client.log_artifact(
                run_id, os.path.join(folder, tracking.CHECKPOINT_FILE), tracking.checkpoint_folder(label)
            )
        artifacts[label] = tracking.runs_uri(run_id, tracking.checkpoint_artifact(label))
    with last.as_directory() as folder:
        state = load_checkpoint(Path(folder) / tracking.CHECKPOINT_FILE)
    model = build_run_model(config, *_model_io(state)).eval()
    model.load_state_dict(state["model"])
    # MLflow 3 saves PyTorch models as torch.export programs (no pickle) traced on this example,
    # and infers the signature from it.
    example = torch.zeros(2, *_input_shape(state, config)).numpy()  # batch 2: 1 would pin the batch dim
    with fluent_tracking_uri(config.resolved_tracking_uri()), mlflow.start_run(run_id=run_id):
        # Explicit requirements: inferring them imports and inspects the whole environment (slow).
        mlflow.pytorch.log_model(
            model,
            name=tracking.MODEL_ARTIFACT,
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
    artifacts["model"] = tracking.runs_uri(run_id, tracking.MODEL_ARTIFACT)
    return artifacts


@contextlib.contextmanager
def fluent_tracking_uri(uri: str):
    """Point MLflow's fluent API (``mlflow.start_run``, ``log_model``) at ``uri`` for a block.

    Through the environment variable, restored afterwards: ``mlflow.set_tracking_uri`` would
    also set it for good, and every later run in this process that relies on its own default
    (sqlite next to its storage) would log into this run's database instead.
    """
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def _model_io(state: dict) -> tuple[int, int]:
    """``(in_channels, num_classes)`` read off the checkpoint's first conv and fc."""
    return state["model"]["conv1.weight"].shape[1], state["model"]["fc.weight"].shape[0]


def _input_shape(state: dict, config: ExperimentConfig) -> tuple[int, int, int]:
    size = state["metrics"].get("image_size") or dataset_spec(config.dataset).image_size
    return _model_io(state)[0], size, size


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    # Ray wraps the worker's exception; its last line is the original "Type: message".
    return lines[-1][:500] if lines else type(error).__name__
