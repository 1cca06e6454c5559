"""bench/gpu_orchestrated.sh --quick: every part of the GPU script runs on the CPU at tiny sizes, through
the real CLIs (Ray Train, Ray Tune, MLflow on sqlite), and leaves its result files with sane figures.

The script is what a lent GPU machine runs unattended; this keeps it working between those runs.
It proves the plumbing, not the speed: the quick figures are CPU noise.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(1320)  # the quick run: 350-680 s in CI (2 shared cores), within its 1,200-s budget


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_orchestrated")
    env = os.environ | {"OUT": str(out), "PYTHON": sys.executable}
    env.pop("RAY_ADDRESS", None)  # each CLI starts its own private Ray, as on the GPU machine
    done = subprocess.run(
        ["bash", "bench/gpu_orchestrated.sh", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1290,
    )
    return out, done


def test_quick_run_writes_every_result_file(quick_run):
    out, done = quick_run
    log = (out / "log.txt").read_text()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SKIPPED" not in log and "TIMED OUT" not in log, log[-3000:]
    for part in ("setup", "cifar_bare", "cifar_train", "ablate", "imagenet", "cuda_paths", "imagenet_compiled"):
        assert f"=== {part}: exit 0" in log, (part, log[-3000:])
    names = {p.name for p in out.iterdir()}
    assert names == {
        "log.txt",
        "results.json",
        "bare_cifar.json",
        "imagenet_synthetic.json",
        "mlflow_cifar_train.db",
        "mlflow_ablate.db",
        "mlflow_imagenet.db",
    }
    assert len(names) <= 8  # all of them come back from a lent device machine


def test_quick_results_hold_each_part_with_its_baseline(quick_run):
    out, _ = quick_run
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True and results["machine"]["ray"] and results["machine"]["mlflow"]
    assert results["verdicts"]["imagenet_over_compiled"] == "not measured"  # no compiled baseline on the CPU
    assert {results["verdicts"][k] for k in ("cifar_train_over_bare", "table6_matrix_minutes")} <= {"met", "NOT met"}
    cifar, ablate, imagenet = results["cifar_train"], results["ablate"], results["imagenet"]

    assert cifar["status"] == "FINISHED" and cifar["exit"] == 0
    assert (cifar["iterations"], cifar["epochs"]) == (6, 2)  # --iterations 6 on 500 images: 2 epochs of 3 steps
    for key in (
        "startup_seconds",
        "train_seconds",
        "finish_seconds",
        "bare_train_seconds",
        "bare_with_test_passes_seconds",
        "ratio_over_bare",
        "ratio_over_bare_with_test_passes",
    ):
        assert positive(cifar[key]), (key, cifar[key])
    assert 0 < cifar["test_top1_error"] <= 100 and cifar["table6_top1_error"] == 8.75

    assert ablate["members"] == 2 and ablate["epochs_logged"] == 2  # depth 8, plain and residual, packed
    for key in (
        "rounds_per_s",
        "startup_seconds",
        "matrix_minutes_extrapolated",
        "bare_rounds_per_s",
        "bare_with_test_passes_rounds_per_s",
        "ratio_over_bare",
        "ratio_over_bare_with_test_passes",
    ):
        assert positive(ablate[key]), (key, ablate[key])
    assert sorted(ablate["bare_nets"]) == ["cifar_plain8", "cifar_resnet8"]

    # --quick trains ResNet-18 where the GPU run trains ResNet-50: the same path, 2.2x less work.
    assert (imagenet["model"], imagenet["status"], imagenet["batch"]) == ("resnet18", "FINISHED", 8)
    assert imagenet["epochs"] == 2
    for key in ("in_epoch_images_per_s", "synthetic_eager_images_per_s", "ratio_over_eager", "startup_seconds"):
        assert positive(imagenet[key]), (key, imagenet[key])
    assert "ratio_over_compile" not in imagenet  # torch.compile is measured on a GPU only

    bare = json.loads((out / "bare_cifar.json").read_text())
    assert positive(bare["resnet20"]["iterations_per_s"]) and positive(bare["packed"]["rounds_per_s"])
    synthetic = json.loads((out / "imagenet_synthetic.json").read_text())
    assert synthetic["eager"]["model"] == "resnet18" and positive(synthetic["eager"]["images_per_s"])
    assert "compile" not in synthetic


def test_quick_mlflow_databases_hold_the_runs(quick_run):
    out, _ = quick_run
    expected = {
        "mlflow_cifar_train.db": {"resnet20-paper"},
        "mlflow_imagenet.db": {"resnet18-device"},
        "mlflow_ablate.db": {"cifar10-table6", "cifar10-table6-cifar_plain8-s0", "cifar10-table6-cifar_resnet8-A-s0"},
    }
    for name, runs in expected.items():
        with sqlite3.connect(out / name) as db:
            rows = db.execute("select name, status from runs").fetchall()
        assert {run for run, _ in rows} == runs, (name, rows)
        assert {status for _, status in rows} == {"FINISHED"}, (name, rows)
    with sqlite3.connect(out / "mlflow_imagenet.db") as db:
        (lr,) = db.execute("select value from params where key = 'recipe.lr'").fetchone()
    assert float(lr) == 0.01  # not the paper's 0.1, at which the synthetic JPEGs diverge


def test_a_part_whose_run_failed_reports_the_runs_error(tmp_path, monkeypatch):
    """On the GPU machine the ImageNet slice's run diverged; the report must say so, not "not run"."""
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking import ERROR

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import gpu_orchestrated

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/imagenet/mlflow.db")
    run = client.create_run(client.create_experiment("resnet"), run_name="resnet50-device", tags={ERROR: "nan"})
    client.log_param(run.info.run_id, "recipe", "imagenet")
    client.set_terminated(run.info.run_id, "FAILED")
    (tmp_path / "imagenet.timing.json").write_text('{"start": 0, "end": 1, "exit": 1, "slice_s": 90}')
    assert gpu_orchestrated.report_imagenet(tmp_path, None) == {"status": "resnet50-device FAILED: nan"}
