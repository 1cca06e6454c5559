"""ImageNet's test views like for like, on the tiny ILSVRC-layout tree of test_imagenet.py, on real
Ray and MLflow: the val shards scored a batch of rows at a time (one Ray task per member and shard
file) equal the per-image reference; a short ``ablate -p imagenet-table2`` scores each trial's last
checkpoint 10-crop and puts those numbers, not the center ones, beside Table 2; the comparison
report's parity table does the same, and Fig. 7 reads the val shards' center views.
"""

from __future__ import annotations

import sqlite3

import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from orchestrator import comparison, tracking
from orchestrator.ablate import ablation_from_args, build_parser
from orchestrator.ablation import ablate, table_view
from orchestrator.build import build_run_model
from orchestrator.config import ExperimentConfig
from orchestrator.data import sharded_test_split
from orchestrator.inference import Member, score_shards
from orchestrator.shards import run_mean
from orchestrator.tracking.schema import view_metric
from tests.orchestrator.test_imagenet import WNIDS, run_config, shards  # noqa: F401 (shards: a fixture)
from workloads import ensemble as ensemble_math
from workloads.analysis.responses import layer_responses
from workloads.data.decode import decode_images
from workloads.data.views import center_view
from workloads.engine import load_checkpoint

VAL_IMAGES = 4  # test_imagenet.py's tree: 2 val images a class, one per shard file


def val_images(folder) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every val image decoded one at a time with PIL (the reference path), in shard order."""
    tables = [pq.read_table(path).to_pydict() for path, _ in sharded_test_split(run_config(folder)).files]
    batch = {column: [value for table in tables for value in table[column]] for column in ("image", "key", "label")}
    return decode_images(batch), torch.tensor(batch["label"])


@pytest.mark.parametrize("view", ["center", "10crop", "multiscale"])
def test_val_shards_scored_in_batches_over_ray_equal_one_image_at_a_time(ray_local, shards, view):  # noqa: F811
    config = run_config(shards, "model=resnet18")
    torch.manual_seed(0)
    model = build_run_model(config, 3, len(WNIDS)).eval()
    mean = torch.from_numpy(run_mean(config))
    assert mean.shape == (3, 224, 224)  # prepare wrote the train shards' per-pixel mean image
    member = Member("r18", "no-run", config, model.state_dict(), mean)
    split = sharded_test_split(config)
    # batch_size 4: forward passes of at most four 224 views, several per shard (multi-scale: 1 view)
    scored = score_shards([member], split, view, batch_size=4)["r18"]
    images, labels = val_images(shards)
    assert torch.equal(split.labels, labels)
    reference = ensemble_math.image_probabilities(model, images, mean, view)
    assert scored.shape == (VAL_IMAGES, len(WNIDS))
    assert torch.allclose(scored, reference, atol=1e-5)


ABLATE_ARGS = [
    "-p",
    "imagenet-table2",
    "--axis",
    "depth=[18]",
    "--epochs",
    "1",
    "--set",
    "use_gpu=false",
    "--set",
    "workers=1",
    "--set",
    "cpus_per_worker=0.5",
    "--set",
    "recipe.batch_size=8",
    "--set",
    "log_every=1",
    "--max-concurrent",
    "1",
]


@pytest.fixture(scope="module")
def table2(ray_local, shards):  # noqa: F811
    """``ablate -p imagenet-table2`` cut to 18 layers and one epoch of the tiny tree, on the CPU:
    (ablation, summary, printed lines)."""
    args = build_parser().parse_args(
        [*ABLATE_ARGS, "--data-root", str(shards / "shards"), "--storage-path", str(shards / "table2")]
    )
    ablation = ablation_from_args(args)
    lines: list[str] = []
    summary = ablate(ablation, max_concurrent=args.max_concurrent, echo=lines.append)
    return ablation, summary, lines


def test_imagenet_table2_trials_are_scored_10crop_and_only_those_numbers_meet_table_2(table2):
    ablation, summary, lines = table2
    assert summary["failed"] == []
    assert [table_view(t.config) for t in ablation.trials] == ["10crop", "10crop"]
    client = MlflowClient(summary["tracking_uri"])
    rows = {r["model"]: r for r in summary["trials"]}
    for model, paper in (("plain18", 27.94), ("resnet18", 27.88)):
        row = rows[model]
        metrics = client.get_run(row["run_id"]).data.metrics
        assert metrics[view_metric("10crop", "images")] == VAL_IMAGES
        assert (row["test_view"], row["test_top1_error"]) == ("center", metrics["test_top1_error"])
        assert (row["eval_view"], row["eval_top1_error"], row["eval_top5_error"]) == (
            "10crop",
            metrics[view_metric("10crop", "top1_error")],
            metrics[view_metric("10crop", "top5_error")],
        )
        assert (row["paper_table"], row["paper_view"], row["paper_top1_error"]) == ("Table 2", "10crop", paper)
        assert row["diff_top1"] == pytest.approx(row["eval_top1_error"] - paper)  # 10-crop minus 10-crop
        assert row["paper_top5_error"] is None and row["diff_top5"] is None  # Table 2 gives top-1 only
    saved = pq.read_table(summary["results"]["parquet"]).to_pylist()
    assert [(r["trial"], r["eval_view"], r["diff_top1"]) for r in saved] == [
        (r["trial"], r["eval_view"], r["diff_top1"]) for r in summary["trials"]
    ]
    printed_lines = [line for echoed in lines for line in echoed.splitlines()]  # the table is one echo
    header = next(line for line in printed_lines if line.startswith("trial "))
    assert "center top-1" in header and "10-crop top-1" in header and "paper" in header
    printed = next(line for line in printed_lines if line.startswith("imagenet-table2-resnet18-A-s0 "))
    resnet = rows["resnet18"]
    assert f"{resnet['eval_top1_error']:.2f}%  " in printed and "27.88%" in printed
    assert f"{resnet['diff_top1']:+.2f}" in printed
    # Each trial scored its view itself, as it finished: the driver's pass after the matrix had none left.
    assert not any(line.startswith("[ablate] scoring") for line in lines)


def test_a_rerun_scores_only_the_trials_still_without_their_view(table2, shards):  # noqa: F811
    _, summary, _ = table2
    client = MlflowClient(summary["tracking_uri"])
    # As if the plain net's scoring had failed in its trial: its run without the 10-crop metrics
    # (MLflow has no call that deletes a metric: the test's own sqlite store is edited directly).
    plain = next(r for r in summary["trials"] if r["model"] == "plain18")
    with sqlite3.connect(summary["tracking_uri"].removeprefix("sqlite:///")) as db:
        for table in ("metrics", "latest_metrics"):
            db.execute(f"DELETE FROM {table} WHERE run_uuid = ? AND key LIKE 'test_10crop_%'", (plain["run_id"],))
    assert view_metric("10crop", "top1_error") not in client.get_run(plain["run_id"]).data.metrics
    args = build_parser().parse_args(
        [*ABLATE_ARGS, "--data-root", str(shards / "shards"), "--storage-path", str(shards / "table2")]
    )
    lines: list[str] = []
    again = ablate(ablation_from_args(args), echo=lines.append)
    assert [line for line in lines if line.startswith("[ablate] scoring")] == [
        "[ablate] scoring imagenet-table2-plain18-s0 with view 10crop on the val shards"
    ]
    assert any(line.startswith("[imagenet-table2-plain18-s0] 10crop: top-1") for line in lines)
    assert [r["eval_top1_error"] for r in again["trials"]] == [r["eval_top1_error"] for r in summary["trials"]]


@pytest.fixture(scope="module")
def table2_report(table2, shards):  # noqa: F811
    ablation, summary, _ = table2
    client = MlflowClient(summary["tracking_uri"])
    selection = comparison.select_runs(client, parent=ablation.name)
    lines: list[str] = []
    report = comparison.compare(
        client, summary["tracking_uri"], selection, shards / "report", fig7_images=3, echo=lines.append
    )
    return client, summary, report


def test_parity_puts_the_10crop_cells_beside_table_2_and_names_the_view_beside_center_cells(table2_report):
    _, summary, report = table2_report
    cells = {(r["model"], r["view"]): r for r in report["parity"]}
    assert set(cells) == {(m, v) for m in ("plain18", "resnet18") for v in ("center", "10crop")}
    trials = {r["model"]: r for r in summary["trials"]}
    for model, paper in (("plain18", 27.94), ("resnet18", 27.88)):
        ten_crop, center = cells[model, "10crop"], cells[model, "center"]
        assert (ten_crop["paper_table"], ten_crop["paper_top1_error"]) == ("Table 2", paper)
        assert ten_crop["test_top1_error"] == trials[model]["eval_top1_error"]
        assert ten_crop["diff_top1"] == pytest.approx(trials[model]["eval_top1_error"] - paper)
        assert (center["paper_table"], center["paper_view"]) == ("Table 2", "10crop")
        assert center["paper_top1_error"] is None and center["diff_top1"] is None
        assert center["test_top1_error"] == trials[model]["test_top1_error"]
    page = (comparison.Path(report["html"])).read_text()
    assert "paper: 10-crop" in page


def test_fig7_on_imagenet_runs_is_the_val_shards_center_views(table2_report, shards):  # noqa: F811
    client, summary, report = table2_report
    assert report["fig7_skipped"] == {}
    fig7 = pq.read_table(shards / "report" / "fig7.parquet").to_pylist()
    run = next(r for r in summary["trials"] if r["model"] == "resnet18")
    stds = [r["std"] for r in sorted(fig7, key=lambda r: r["layer_index"]) if r["run_id"] == run["run_id"]]
    assert len(stds) == 16  # ResNet-18: 8 basic blocks, two 3x3 convs each
    # The reference: the first 3 val images decoded with PIL, center-cropped one at a time.
    state = load_checkpoint(
        client.download_artifacts(run["run_id"], tracking.checkpoint_artifact("last"), str(shards / "fig7-check"))
    )
    model = build_run_model(ExperimentConfig(**state["config"]), 3, len(WNIDS))
    model.load_state_dict(state["model"])
    images, _ = val_images(shards)
    mean = torch.from_numpy(run_mean(run_config(shards)))
    views = torch.cat([center_view(image, mean) for image in images[:3]])
    assert stds == pytest.approx(layer_responses(model, [views]), rel=1e-4)
