"""The project's MLflow record: every tag key and value, every artifact path, and what reads them.

Everything the project writes to MLflow and later reads back (the driver, the workers, ``compare``,
``ensemble``, the results table) names it through this module, so a rename is one edit here and a
reader cannot drift from its writer. Nothing here imports MLflow: ``config`` may use it cheaply.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# ---- tags ---------------------------------------------------------------------------------------
# MLflow's own (``mlflow.utils.mlflow_tags``), spelled here so this module stays import-free.
PARENT_RUN_ID = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"

RUN_KEY = "orchestrator.run_key"  # how a command finds its run again (a rerun reuses, never duplicates)
CONFIG_HASH = "orchestrator.config_hash"  # ExperimentConfig.hash(): a resume must match it
RETIRED = "orchestrator.retired"  # "true" on a run that --force took out of its run key
DIVERGED = "orchestrator.diverged"  # set by rank 0 when the loss went NaN/inf: the run failed
CHECKPOINT_FALLBACK = "orchestrator.checkpoint_fallback"  # set by rank 0 when it skipped unreadable checkpoints
ERROR = "orchestrator.error"  # why the run failed, set when it is closed
BEST_BY = "orchestrator.best_by"  # how the run's "best" checkpoint was chosen: one of the two below
BEST_BY_VALIDATION = "val_top1_error"  # the kept checkpoint with the lowest validation error
BEST_IS_LAST = "last (no validation split)"  # nothing is selected on the reported test split
ATTEMPT_TAGS = (DIVERGED, CHECKPOINT_FALLBACK, ERROR)  # what one attempt at a run says about itself

# What a run is; training runs carry no KIND tag.
KIND = "orchestrator.kind"
ABLATION = "ablation"  # an ablation's parent run
ENSEMBLE = "ensemble"  # an ensemble's parent run (ensemble train)
EVALUATION = "ensemble-evaluation"  # an ensemble evaluate run
REPORT = "report"  # a compare report run
PARENT_KINDS = (ABLATION, ENSEMBLE)  # runs whose child runs are training runs

# A training run's tags (its params hold the whole config).
MODEL, DEPTH, RESIDUAL, SHORTCUT = "model", "depth", "residual", "shortcut"
DATASET, RECIPE, GIT_COMMIT = "dataset", "recipe", "git_commit"
ABLATION_NAME = "ablation"  # on a trial's run: its ablation (or ensemble) name

# An ensemble evaluation run's tags.
MEMBERS = "members"  # member names, comma-separated (cut to MEMBERS_LIMIT characters)
MEMBERS_LIMIT = 5000
VIEW = "view"  # the test-time view the members were scored with
ENSEMBLE_PARENT = "orchestrator.ensemble_parent"  # the ensemble parent run evaluated, if any

# A report run's tags.
REPORT_PARENT = "orchestrator.report.parent"
REPORT_FILTER = "orchestrator.report.filter"
REPORT_SCREENSHOT = "orchestrator.report.screenshot"  # "taken" or "not taken: why"

# A worker group's start, logged by rank 0 (so the driver can say that workers were restarted and from
# where): WORKER_STARTS counts the run's starts, RESUMED_FROM_EPOCH the epoch each one resumed from.
WORKER_STARTS = "worker_starts"
RESUMED_FROM_EPOCH = "resumed_from_epoch"

# ---- artifact paths -----------------------------------------------------------------------------
CHECKPOINT_FILE = "state.pt"  # one run's checkpoint file, in Ray Train's checkpoint folders and in MLflow
CHECKPOINT_LABELS = ("last", "best")
MODEL_ARTIFACT = "model"  # the final net, logged with mlflow.pytorch
RESULTS_FOLDER = "results"  # an ablation parent's results table
REPORT_FOLDER = "report"  # a report run's folder
ENSEMBLE_FOLDER = "ensemble"  # an evaluation run's files
PROBABILITIES_FILE = "probabilities.parquet"
SUMMARY_FILE = "summary.json"
PROBABILITIES_ARTIFACT = f"{ENSEMBLE_FOLDER}/{PROBABILITIES_FILE}"


def checkpoint_folder(label: str) -> str:
    """The run's artifact folder of its ``last`` or ``best`` checkpoint."""
    if label not in CHECKPOINT_LABELS:
        raise ValueError(f"checkpoint {label!r}; valid: {', '.join(CHECKPOINT_LABELS)}")
    return f"checkpoints/{label}"


def checkpoint_artifact(label: str) -> str:
    """The run's artifact path of its ``last`` or ``best`` checkpoint file."""
    return f"{checkpoint_folder(label)}/{CHECKPOINT_FILE}"


def runs_uri(run_id: str, path: str) -> str:
    """MLflow's URI of artifact ``path`` of run ``run_id``."""
    return f"runs:/{run_id}/{path}"


# ---- ensemble members ---------------------------------------------------------------------------


def metric_name(name: str) -> str:
    return re.sub(r"[^\w\-. /:]", "_", name)  # characters MLflow allows in a metric key


def member_metric(name: str, metric: str) -> str:
    """An evaluation run's metric ``metric`` (e.g. top1_error) of member ``name``."""
    return f"member.{metric_name(name)}.{metric}"


def member_tag(name: str) -> str:
    """The evaluation run's tag holding the run id whose errors ``member.<name>.*`` metrics hold."""
    return member_metric(name, "run_id")


def member_run_ids(tags: dict) -> dict[str, str]:
    """``{metric prefix: training run id}`` from an evaluation run's tags (``member_tag``)."""
    return {
        key.removesuffix(".run_id"): value
        for key, value in sorted(tags.items())
        if key.startswith("member.") and key.endswith(".run_id")
    }


# ---- a training run's errors under other test views ---------------------------------------------
# The training loop logs test_top1_error / test_top5_error with its own view (TRAINING_VIEW: the
# whole small image, ImageNet's central 224 crop). ``ablate`` scores a trial's last checkpoint with
# the view its paper table needs (e.g. 10-crop for Tables 2/3) and logs it on the trial's run as
# test_<view>_top1_error / test_<view>_top5_error (step 0), with the images scored.
TRAINING_VIEW = "center"
VIEW_ERRORS = ("top1_error", "top5_error")


def view_metric(view: str, error: str) -> str:
    """A training run's metric holding its ``error`` (top1_error, top5_error or images) under ``view``."""
    return f"test_{view}_{error}"


def view_errors(metrics: dict) -> dict[str, dict[str, float]]:
    """``{view: {"top1_error": ..., "top5_error": ...}}`` of the views scored after training (those
    with both metrics), from a training run's metrics."""
    found = {}
    for key in metrics:
        match = re.fullmatch(r"test_(.+)_top1_error", key)
        if match and view_metric(match.group(1), "top5_error") in metrics:
            view = match.group(1)
            found[view] = {e: metrics[view_metric(view, e)] for e in VIEW_ERRORS}
    return found


# ---- reading runs -------------------------------------------------------------------------------


def kind_of(run) -> str | None:
    return run.data.tags.get(KIND)


def is_training_run(run) -> bool:
    """A run that trained a net (a ``model`` param), not a parent, evaluation or report run."""
    return MODEL in run.data.params and KIND not in run.data.tags


def run_name(run) -> str:
    return run.data.tags.get(RUN_NAME) or run.info.run_name or run.info.run_id


RECIPE_PARAMS = "recipe"  # a training run's resolved schedule: params recipe.<field>


def training_params(config, recipe) -> dict:
    """A training run's params: its whole config, and ``recipe`` (``build.run_recipe``, what its
    workers train with) as ``recipe.<field>``: lr, momentum, weight decay, batch, milestones,
    warm-up and total in iterations."""
    return config.to_dict() | {f"{RECIPE_PARAMS}.{k}": v for k, v in recipe.schedule_fields().items()}


def training_tags(config) -> dict:
    """A training run's tags, from its ``ExperimentConfig``."""
    from orchestrator.tracking.store import git_commit
    from workloads.models import parse_model_name

    spec = parse_model_name(config.model)
    return {
        CONFIG_HASH: config.hash(),
        MODEL: config.model,
        DEPTH: spec.depth,
        RESIDUAL: spec.residual,
        SHORTCUT: config.shortcut or spec.default_shortcut,
        DATASET: config.dataset,
        RECIPE: config.recipe,
        GIT_COMMIT: git_commit(),
    }


# ---- where runs are recorded --------------------------------------------------------------------


def default_tracking_uri(tracking_uri: str | None, storage_path: str) -> str:
    """``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else sqlite next to the run storage
    (``<storage_path>/mlflow.db``); remote storage needs a URI every node can reach."""
    from orchestrator.storage import is_remote

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    if is_remote(storage_path):
        raise ValueError(
            f"storage_path {storage_path!r} is remote: give a tracking_uri "
            "(--tracking-uri or MLFLOW_TRACKING_URI) that every node can reach"
        )
    return f"sqlite:///{Path(storage_path).resolve() / 'mlflow.db'}"


# ---- a sweep's runs (python -m orchestrator.sweep) ----------------------------------------------
# A parent run (KIND SWEEP) holds the best config and the table of trials; each trial is an ordinary
# training run under it (the usual training tags, FINISHED when it trained to its end or was stopped
# early by the scheduler, which SWEEP_STOPPED says), so ``ensemble evaluate --best N --filter
# "tags.`orchestrator.sweep` = 'NAME'"`` selects from a sweep like from any experiment.
SWEEP = "sweep"  # a sweep's parent run
SWEEP_NAME = "orchestrator.sweep"  # on a trial's run: its sweep
SWEEP_HASH = "orchestrator.sweep.hash"  # on the parent: what a rerun under the same name must match
SWEEP_TRIAL = "orchestrator.sweep.trial"  # on a trial's run: Ray Tune's trial id
SWEEP_STOPPED = "orchestrator.sweep.stopped"  # "true": the scheduler stopped the trial early; else "false"
SWEEP_ITERATION = "orchestrator.sweep.iteration"  # the iteration the trial reached
SWEEP_EXPLOITED = "orchestrator.sweep.exploited"  # PBT: the checkpoint (and config) the trial last took
SWEEP_BEST_TRIAL = "orchestrator.sweep.best_trial"  # on the parent: the winner's run name
SWEEP_REGISTERED = "orchestrator.sweep.registered"  # on the parent: the winner's "model name/version"
BEST_IS_STOPPED = "last (stopped early by the sweep's scheduler)"  # a BEST_BY value
SWEEP_FOLDER = "sweep"  # the parent's artifacts
SWEEP_TRIALS_FILE = "trials.csv"
SWEEP_BEST_FILE = "best_config.json"
REGISTRY_ALIAS = "best"  # the alias of a sweep's winner in the Model Registry


def sweep_value_metric(key: str) -> str:
    """A trial run's metric holding searched key ``key``'s value from the step it took effect (PBT
    changes the lr of a trial between checkpoints; MLflow params cannot change)."""
    return f"sweep.{metric_name(key)}"


def sweep_artifact(file: str) -> str:
    return f"{SWEEP_FOLDER}/{file}"
