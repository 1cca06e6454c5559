"""Chaos: faults injected into real runs (Ray Train + Ray Tune + MLflow + Fashion-MNIST, no mocks).

A truncated newest checkpoint (skipped: the run resumes from the previous one), every kept
checkpoint corrupt, three worker SIGKILLs in one run, Ctrl-C mid-run, the ablation driver killed
twice (after a trial finished, and at a random point), the MLflow tracking server down mid-run, the
storage made read-only mid-run, a packed trial resumed from torn checkpoints; a storage path that
cannot be created is in test_bad_input.py, a single run's driver kill in
tests/orchestrator/test_train.py.

What each fault does, and the figures measured here, are in docs/RELIABILITY.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import tracking
from orchestrator.config import ExperimentConfig
from orchestrator.tracking import CHECKPOINT_FILE
from orchestrator.train import build_parser, config_from_args
from orchestrator.trainer import run_folder
from orchestrator.training import train
from tests.reliability.procs import (
    Command,
    MlflowServer,
    session_processes,
    train_workers,
    wait_until,
)
from tests.shared_data import needed_by_ci, needs_fashion_mnist
from workloads.engine import load_checkpoint

pytestmark = needs_fashion_mnist


# --- helpers -----------------------------------------------------------------------------------------


def config_of(folder: Path, *argv: str) -> ExperimentConfig:
    return config_from_args(build_parser().parse_args([*argv, "--storage-path", str(folder / "runs")]))


def kept_checkpoints(folder: Path) -> tuple[list[tuple[str, int]], int]:
    """Ray Train's record of the run: ``[(checkpoint dir, epoch)]`` kept, and the reports made."""
    snapshot = json.loads((folder / "checkpoint_manager_snapshot.json").read_text())
    kept = [(r["checkpoint_dir_name"], int(r["metrics"]["epoch"])) for r in snapshot["checkpoint_results"]]
    return kept, snapshot["current_report_index"]


def epoch_steps(client: MlflowClient, run_id: str, key: str = "epoch") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def assert_each_epoch_once(client: MlflowClient, run_id: str, epochs: int, per_epoch: int) -> None:
    """Every per-epoch metric holds exactly one point per epoch: none duplicated, none missing."""
    for key in ("epoch", "iteration", "train_loss", "test_top1_error"):
        steps = [step for step, _ in epoch_steps(client, run_id, key)]
        assert steps == [per_epoch * e for e in range(1, epochs + 1)], (key, steps)
    assert [v for _, v in epoch_steps(client, run_id)] == list(range(1, epochs + 1))


def logged_epochs(client: MlflowClient, run_id: str) -> int:
    try:
        return len(client.get_metric_history(run_id, "epoch"))
    except Exception:  # noqa: BLE001 - sqlite busy, or the server down on purpose
        return 0


RUN_ID = re.compile(r"(?:starting|resuming) MLflow run ([0-9a-f]{32})")


def run_id_of(command: Command, timeout: float = 180) -> str:
    return wait_until(
        lambda: (m := RUN_ID.search(command.stdout())) and m.group(1), timeout, "the MLflow run id", command
    )


@pytest.fixture
def commands():
    """Start CLIs with ``start(module, args, folder, label)``; every one is killed (its whole
    session, by pid) at the end of the test."""
    started: list[Command] = []

    def start(module: str, args: list[str], folder: Path, label: str) -> Command:
        command = Command(module, args, folder, label)
        started.append(command)
        return command

    yield start
    for command in started:
        command.kill()


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Work in ``tmp_path`` (MLflow writes ./mlruns of a sqlite experiment's creator there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


# --- the newest checkpoint truncated ------------------------------------------------------------------

# One worker, 256 images = 2 iterations of batch 128 per epoch, 4 epochs. Rank 0's loss goes NaN at
# iteration 5 (epoch 3), so the run fails deterministically after checkpointing epochs 1 and 2, and
# stays resumable (a FAILED run of the same config resumes from its latest checkpoint).
CORRUPT_ARGS = [
    "--model",
    "cifar_resnet8",
    "--workers",
    "1",
    "--set",
    "train_subset=256",
    "--set",
    "test_subset=128",
    "--iterations",
    "8",
    "--set",
    "keep_checkpoints=4",
    "--set",
    "max_failures=1",
]


def failed_run_with_two_checkpoints(folder: Path, name: str):
    config = config_of(folder, *CORRUPT_ARGS, "--name", name, "--set", "inject_nan=0:5")
    first = train(config, echo=lambda line: None)
    assert first.status == "FAILED" and "non-finite training loss" in first.error, first.error
    kept, _ = kept_checkpoints(run_folder(config))
    assert [epoch for _, epoch in kept] == [1, 2]
    # Resume without the fault: the same config hash (inject_nan is not part of what is trained).
    resumed = dataclasses.replace(config, inject_nan=None)
    assert resumed.hash() == config.hash()
    return resumed, first.run_id, [run_folder(config) / name / CHECKPOINT_FILE for name, _ in kept]


@pytest.mark.timeout(600)
def test_truncated_newest_checkpoint_is_skipped_and_the_run_resumes_from_the_previous_one(ray_local, in_tmp):
    config, run_id, (previous, newest) = failed_run_with_two_checkpoints(in_tmp, "truncated")
    whole = newest.read_bytes()
    newest.write_bytes(whole[: len(whole) // 2])  # a partial copy, as a full disk or a crash leaves it

    summary = train(config, echo=lambda line: None)
    print(f"\ntruncated newest checkpoint: {summary.status}; {summary.warning}")

    assert summary.status == "FINISHED", summary.error
    assert summary.metrics["iteration"] == 8
    # The user is told which file was skipped and why, on the summary and on the MLflow run.
    assert f"{newest} (corrupt or truncated)" in summary.warning
    assert f"resumed from {previous.parent}" in summary.warning
    client = MlflowClient(config.resolved_tracking_uri())
    assert client.get_run(run_id).data.tags["orchestrator.checkpoint_fallback"] == summary.warning
    # Epoch 2 was trained again from epoch 1's checkpoint, but MLflow holds each epoch once.
    assert_each_epoch_once(client, run_id, 4, 2)


@pytest.mark.timeout(600)
def test_every_kept_checkpoint_corrupt_fails_naming_them_and_loads_no_garbage(ray_local, in_tmp):
    config, run_id, (previous, newest) = failed_run_with_two_checkpoints(in_tmp, "garbage")
    for path in (previous, newest):
        path.write_bytes(b"\x00" * 1024)  # garbage of the right kind of size

    # max_failures=0 (not part of the config hash): with retries, Ray tries the same files again each time.
    summary = train(dataclasses.replace(config, max_failures=0), echo=lambda line: None)
    print(f"\nevery checkpoint corrupt: {summary.status}: {summary.error}")

    assert summary.status == "FAILED"
    assert "no readable checkpoint" in summary.error
    assert f"{newest} (corrupt or truncated)" in summary.error and f"{previous} (corrupt or truncated)" in summary.error
    client = MlflowClient(config.resolved_tracking_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and str(newest) in run.data.tags["orchestrator.error"]
    # The garbage was never trained on: nothing was logged past epoch 2, no checkpoint was added.
    assert [v for _, v in epoch_steps(client, run_id)] == [1, 2]
    kept, reports = kept_checkpoints(run_folder(config))
    assert [epoch for _, epoch in kept] == [1, 2] and reports == 2
    assert newest.read_bytes() == b"\x00" * 1024  # left for inspection, not rewritten


# --- workers SIGKILLed three times -------------------------------------------------------------------

# 2 workers, 2,048 images = 16 iterations per epoch, 10 epochs; room for 3 restarts.
KILL_ARGS = [
    "--model",
    "cifar_resnet8",
    "--set",
    "train_subset=2048",
    "--set",
    "test_subset=256",
    "--iterations",
    "160",
    "--set",
    "keep_checkpoints=2",
    "--set",
    "max_failures=3",
]
KILL_EPOCHS, KILL_PER_EPOCH = 10, 16


@pytest.mark.timeout(900)
def test_workers_sigkilled_three_times_the_run_finishes_as_if_uninterrupted(commands, in_tmp):
    rng = random.Random(2015)
    started = time.monotonic()
    cli = commands(
        "orchestrator.train",
        [*KILL_ARGS, "--name", "kill3", "--storage-path", str(in_tmp / "runs"), "--json", str(in_tmp / "out.json")],
        in_tmp,
        "kill3",
    )
    config = config_of(in_tmp, *KILL_ARGS, "--name", "kill3")
    run_id = run_id_of(cli)
    client = MlflowClient(config.resolved_tracking_uri())
    killed, seen = [], set()
    for _ in range(3):
        workers = wait_until(lambda: {p.pid for p in train_workers(cli.pid)} - seen, 180, "a worker group", cli)
        workers = wait_until(
            lambda: len(now := {p.pid for p in train_workers(cli.pid)} - seen) == 2 and now, 60, "both workers", cli
        )
        seen |= workers
        if not killed:  # the first once training runs: its restart must be told in the project's words
            wait_until(lambda: logged_epochs(client, run_id) >= 1, 300, "epoch 1 in MLflow", cli)
        else:
            time.sleep(rng.uniform(3, 12))  # a random point: setup, mid-epoch, evaluation or a report
        if not cli.alive():
            break
        victim = rng.choice(sorted(workers))
        os.kill(victim, signal.SIGKILL)
        killed.append((round(time.monotonic() - started, 1), logged_epochs(client, run_id)))
    assert cli.wait(timeout=600) == 0, cli.describe()
    seconds = time.monotonic() - started
    print(f"\n3 worker kills: {seconds:.1f}s, kills at (seconds, epochs logged) {killed}")
    assert len(killed) == 3, f"the run ended before the third kill: {killed}"
    summary = json.loads((in_tmp / "out.json").read_text())
    assert summary["status"] == "FINISHED" and summary["run_id"] == run_id
    assert summary["metrics"]["iteration"] == KILL_EPOCHS * KILL_PER_EPOCH  # an uninterrupted run's count
    assert summary["metrics"]["epoch"] == KILL_EPOCHS
    assert_each_epoch_once(client, run_id, KILL_EPOCHS, KILL_PER_EPOCH)
    _, reports = kept_checkpoints(run_folder(config))
    assert reports == KILL_EPOCHS  # each epoch completed once: only the interrupted epochs were redone
    output = cli.stdout() + cli.stderr()
    assert "Traceback" not in output
    # The kills explained in the project's words, not in Ray's: a worker-group restart, or (a kill
    # that ended Ray's fit() itself) the driver's restart of its Ray. Not one line per kill: the
    # driver counts restarts by the workers' recorded starts, and a kill during the workers' set-up
    # comes before theirs. The first kill comes after epoch 1 was logged: its line is due.
    assert "A worker died or was killed" not in output
    explained = re.findall(
        r"\[kill3\] (?:a worker was lost or failed: Ray Train restarted the run's workers \(restart \d\), "
        r"resuming from (?:epoch \d+'s checkpoint|the start)|a Ray process of the run died; restarting Ray "
        r"and resuming from the latest checkpoint \(retry \d of 3\))",
        output,
    )
    assert explained, (killed, cli.describe())


# --- Ctrl-C mid-run ------------------------------------------------------------------------------------

# One worker, 512 images = 4 iterations of batch 128 per epoch, 10 epochs: Ctrl-C lands after epoch 1
# with most of the run still to train.
CTRL_C_ARGS = ["--model", "cifar_resnet8", "--set", "workers=1", "--set", "train_subset=512"]
CTRL_C_ARGS += ["--set", "test_subset=256", "--iterations", "40"]
CTRL_C_EPOCHS, CTRL_C_PER_EPOCH = 10, 4


@pytest.mark.timeout(600)
def test_ctrl_c_mid_run_stops_it_saying_so_and_the_same_command_resumes_it(commands, in_tmp):
    args = [*CTRL_C_ARGS, "--name", "ctrlc", "--storage-path", str(in_tmp / "runs")]
    cli = commands("orchestrator.train", args, in_tmp, "first")
    run_id = run_id_of(cli)
    client = MlflowClient(config_of(in_tmp, *CTRL_C_ARGS, "--name", "ctrlc").resolved_tracking_uri())
    wait_until(lambda: logged_epochs(client, run_id) >= 1, 300, "epoch 1 in MLflow", cli)
    os.killpg(cli.pid, signal.SIGINT)  # a terminal's Ctrl-C: the command's whole process group
    assert cli.wait(timeout=120) == 130, cli.describe()
    assert logged_epochs(client, run_id) < CTRL_C_EPOCHS, "the run ended before Ctrl-C reached it"
    output = cli.stdout() + cli.stderr()
    assert "Traceback" not in output
    assert f"[ctrlc] interrupted: its workers are stopped, its checkpoints kept; MLflow run {run_id} KILLED" in output
    assert "[ctrlc] Ctrl-C: stopping the run's workers (Ctrl-C again: stop waiting)" in cli.stderr()
    assert "interrupted; rerun the same command to resume" in cli.stderr()
    assert client.get_run(run_id).info.status == "KILLED"
    wait_until(lambda: not session_processes(cli.pid), 30, "its private Ray to end with it")

    again = commands("orchestrator.train", args, in_tmp, "again")
    assert again.wait(timeout=300) == 0, again.describe()
    assert f"[ctrlc] resuming MLflow run {run_id}" in again.stdout()
    assert client.get_run(run_id).info.status == "FINISHED"
    assert_each_epoch_once(client, run_id, CTRL_C_EPOCHS, CTRL_C_PER_EPOCH)  # resumed, none trained twice


# --- the ablation driver killed again and again ------------------------------------------------------


def finished_trials(uri: str) -> dict[str, int]:
    """{run_id: end_time} of the chaos ablation's finished trials."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("resnet-orchestrator")
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED' and tags.ablation = 'chaos'")
    return {r.info.run_id: r.info.end_time for r in runs}


@pytest.mark.timeout(1200)
def test_ablation_driver_killed_repeatedly_each_trial_completes_once(commands, in_tmp):
    """Two trials one at a time. The first driver is killed just after a trial finished (the
    rerun must count it finished and not train it again), the second at a random point once it
    runs, the third runs to the end."""
    from tests.orchestrator.conftest import TINY

    rng = random.Random(34)
    storage = in_tmp / "runs"
    args = [
        "--name",
        "chaos",
        "--axis",
        "depth=[8]",
        "--axis",
        "residual=[true]",
        "--axis",
        "seed=[0, 1]",
        "--max-concurrent",
        "1",
        "--storage-path",
        str(storage),
    ] + [a for pair in TINY for a in ("--set", pair)]
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    started = time.monotonic()

    def started_trials(driver: Command) -> None:
        # Once it has said how many trials it runs, MLflow's database exists (a second client
        # before that could race its schema migration).
        wait_until(lambda: "trials:" in driver.stdout(), 300, "the trial count", driver)

    first = commands("orchestrator.ablate", args, in_tmp, "first")
    started_trials(first)
    ends = wait_until(lambda: finished_trials(uri), 400, "a finished trial", first, interval=2)
    first.kill()
    assert len(ends) == 1, f"the first driver was meant to die after one trial: {ends}"

    second = commands("orchestrator.ablate", args, in_tmp, "second")
    started_trials(second)
    assert "2 trials: 1 finished, 1 to run" in second.stdout(), second.describe()
    time.sleep(rng.uniform(5, 25))
    assert second.alive(), second.describe()
    second.kill()
    for run_id, end_time in finished_trials(uri).items():  # a finished trial is never run again
        assert ends.setdefault(run_id, end_time) == end_time

    third = commands("orchestrator.ablate", args, in_tmp, "third")
    assert third.wait(timeout=900) == 0, third.describe()
    print(f"\nablation driver killed twice; done after 3 starts, {time.monotonic() - started:.1f}s")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("resnet-orchestrator").experiment_id
    parents = client.search_runs([experiment], "tags.`orchestrator.run_key` = 'chaos'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    names = sorted(c.info.run_name for c in children)
    assert names == [f"chaos-cifar_resnet8-A-s{s}" for s in range(2)]  # exactly one child run per trial
    assert all(c.info.status == "FINISHED" for c in children)
    for child in children:
        assert_each_epoch_once(client, child.info.run_id, 2, 4)  # TINY: 2 epochs of 4 iterations
    for run_id, end_time in ends.items():
        assert client.get_run(run_id).info.end_time == end_time


# --- the MLflow tracking server down mid-run ---------------------------------------------------------


@pytest.mark.timeout(900)
def test_mlflow_server_down_for_20s_mid_run_metrics_land_later_none_lost(commands, in_tmp):
    server = MlflowServer(in_tmp)
    try:
        server.start()
        args = [
            "--model",
            "cifar_resnet8",
            "--workers",
            "1",
            "--name",
            "outage",
            "--set",
            "train_subset=2048",
            "--set",
            "test_subset=256",
            "--iterations",
            "160",
            "--storage-path",
            str(in_tmp / "runs"),
            "--tracking-uri",
            server.uri,
            "--json",
            str(in_tmp / "out.json"),
        ]
        cli = commands("orchestrator.train", args, in_tmp, "outage")
        run_id = run_id_of(cli)
        client = MlflowClient(server.uri)
        wait_until(lambda: client.get_run(run_id).data.metrics.get("epoch", 0) >= 2, 300, "epoch 2 in MLflow", cli)
        workers_before = {p.pid for p in train_workers(cli.pid)}
        server.stop()
        down_at = time.monotonic()
        workers_seen = set(workers_before)
        while time.monotonic() - down_at < 20:
            workers_seen |= {p.pid for p in train_workers(cli.pid)}
            time.sleep(0.5)
        restart_seconds = server.start()
        outage = time.monotonic() - down_at
        while cli.alive():
            workers_seen |= {p.pid for p in train_workers(cli.pid)}
            time.sleep(0.5)
        code = cli.wait(timeout=600)
        client = MlflowClient(server.uri)
        epochs = [v for _, v in epoch_steps(client, run_id)]
        print(
            f"\nMLflow down {outage:.1f}s (restart took {restart_seconds:.1f}s): exit {code}, "
            f"{len(workers_seen - workers_before)} new worker process(es), epochs logged {epochs}"
        )
        assert "Traceback" not in cli.stdout() + cli.stderr().split("[outage] FAILED")[-1]
        if code == 0:  # training went on; the metrics landed once the server was back
            assert client.get_run(run_id).info.status == "FINISHED"
            assert_each_epoch_once(client, run_id, 10, 16)
        else:  # or the run failed, clearly, and what was logged has no holes or duplicates
            assert re.search(r"\[outage\] FAILED: .*", cli.stderr()), cli.describe()
            assert epochs == list(range(1, len(epochs) + 1))
    finally:
        server.stop()


# --- the storage made read-only mid-run --------------------------------------------------------------


@pytest.mark.timeout(900)
def test_storage_read_only_mid_run_fails_clearly_and_keeps_the_last_checkpoint(commands, in_tmp):
    mount = in_tmp / "storage"
    mount.mkdir()
    # Root ignores permissions but not a read-only mount; a tmpfs needs privileges (CAP_SYS_ADMIN).
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True).returncode:
        needed_by_ci("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        args = [
            "--model",
            "cifar_resnet8",
            "--workers",
            "1",
            "--name",
            "readonly",
            "--set",
            "train_subset=2048",
            "--set",
            "test_subset=256",
            "--iterations",
            "160",
            "--storage-path",
            str(mount / "runs"),
            "--tracking-uri",
            f"sqlite:///{in_tmp / 'mlflow.db'}",
            "--json",
            str(in_tmp / "out.json"),
        ]
        cli = commands("orchestrator.train", args, in_tmp, "readonly")
        folder = mount / "runs" / "readonly"
        registered = folder / "checkpoint_manager_snapshot.json"
        wait_until(lambda: registered.exists() and len(kept_checkpoints(folder)[0]) >= 2, 300, "2 checkpoints", cli)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        frozen, _ = kept_checkpoints(folder)
        code = cli.wait(timeout=600)
        print(f"\nread-only storage: exit {code}; {cli.stderr().splitlines()[-1:]}")
        assert code != 0
        assert re.search(r"\[readonly\] FAILED: .*(Read-only|read-only|errno 30)", cli.stderr()), cli.describe()
        # The last good checkpoint is intact and loads.
        name, epoch = frozen[-1]
        assert load_checkpoint(folder / name / CHECKPOINT_FILE)["epoch"] == epoch
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


# --- a packed trial's driver killed, its newest checkpoint torn ---------------------------------------


@pytest.mark.timeout(900)
def test_packed_trial_resumes_every_member_from_the_pack_checkpoint(commands, in_tmp):
    from tests.orchestrator.conftest import TINY

    # Four runs in one pack (seeds 0 and 1, each also with its loss going NaN at iteration 6, in
    # epoch 2, before the driver is killed): 512 images = 4 iterations per epoch, 16 epochs, so the
    # kill once two checkpoints are registered (epoch 2 or 3) lands mid-run.
    storage = in_tmp / "runs"
    args = [
        "--name",
        "packchaos",
        "--axis",
        "depth=[8]",
        "--axis",
        "residual=[true]",
        "--axis",
        "seed=[0, 1]",
        "--axis",
        "inject_nan=[null, '0:6']",
        "--pack",
        "4",
        "--storage-path",
        str(storage),
    ]
    args += [
        a
        for pair in TINY
        + ["engine=fast", "workers=1", "recipe.total=64", "recipe.milestones=[48]", "keep_checkpoints=3"]
        for a in ("--set", pair)
    ]
    clean = [f"packchaos-cifar_resnet8-A-inject_nan=None-s{seed}" for seed in (0, 1)]
    nan = [f"packchaos-cifar_resnet8-A-inject_nan=0:6-s{seed}" for seed in (0, 1)]
    driver = commands("orchestrator.ablate", args, in_tmp, "first")

    def registered():
        """Ray Train's kept checkpoints of the pack, once it has registered two, the newest after the
        divergence (registration trails the files on disk by up to a controller poll)."""
        for snapshot in (storage / "packchaos").glob("packchaos-pack-*/checkpoint_manager_snapshot.json"):
            try:
                kept = json.loads(snapshot.read_text())["checkpoint_results"]
            except (OSError, ValueError):
                continue  # being rewritten
            if len(kept) >= 2 and sorted(kept[-1]["metrics"]["members"]) == clean:
                return snapshot.parent, kept
        return None

    wait_until(lambda: registered() or not driver.alive(), 600, "two registered pack checkpoints", driver)
    driver.kill()
    assert registered(), driver.describe()
    # Tear the members' files of the newest checkpoint Ray Train registered: both clean runs fall
    # back to the previous one, so they go on in lockstep; the diverged ones have no file there.
    pack, kept = registered()
    newest = kept[-1]["checkpoint_dir_name"]
    torn = sorted((pack / newest).glob(f"*/{CHECKPOINT_FILE}"))
    assert sorted(path.parent.name for path in torn) == clean
    for path in torn:
        path.write_bytes(path.read_bytes()[:100])

    second = commands("orchestrator.ablate", args, in_tmp, "second")
    assert second.wait(timeout=600) == 1, second.describe()  # the diverged runs fail the ablation
    assert "4 trials: 0 finished, 4 to run" in second.stdout()
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("resnet-orchestrator").experiment_id

    def run_of(name):
        (run,) = client.search_runs([experiment], f"tags.`orchestrator.run_key` = 'packchaos/{name}'")
        return run

    for name in clean:
        run = run_of(name)
        assert run.info.status == "FINISHED"
        assert_each_epoch_once(client, run.info.run_id, 16, 4)
        note = run.data.tags[tracking.CHECKPOINT_FALLBACK]  # resumed through the pack, past the torn file
        assert f"{newest}/{name}/{CHECKPOINT_FILE}" in note, note
    for name in nan:  # still recorded as diverged after the resume, not retrained, not left blank
        run = run_of(name)
        assert run.info.status == "FAILED"
        assert "non-finite training loss nan at iteration 6" in run.data.tags[tracking.DIVERGED]
        assert [v for _, v in epoch_steps(client, run.info.run_id)] == [1]
