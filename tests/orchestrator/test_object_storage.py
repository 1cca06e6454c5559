"""Object storage for real: checkpoints, resumes, shards and results through an S3 endpoint (moto's
server on 127.0.0.1, tests/s3_server.py), reached as any S3 store is, through AWS_ENDPOINT_URL."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import ablate, cli, prepare, train
from tests.orchestrator.conftest import TINY
from tests.orchestrator.test_imagenet import write_imagenet_tree
from tests.orchestrator.test_train import (  # noqa: F401
    assert_each_epoch_once,
    kill_session,
    session_pids,
    start_cli,
    wait_for,
)
from tests.reliability.procs import Command
from tests.s3_server import S3Server

# One worker, 4 epochs of 16 iterations: killed once the first epoch's checkpoint is registered, with
# about 3 epochs (several seconds each) left for the kill to land in. (The only `train` driver kill
# of the suite: what it proves of resuming holds for a local folder too, the same pyarrow calls.)
KILL_ARGS = [
    "--model",
    "cifar_resnet8",
    "--set",
    "workers=1",
    "--set",
    "train_subset=2048",
    "--set",
    "test_subset=256",
    "--iterations",
    "64",
    "--set",
    "keep_checkpoints=4",
]
KILL_EPOCHS, KILL_ITERATIONS_PER_EPOCH = 4, 16  # 2,048 images in batches of 128


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The endpoint, with buckets ``runs`` and ``data``; its AWS environment set for this module
    (the commands' subprocesses and Ray workers inherit it)."""
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log").start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        server.create_bucket("runs")
        server.create_bucket("data")
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


def snapshot(s3, prefix: str) -> dict:
    """Ray Train's record, in the bucket, of the run's kept checkpoints and reports ({} before any)."""
    try:
        body = s3.client().get_object(Bucket="runs", Key=f"{prefix}/checkpoint_manager_snapshot.json")["Body"]
    except s3.client().exceptions.NoSuchKey:
        return {}
    return json.loads(body.read())


def registered(s3, prefix: str) -> list[tuple[str, int]]:
    """The run's kept checkpoints in the bucket: ``[(folder, epoch)]``."""
    kept = snapshot(s3, prefix).get("checkpoint_results", [])
    return [(r["checkpoint_dir_name"], int(r["metrics"]["epoch"])) for r in kept]


def test_a_run_checkpoints_to_s3_is_killed_and_resumes_from_s3(s3, start_cli, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [*KILL_ARGS, "--name", "s3kill", "--storage-path", "s3://runs/kill", "--tracking-uri", uri]
    first = start_cli(tmp_path, args)
    run_id = first.run_id(timeout=120)
    client = MlflowClient(uri)
    wait_for(lambda: registered(s3, "kill/s3kill"), 240, first, "a checkpoint registered in s3://runs/kill/s3kill")
    before = registered(s3, "kill/s3kill")
    kill_session(first.pid)  # the driver and its private Ray, all at once
    first.process.wait(timeout=30)
    assert first.process.returncode == -signal.SIGKILL
    assert not session_pids(first.pid)
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody closed it

    second = start_cli(tmp_path, [*args, "--json", str(tmp_path / "out.json")])
    assert second.wait(timeout=300) == 0, second.describe()
    out = second.output()
    assert f"[s3kill] resuming MLflow run {run_id}" in out and "starting" not in out
    assert len(before) < KILL_EPOCHS, before  # killed mid-run
    # The epochs the killed run had not logged, each printed once, in order, to the last.
    printed = [int(e) for e in re.findall(rf"\[s3kill\] epoch (\d+)/{KILL_EPOCHS}", out)]
    assert printed and printed == list(range(printed[0], KILL_EPOCHS + 1)), out
    # It went on from the latest checkpoint: the ones before the kill are kept, each later epoch
    # was reported once.
    after = registered(s3, "kill/s3kill")
    assert after[: len(before)] == before and [epoch for _, epoch in after] == list(range(1, KILL_EPOCHS + 1))
    assert snapshot(s3, "kill/s3kill")["current_report_index"] == KILL_EPOCHS
    assert not (tmp_path / "kill").exists()  # nothing went to a local folder instead
    summary = json.loads((tmp_path / "out.json").read_text())
    assert (summary["status"], summary["run_id"], summary["storage_path"]) == ("FINISHED", run_id, "s3://runs/kill")
    assert summary["metrics"]["iteration"] == KILL_EPOCHS * KILL_ITERATIONS_PER_EPOCH
    assert summary["checkpoints"]["last"].startswith("runs/kill/s3kill/checkpoint_")
    experiment = client.get_experiment_by_name("resnet-orchestrator")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run_id]  # no duplicate
    # Every per-epoch metric once an epoch, across the kill.
    assert_each_epoch_once(client, run_id, KILL_EPOCHS, KILL_ITERATIONS_PER_EPOCH)


def test_prepare_writes_shards_to_s3_and_a_run_trains_from_them(s3, start_cli, tmp_path):
    write_imagenet_tree(tmp_path / "ilsvrc", {"train": 8, "val": 1})
    for split in ("train", "val"):
        summary = prepare.prepare(
            "imagenet", "s3://data/imagenet", split=split, data_root=str(tmp_path / "ilsvrc"), echo=lambda line: None
        )
        assert summary["rows"] == (16 if split == "train" else 2)
    assert "imagenet/train/manifest.json" in s3.keys("data", "imagenet/")
    # The imagenet preset on the CPU; a CIFAR-style net reads the same 224x224 crops for a fraction of
    # ResNet-18's work. As a process of its own: its Ray workers reach the store as the CLI does.
    run = start_cli(
        tmp_path,
        [
            "-p",
            "imagenet",
            "--model",
            "cifar_resnet8",
            "--name",
            "s3-imagenet",
            "--data-root",
            "s3://data/imagenet",
            "--storage-path",
            "s3://runs/imagenet",
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--epochs",
            "1",
            "--set",
            "use_gpu=false",
            "--set",
            "workers=2",
            "--set",
            "cpus_per_worker=0.5",
            "--set",
            "recipe.batch_size=8",
            "--json",
            str(tmp_path / "out.json"),
        ],
    )
    assert run.wait(timeout=400) == 0, run.describe()
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["status"] == "FINISHED" and result["metrics"]["iteration"] == 2  # 16 images, global batch 8
    assert any(k.endswith("/state.pt") for k in s3.keys("runs", "imagenet/s3-imagenet/"))


def test_an_ablation_on_s3_storage_logs_its_results_table_to_mlflow(s3, tmp_path):
    command = Command(
        "orchestrator.ablate",
        [
            "--name",
            "s3abl",
            "--axis",
            "depth=[8]",
            "--axis",
            "residual=[true]",
            "--storage-path",
            "s3://runs/ablations",
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--json",
            str(tmp_path / "out.json"),
        ]
        + [a for pair in TINY for a in ("--set", pair)],
        tmp_path,
        "ablate",
    )
    try:
        assert command.wait(timeout=400) == 0, command.describe()
    finally:
        command.kill()
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["failed"] == [] and summary["storage_path"] == "s3://runs/ablations/s3abl"
    client = MlflowClient(summary["tracking_uri"])
    assert {a.path for a in client.list_artifacts(summary["parent_run_id"], "results")} == {
        "results/results.csv",
        "results/results.parquet",
    }
    assert any(k.endswith("/state.pt") for k in s3.keys("runs", "ablations/s3abl/"))


@pytest.mark.parametrize(
    "command,argv",
    [
        (train, ["--storage-path", "s3://runs/x", "--tracking-uri", "sqlite:///{tmp}/mlflow.db"]),
        (ablate, ["--storage-path", "s3://runs/x", "--tracking-uri", "sqlite:///{tmp}/mlflow.db"]),
        (prepare, ["--dataset", "fashion-mnist", "--out", "s3://data/x"]),
    ],
)
@pytest.mark.parametrize(
    "fault,message",
    [
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, r"cannot reach the object store at http://127\.0\.0\.1:9"),
        ("nobucket", r"bucket 'nobucket' does not exist at http://127\.0\.0\.1:\d+ \(AWS_ENDPOINT_URL\)"),
    ],
)
def test_a_wrong_endpoint_or_bucket_is_one_line_before_ray_starts(
    s3, monkeypatch, capsys, tmp_path, command, argv, fault, message
):
    if isinstance(fault, dict):
        for key, value in fault.items():
            monkeypatch.setenv(key, value)
    else:
        argv = [a.replace("//runs/", f"//{fault}/").replace("//data/", f"//{fault}/") for a in argv]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    monkeypatch.setattr(cli, "init_ray", lambda: pytest.fail("Ray started before the storage was checked"))
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        cli.run(command.main, [*argv, "--json", str(tmp_path / "out.json")])
    lines = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and re.search(message, lines[0]), lines
    assert lines[0].startswith("error: --") and not list(tmp_path.iterdir())
    print(f"{command.__name__} refused in {time.monotonic() - started:.1f}s")
