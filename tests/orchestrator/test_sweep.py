"""python -m orchestrator.sweep: the search space and its errors (no Ray), and sweeps on real Ray Tune
+ Ray Train + MLflow + Fashion-MNIST: ASHA against the same samples trained to the end, the MLflow
record and the registered winner, PBT's exploits, and resume after the driver is killed."""

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
from mlflow.tracking import MlflowClient

from orchestrator.config import parse_overrides
from orchestrator.search_space import load_sweep, parse_dimension

ROOT = Path(__file__).resolve().parents[2]
# Tiny trials: cifar_resnet8, 512 training images (4 iterations of 128 an epoch), 8 epochs, a
# 256-image validation split they are compared on.
TINY = [
    "train_subset=512",
    "test_subset=256",
    "val_split=256",
    "recipe.total=32",
    "recipe.milestones=[24]",
    "log_every=2",
]
SPACE = ["recipe.lr=loguniform:0.002:0.5"]
MARGIN = 10.0  # percentage points of validation top-1 error: ASHA's pick against the best full run
SAMPLES = 3  # the ASHA and FIFO sweeps' trials


def tiny(storage: Path, **choices):
    overrides = parse_overrides(TINY) | {"storage_path": str(storage)}
    return load_sweep("smoke", overrides, space=SPACE, **({"samples": 4} | choices))


# ---- no Ray ---------------------------------------------------------------------------------------


def test_the_space_grammar_reads_every_distribution():
    assert parse_dimension("recipe.lr=loguniform:0.01:0.5").args == (0.01, 0.5)
    assert parse_dimension("recipe.momentum=uniform:0.8:0.95").describe() == "uniform in [0.8, 0.95]"
    assert parse_dimension("recipe.batch_size=choice:64,128,256").args == (64, 128, 256)
    assert parse_dimension("seed=randint:0:9").describe() == "an integer in [0, 9]"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--space", "recipe.lr=loguniform:0:1"], "loguniform needs LOW > 0"),
        (["--space", "recipe.lr=gauss:0:1"], "unknown distribution 'gauss'"),
        (["--space", "colour=choice:red"], "unknown space key 'colour'"),
        (["--space", "recipe.speed=uniform:1:2"], "unknown space key 'recipe.speed'"),
        (["--space", "recipe.batch_size=choice:100,128", "--set", "workers=3"], "not divisible"),
        (["--space", "dataset=choice:cifar10"], "fixed for a whole sweep"),
        (["--metric", "test_top1_error"], "measured on the test split"),
        (["--set", "val_split=null"], "needs a validation split"),
        (["--set", "recipe.total=32", "--set", "recipe.milestones=[]"], "needs at least 2"),
        (["--scheduler", "pbt", "--samples", "1"], "at least 2 samples"),
        (["--scheduler", "pbt", "--searcher", "optuna"], "searcher 'optuna' cannot steer it"),
        (["--samples", "1"], "needs at least 2 samples to stop any"),
    ],
)
def test_bad_spaces_keys_and_budgets_are_one_error_line(args, message, capsys):
    from orchestrator import cli, sweep

    with pytest.raises(SystemExit) as exit_code:
        cli.run(sweep.main, ["--dry-run", *args])
    assert exit_code.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_a_bad_space_exits_2_with_one_line_before_ray_or_mlflow_load():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "orchestrator.sweep", "--space", "recipe.lr=loguniform:0:1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if not line.startswith("import time:")]
    assert errors == ["error: space recipe.lr: loguniform needs LOW > 0, got 0"]
    loaded = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "import time:" in line
    }
    assert not loaded & {"ray", "mlflow"}


def test_dry_run_prints_the_space_the_rungs_and_the_budget():
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "recipe.lr            log-uniform in [0.005, 1]" in out.stdout
    assert "ASHA rungs (epochs): 1, 2, 4" in out.stdout
    assert re.search(r"budget: at most 16 x \d+ = \d+ iterations", out.stdout)


def test_asha_budget_and_rungs_follow_the_schedule(tmp_path):
    sweep = tiny(tmp_path)
    assert (sweep.epochs, sweep.epoch_iterations, sweep.rungs()) == (8, 4, [1, 2, 4])
    assert sweep.full_budget() == 4 * 32 and sweep.asha_budget() == 4 * 4 + 2 * 4 + 1 * 8 + 1 * 16


# ---- real sweeps ----------------------------------------------------------------------------------


# The fixture's time is charged to whichever of its tests runs first: 6 min alone here, 15 min
# beside another test on the 2 cores (make test's two workers), past the suite's 900 s default.
WITH_SWEEPS = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def asha_and_full(ray_local, tmp_path_factory):
    """The same 3 samples (same searcher seed) trained to the end (FIFO, 2 at a time) and swept with
    ASHA one at a time. ASHA's reduction factor is 4 here: past each rung (epochs 1 and 4) goes
    only a trial that is the best so far there, so which trials it stops depends on the order they
    reach a rung in. Two at a time, that order is a race; one at a time it is the samples' order,
    the same every run. Each trial costs ~40 s of start-up and finish here against ~2 s an epoch,
    hence few trials."""
    from orchestrator.sweeping import run_sweep

    folder = tmp_path_factory.mktemp("sweeps")
    runs = {}
    for scheduler in ("fifo", "asha"):
        lines: list[str] = []
        started = time.time()
        sweep = tiny(folder, name=f"tiny-{scheduler}", scheduler=scheduler, samples=SAMPLES)
        sweep = dataclasses.replace(sweep, asha={"grace_epochs": 1, "reduction_factor": 4})
        if scheduler == "asha":
            sweep = dataclasses.replace(sweep, max_concurrent=1)
        summary = run_sweep(sweep, echo=lines.append)
        runs[scheduler] = (summary, lines, time.time() - started)
    return runs


@WITH_SWEEPS
def test_asha_spends_clearly_fewer_iterations_and_finds_a_config_near_the_best_full_run(asha_and_full):
    full, _, _ = asha_and_full["fifo"]
    asha, lines, _ = asha_and_full["asha"]
    assert full["iterations_spent"] == full["iterations_full_grid"] == SAMPLES * 32
    assert asha["iterations_spent"] <= 0.75 * full["iterations_spent"], asha["trials"]
    assert asha["stopped"], "ASHA stopped no trial"
    # The same samples: each ASHA trial's config is one of the full runs'.
    by_lr = {round(row["recipe.lr"], 12): row for row in full["trials"]}
    assert sorted(by_lr) == sorted(round(row["recipe.lr"], 12) for row in asha["trials"])
    best_full = min(row["val_top1_error"] for row in full["trials"])
    picked = by_lr[round(asha["best"]["recipe.lr"], 12)]
    assert picked["val_top1_error"] <= best_full + MARGIN, (picked, best_full)
    assert any("iterations:" in line and "saved" in line for line in lines)


@WITH_SWEEPS
def test_the_sweep_is_one_parent_with_a_child_run_per_trial_stopped_ones_tagged(asha_and_full):
    summary, _, _ = asha_and_full["asha"]
    client = MlflowClient(summary["tracking_uri"])
    parent = client.get_run(summary["parent_run_id"])
    assert parent.data.tags["orchestrator.kind"] == "sweep" and parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == SAMPLES
    for child in children:  # ordinary finished training runs: ensemble evaluate --best N finds them
        assert child.info.status == "FINISHED" and child.data.params["model"] == "cifar_resnet8"
        assert child.data.tags["orchestrator.sweep"] == summary["name"]
        assert "test_top5_error" in child.data.metrics
        stopped = child.data.tags["orchestrator.sweep.stopped"] == "true"
        reached = int(child.data.tags["orchestrator.sweep.iteration"])
        assert reached < 32 if stopped else reached == 32
        assert {f.path for f in client.list_artifacts(child.info.run_id, "checkpoints")} == {
            "checkpoints/best",
            "checkpoints/last",
        }
    # A stopped trial trained exactly to the rung it was stopped at (epoch 1 or 4, 4 iterations
    # each), nothing past it: its training waited there for ASHA's verdict.
    for row in summary["trials"]:
        assert row["trained_iterations"] in ((4, 16) if row["status"] == "STOPPED" else (32,)), row
    assert sum(c.data.tags["orchestrator.sweep.stopped"] == "true" for c in children) == len(summary["stopped"])
    files = {f.path for f in client.list_artifacts(parent.info.run_id, "sweep")}
    assert files == {"sweep/trials.csv", "sweep/best_config.json"}
    best = json.loads(Path(client.download_artifacts(parent.info.run_id, "sweep/best_config.json")).read_text())
    assert best["run_id"] == summary["best"]["run_id"] and "recipe.lr" in best["config"]
    assert parent.data.metrics["iterations_saved"] == SAMPLES * 32 - summary["iterations_spent"]


@WITH_SWEEPS
def test_the_winner_is_registered_with_the_alias_best(asha_and_full):
    summary, lines, _ = asha_and_full["asha"]
    client = MlflowClient(summary["tracking_uri"])
    version = client.get_model_version_by_alias(summary["name"], "best")
    assert version.run_id == summary["best"]["run_id"]
    assert client.get_run(version.run_id).data.tags["orchestrator.sweep.stopped"] == "false"
    assert any(line.startswith("registered: model tiny-asha version") for line in lines)


@WITH_SWEEPS
def test_ensemble_evaluate_best_n_selects_the_sweeps_trials_on_validation(asha_and_full, tmp_path, capsys):
    from orchestrator import cli, ensemble

    summary, _, _ = asha_and_full["asha"]
    client = MlflowClient(summary["tracking_uri"])
    sweep_runs = f"tags.`orchestrator.sweep` = '{summary['name']}'"
    argv = ["evaluate", "--best", "2", "--filter", sweep_runs, "--tracking-uri", summary["tracking_uri"]]
    argv += ["--out", str(tmp_path / "ensemble"), "--json", str(tmp_path / "ensemble.json")]
    with pytest.raises(SystemExit) as code:
        cli.run(ensemble.main, argv)
    assert code.value.code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "ensemble.json").read_text())
    experiment = client.get_run(summary["parent_run_id"]).info.experiment_id
    trials = client.search_runs([experiment], sweep_runs)
    assert len(trials) == SAMPLES

    def key(run):
        return (run.data.metrics["val_top5_error"], run.data.metrics["val_top1_error"])

    chosen = {m["run_id"] for m in result["members"]}
    assert len(chosen) == 2 and chosen <= {r.info.run_id for r in trials}
    assert max(key(r) for r in trials if r.info.run_id in chosen) <= min(
        key(r) for r in trials if r.info.run_id not in chosen
    )
    assert result["greedy"]["val_images"] == 256  # the trials' shared validation split


def test_a_paused_run_goes_on_or_stops_on_the_verdict_and_fails_when_none_comes(ray_local, monkeypatch):
    import torch
    from ray.util.queue import Queue

    from orchestrator import worker

    monkeypatch.setattr(worker, "VERDICT_TIMEOUT_S", 1.0)
    gate = Queue(actor_options={"num_cpus": 0})
    gate.put(True)
    gate.put(False)
    cpu = torch.device("cpu")
    assert worker.await_verdict(gate, 1, 0, cpu) is True  # the trial's word: training goes on
    assert worker.await_verdict(gate, 2, 0, cpu) is False  # the trial was stopped: training ends here
    with pytest.raises(RuntimeError, match="no verdict from the sweep's scheduler on epoch 4 in 1 s"):
        worker.await_verdict(gate, 4, 0, cpu)


def test_pbt_trials_resume_from_a_peers_checkpoint(ray_local, tmp_path):
    from orchestrator.sweeping import run_sweep

    sweep = tiny(tmp_path, name="tiny-pbt", scheduler="pbt", samples=2)
    sweep = dataclasses.replace(sweep, pbt={"interval_epochs": 4, "quantile": 0.5, "resample": 0.0})
    summary = run_sweep(sweep, echo=lambda line: None, register=False)
    assert not summary["failed"]
    client = MlflowClient(summary["tracking_uri"])
    runs = {row["trial"]: client.get_run(row["run_id"]) for row in summary["trials"]}
    exploited = {name: run for name, run in runs.items() if "orchestrator.sweep.exploited" in run.data.tags}
    assert len(exploited) == 1, "the worse of two trials takes the better one's checkpoint at epoch 4"
    run = next(iter(exploited.values()))
    peer = next(r for n, r in runs.items() if n not in exploited)
    peer_trial = peer.data.tags["orchestrator.sweep.trial"]
    assert peer_trial in run.data.tags["orchestrator.sweep.exploited"]  # the checkpoint is in the peer's folder
    assert run.info.status == "FINISHED" and run.data.metrics["iteration"] == 32
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "sweep.recipe.lr")]
    assert len(lrs) == 2 and lrs[1] != lrs[0]  # its lr was perturbed


def test_killed_driver_continues_the_same_optuna_sweep_without_duplicating_runs(tmp_path):
    """Optuna's TPE end to end: its state (what it suggested, what it was told) is not rebuilt from
    run names but restored with Tune's experiment, so the rerun's searcher is the one that died.
    Trials of 2 epochs: what is resumed is the sweep, not a trial's training."""
    storage = tmp_path / "runs"
    command = [sys.executable, "-m", "orchestrator.sweep", "--name", "resume", "--samples", "2"]
    command += ["--scheduler", "fifo", "--searcher", "optuna", "--max-concurrent", "1"]
    command += ["--storage-path", str(storage), "--no-register"]
    short = [pair for pair in TINY if not pair.startswith("recipe.")] + ["recipe.total=8", "recipe.milestones=[6]"]
    command += [arg for pair in short for arg in ("--set", pair)] + [arg for s in SPACE for arg in ("--space", s)]
    log = tmp_path / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        finished = wait_for_finished_trials(storage / "mlflow.db", log, timeout=400)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert len(finished) == 1, "the driver was meant to die mid-sweep"

    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "[resume] continuing" in second.stdout
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("resnet-orchestrator").experiment_id
    parents = client.search_runs([experiment], "tags.`orchestrator.kind` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    for run_id, end_time in finished.items():  # the finished trial was not trained again
        assert client.get_run(run_id).info.end_time == end_time
    assert parents[0].data.params["searcher"] == "optuna"
    assert list((storage / "resume" / "tune").glob("searcher-state-*.pkl")), "Tune saved no searcher state"
    lrs = [float(c.data.params["recipe.lr"]) for c in children]
    assert len(set(lrs)) == 2 and all(0.002 <= lr <= 0.5 for lr in lrs)


def wait_for_finished_trials(db: Path, log: Path, timeout: float) -> dict[str, int]:
    """Poll the MLflow database until a trial of the sweep "resume" finished: {run_id: end_time}."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if "starting:" in log.read_text():
            client = MlflowClient(f"sqlite:///{db}")
            experiment = client.get_experiment_by_name("resnet-orchestrator")
            if experiment is not None:
                runs = client.search_runs(
                    [experiment.experiment_id],
                    "attributes.status = 'FINISHED' and tags.`orchestrator.sweep` = 'resume'",
                )
                if runs:
                    return {r.info.run_id: r.info.end_time for r in runs}
        time.sleep(1)
    raise AssertionError(f"no trial finished in {timeout}s:\n{log.read_text()[-3000:]}")


def test_optuna_search_samples_the_space_through_tune(tmp_path):
    from ray import tune

    from orchestrator.sweeping import searcher_of

    sweep = tiny(tmp_path, searcher="optuna")
    searcher = searcher_of(sweep, 2)
    space = {"sweep": {"name": sweep.name}} | {d.key: d.domain() for d in sweep.space}
    assert searcher.set_search_properties(sweep.metric, "min", space)
    suggested = [searcher.suggest(f"t{i}") for i in range(3)]
    assert all(0.002 <= s["recipe.lr"] <= 0.5 for s in suggested[:2])
    assert suggested[2] is None  # at most 2 trials in flight
    assert isinstance(space["recipe.lr"], tune.search.sample.Float)


def test_both_ranks_of_a_run_stop_at_the_decision_epoch_the_scheduler_stopped_it_at(ray_local, tmp_path):
    # Two ranks: rank 0 reads the verdict, the other learns it by broadcast; both end the run there,
    # with no worker failure for Ray Train to retry.
    from ray.util.queue import Queue

    from orchestrator import tracking
    from orchestrator.build import run_recipe
    from orchestrator.config import load_config
    from orchestrator.trainer import fit
    from orchestrator.worker import train_worker

    overrides = parse_overrides([*TINY, "workers=2", "cpus_per_worker=0.95", "name=verdict", "max_failures=0"])
    config = load_config("smoke", overrides | {"storage_path": str(tmp_path / "runs")})
    uri = config.resolved_tracking_uri()
    client = tracking.connect(uri)
    run, _ = tracking.get_or_create_run(
        client, tracking.ensure_experiment(client, config.experiment), "verdict", run_name="verdict"
    )
    recipe = run_recipe(config)
    gate = Queue(actor_options={"num_cpus": 0})
    gate.put(True)  # epoch 1: train on
    gate.put(False)  # epoch 2: stopped
    loop_config = {
        "config": config.to_dict(),
        "recipe": recipe.to_dict(),
        "run_id": run.info.run_id,
        "tracking_uri": uri,
        "pause_at": [1, 2, 4],
        "gate": gate,
    }
    result, error = fit(config, run.info.run_id, uri, recipe, loop=(train_worker, loop_config))
    assert error is None, error
    assert (result.metrics["epoch"], result.metrics["iteration"]) == (2, 8)
    assert gate.empty()
