"""`ray job submit` of the smoke ablation against a `ray start --head` cluster with token auth."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = ["train_subset=1024", "test_subset=256", "recipe.total=16", "recipe.milestones=[12]"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """A real Ray head (`ray start --head`, dashboard and Jobs API on 127.0.0.1), stopped by pid.

    Never `ray stop`: it kills every Ray on the machine, this test session's own included.
    Its temp dir is short because Ray's unix socket paths must fit in 107 characters.
    """
    temp = Path(tempfile.mkdtemp(prefix="rayh", dir="/tmp"))
    dashboard = free_port()
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={free_port()}", "--num-cpus=2",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dashboard}", "--disable-usage-stats", f"--temp-dir={temp}",
                    # Own agent ports: the defaults clash with the test session's other Ray, and
                    # the job agent then never comes up ("No available agent to submit job").
                    f"--dashboard-agent-listen-port={free_port()}",
                    f"--dashboard-agent-grpc-port={free_port()}",
                    f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"],
                   env=env, check=True, capture_output=True, timeout=180)
    try:
        address = f"http://127.0.0.1:{dashboard}"
        wait_for_job_agent(address, env)
        yield address, env
    finally:
        for process in psutil.process_iter(["cmdline"]):
            if str(temp) in " ".join(process.info["cmdline"] or []):
                process.kill()
        shutil.rmtree(temp, ignore_errors=True)


def wait_for_job_agent(address: str, env: dict, timeout: float = 120) -> None:
    """The Jobs API answers a few seconds after `ray start` returns; submitting earlier fails
    with "No available agent to submit job"."""
    deadline = time.time() + timeout
    while True:
        listed = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                                capture_output=True, text=True, timeout=60)
        if listed.returncode == 0:
            return
        if time.time() > deadline:
            raise AssertionError(f"the Jobs API at {address} never answered: {listed.stderr[-1000:]}")
        time.sleep(2)


def test_job_submit_runs_the_smoke_ablation_and_needs_the_token(ray_head, tmp_path):
    address, env = ray_head
    storage = tmp_path / "runs"
    submit = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT),
              "--runtime-env-json", '{"excludes": [".venv", "runs", ".git"]}', "--",
              "python", "-m", "orchestrator.ablate", "--name", "job", "--axis", "depth=[8]",
              "--storage-path", str(storage)] + [a for pair in TINY for a in ("--set", pair)]

    without_token = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"} | {"RAY_AUTH_MODE": "disabled"}
    refused = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address],
                             env=without_token, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "auth" in (refused.stdout + refused.stderr).lower()

    deadline = time.time() + 120
    while True:  # the head's job agent can lag the Jobs API by a while after `ray start`
        done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=900)
        output = done.stdout + done.stderr
        if "No available agent" not in output or time.time() > deadline:
            break
        time.sleep(3)
    assert done.returncode == 0, output[-4000:]
    assert "succeeded" in output.lower()

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("resnet-orchestrator")
    parent = client.search_runs([experiment.experiment_id], "tags.`orchestrator.run_key` = 'job'")[0]
    assert parent.info.status == "FINISHED"
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == ["job-cifar_plain8-s0", "job-cifar_resnet8-A-s0"]
    assert all(c.info.status == "FINISHED" for c in children)
