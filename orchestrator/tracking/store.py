"""MLflow's store as the project uses it: tracking URIs, experiments, runs found by key (parent/child),
params, metrics, and retrying while a tracking server is away.

Runs are found by a ``run_key`` tag rather than created blindly, so rerunning a command reuses
its MLflow run instead of adding a duplicate. Only the driver creates experiments and runs (MLflow
on one sqlite file races when several processes create the same experiment); workers log to a
run id they are given.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from pathlib import Path

import requests
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.errors import Unavailable
from orchestrator.tracking.schema import ATTEMPT_TAGS, ERROR, KIND, PARENT_RUN_ID, RETIRED, RUN_KEY, RUN_NAME

PARAM_VALUE_LIMIT = 6000  # characters MLflow keeps of one param value
# The driver module a database tracking URI's dialect imports -> the package that provides it. The
# project installs psycopg (SQLAlchemy's default for postgresql://); the others are the user's choice.
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient",
    "pymysql": "pymysql",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}

# MLflow's sqlite store runs alembic migrations on first use and logs each one at INFO.
logging.getLogger("alembic").setLevel(logging.WARNING)
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


def fail_fast() -> None:
    """An unreachable server answers in seconds (connection refused) or 10 s (no answer) per call, times
    3 tries, instead of MLflow's default of minutes of retries: a call that fails is retried by our
    own code where it matters (``retrying``), and a worker's per-epoch flush just keeps its metrics.
    The user's own MLFLOW_HTTP_REQUEST_* settings win; Ray workers inherit the driver's."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def connect(uri: str) -> MlflowClient:
    """A client for ``uri``, checked to answer; ValueError naming the URI when it does not."""
    tracking_patience_s()  # a bad setting fails here, before anything is written, not when it is needed
    if uri.startswith("file:") or ("://" not in uri and not uri.startswith("databricks")):
        raise ValueError(
            f"tracking URI {uri!r} is a file store, deprecated in MLflow 3; use "
            "sqlite:///path/mlflow.db or an http(s):// tracking server"
        )
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(
                f"cannot create the MLflow database folder {folder}: {error.strerror}; "
                "pick another --storage-path or --tracking-uri"
            ) from None
    fail_fast()
    try:
        client = MlflowClient(tracking_uri=uri)  # a database URI opens its store (and driver) here
        client.search_experiments(max_results=1)
    except ModuleNotFoundError as error:
        package = DRIVER_PACKAGES.get(error.name.split(".")[0], error.name)
        raise ValueError(
            f"MLflow tracking URI {uri.split('://')[0]}://... needs the Python package {package!r}, "
            f"which is not installed (pip install {package})"
        ) from None
    except Exception as error:  # noqa: BLE001 - any transport or store error means unreachable
        reason = str(error).splitlines()[0][:200]
        raise ValueError(f"MLflow tracking URI {uri!r} is unreachable: {reason}") from None
    return client


def lookup(uri: str, experiment: str, run_keys: list[str]) -> dict:
    """Each run key's run in ``experiment`` (None where there is none), read without writing: a sqlite
    database that does not exist yet holds no run and is not created here. Commands look first, then
    check that Ray can hold the work, and only then create experiments and runs."""
    tracking_patience_s()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return dict.fromkeys(run_keys)
    client = connect(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return dict.fromkeys(run_keys)
    if found.lifecycle_stage != "active":
        raise ValueError(f"MLflow experiment {experiment!r} is deleted; restore it or pick another name")
    return {key: find_run(client, found.experiment_id, key) for key in run_keys}


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created when missing (tolerates a concurrent creator).

    On sqlite the artifacts go next to the database (``<db folder>/artifacts``); MLflow's default
    would be ``./mlruns`` under whatever folder the command happened to run in.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage != "active":
            raise ValueError(f"MLflow experiment {name!r} is deleted; restore it or pick another name")
        return experiment.experiment_id
    uri = client.tracking_uri
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def find_run(client: MlflowClient, experiment_id: str, run_key: str):
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY}` = '{run_key}'", max_results=2)
    if len(runs) > 1:
        raise ValueError(f"several MLflow runs carry {RUN_KEY}={run_key!r}; delete the duplicates")
    return runs[0] if runs else None


def get_or_create_run(
    client: MlflowClient,
    experiment_id: str,
    run_key: str,
    *,
    run_name: str,
    tags: dict | None = None,
    parent_run_id: str | None = None,
):
    """``(run, created)``: the run tagged ``run_key``, or a new one (nested under ``parent_run_id``)."""
    run = find_run(client, experiment_id, run_key)
    if run is not None:
        return run, False
    # Strings only: the sqlite store takes ints and bools, the REST store (a tracking server) fails.
    all_tags = {RUN_KEY: run_key, RUN_NAME: run_name, **{k: str(v) for k, v in (tags or {}).items()}}
    if parent_run_id:
        all_tags[PARENT_RUN_ID] = parent_run_id
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    return run, True


def get_run(client: MlflowClient, run_id: str):
    """The run ``run_id``; one error line naming it when there is none."""
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"unknown MLflow run id {run_id!r} at {client.tracking_uri}") from None


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list:
    """Every run matching, across MLflow's result pages, oldest first."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string, max_results=1000, page_token=token, order_by=["attributes.start_time ASC"]
        )
        runs += page
        token = page.token
        if not token:
            return runs


def find_parent(client: MlflowClient, key: str, experiment: str | None = None):
    """The run ``key`` names, for ``--parent``: a run id, else a run name in ``experiment`` (a name or
    id; None: any experiment). An ablation's or ensemble's own run is preferred over a trial run
    of the same name; two candidates left is an error naming both."""
    if re.fullmatch(r"[0-9a-f]{32}", key):
        return get_run(client, key)
    if "'" in key:
        raise ValueError(f"--parent {key!r}: a run name cannot contain a quote")
    where = "any experiment"
    if experiment is None:
        ids = [e.experiment_id for e in client.search_experiments()]
    else:
        found = client.get_experiment_by_name(experiment)
        ids, where = (
            [found.experiment_id] if found else [experiment if experiment.isdigit() else "-1"],
            f"experiment {experiment!r}",
        )
    try:
        runs = search_all(client, ids, f"attributes.run_name = '{key}'") if ids else []
    except MlflowException:
        runs = []  # an experiment id that does not exist
    if len(runs) > 1:
        runs = [r for r in runs if KIND in r.data.tags] or runs
    if not runs:
        raise ValueError(f"--parent {key!r}: no MLflow run has this id or name in {where}")
    if len(runs) > 1:
        raise ValueError(
            f"--parent {key!r}: {len(runs)} runs have this name "
            f"({', '.join(r.info.run_id for r in runs)}); pass a run id"
        )
    return runs[0]


def child_runs(client: MlflowClient, parent) -> list:
    """The runs nested under ``parent``, oldest first."""
    return search_all(client, [parent.info.experiment_id], f"tags.`{PARENT_RUN_ID}` = '{parent.info.run_id}'")


def retire_run(client: MlflowClient, run) -> None:
    """Take ``run`` out of its run key (``--force``): it stays in MLflow, marked as retired."""
    run_id = run.info.run_id
    set_tags(client, run_id, {RUN_KEY: f"{run.data.tags.get(RUN_KEY)}@retired-{run_id}", RETIRED: "true"})
    if run.info.status == "RUNNING":
        client.set_terminated(run_id, "KILLED")


def flatten(values: dict, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``, values as strings cut to MLflow's limit."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:PARAM_VALUE_LIMIT]
    return flat


def log_params(client: MlflowClient, run_id: str, values: dict) -> None:
    """Log ``values`` as params once; a rerun with the same values is a no-op."""
    existing = client.get_run(run_id).data.params
    params = [Param(k, v) for k, v in flatten(values).items() if k not in existing]
    changed = {k: (existing[k], v) for k, v in flatten(values).items() if k in existing and existing[k] != v}
    if changed:
        key, (old, new) = next(iter(changed.items()))
        raise ValueError(f"run {run_id} already has param {key}={old!r}, not {new!r}")
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=params[start : start + 100])


def now_ms() -> int:
    return int(time.time() * 1000)


def log_metrics(client: MlflowClient, run_id: str, metrics: dict, step: int) -> None:
    batch = [Metric(k, float(v), now_ms(), step) for k, v in metrics.items() if v is not None]
    if batch:
        client.log_batch(run_id, metrics=batch)


def set_tags(client: MlflowClient, run_id: str, tags: dict) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def reopen(client: MlflowClient, run_id: str) -> None:
    """A resumed run: RUNNING again, without its previous attempt's divergence, fallback or error
    tags (a run that diverged and is resumed without the fault must not read as diverged)."""
    run = client.get_run(run_id)
    for key in ATTEMPT_TAGS:
        if key in run.data.tags:
            client.delete_tag(run_id, key)
    if run.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")


def finish(client: MlflowClient, run_id: str, ok: bool, error: str | None = None) -> None:
    if error:
        set_tags(client, run_id, {ERROR: error[:PARAM_VALUE_LIMIT]})
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED))


PATIENCE_ENV = "ORCHESTRATOR_TRACKING_PATIENCE_S"


def tracking_patience_s() -> float:
    """How long a run waits for an unreachable tracking server where it cannot go on without it (its
    last metrics, closing the run), in seconds: ``$ORCHESTRATOR_TRACKING_PATIENCE_S``, default 600.
    Between epochs nothing waits: metrics stay pending."""
    raw = os.environ.get(PATIENCE_ENV, "600")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also refuses nan
        raise ValueError(f"{PATIENCE_ENV}={raw!r} is not a number of seconds >= 0")
    return seconds


_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED", "REQUEST_LIMIT_EXCEEDED"}


class TrackingUnavailable(Unavailable):
    """The tracking server stayed unreachable for ``tracking_patience_s()`` where the run needed it."""


def is_transient(error: BaseException) -> bool:
    """An error a later attempt may not repeat: the server unreachable (refused, timed out, down
    behind a proxy), overloaded, or its sqlite file busy. Anything else is raised at once."""
    if isinstance(
        error, (ConnectionError, TimeoutError, requests.exceptions.ConnectionError, requests.exceptions.Timeout)
    ):
        return True
    if not isinstance(error, MlflowException):
        return False
    message = str(error)
    # MLflow wraps a transport failure as "API request to URL failed with exception ...".
    return (
        error.error_code in _TRANSIENT_CODES or message.startswith("API request to") or "database is locked" in message
    )


def retrying(call, what: str, patience_s: float | None = None, pause_s: float = 5.0):
    """``call()``, tried again every ``pause_s`` seconds while it fails with a transient error, for at
    most ``patience_s`` (default ``tracking_patience_s()``); then one clear error naming ``what``."""
    patience_s = tracking_patience_s() if patience_s is None else patience_s
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - sorted by is_transient below
            if not is_transient(error):
                raise
            if time.monotonic() >= deadline:
                first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise TrackingUnavailable(
                    f"MLflow tracking server unreachable while {what} (gave up after {patience_s:g}s): {first_line}"
                ) from error
            time.sleep(pause_s)


def git_commit() -> str:
    """The checkout's commit (with ``-dirty`` for local changes), or ``unknown`` outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")
