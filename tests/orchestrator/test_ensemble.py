"""python -m orchestrator.ensemble on real Ray, MLflow and Fashion-MNIST: one tiny ensemble (two
seeds of ResNet-8 and a plain-8) is trained once per module and every test reads it back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from orchestrator import cli, comparison
from orchestrator.config import parse_overrides
from orchestrator.ensemble import main
from orchestrator.ensemble_train import load_ensemble, train
from workloads.engine import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
# Three members of 48 iterations each (1024 images, batch 128: 6 epochs; fewer leave BatchNorm's
# running statistics near chance on the test set), one worker of 0.6 CPU each so all three train at
# once on 2 cores, scored on 512 test images; 500 training images held out for selection.
TINY = [
    "train_subset=1024",
    "test_subset=512",
    "val_split=500",
    "recipe.total=48",
    "recipe.milestones=[36]",
    "log_every=8",
    "workers=1",
    "cpus_per_worker=0.6",
]
MEMBERS = """name: tiny-ensemble
base: {preset: smoke}
members:
  - {depth: 8, seed: 0}
  - {depth: 8, seed: 1}
  - {depth: 8, residual: false, seed: 0}
"""


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    """The tiny ensemble, trained and evaluated once: (summary, tracking URI, storage folder)."""
    folder = tmp_path_factory.mktemp("ensemble")
    preset = folder / "tiny.yaml"
    preset.write_text(MEMBERS)
    storage = folder / "runs"
    ablation, view = load_ensemble(str(preset), parse_overrides(TINY) | {"storage_path": str(storage)})
    summary = train(ablation, view, echo=lambda line: None)
    assert summary["failed"] == []
    return summary, f"sqlite:///{storage / 'mlflow.db'}", storage


def run_cli(argv, capsys):
    """``python -m orchestrator.ensemble ARGV`` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        cli.run(main, argv)
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def member_ids(summary):
    return {row["trial"]: row["run_id"] for row in summary["trials"]}


def test_members_are_child_runs_of_one_ensemble_parent(trained):
    summary, uri, _ = trained
    client = MlflowClient(uri)
    parent = client.get_run(summary["parent_run_id"])
    assert parent.data.tags["orchestrator.kind"] == "ensemble" and parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["model"] for c in children) == ["cifar_plain8", "cifar_resnet8", "cifar_resnet8"]
    evaluation = client.get_run(summary["evaluation"]["run_id"])
    assert evaluation.data.tags["orchestrator.kind"] == "ensemble-evaluation"
    assert evaluation.data.tags["orchestrator.ensemble_parent"] == parent.info.run_id
    assert evaluation.data.metrics["ensemble_top1_error"] == summary["evaluation"]["ensemble"]["top1_error"]
    assert [a.path for a in client.list_artifacts(evaluation.info.run_id, "ensemble")] == [
        "ensemble/probabilities.parquet",
        "ensemble/summary.json",
    ]


def by_hand(table, names, weights=None):
    """(top-1, top-5) error in % of the weighted mean of ``names``' probability columns, in numpy."""
    weights = np.asarray(weights or [1.0] * len(names), dtype=np.float64)
    stacked = np.stack([np.stack(table.column(n).to_numpy(zero_copy_only=False)) for n in names])
    probs = np.tensordot(weights / weights.sum(), stacked.astype(np.float64), axes=1)
    labels = np.asarray(table.column("label").to_pylist())
    ranked = np.argsort(-probs, axis=1, kind="stable")
    top1 = 100.0 * np.mean(ranked[:, 0] != labels)
    top5 = 100.0 * np.mean(~(ranked[:, :5] == labels[:, None]).any(axis=1))
    return top1, top5


def rows(parquet: str, split: str):
    """The probability table's rows of one split: "test" (reported) or "val" (selection)."""
    table = pq.read_table(parquet)
    return table.filter(table.column("split").to_numpy(zero_copy_only=False) == split)


def test_ensemble_errors_match_a_recomputation_from_the_stored_probabilities(trained):
    evaluation = trained[0]["evaluation"]
    table = rows(evaluation["parquet"], "test")
    names = [m["name"] for m in evaluation["members"]]
    assert table.num_rows == evaluation["images"] == 512
    assert table.column("image").to_pylist() == list(range(512))
    top1, top5 = by_hand(table, names)
    assert evaluation["ensemble"]["top1_error"] == pytest.approx(top1, abs=1e-9)
    assert evaluation["ensemble"]["top5_error"] == pytest.approx(top5, abs=1e-9)
    for member in evaluation["members"]:
        assert (member["top1_error"], member["top5_error"]) == pytest.approx(by_hand(table, [member["name"]]))


def test_the_ensemble_beats_the_mean_member_on_top1(trained):
    evaluation = trained[0]["evaluation"]
    assert evaluation["ensemble"]["top1_error"] <= evaluation["mean_member"]["top1_error"] - 1.0
    assert evaluation["ensemble"]["top1_error"] <= evaluation["worst_member"]["top1_error"]


def test_greedy_selection_picks_on_the_validation_split_and_is_reported_on_the_test_split(trained):
    summary, uri, _ = trained
    evaluation = summary["evaluation"]
    greedy = evaluation["greedy"]
    # The members' 500 held-out training images (val_split=500), none of the 512 test images.
    val = rows(evaluation["parquet"], "val")
    assert val.num_rows == greedy["val_images"] == 500
    assert greedy["selection"].startswith("on the members' validation split (val_split 500)")
    picked, previous = [], (float("inf"), float("inf"))
    for step in greedy["steps"]:
        picked.append(step["member"])
        top1, top5 = by_hand(val, picked)
        assert (step["top1_error"], step["top5_error"]) == pytest.approx((top1, top5))
        assert (top5, top1) < previous  # never adds a member that raises the validation error
        previous = (top5, top1)
    assert greedy["members"] == picked and 1 <= len(picked) <= 3
    top1, top5 = by_hand(rows(evaluation["parquet"], "test"), picked)
    assert (greedy["test"]["top1_error"], greedy["test"]["top5_error"]) == pytest.approx((top1, top5))
    logged = MlflowClient(uri).get_run(evaluation["run_id"]).data
    assert logged.metrics["greedy_top1_error"] == pytest.approx(top1) and logged.metrics["val_images"] == 500
    assert logged.params["greedy_selection"] == greedy["selection"]


def test_combine_of_a_subset_equals_evaluating_that_subset(trained, tmp_path, capsys):
    summary, uri, _ = trained
    ids = member_ids(summary)
    names = ["tiny-ensemble-cifar_resnet8-s0", "tiny-ensemble-cifar_plain8-s0"]
    code, _, err = run_cli(
        [
            "evaluate",
            "--runs",
            ",".join(ids[n] for n in names),
            "--weights",
            "2,1",
            "--tracking-uri",
            uri,
            "--out",
            str(tmp_path / "direct"),
            "--json",
            str(tmp_path / "direct.json"),
        ],
        capsys,
    )
    assert code == 0, err
    direct = json.loads((tmp_path / "direct.json").read_text())
    code, out, err = run_cli(
        [
            "combine",
            "--from",
            summary["evaluation"]["run_id"],
            "--members",
            f"{names[0]},{ids[names[1]]}",
            "--weights",
            "2,1",
            "--tracking-uri",
            uri,
            "--json",
            str(tmp_path / "combined.json"),
        ],
        capsys,
    )
    assert code == 0, err
    combined = json.loads((tmp_path / "combined.json").read_text())
    assert "ENSEMBLE (average)" in out
    assert combined["ensemble"] == direct["ensemble"]
    assert combined["members"] == direct["members"]
    assert combined["ensemble"] == pytest.approx(
        dict(zip(("top1_error", "top5_error"), by_hand(rows(direct["parquet"], "test"), names, [2, 1])))
    )
    assert combined["greedy"] == direct["greedy"]  # picked on the same validation rows


def test_evaluate_reads_the_training_split_once_for_the_mean_and_the_validation_images(
    trained, tmp_path, capsys, dataset_reads
):
    """The members' training mean and the validation rows come from one read of the training split."""
    summary, uri, _ = trained
    ids = ",".join(sorted(member_ids(summary).values())[:2])
    code, out, err = run_cli(["evaluate", "--runs", ids, "--tracking-uri", uri, "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert "and 500 validation images" in out
    assert sorted(dataset_reads) == ["test", "train"]


def fake_run(
    client, experiment_id, name, *, status="FINISHED", dataset="fashion-mnist", state=None, garbage=False, folder=None
):
    run = client.create_run(experiment_id, run_name=name, tags={"dataset": dataset, "model": "cifar_resnet8"})
    if state is not None or garbage:
        path = Path(folder) / name / "state.pt"
        path.parent.mkdir(parents=True)
        if garbage:
            path.write_bytes(b"not a checkpoint")
        else:
            save_checkpoint(state, path)
        client.log_artifact(run.info.run_id, str(path), "checkpoints/last")
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture(scope="module")
def refused_runs(trained, tmp_path_factory):
    """Runs an ensemble must refuse, next to the real members: {label: run id}."""
    summary, uri, _ = trained
    client = MlflowClient(uri)
    experiment_id = client.get_run(summary["parent_run_id"]).info.experiment_id
    folder = tmp_path_factory.mktemp("fakes")
    real = client.download_artifacts(
        member_ids(summary)["tiny-ensemble-cifar_resnet8-s0"], "checkpoints/last/state.pt", str(folder)
    )
    five_classes = load_checkpoint(real)
    five_classes["model"]["fc.weight"] = five_classes["model"]["fc.weight"][:5]
    five_classes["model"]["fc.bias"] = five_classes["model"]["fc.bias"][:5]
    return {
        "failed": fake_run(client, experiment_id, "failed", status="FAILED"),
        "running": fake_run(client, experiment_id, "running", status="RUNNING"),
        "missing": fake_run(client, experiment_id, "no-checkpoint"),
        "corrupt": fake_run(client, experiment_id, "corrupt", garbage=True, folder=folder),
        "classes": fake_run(client, experiment_id, "five-classes", state=five_classes, folder=folder),
        "dataset": fake_run(client, experiment_id, "cifar-run", dataset="cifar10"),
        "imagenet": fake_run(client, experiment_id, "imagenet-run", dataset="imagenet"),
        "unknown": "0" * 32,
    }


@pytest.mark.parametrize(
    "label, extra, message",
    [
        ("unknown", [], "unknown MLflow run id '00000000000000000000000000000000'"),
        ("failed", [], "run failed (ID) is FAILED, not FINISHED"),
        ("running", [], "run running (ID) is RUNNING, not FINISHED"),
        ("missing", [], "run no-checkpoint (ID) has no checkpoint checkpoints/last/state.pt"),
        ("corrupt", [], "run corrupt (ID): checkpoint checkpoints/last/state.pt is unusable"),
        ("classes", [], "members have different class counts"),
        ("dataset", [], "members were trained on different data sets"),
        ("imagenet", [], "members were trained on different data sets"),
        (
            None,
            ["--view", "10crop"],
            "view '10crop' needs ImageNet-size images; these are 28x28 px: use center or flip",
        ),
        (None, ["--weights", "1,2"], "--weights gives 2 weight(s) for 3 members"),
        (None, ["--weights", "1,-1,1"], "each must be a finite number >= 0"),
        (None, ["--weights", "1,x,1"], "must be comma-separated numbers"),
    ],
)
def test_refusals_exit_2_with_one_line(trained, refused_runs, tmp_path, capsys, label, extra, message):
    summary, uri, _ = trained
    ids = list(member_ids(summary).values())
    runs = ids + ([refused_runs[label]] if label else [])
    code, _, err = run_cli(
        ["evaluate", "--runs", ",".join(runs), "--tracking-uri", uri, "--out", str(tmp_path), *extra], capsys
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert message.replace("(ID)", f"({refused_runs.get(label)})") in err
    assert not (tmp_path / "probabilities.parquet").exists()


def test_parent_by_name_best_n_and_the_real_cli(trained, tmp_path, capsys):
    summary, uri, _ = trained
    code, _, err = run_cli(
        [
            "evaluate",
            "--parent",
            "tiny-ensemble",
            "--view",
            "flip",
            "--tracking-uri",
            uri,
            "--out",
            str(tmp_path / "flip"),
            "--json",
            str(tmp_path / "flip.json"),
        ],
        capsys,
    )
    assert code == 0, err
    flip = json.loads((tmp_path / "flip.json").read_text())
    assert flip["view"] == "flip" and len(flip["members"]) == 3
    code, _, err = run_cli(
        [
            "evaluate",
            "--best",
            "2",
            "--filter",
            "tags.model = 'cifar_resnet8'",
            "--tracking-uri",
            uri,
            "--out",
            str(tmp_path / "best"),
            "--json",
            str(tmp_path / "best.json"),
        ],
        capsys,
    )
    assert code == 0, err
    best = json.loads((tmp_path / "best.json").read_text())
    assert sorted(m["name"] for m in best["members"]) == [
        "tiny-ensemble-cifar_resnet8-s0",
        "tiny-ensemble-cifar_resnet8-s1",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.ensemble", "evaluate", "--parent", "no-such", "--tracking-uri", uri],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: --parent 'no-such': no MLflow run has this id or name in experiment 'resnet-orchestrator'"
    ]


def test_presets_list_the_papers_six_models_and_validate():
    ablation, view = load_ensemble("ilsvrc2015")
    assert view == "multiscale"
    assert [(t.config.model, t.config.shortcut, t.config.seed) for t in ablation.trials] == [
        ("resnet34", "B", 0),
        ("resnet34", "C", 0),
        ("resnet50", "B", 0),
        ("resnet101", "B", 0),
        ("resnet152", "B", 0),
        ("resnet152", "B", 1),
    ]
    assert len(load_ensemble("cifar10")[0].trials) == 6
    smoke = load_ensemble("smoke")[0]
    assert smoke.name == "ensemble-smoke" and {t.config.dataset for t in smoke.trials} == {"fashion-mnist"}
    assert {t.config.dataset for t in ablation.trials} == {"imagenet"}


def test_compare_puts_each_evaluation_beside_the_training_runs(trained, tmp_path):
    """The compare report over the ensemble's members carries the evaluation's members (view
    center, as the evaluation logged them, mean over the two ResNet-8 seeds) and its ensemble row."""
    summary, uri, _ = trained
    client = MlflowClient(uri)
    evaluation = client.get_run(summary["evaluation"]["run_id"]).data.metrics
    report = comparison.compare(
        client,
        uri,
        comparison.select_runs(client, parent="tiny-ensemble"),
        tmp_path / "report",
        fig7=False,
        echo=lambda line: None,
    )
    assert summary["evaluation"]["run_id"] in report["evaluation_run_ids"]
    evaluated = [r for r in report["parity"] if summary["evaluation"]["run_id"] in r["evaluation_run_ids"]]
    resnet8 = next(r for r in evaluated if r["model"] == "cifar_resnet8")
    assert resnet8["view"] == "center" and resnet8["seeds"] == [0, 1] and "checkpoint=last" in resnet8["setting"]
    assert resnet8["test_top1_error"] == pytest.approx(
        (
            evaluation["member.tiny-ensemble-cifar_resnet8-s0.top1_error"]
            + evaluation["member.tiny-ensemble-cifar_resnet8-s1.top1_error"]
        )
        / 2
    )
    ensemble = next(r for r in evaluated if r["model"] == "ensemble")
    assert (ensemble["test_top1_error"], ensemble["test_top5_error"]) == (
        evaluation["ensemble_top1_error"],
        evaluation["ensemble_top5_error"],
    )
    assert ensemble["runs"] == 3 and ensemble["paper_table"] is None  # Fashion-MNIST: not in the paper
    trained_rows = [r for r in report["parity"] if not r["evaluation_run_ids"]]
    assert sorted(i for r in trained_rows for i in r["run_ids"]) == sorted(member_ids(summary).values())
