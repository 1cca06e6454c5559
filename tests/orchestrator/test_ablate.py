"""python -m orchestrator.ablate: matrix expansion, validation, and an end-to-end smoke matrix on real
Ray Tune + MLflow + Fashion-MNIST. Resume after the driver is killed: tests/reliability/test_chaos.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from orchestrator import resources
from orchestrator.ablation import ablate, place_trials, results_folder, trials_at_once
from orchestrator.config import parse_overrides
from orchestrator.matrix import expand, load_ablation
from orchestrator.results import COLUMNS, format_table
from tests.orchestrator.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_preset_expands_to_plain_and_residual_at_two_depths():
    ablation = load_ablation("smoke")
    assert [t.name for t in ablation.trials] == [
        "smoke-cifar_plain8-s0",
        "smoke-cifar_resnet8-A-s0",
        "smoke-cifar_plain32-s0",
        "smoke-cifar_resnet32-A-s0",
    ]
    assert {t.config.dataset for t in ablation.trials} == {"fashion-mnist"}


def test_plain_nets_run_once_whatever_the_shortcut_axis_and_include_adds_cells():
    spec = {
        "name": "t3",
        "base": {"dataset": "synthetic"},
        "matrix": {"family": "imagenet", "depth": [34], "residual": [False, True], "shortcut": ["A", "B", "C"]},
        "include": [{"depth": 50, "residual": True, "shortcut": "B"}],
    }
    names = [t.name for t in expand(spec, {}).trials]
    assert names == ["t3-plain34", "t3-resnet34-A", "t3-resnet34-B", "t3-resnet34-C", "t3-resnet50-B"]


@pytest.mark.parametrize(
    "axes, message",
    [
        ({"depth": "[21]"}, "not 6n+2"),
        ({"colour": "[1]"}, "unknown matrix axis 'colour'"),
        ({"recipe": "[fast]"}, "unknown recipe 'fast'"),
    ],
)
def test_bad_matrices_are_refused_before_any_trial(axes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_ablation("smoke", axes=axes)


def demands(ablation) -> list:
    return [resources.run_demand(t.config, f"trial {t.name}") for t in ablation.trials]


def test_trials_run_as_many_at_once_as_the_machine_holds_and_an_impossible_one_is_refused(ray_local):
    at_once = dict(private=True, wait_s=0, echo=print, who="t")
    assert trials_at_once(demands(load_ablation("smoke")), None, **at_once) == 2  # 0.95 CPU a trial, 2 CPUs
    assert trials_at_once(demands(load_ablation("smoke")), 1, **at_once) == 1
    wide = load_ablation("smoke", parse_overrides(["workers=4"]))
    with pytest.raises(
        ValueError,
        match=r"trial smoke-cifar_plain8-s0 asks for 4 workers x \{0.95 CPU\} = 3.8 CPU; "
        r"this machine has 2 CPU",
    ):
        trials_at_once(demands(wide), None, **at_once)


def test_cli_refuses_bad_input_in_one_line_before_ray_starts(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.ablate",
            "--axis",
            "depth=[21]",
            "--storage-path",
            str(tmp_path / "runs"),
            "--json",
            str(tmp_path / "s.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error:") and len(out.stderr.strip().splitlines()) == 1
    assert "not 6n+2" in out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "s.json").exists()


def test_smoke_matrix_end_to_end(tiny_ablation):
    ablation, summary, lines = tiny_ablation
    uri = place_trials(ablation)[0].config.tracking_uri
    client = MlflowClient(uri)

    assert summary["failed"] == []
    assert summary["trials_at_once"] == 2  # 2 CPUs, 0.95 + 0.01 per one-worker trial
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == sorted(t.name for t in ablation.trials)
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.metrics["epoch"] == 2
        assert 0 <= child.data.metrics["test_top1_error"] <= 100  # learning is tested in test_train.py
        assert child.data.params["model"] == child.data.tags["model"]

    table = pq.read_table(summary["results"]["parquet"]).to_pylist()
    assert len(table) == 4 and all(row["status"] == "FINISHED" for row in table)
    assert {row["run_id"] for row in table} == {c.info.run_id for c in children}
    for row in table:
        assert row["test_top1_error"] == pytest.approx(client.get_run(row["run_id"]).data.metrics["test_top1_error"])
        assert row["params"] > 0 and row["multiply_adds"] > 0
    plain8, res8 = (next(r for r in table if r["model"] == m) for m in ("cifar_plain8", "cifar_resnet8"))
    assert plain8["params"] == res8["params"]  # option A adds no parameters
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id, "results")]
    assert artifacts == ["results/results.csv", "results/results.parquet"]
    assert any("epoch 2/2" in line for line in lines)

    # Rerunning a finished ablation trains nothing and duplicates nothing.
    again = ablate(ablation, echo=lines.append)
    assert again["parent_run_id"] == parent.info.run_id
    assert "4 finished, 0 to run" in "\n".join(lines)
    assert (
        len(client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")) == 4
    )


def test_results_table_goes_to_local_storage_or_a_temp_folder_for_remote_storage(tmp_path):
    assert results_folder(str(tmp_path), "x") == tmp_path
    remote = results_folder("s3://bucket/runs/x", "x")
    assert remote.is_dir() and remote.name.startswith("x-results-") and not list(remote.iterdir())


def test_a_failed_trial_does_not_stop_the_others(ray_local, tmp_path):
    # inject_nan is a config key, so it can be an axis: one trial diverges at its first step.
    overrides = parse_overrides(TINY) | {"storage_path": str(tmp_path / "runs")}
    ablation = load_ablation(
        "smoke", overrides, name="fails", axes={"depth": "[8]", "residual": "[true]", "inject_nan": "[null, '0:1']"}
    )
    lines = []
    summary = ablate(ablation, echo=lines.append)

    bad, good = "fails-cifar_resnet8-A-inject_nan=0:1-s0", "fails-cifar_resnet8-A-inject_nan=None-s0"
    assert summary["failed"] == [bad]
    rows = {row["trial"]: row for row in summary["trials"]}
    assert rows[good]["status"] == "FINISHED" and rows[good]["test_top1_error"] is not None
    assert rows[bad]["status"] == "FAILED" and "non-finite training loss" in rows[bad]["error"]
    client = MlflowClient(place_trials(ablation)[0].config.tracking_uri)
    assert client.get_run(rows[bad]["run_id"]).info.status == "FAILED"
    assert client.get_run(summary["parent_run_id"]).info.status == "FAILED"
    assert any(line.startswith(f"[{bad}] FAILED") for line in lines)


def results_row(trial, model, net, **values):
    row = dict.fromkeys(COLUMNS)
    row.update(trial=trial, model=model, net=net, depth=18, shortcut="A", params=11_700_000, multiply_adds=1.8e9)
    row.update(train_error=40.0, test_view="center", test_top1_error=31.0, test_top5_error=11.0, status="FINISHED")
    return row | values


def test_the_printed_table_sets_the_paper_beside_the_view_it_measured_only():
    scored = results_row(
        "t2-resnet18-A",
        "resnet18",
        "residual",
        eval_view="10crop",
        eval_top1_error=29.0,
        eval_top5_error=10.0,
        paper_table="Table 2",
        paper_view="10crop",
        paper_top1_error=27.88,
        diff_top1=29.0 - 27.88,
    )
    center_only = results_row("t2-plain18", "plain18", "plain", paper_table="Table 2", paper_view="10crop")
    header, first, second = format_table([scored, center_only]).splitlines()
    assert header.split()[8:16] == ["center", "top-1", "center", "top-5", "10-crop", "top-1", "10-crop", "top-5"]
    assert "29.00%" in first and "27.88%" in first and "+1.12" in first
    assert "paper: 10-crop" in second and "+" not in second  # center numbers: no diff beside Table 2
    # An ablation measured only with the training loop's view keeps the plain two error columns.
    header, _ = format_table([center_only]).splitlines()
    assert header.split()[8:10] == ["top-1", "top-5"]
