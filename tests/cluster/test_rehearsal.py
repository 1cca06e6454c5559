"""A local multi-node rehearsal of the cluster set-up in cluster/README.md, all on 127.0.0.1, in the
shape `cluster/aws/cluster.yaml` starts: a head with no CPU (its `ray start` flags read from that
file, tests/cluster/shipped.py) and worker nodes that join while the job runs, as an autoscaler
adds them.

Real services (tests/cluster/conftest.py): PostgreSQL, the MLflow tracking server on it with basic
auth, token-authenticated Ray nodes, all killed by pid at the end.

The smoke ablation (2 tiny trials) is `ray job submit`ted to the head alone: it must say what it
waits for (no node can hold a trial), start when a worker node joins, and, when that node is lost
mid-run (SIGKILLed raylet; a second node has joined), still finish every trial, each epoch logged
exactly once in MLflow (read through the server and straight from PostgreSQL), with its trial
driver and Train controller on the head the whole time, each controller polling its workers every
0.25 s (run_trainer.py). A job API call without the token and an MLflow call without the password
are refused.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from tests.cluster.conftest import Placements, ray_cli, submit, waiting_logs
from tests.cluster.local_cluster import ROOT, LocalCluster
from tests.cluster.shipped import head_of, worker_of

NAME = "rehearsal"
TRAIN_IMAGES, BATCH = 1024, 128  # smoke recipe batch 128: 8 iterations an epoch
SUBSETS = [f"train_subset={TRAIN_IMAGES}", "test_subset=256"]
# The ablation's trials train 6 epochs: the test loses the node once it sees a checkpoint, which
# takes it up to ~5 s (a 2-s poll of the job and the state API); an epoch takes ~2 s on a quiet
# machine, so trials of 2 epochs could finish before the node was lost and nothing would restart.
ITERATIONS = 48
EPOCHS = math.ceil(ITERATIONS / (TRAIN_IMAGES // BATCH))
ABLATION = [*SUBSETS, f"recipe.total={ITERATIONS}", "recipe.milestones=[36]"]
TRIALS = sorted(f"{NAME}-{net}-s0" for net in ("cifar_plain8", "cifar_resnet8-A"))
JOB_TIMEOUT_S = 900  # 320 s in all beside another test on the 2 cores (make test's two workers)
# The code the job ships (its working_dir): this checkout; another tree only to debug the rehearsal.
SOURCE = Path(os.environ.get("CLUSTER_REHEARSAL_SOURCE", ROOT))


@pytest.fixture(scope="module")
def aws(services):
    cluster = LocalCluster(
        services.base, services.token, head_of("aws/cluster.yaml"), worker_of("aws/cluster.yaml"), "a"
    )
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def test_the_job_api_refuses_a_client_without_the_token(aws):
    address = aws.dashboard.url
    no_auth = {k: v for k, v in aws.head.env.items() if not k.startswith("RAY_AUTH")}
    no_auth |= {"RAY_AUTH_MODE": "disabled", "HOME": str(aws.base)}  # no ~/.ray/auth_token either
    refused = ray_cli(no_auth, "job", "list", "--address", address)
    assert refused.returncode != 0
    assert "auth" in (refused.stdout + refused.stderr).lower()

    wrong = no_auth | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    refused = ray_cli(wrong, "job", "list", "--address", address)
    assert refused.returncode != 0

    assert requests.get(f"{address}/api/jobs/", timeout=30).status_code in (401, 403)
    accepted = ray_cli(aws.head.env, "job", "list", "--address", address)
    assert accepted.returncode == 0, accepted.stderr[-2000:]


def test_the_mlflow_server_refuses_a_client_without_the_password(services):
    search = f"{services.server.url}/api/2.0/mlflow/experiments/search"
    assert requests.get(search, params={"max_results": 1}, timeout=30).status_code == 401
    wrong = (services.user[0], secrets.token_urlsafe(18))
    assert requests.get(search, params={"max_results": 1}, auth=wrong, timeout=30).status_code == 401
    assert requests.get(search, params={"max_results": 1}, auth=services.user, timeout=30).status_code == 200


@pytest.mark.timeout(1500)
def test_an_ablation_on_a_zero_cpu_head_waits_for_nodes_and_survives_losing_one(aws, services, monkeypatch):
    started = time.monotonic()
    (head,) = [n for n in aws.dashboard.nodes() if n["state"] == "ALIVE"]
    assert head["resources_total"].get("CPU", 0) == 0, head["resources_total"]  # as cluster.yaml starts it
    storage = services.base / "shared"  # what every node sees: stands for NFS or s3:// on a cluster
    submission_id = f"{NAME}-{secrets.token_hex(4)}"
    submit(
        aws,
        services,
        submission_id,
        SOURCE,
        [
            "orchestrator.ablate",
            "--name",
            NAME,
            "--axis",
            "depth=[8]",
            "--storage-path",
            str(storage),
            "--tracking-uri",
            services.server.url,
        ]
        + [a for pair in ABLATION for a in ("--set", pair)],
    )

    # The head alone holds no trial: the job says so and waits (asking the autoscaler), writing nothing.
    logs = waiting_logs(aws, submission_id, timeout=240)
    assert "waiting for 0.95 CPU" in logs and "the cluster has 0 CPU; autoscaler asked" in logs, logs[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", services.user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", services.user[1])
    client = MlflowClient(services.server.url)
    experiment = client.get_experiment_by_name("resnet-orchestrator")  # created up front: runs are not
    assert experiment is None or not client.search_runs(
        [experiment.experiment_id], f"tags.`orchestrator.run_key` LIKE '{NAME}%'"
    ), "an MLflow run before any node"
    first = aws.add_worker()  # what the autoscaler would start

    placements = Placements()
    second, lost_at, status = None, None, None
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        status = aws.dashboard.job(submission_id)["status"]
        workers = placements.poll(aws.dashboard)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        on_first = [a for a in workers if a["node_id"] == first.node_id and a["state"] == "ALIVE"]
        checkpoints = list(storage.glob(f"{NAME}/*/checkpoint_*"))
        if lost_at is None and on_first and checkpoints:
            second = aws.add_worker()  # the next node joins, then the first is lost with its machine
            first.crash()
            lost_at = time.monotonic() - started
            print(
                f"[rehearsal] lost {first.name} at {lost_at:.0f}s ({len(on_first)} train worker(s) on it, "
                f"{len(checkpoints)} checkpoint(s) written)"
            )
        time.sleep(2)
    logs = aws.dashboard.job_logs(submission_id)
    elapsed = time.monotonic() - started
    print(f"[rehearsal] job {status} after {elapsed:.0f}s\n{logs[-3000:]}")
    assert status == "SUCCEEDED", f"job {status} after {elapsed:.0f}s:\n{logs[-6000:]}"

    # Train workers ran on both worker nodes (never the head), and the first was lost mid-run...
    worker_nodes = placements.on("RayTrainWorker")
    assert lost_at is not None, f"{first.name} never ran a train worker with a checkpoint written: {worker_nodes}"
    assert set(worker_nodes) == {first.node_id, second.node_id}, worker_nodes
    states = {n["node_id"]: n["state"] for n in aws.dashboard.nodes()}
    assert states[first.node_id] == "DEAD"
    restarted = sum(len(ids) for ids in worker_nodes.values())
    assert restarted > len(TRIALS), f"no train worker was restarted after the node loss: {worker_nodes}"
    # ...while every trial driver (Tune's trial actor) and Train controller ran on the head.
    for name in ("ImplicitFunc", "TrainController"):
        assert set(placements.on(name)) == {aws.head.node_id}, (name, placements.on(name))
        assert len(placements.nodes[name]) >= len(TRIALS), (name, placements.nodes[name])
    placements.assert_controllers_polled_fast()

    # A cluster runs a dashboard: every Train run had Ray Train's placement-group cleaner (a private
    # Ray leaves it out: run_trainer.py); no run fed a Ray Dataset, so none had a shard manager.
    assert len(aws.dashboard.actors(class_name="PlacementGroupCleaner")) >= len(TRIALS)
    assert not aws.dashboard.actors(class_name="DatasetManager")

    # MLflow, read through the server with the job's credentials.
    experiment = client.get_experiment_by_name("resnet-orchestrator")
    parent = client.search_runs([experiment.experiment_id], f"tags.`orchestrator.run_key` = '{NAME}'")[0]
    assert parent.info.status == "FINISHED"
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
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
        models = client.search_logged_models(
            [experiment.experiment_id], filter_string=f"source_run_id = '{child.info.run_id}'"
        )
        assert [m.name for m in models] == ["model"], child.info.run_name

    # ...and straight from PostgreSQL: the server wrote there, not to a local file.
    ids = [c.info.run_id for c in children]
    rows = services.postgres.query(
        "SELECT status, count(*) FROM runs WHERE run_uuid = ANY(%s) GROUP BY status", params=(ids,)
    )
    assert rows == [("FINISHED", len(TRIALS))]
    (epochs_in_db,) = services.postgres.query(
        "SELECT count(*) FROM metrics WHERE key = 'epoch' AND run_uuid = ANY(%s)", params=(ids,)
    )[0]
    assert epochs_in_db == EPOCHS * len(TRIALS)
    assert list(services.server.artifacts.rglob("state.pt")), "no checkpoint reached the artifact store"
    print(
        f"[rehearsal] {len(TRIALS)} trials FINISHED, worker actors per node "
        f"{ {str(k)[:8]: len(v) for k, v in worker_nodes.items()} }, total {time.monotonic() - started:.0f}s"
    )
