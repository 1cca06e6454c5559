"""`ensemble train` rehearsed in the shape cluster/kuberay/rayjob-ensemble.yaml starts (the ILSVRC
2015 RayJob): a head with `num-cpus: "0"` and worker pods that join while the job runs, every
node's `ray start` flags read from that manifest (tests/cluster/shipped.py).

The smoke ensemble (three tiny members) is submitted to the head alone: it must say what it waits
for, start when a worker node joins, train every member as a child run of one ensemble parent in
the MLflow server (PostgreSQL, basic auth), and evaluate them as an ensemble over Ray.
"""

from __future__ import annotations

import secrets
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.cluster.conftest import Placements, submit, waiting_logs
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.shipped import head_of, worker_of
from tests.cluster.test_rehearsal import SOURCE, SUBSETS

NAME = "ensemble-rehearsal"
MEMBERS = 3  # configs/ensemble/smoke.yaml
TINY = [*SUBSETS, "recipe.total=16", "recipe.milestones=[12]"]  # 2 epochs a member
JOB_TIMEOUT_S = 900  # 430 s in all beside another test on the 2 cores (make test's two workers)
MANIFEST = "kuberay/rayjob-ensemble.yaml"


@pytest.fixture(scope="module")
def rayjob(services):
    cluster = LocalCluster(services.base, services.token, head_of(MANIFEST), worker_of(MANIFEST), "k")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.mark.timeout(1500)
def test_ensemble_train_on_a_zero_cpu_head_waits_for_a_node_then_trains_and_evaluates(rayjob, services, monkeypatch):
    started = time.monotonic()
    storage = services.base / "shared-ensemble"
    submission_id = f"{NAME}-{secrets.token_hex(4)}"
    submit(
        rayjob,
        services,
        submission_id,
        SOURCE,
        [
            "orchestrator.ensemble",
            "train",
            "--name",
            NAME,
            "--storage-path",
            str(storage),
            "--tracking-uri",
            services.server.url,
        ]
        + [a for pair in TINY for a in ("--set", pair)],
    )
    logs = waiting_logs(rayjob, submission_id, timeout=240)
    assert "the cluster has 0 CPU; autoscaler asked" in logs, logs[-3000:]
    node = rayjob.add_worker()

    placements, status = Placements(), None
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        status = rayjob.dashboard.job(submission_id)["status"]
        placements.poll(rayjob.dashboard)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(2)
    logs = rayjob.dashboard.job_logs(submission_id)
    print(f"[rehearsal] ensemble job {status} after {time.monotonic() - started:.0f}s\n{logs[-3000:]}")
    assert status == "SUCCEEDED", logs[-6000:]
    assert "ENSEMBLE (average)" in logs

    # Members trained on the worker node; their drivers and Train controllers ran on the head.
    assert set(placements.on("RayTrainWorker")) == {node.node_id}, placements.on("RayTrainWorker")
    for name in ("ImplicitFunc", "TrainController"):
        assert set(placements.on(name)) == {rayjob.head.node_id}, (name, placements.on(name))
        assert len(placements.nodes[name]) >= MEMBERS, (name, placements.nodes[name])
    placements.assert_controllers_polled_fast()

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", services.user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", services.user[1])
    client = MlflowClient(services.server.url)
    experiment = client.get_experiment_by_name("resnet-orchestrator")
    (parent,) = client.search_runs([experiment.experiment_id], f"tags.`orchestrator.run_key` = '{NAME}'")
    assert parent.info.status == "FINISHED" and parent.data.tags["orchestrator.kind"] == "ensemble"
    members = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(members) == MEMBERS and {m.info.status for m in members} == {"FINISHED"}
    (evaluation,) = client.search_runs(
        [experiment.experiment_id],
        f"tags.`orchestrator.kind` = 'ensemble-evaluation' "
        f"and tags.`orchestrator.ensemble_parent` = '{parent.info.run_id}'",
    )
    assert evaluation.data.metrics["members"] == MEMBERS
    assert 0 <= evaluation.data.metrics["ensemble_top1_error"] <= 100
