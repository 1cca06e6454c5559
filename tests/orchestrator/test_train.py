"""python -m orchestrator.train end to end: real Ray Train, real MLflow (sqlite in tmp), real
Fashion-MNIST subsets. No mocks.

In-process ``train(config)`` calls share the session's local Ray (the ``ray_local`` fixture); the
tests that kill a process run the CLI as a subprocess in its own session (it starts a private Ray),
and kill every process of that session at clean-up. Processes are found through /proc (Linux).

Every test runs with its temporary folder as the working directory: MLflow puts the artifacts of a
sqlite-tracked experiment under ``./mlruns`` of whoever created the experiment, and a test must not
write into the checkout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from orchestrator import tracking
from orchestrator.build import build_run_model, run_recipe
from orchestrator.config import ExperimentConfig
from orchestrator.data import load_split
from orchestrator.tracking import CHECKPOINT_FILE
from orchestrator.train import build_parser, config_from_args
from orchestrator.trainer import run_folder
from orchestrator.training import train
from tests.shared_data import needs_fashion_mnist
from workloads.data import ResidentLoader, per_pixel_mean
from workloads.engine import evaluate, load_checkpoint

MLFLOW_URI_AT_IMPORT = os.environ.get("MLFLOW_TRACKING_URI")  # before any test of this session ran
ROOT = Path(__file__).resolve().parents[2]
EPOCH_METRICS = (
    "epoch",
    "iteration",
    "epochs",
    "total_iterations",
    "train_loss",
    "train_error",
    "test_loss",
    "test_top1_error",
    "test_top5_error",
    "images_per_second",
    "image_size",
)
RUN_ID = re.compile(r"(starting|resuming) MLflow run ([0-9a-f]{32})")

pytestmark = needs_fashion_mnist


# --- helpers -----------------------------------------------------------------------------------------


def config_of(folder: Path, *argv: str) -> ExperimentConfig:
    """The config ``python -m orchestrator.train ARGV --storage-path FOLDER/runs`` would train."""
    return config_from_args(build_parser().parse_args([*argv, "--storage-path", str(folder / "runs")]))


def client_of(config: ExperimentConfig) -> tracking.MlflowClient:
    return tracking.MlflowClient(tracking_uri=config.resolved_tracking_uri())


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every logged point of ``key``, in step order."""
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def assert_each_epoch_once(client, run_id: str, epochs: int, iterations_per_epoch: int) -> None:
    """MLflow holds exactly one point per epoch for every per-epoch metric: no duplicates, none missing."""
    for key in EPOCH_METRICS:
        points = history(client, run_id, key)
        steps = [step for step, _ in points]
        assert steps == [iterations_per_epoch * e for e in range(1, epochs + 1)], (key, points)
    assert [v for _, v in history(client, run_id, "epoch")] == list(range(1, epochs + 1))
    assert [v for _, v in history(client, run_id, "iteration")] == [
        iterations_per_epoch * e for e in range(1, epochs + 1)
    ]
    for key in ("train_loss_step", "train_error_step", "lr"):  # the log_every points: each step once
        steps = [step for step, _ in history(client, run_id, key)]
        assert steps == sorted(set(steps)), (key, steps)


def snapshot_checkpoints(folder: Path) -> tuple[list[tuple[str, int]], int]:
    """Ray Train's record of the run's kept checkpoints: ``[(dir name, epoch)]`` and the number of
    reports made. With ``keep_checkpoints`` >= epochs every checkpoint of the run is in it."""
    snapshot = json.loads((folder / "checkpoint_manager_snapshot.json").read_text())
    kept = [(r["checkpoint_dir_name"], int(r["metrics"]["epoch"])) for r in snapshot["checkpoint_results"]]
    return kept, snapshot["current_report_index"]


@pytest.fixture(autouse=True)
def _clean_env(tmp_path, monkeypatch):
    """Work in ``tmp_path`` with the default tracking URI (sqlite next to the storage)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# --- processes (via /proc, so no psutil is needed) ---------------------------------------------------


def _stat(pid: int) -> tuple[int, int]:
    """``(ppid, session id)`` of ``pid``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # state ppid pgrp session ...
    return int(fields[1]), int(fields[3])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def session_pids(sid: int) -> list[int]:
    pids = []
    for pid in _all_pids():
        try:
            if _stat(pid)[1] == sid:
                pids.append(pid)
        except (OSError, ValueError, IndexError):
            pass
    return pids


def kill_session(sid: int, timeout: float = 30) -> None:
    """SIGKILL every process of session ``sid`` (the CLI, its private Ray and Ray's workers, which
    sit in process groups of their own but in the CLI's session) until none is left."""
    deadline = time.monotonic() + timeout
    while (pids := [p for p in session_pids(sid) if p != os.getpid()]) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


class CLI:
    """``python -m orchestrator.train`` in a session of its own, output to files."""

    def __init__(self, folder: Path, args: list[str], label: str = "cli"):
        self.folder = folder
        self.stdout, self.stderr = folder / f"{label}.out", folder / f"{label}.err"
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.train", *args],
                cwd=folder,
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.stdout.read_text()

    def run_id(self, timeout: float) -> str:
        return wait_for(lambda: (m := RUN_ID.search(self.output())) and m.group(2), timeout, self, "the MLflow run id")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"CLI still running after {timeout}s\n{self.describe()}")

    def describe(self) -> str:
        return f"--- stdout\n{self.output()}\n--- stderr (end)\n{self.stderr.read_text()[-3000:]}"


def wait_for(probe, timeout: float, cli: CLI, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if cli.process.poll() is not None:
            pytest.fail(f"CLI exited ({cli.process.returncode}) before {what}\n{cli.describe()}")
        time.sleep(interval)
    pytest.fail(f"no {what} after {timeout}s\n{cli.describe()}")


@pytest.fixture
def start_cli():
    started: list[CLI] = []

    def start(folder: Path, args: list[str]) -> CLI:
        cli = CLI(folder, args, label=f"cli{len(started) + 1}")
        started.append(cli)
        return cli

    yield start
    for cli in started:
        kill_session(cli.pid)
        cli.process.wait(timeout=30)


# --- 1. a 2-worker run learns, and its MLflow record is complete -------------------------------------

# CIFAR ResNet-8 on 4,096 Fashion-MNIST images, 160 iterations of batch 128 (5 epochs of 32; lr
# /10 at 80 and 120): measured 27-30% test top-1 error on 1,000 test images (chance: 90%). 1,000
# training images are held out as its validation split.
LEARN_ARGS = (
    "--model",
    "cifar_resnet8",
    "--name",
    "learn",
    "--set",
    "train_subset=4096",
    "--set",
    "test_subset=1000",
    "--set",
    "val_split=1000",
    "--iterations",
    "160",
)
LEARN_EPOCHS, LEARN_ITERATIONS_PER_EPOCH = 5, 32


@pytest.fixture(scope="module")
def learned(ray_local, tmp_path_factory):
    """One finished 2-worker run: ``(config, summary, progress lines, the classes of the Ray actors
    it started)``."""
    from ray._private.state import actors  # the GCS's actor table (no dashboard needed)

    folder = tmp_path_factory.mktemp("learn")
    cwd, old_uri = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(folder)
    before = set(actors())
    try:
        config = config_of(folder, *LEARN_ARGS)
        lines: list[str] = []
        started = time.monotonic()
        summary = train(config, echo=lines.append)
        seconds = time.monotonic() - started
    finally:
        os.chdir(cwd)
        if old_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri
    started_actors = {actor["ActorClassName"] for key, actor in actors().items() if key not in before}
    print(f"\nlearn run: {seconds:.1f}s, test top-1 error {summary.metrics.get('test_top1_error')}%")
    return config, summary, lines, started_actors


@pytest.mark.timeout(400)
def test_two_workers_learn_far_below_chance(learned):
    config, summary, lines, _ = learned
    assert summary.status == "FINISHED", summary.error
    assert summary.error is None
    assert summary.metrics["epoch"] == LEARN_EPOCHS
    assert summary.metrics["iteration"] == 160
    assert summary.metrics["test_top1_error"] < 35.0  # chance is 90%
    assert summary.metrics["test_top5_error"] < 5.0  # chance is 50%
    assert summary.metrics["train_error"] < 35.0
    assert lines[0].startswith(
        f"[learn] starting MLflow run {summary.run_id} (cifar_resnet8 on fashion-mnist, 2 worker(s))"
    )
    progress = [int(re.match(r"\[learn\] epoch (\d+)/5 iter \d+/160 \|", line).group(1)) for line in lines[1:]]
    assert progress and progress == sorted(set(progress)) and progress[-1] == LEARN_EPOCHS, lines
    assert all("img/s" in line for line in lines[1:])


def test_a_run_on_a_private_ray_starts_no_helper_process_it_has_no_use_for(learned):
    """No Ray Data shard manager (it feeds no Ray Dataset), no placement-group cleaner (no dashboard
    to watch the controller through), no preemption watcher (one machine): see run_trainer.py."""
    *_, started = learned
    assert {"TrainController", "SynchronizationActor", "RayTrainWorker"} <= started, started
    assert not started & {"DatasetManager", "PlacementGroupCleaner", "PreemptionWatcher"}, started


def test_mlflow_run_holds_config_metrics_tags_and_status(learned):
    config, summary, _, _ = learned
    client = client_of(config)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "learn"
    # The whole config, flattened (recipe_overrides.* included), and the schedule it ran as recipe.*.
    assert run.data.params == tracking.flatten(tracking.training_params(config, run_recipe(config)))
    assert run.data.params["recipe_overrides.total"] == "160"
    recipe = {k: run.data.params[f"recipe.{k}"] for k in ("lr", "batch_size", "milestones", "total", "warmup")}
    assert recipe == {"lr": "0.1", "batch_size": "128", "milestones": "[80, 120]", "total": "160", "warmup": "False"}
    assert run.data.params["model"] == "cifar_resnet8" and run.data.params["workers"] == "2"
    tags = run.data.tags
    assert {k: tags.get(k) for k in ("model", "depth", "shortcut", "dataset", "recipe")} == {
        "model": "cifar_resnet8",
        "depth": "8",
        "shortcut": "A",
        "dataset": "fashion-mnist",
        "recipe": "smoke",
    }
    assert tags["residual"] in ("True", "1")  # "1": see test_tags_are_written_as_strings
    assert tags[tracking.CONFIG_HASH] == config.hash()
    assert tags[tracking.RUN_KEY] == "learn"
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", tags["git_commit"]), tags["git_commit"]
    assert tracking.DIVERGED not in tags and "orchestrator.error" not in tags
    assert_each_epoch_once(client, summary.run_id, LEARN_EPOCHS, LEARN_ITERATIONS_PER_EPOCH)
    # The summary is the last epoch's record.
    for key, value in summary.metrics.items():
        assert run.data.metrics[key] == pytest.approx(value), key
    errors = [v for _, v in history(client, summary.run_id, "train_error")]
    assert errors[-1] < errors[0]  # training error falls
    # Every epoch is scored on the held-out images too, and the best checkpoint is chosen on them.
    val = history(client, summary.run_id, "val_top1_error")
    assert [step for step, _ in val] == [LEARN_ITERATIONS_PER_EPOCH * e for e in range(1, LEARN_EPOCHS + 1)]
    assert val[-1][1] < 35.0 and val[-1][1] != summary.metrics["test_top1_error"]
    assert tags[tracking.BEST_BY] == tracking.BEST_BY_VALIDATION


@pytest.fixture(scope="module")
def reevaluated(learned, tmp_path_factory):
    """The run's ``checkpoints/last`` artifact, downloaded, loaded and evaluated on the run's test
    subset: as the workers did (two shards, one thread each, counts summed) and in one pass."""
    config, summary, _, _ = learned
    import mlflow.artifacts

    path = mlflow.artifacts.download_artifacts(
        artifact_uri=summary.artifacts["last"],
        dst_path=str(tmp_path_factory.mktemp("download")),
        tracking_uri=config.resolved_tracking_uri(),
    )
    state = load_checkpoint(path)
    train_data, test_data = load_split(config, "train"), load_split(config, "test")
    model = build_run_model(config, train_data.in_channels, train_data.num_classes)
    model.load_state_dict(state["model"])
    model.eval()
    mean = per_pixel_mean(train_data.images)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a worker with 1 CPU runs 1 thread
    try:
        shards = [
            evaluate(
                model,
                ResidentLoader(
                    test_data.images, test_data.labels, 256, train=False, mean=mean, rank=rank, world_size=2
                ),
                "cpu",
            )
            for rank in (0, 1)
        ]
    finally:
        torch.set_num_threads(threads)
    count = sum(s["count"] for s in shards)
    sharded = {key: sum(s[key] * s["count"] for s in shards) / count for key in ("loss", "top1_error", "top5_error")}
    loader = ResidentLoader(test_data.images, test_data.labels, 256, train=False, mean=mean)
    whole = evaluate(model, loader, "cpu")
    return {
        "state": state,
        "model": model,
        "loader": loader,
        "sizes": (len(train_data), len(test_data)),
        "count": count,
        "sharded": sharded,
        "whole": whole,
    }


@pytest.mark.timeout(300)
def test_checkpoint_artifact_reproduces_the_logged_test_error(learned, reevaluated):
    config, summary, _, _ = learned
    client = client_of(config)
    assert summary.artifacts["last"] == f"runs:/{summary.run_id}/checkpoints/last/{CHECKPOINT_FILE}"
    listed = [a.path for a in client.list_artifacts(summary.run_id, "checkpoints/last")]
    assert listed == [f"checkpoints/last/{CHECKPOINT_FILE}"]
    state = reevaluated["state"]
    assert (state["epoch"], state["iteration"], state["config_hash"]) == (LEARN_EPOCHS, 160, config.hash())
    assert state["config"] == config.to_dict()
    assert reevaluated["sizes"] == (4096, 1000) and reevaluated["count"] == 1000
    logged = summary.metrics
    # Within one test image (0.1%): the workers' rank 1 evaluated with its own BatchNorm running
    # statistics, not the checkpoint's (see test_logged_test_metrics_are_exactly_the_checkpoints).
    for result in (reevaluated["sharded"], reevaluated["whole"]):
        assert result["top1_error"] == pytest.approx(logged["test_top1_error"], abs=0.11)
        assert result["top5_error"] == pytest.approx(logged["test_top5_error"], abs=0.11)
        assert result["loss"] == pytest.approx(logged["test_loss"], rel=1e-3)


def test_logged_test_metrics_are_exactly_the_checkpoints(learned, reevaluated):
    _, summary, _, _ = learned
    logged, sharded = summary.metrics, reevaluated["sharded"]
    assert sharded["loss"] == pytest.approx(logged["test_loss"], rel=1e-6)
    assert sharded["top1_error"] == pytest.approx(logged["test_top1_error"], abs=0.01)
    assert sharded["top5_error"] == pytest.approx(logged["test_top5_error"], abs=0.01)


@pytest.mark.timeout(300)
def test_training_leaves_the_process_mlflow_uri_alone(learned):
    # log_model needs MLflow's fluent API; pointing it at the run must not outlive the upload, or
    # the next run in this process would log into this run's database.
    assert os.environ.get("MLFLOW_TRACKING_URI") == MLFLOW_URI_AT_IMPORT


def test_mlflow_model_artifact_gives_the_checkpoints_logits(learned, reevaluated):
    config, summary, _, _ = learned
    assert summary.artifacts["model"] == f"runs:/{summary.run_id}/model"
    import mlflow.pytorch

    from orchestrator.trainer import fluent_tracking_uri

    with fluent_tracking_uri(config.resolved_tracking_uri()):
        logged = mlflow.pytorch.load_model(summary.artifacts["model"])
    images, _ = next(iter(reevaluated["loader"]))
    with torch.inference_mode():
        expected = reevaluated["model"](images)
        got = logged(images)
    assert got.shape == (len(images), 10)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_tags_are_written_as_strings(learned):
    config, summary, _, _ = learned
    tags = client_of(config).get_run(summary.run_id).data.tags
    assert (tags["residual"], tags["depth"]) == ("True", "8")


def test_artifacts_live_next_to_the_database_not_in_the_working_folder(learned):
    config, summary, _, _ = learned
    database = Path(summary.tracking_uri.removeprefix("sqlite:///"))
    experiment = client_of(config).get_experiment_by_name(config.experiment)
    assert experiment.artifact_location == (database.parent / "artifacts").as_uri()


# --- 5. a finished run is not retrained; a changed config needs --force -----------------------------


@pytest.mark.timeout(300)
def test_finished_run_is_reported_and_a_changed_config_needs_force(learned, monkeypatch):
    config, summary, _, _ = learned
    monkeypatch.chdir(Path(config.storage_path).parent)
    client = client_of(config)

    lines: list[str] = []
    again = train(config, echo=lines.append)
    assert lines == [f"[learn] already finished (MLflow run {summary.run_id}); nothing to do"]
    assert (again.run_id, again.status) == (summary.run_id, "FINISHED")
    assert again.metrics == pytest.approx(summary.metrics)
    assert again.artifacts["last"] == summary.artifacts["last"]

    folder = Path(config.storage_path).parent
    changed = config_of(
        folder,
        "--model",
        "cifar_resnet8",
        "--name",
        "learn",
        "--set",
        "train_subset=1024",
        "--set",
        "test_subset=200",
        "--iterations",
        "8",
    )
    assert changed.hash() != config.hash()
    with pytest.raises(ValueError, match=r"run 'learn' exists with another config .*--force"):
        train(changed, echo=lines.append)
    assert client.get_run(summary.run_id).data.tags[tracking.RUN_KEY] == "learn"  # untouched
    assert run_folder(config).exists()

    lines.clear()
    forced = train(changed, force=True, echo=lines.append)
    assert forced.status == "FINISHED", forced.error
    assert forced.run_id != summary.run_id
    assert lines[0].startswith(f"[learn] starting MLflow run {forced.run_id}")
    assert forced.metrics["iteration"] == 8 and forced.metrics["epoch"] == 1
    old = client.get_run(summary.run_id)
    assert old.data.tags["orchestrator.retired"] == "true"
    assert old.data.tags[tracking.RUN_KEY] != "learn"
    assert old.info.status == "FINISHED"  # kept, with its artifacts
    new = client.get_run(forced.run_id)
    assert new.data.tags[tracking.RUN_KEY] == "learn" and new.data.tags[tracking.CONFIG_HASH] == changed.hash()
    assert new.data.params["recipe_overrides.total"] == "8"
    experiment = client.get_experiment_by_name(config.experiment)
    assert tracking.find_run(client, experiment.experiment_id, "learn").info.run_id == forced.run_id
    # The Ray storage started over too: its only checkpoints are the new run's.
    kept, reports = snapshot_checkpoints(run_folder(config))
    assert [epoch for _, epoch in kept] == [1] and reports == 1


# --- 3a. which fit() failures are a dead Ray process (fitted again) and which are the training's ------


def test_only_a_dead_ray_process_outside_the_worker_groups_own_retries_is_fitted_again():
    import ray.exceptions
    from ray.train import ControllerError, WorkerGroupError

    from orchestrator.trainer import _a_ray_process_died

    died = ray.exceptions.ActorDiedError()
    assert _a_ray_process_died(died)
    assert _a_ray_process_died(ControllerError(died))  # as test_chaos's three worker kills can end fit()
    try:
        try:
            raise died
        except ray.exceptions.RayActorError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert _a_ray_process_died(outer)
    # Ray Train already spent max_failures on its workers' failures; a real error is not retried.
    assert not _a_ray_process_died(WorkerGroupError("rank 1 died", {1: died}))
    assert not _a_ray_process_died(ControllerError(ValueError("bad config")))
    assert not _a_ray_process_died(ValueError("non-finite training loss"))


# --- 3b. engine=fast: the same run as the loop, through Ray Train, MLflow and a resume --------------

# One worker, 512 images = 4 iterations of batch 128 per epoch, 12 iterations, logged every 2.
FAST_ARGS = [
    "--model",
    "cifar_resnet8",
    "--workers",
    "1",
    "--set",
    "train_subset=512",
    "--set",
    "test_subset=256",
    "--iterations",
    "12",
    "--set",
    "log_every=2",
]


@pytest.mark.timeout(600)
def test_fast_engine_trains_what_the_loop_trains_and_resumes(ray_local, tmp_path):
    loop = train(config_of(tmp_path, *FAST_ARGS, "--name", "loop"), echo=lambda line: None)
    # The fast run stops after 2 of its 3 epochs (its first attempt), then resumes from that checkpoint.
    half = config_of(tmp_path, *FAST_ARGS, "--name", "fast", "--set", "engine=fast")
    first = train(dataclasses.replace(half, inject_nan="0:9", max_failures=0), echo=lambda line: None)
    assert first.status == "FAILED" and "iteration 9" in first.error
    fast = train(half, echo=lambda line: None)
    assert loop.status == fast.status == "FINISHED", (loop.error, fast.error)
    client = client_of(half)
    assert client.get_run(fast.run_id).data.params["engine"] == "fast"
    # No validation split: the "best" checkpoint is the last one, and the run says so.
    assert client.get_run(fast.run_id).data.tags[tracking.BEST_BY] == tracking.BEST_IS_LAST
    # Same batches, same schedule: the same losses (fused vs foreach SGD: rounding only), and the
    # same per-epoch record in MLflow, each epoch once although epoch 3 was trained twice.
    for key in ("train_loss", "test_loss", "train_loss_step", "lr"):
        a, b = history(client, loop.run_id, key), history(client, fast.run_id, key)
        assert [s for s, _ in a] == [s for s, _ in b], key
        assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=2e-3), key
    for key in ("test_top1_error", "train_error_step"):
        a, b = history(client, loop.run_id, key), history(client, fast.run_id, key)
        assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=1.0), key  # a few images at most
    assert [s for s, _ in history(client, fast.run_id, "train_loss_step")] == [2, 4, 6, 8, 10, 12]
    assert fast.metrics["iteration"] == 12


# --- 4. a NaN on one rank fails the run, promptly, keeping the last good checkpoint ------------------


@pytest.mark.timeout(300)
def test_nan_on_one_rank_fails_the_run_and_keeps_the_last_checkpoint(ray_local, tmp_path):
    # 1,024 images = 8 iterations per epoch; rank 1's logits go NaN at iteration 20 (epoch 3), which
    # the ranks agree on at the end of epoch 3; epochs 1 and 2 are checkpointed.
    config = config_of(
        tmp_path,
        "--model",
        "cifar_resnet8",
        "--name",
        "nan",
        "--set",
        "train_subset=1024",
        "--set",
        "test_subset=200",
        "--iterations",
        "48",
        "--set",
        "inject_nan=1:20",
    )
    assert config.inject_nan == "1:20"
    started = time.monotonic()
    summary = train(config, echo=lambda line: None)
    seconds = time.monotonic() - started
    print(f"\nNaN run: {seconds:.1f}s")
    assert summary.status == "FAILED"
    assert summary.error == "non-finite training loss nan at iteration 20 on rank 1"
    assert summary.artifacts == {} and summary.checkpoints == {}
    assert seconds < 180  # not retried, not hung in a collective
    client = client_of(config)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FAILED"
    assert "non-finite training loss" in run.data.tags[tracking.DIVERGED]
    assert "non-finite training loss" in run.data.tags["orchestrator.error"]
    assert [v for _, v in history(client, summary.run_id, "epoch")] == [1, 2]  # nothing after the NaN
    assert all(v == v for _, v in history(client, summary.run_id, "train_loss_step"))  # no NaN logged
    assert client.list_artifacts(summary.run_id) == []
    # The last good checkpoint is kept in the Ray storage.
    kept, _ = snapshot_checkpoints(run_folder(config))
    assert kept[-1][1] == 2
    state = load_checkpoint(run_folder(config) / kept[-1][0] / CHECKPOINT_FILE)
    assert (state["epoch"], state["iteration"]) == (2, 16)
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


# --- 2. the driver killed: rerunning the command resumes from the latest checkpoint ------------------
# tests/orchestrator/test_object_storage.py kills a `train` driver with its checkpoints in S3;
# tests/reliability/test_chaos.py kills workers three times over, and ablation drivers.


# --- 6. bad input: one line on stderr, exit code 2, nothing written ----------------------------------

BAD_INPUT = {
    "unknown-set-key": (["--set", "foo=1"], r"unknown config key\(s\) foo; valid: name, model"),
    "bad-value-type": (["--set", "seed=abc"], r"config key 'seed' must be int, got \"abc\""),
    "unknown-model": (["--model", "resnet21"], r"unknown ImageNet depth 21 in 'resnet21'; valid: 18, 34"),
    "cifar-depth-not-6n+2": (["--model", "cifar_resnet21"], r"CIFAR depth 21 in 'cifar_resnet21' is not 6n\+2"),
    "unknown-preset": (["-p", "nope"], r"unknown preset 'nope'; valid: .*smoke"),
    "missing-data-root": (["--data-root", "{folder}/nowhere"], r"expected a directory at .*/nowhere"),
    "unreachable-tracking-uri": (
        ["--tracking-uri", "http://127.0.0.1:9"],
        r"MLflow tracking URI 'http://127.0.0.1:9' is unreachable",
    ),
    "zero-iterations": (["--iterations", "0"], r"--iterations must be a positive integer, got 0"),
    "workers-not-dividing-batch": (
        ["--workers", "3"],
        r"batch_size 128 of recipe 'smoke' is not divisible by world_size 3",
    ),
}


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """Every bad command at once (each spawn costs seconds of imports): name -> (folder, result)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    started = {}
    for name, (args, _) in BAD_INPUT.items():
        folder = tmp_path_factory.mktemp(name)
        argv = [a.format(folder=folder) for a in args]
        command = [
            sys.executable,
            "-m",
            "orchestrator.train",
            *argv,
            "--storage-path",
            str(folder / "runs"),
            "--json",
            str(folder / "out.json"),
        ]
        started[name] = (
            folder,
            subprocess.Popen(
                command,
                cwd=folder,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            ),
        )
    results = {}
    for name, (folder, process) in started.items():
        try:
            stdout, stderr = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            kill_session(process.pid)
            stdout, stderr = process.communicate()
        results[name] = folder, process.returncode, stdout, stderr
    return results


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_error_line_and_exit_2(bad_input_runs, case):
    folder, code, stdout, stderr = bad_input_runs[case]
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert re.search(BAD_INPUT[case][1], lines[0]), lines[0]
    assert stdout == ""
    assert list(folder.iterdir()) == []  # no --json, no run folder, no mlflow.db, no mlruns
