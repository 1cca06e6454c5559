"""A local multi-node rehearsal of the cluster set-up in cluster/README.md, all on 127.0.0.1.

Real services, started here and killed by pid at the end:
- PostgreSQL (a fresh data dir, `initdb` + `pg_ctl` as the postgres user; not systemd),
- the MLflow tracking server, started by cluster/mlflow/start-server.sh: PostgreSQL backend,
  proxied artifacts, basic auth with an admin generated now and a non-admin user for the jobs,
- a Ray head and a second Ray node (`ray start`, token auth, distinct ports and temp dirs; the
  second node carries a custom resource `node2`).

Then `ray job submit` of the smoke ablation (4 tiny trials) with the MLflow credentials in the
job's runtime_env. Mid-run the second node's raylet is SIGKILLed (a lost machine); the job must
still succeed, with every trial FINISHED in MLflow (read through the server and straight from
PostgreSQL) with each of its epochs exactly once, and every trial's checkpoints in the shared
storage folder. A job API call without the token, and an MLflow call without the password, are
refused.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from tests.cluster.local_cluster import (BIN, ROOT, Dashboard, MlflowServer, Postgres, RayNode,
                                         kill_mentioning, postgres_bin, remove, wait_for)

NAME = "rehearsal"
TRAIN_IMAGES, BATCH, ITERATIONS = 1024, 128, 32  # smoke recipe batch 128: 8 iterations an epoch
EPOCHS = math.ceil(ITERATIONS / (TRAIN_IMAGES // BATCH))
TINY = [f"train_subset={TRAIN_IMAGES}", "test_subset=256", f"recipe.total={ITERATIONS}",
        "recipe.milestones=[24]"]
TRIALS = sorted(f"{NAME}-{net}-s{seed}" for net in ("cifar_plain8", "cifar_resnet8-A") for seed in (0, 1))
JOB_TIMEOUT_S = 540
# The code the job ships (its working_dir): this checkout; another tree only to debug the rehearsal.
SOURCE = Path(os.environ.get("CLUSTER_REHEARSAL_SOURCE", ROOT))


class Cluster:
    def __init__(self, base: Path, token: str, postgres: Postgres, server: MlflowServer,
                 head: RayNode, node2: RayNode, dashboard: Dashboard, user: tuple[str, str]):
        self.base, self.token, self.postgres, self.server = base, token, postgres, server
        self.head, self.node2, self.dashboard, self.user = head, node2, dashboard, user
        self.shared = base / "shared"  # what both nodes see: stands for NFS or s3:// on a cluster


@pytest.fixture(scope="module")
def cluster():
    # `make test` installs all three; a missing one is a broken set-up, not a reason to pass.
    if postgres_bin() is None:
        pytest.fail("PostgreSQL is not installed: run `make test-services` (Debian: apt-get install postgresql)")
    import flask_wtf  # noqa: F401 - mlflow[auth], for --app-name basic-auth
    import psycopg2  # noqa: F401 - psycopg2-binary, for MLflow on PostgreSQL
    base = Path(tempfile.mkdtemp(prefix="rcl", dir="/tmp"))  # short: Ray socket paths <= 107 chars
    base.chmod(0o755)  # the postgres user must reach its data dir inside
    token = secrets.token_hex(32)  # the cluster's Ray token, generated now, passed by env only
    postgres = Postgres(base)
    server = MlflowServer(base, postgres)
    head = RayNode(base, "rh", token, num_cpus=2, resources={"head": 1})
    node2 = RayNode(base, "r2", token, num_cpus=2, resources={"node2": 1}, head_address=head.address)
    try:
        postgres.start()
        server.start()
        user = server.create_user("ray-jobs")
        head.start()
        node2.start()
        dashboard = Dashboard(f"http://127.0.0.1:{head.dashboard_port}", token)

        def both_alive():
            nodes = [n for n in dashboard.nodes() if n["state"] == "ALIVE"]
            return nodes if len(nodes) == 2 else None

        for node in wait_for(both_alive, 120, "two alive Ray nodes"):
            if "node2" in node.get("resources_total", {}):
                node2.node_id = node["node_id"]
            else:
                head.node_id = node["node_id"]
        assert head.node_id and node2.node_id
        yield Cluster(base, token, postgres, server, head, node2, dashboard, user)
    finally:
        for stop in (node2.stop, head.stop, server.stop, postgres.stop):
            try:
                stop()
            except Exception as error:  # noqa: BLE001 - stop the rest anyway
                print(f"cleanup: {stop.__qualname__}: {error!r}")
        kill_mentioning(str(base))
        remove(base)


def ray_cli(cluster: Cluster, *args, env: dict | None = None, timeout: float = 120):
    return subprocess.run([str(BIN / "ray"), *args], env=env or cluster.head.env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_job_api_refuses_a_client_without_the_token(cluster):
    address = cluster.dashboard.url
    no_auth = {k: v for k, v in cluster.head.env.items() if not k.startswith("RAY_AUTH")}
    no_auth |= {"RAY_AUTH_MODE": "disabled", "HOME": str(cluster.base)}  # no ~/.ray/auth_token either
    refused = ray_cli(cluster, "job", "list", "--address", address, env=no_auth)
    assert refused.returncode != 0
    assert "auth" in (refused.stdout + refused.stderr).lower()

    wrong = no_auth | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    refused = ray_cli(cluster, "job", "list", "--address", address, env=wrong)
    assert refused.returncode != 0

    assert requests.get(f"{address}/api/jobs/", timeout=30).status_code in (401, 403)
    accepted = ray_cli(cluster, "job", "list", "--address", address)
    assert accepted.returncode == 0, accepted.stderr[-2000:]


def test_the_mlflow_server_refuses_a_client_without_the_password(cluster):
    search = f"{cluster.server.url}/api/2.0/mlflow/experiments/search"
    assert requests.get(search, params={"max_results": 1}, timeout=30).status_code == 401
    wrong = (cluster.user[0], secrets.token_urlsafe(18))
    assert requests.get(search, params={"max_results": 1}, auth=wrong, timeout=30).status_code == 401
    assert requests.get(search, params={"max_results": 1}, auth=cluster.user, timeout=30).status_code == 200


def test_the_smoke_ablation_survives_losing_a_node(cluster, monkeypatch):
    started = time.monotonic()
    storage = cluster.shared
    submission_id = f"{NAME}-{secrets.token_hex(4)}"
    runtime_env = {
        "excludes": [".venv", ".git", "runs", "mlruns", "*.egg-info", ".pytest_cache"],
        # The job's MLflow identity: on a real cluster these come from a Secret into the pods' env
        # (cluster/kuberay/*.yaml); a runtime_env is visible to anyone holding the Ray token.
        "env_vars": {"MLFLOW_TRACKING_USERNAME": cluster.user[0],
                     "MLFLOW_TRACKING_PASSWORD": cluster.user[1],
                     "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
                     "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"},
    }
    submit = ["job", "submit", "--address", cluster.dashboard.url, "--submission-id", submission_id,
              "--no-wait", "--working-dir", str(SOURCE), "--runtime-env-json", json.dumps(runtime_env), "--",
              "python", "-m", "orchestrator.ablate", "--name", NAME, "--axis", "depth=[8]",
              "--axis", "seed=[0,1]", "--storage-path", str(storage),
              "--tracking-uri", cluster.server.url] + [a for pair in TINY for a in ("--set", pair)]
    submitted = ray_cli(cluster, *submit, timeout=300)
    assert submitted.returncode == 0, submitted.stdout[-2000:] + submitted.stderr[-2000:]

    worker_nodes: dict[str, set[str]] = {}  # node id -> RayTrainWorker actor ids seen there
    killed_at = None
    status = None
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        status = cluster.dashboard.job(submission_id)["status"]
        workers = cluster.dashboard.actors(class_name="RayTrainWorker")
        for actor in workers:
            worker_nodes.setdefault(actor["node_id"], set()).add(actor["actor_id"])
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        on_node2 = [a for a in workers if a["node_id"] == cluster.node2.node_id and a["state"] == "ALIVE"]
        checkpoints = list(storage.glob(f"{NAME}/*/checkpoint_*"))
        if killed_at is None and on_node2 and checkpoints:
            cluster.node2.crash()  # the machine is gone: raylet, workers, agents
            killed_at = time.monotonic() - started
            print(f"[rehearsal] killed node2 at {killed_at:.0f}s ({len(on_node2)} train worker(s) on it, "
                  f"{len(checkpoints)} checkpoint(s) written)")
        time.sleep(2)
    logs = cluster.dashboard.job_logs(submission_id)
    elapsed = time.monotonic() - started
    print(f"[rehearsal] job {status} after {elapsed:.0f}s\n{logs[-3000:]}")
    assert status == "SUCCEEDED", f"job {status} after {elapsed:.0f}s:\n{logs[-6000:]}"

    # Trials ran on both nodes, and node2 was lost mid-run.
    assert killed_at is not None, f"node2 never ran a train worker with a checkpoint written: {worker_nodes}"
    assert {cluster.head.node_id, cluster.node2.node_id} <= set(worker_nodes), worker_nodes
    states = {n["node_id"]: n["state"] for n in cluster.dashboard.nodes()}
    assert states[cluster.node2.node_id] == "DEAD"
    restarted = sum(len(ids) for ids in worker_nodes.values())
    assert restarted > len(TRIALS), f"no train worker was restarted after the node loss: {worker_nodes}"

    # MLflow, read through the server with the job's credentials.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", cluster.user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", cluster.user[1])
    client = MlflowClient(cluster.server.url)
    experiment = client.get_experiment_by_name("resnet-orchestrator")
    parent = client.search_runs([experiment.experiment_id], f"tags.`orchestrator.run_key` = '{NAME}'")[0]
    assert parent.info.status == "FINISHED"
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == TRIALS
    for child in children:
        assert child.info.status == "FINISHED", (child.info.run_name, child.data.tags.get("orchestrator.error"))
        history = client.get_metric_history(child.info.run_id, "epoch")
        assert sorted(m.value for m in history) == list(range(1, EPOCHS + 1)), (child.info.run_name, history)
        assert len({m.step for m in history}) == len(history)  # no epoch logged twice after a restart
        # Checkpoints in the shared storage, and the model uploaded through the server's artifact proxy.
        assert list((storage / NAME / child.info.run_name).glob("checkpoint_*/state.pt")), child.info.run_name
        assert "checkpoints" in {a.path for a in client.list_artifacts(child.info.run_id)}
        # MLflow 3 keeps a logged model beside the run's artifacts, linked by its source run.
        models = client.search_logged_models([experiment.experiment_id],
                                             filter_string=f"source_run_id = '{child.info.run_id}'")
        assert [m.name for m in models] == ["model"], child.info.run_name

    # ...and straight from PostgreSQL: the server wrote there, not to a local file.
    ids = [c.info.run_id for c in children]
    rows = cluster.postgres.query("SELECT status, count(*) FROM runs WHERE run_uuid = ANY(%s) GROUP BY status",
                                  params=(ids,))
    assert rows == [("FINISHED", len(TRIALS))]
    (epochs_in_db,) = cluster.postgres.query(
        "SELECT count(*) FROM metrics WHERE key = 'epoch' AND run_uuid = ANY(%s)", params=(ids,))[0]
    assert epochs_in_db == EPOCHS * len(TRIALS)
    assert list(cluster.server.artifacts.rglob("state.pt")), "no checkpoint reached the artifact store"
    print(f"[rehearsal] {len(TRIALS)} trials FINISHED, worker actors per node "
          f"{ {str(k)[:8]: len(v) for k, v in worker_nodes.items()} }, total {time.monotonic() - started:.0f}s")
