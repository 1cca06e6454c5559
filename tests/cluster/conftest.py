"""The services every cluster rehearsal shares: PostgreSQL and the MLflow tracking server on it
(started by cluster/mlflow/start-server.sh, basic auth, a non-admin user for the jobs), and the
cluster's Ray token. Started once per test session, killed by pid at the end."""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from orchestrator.run_trainer import POLL_INTERVAL_ENV, POLL_INTERVAL_S
from tests.cluster.local_cluster import (
    BIN,
    Fatal,
    MlflowServer,
    Postgres,
    kill_mentioning,
    postgres_bin,
    remove,
    wait_for,
)


@dataclass
class Services:
    base: Path  # short: Ray socket paths <= 107 characters
    token: str  # the clusters' Ray token, generated now, passed by env only
    postgres: Postgres
    server: MlflowServer
    user: tuple[str, str]  # the jobs' MLflow identity (non-admin)

    @property
    def job_env(self) -> dict:
        """The jobs' MLflow identity: on a real cluster these come from a Secret into the pods' env
        (cluster/kuberay/*.yaml); a runtime_env is visible to anyone holding the Ray token."""
        return {
            "MLFLOW_TRACKING_USERNAME": self.user[0],
            "MLFLOW_TRACKING_PASSWORD": self.user[1],
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
        }


@pytest.fixture(scope="session")
def services():
    # `make test` installs all three; a missing one is a broken set-up, not a reason to pass.
    if postgres_bin() is None:
        pytest.fail("PostgreSQL is not installed: run `make test-services` (Debian: apt-get install postgresql)")
    import flask_wtf  # noqa: F401 - mlflow[auth], for --app-name basic-auth
    import psycopg2  # noqa: F401 - psycopg2-binary, for MLflow on PostgreSQL

    base = Path(tempfile.mkdtemp(prefix="rcl", dir="/tmp"))
    base.chmod(0o755)  # the postgres user must reach its data dir inside
    postgres = Postgres(base)
    server = MlflowServer(base, postgres)
    try:
        postgres.start()
        server.start()
        yield Services(base, secrets.token_hex(32), postgres, server, server.create_user("ray-jobs"))
    finally:
        for stop in (server.stop, postgres.stop):
            try:
                stop()
            except Exception as error:  # noqa: BLE001 - stop the rest anyway
                print(f"cleanup: {stop.__qualname__}: {error!r}")
        kill_mentioning(str(base))
        remove(base)


def ray_cli(env: dict, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def submit(cluster, services: Services, submission_id: str, source: Path, command: list[str]) -> None:
    """``ray job submit --no-wait`` of ``python -m ...`` with this checkout as the working dir."""
    runtime_env = {
        "excludes": [".venv", ".git", "runs", "mlruns", "*.egg-info", ".pytest_cache", "reports"],
        "env_vars": services.job_env,
    }
    submitted = ray_cli(
        cluster.head.env,
        "job",
        "submit",
        "--address",
        cluster.dashboard.url,
        "--submission-id",
        submission_id,
        "--no-wait",
        "--working-dir",
        str(source),
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        "python",
        "-m",
        *command,
        timeout=300,
    )
    assert submitted.returncode == 0, submitted.stdout[-2000:] + submitted.stderr[-2000:]


def waiting_logs(cluster, submission_id: str, timeout: float) -> str:
    """The job's log once it says what it waits for (it must not have ended or started training)."""

    def said():
        status = cluster.dashboard.job(submission_id)["status"]
        logs = cluster.dashboard.job_logs(submission_id)
        if status not in ("PENDING", "RUNNING"):
            raise Fatal(f"job {status} before waiting for resources:\n{logs[-4000:]}")
        return logs if "waiting for" in logs else None

    return wait_for(said, timeout, "the job's 'waiting for' line", interval=2)


class Placements:
    """Where each actor of the watched classes ran, read from the state API while the job runs
    (an actor that died with its node, or is not placed yet, has no node id), and the controller
    poll each live Train controller's process was started with (its environment, read from /proc:
    every node is on this machine)."""

    def __init__(self, classes: tuple[str, ...] = ("RayTrainWorker", "ImplicitFunc", "TrainController")):
        self.classes = classes
        self.nodes: dict[str, dict[str, str]] = {name: {} for name in classes}  # class -> actor id -> node id
        self.controller_poll: dict[str, str | None] = {}  # actor id -> RAY_TRAIN_HEALTH_CHECK_INTERVAL_S

    def poll(self, dashboard) -> list[dict]:
        """Record every placed actor of the classes; returns the RayTrainWorker actors seen now."""
        seen = {}
        for name in self.classes:
            seen[name] = dashboard.actors(class_name=name)
            for actor in seen[name]:
                if actor["node_id"]:
                    self.nodes[name][actor["actor_id"]] = actor["node_id"]
                if name == "TrainController" and actor["state"] == "ALIVE" and actor.get("pid"):
                    try:
                        environ = psutil.Process(actor["pid"]).environ()
                    except psutil.Error:  # ended since the state API listed it
                        continue
                    self.controller_poll[actor["actor_id"]] = environ.get(POLL_INTERVAL_ENV)
        return seen.get("RayTrainWorker", [])

    def assert_controllers_polled_fast(self) -> None:
        """Every live controller seen polled its workers every POLL_INTERVAL_S, not Ray's 2 s: the
        variable the driver sets reached controllers started on the cluster (run_trainer.py)."""
        assert self.controller_poll, "no live Train controller was seen"
        assert set(self.controller_poll.values()) == {str(POLL_INTERVAL_S)}, self.controller_poll

    def on(self, name: str) -> dict[str, set[str]]:
        """node id -> the actor ids of class ``name`` that ran there."""
        by_node: dict[str, set[str]] = {}
        for actor, node in self.nodes[name].items():
            by_node.setdefault(node, set()).add(actor)
        return by_node
