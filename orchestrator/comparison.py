"""A report comparing training runs with the paper, from MLflow only: selecting the runs (and the
ensemble evaluations of them), the data behind the report (runs, parity, curves, Fig. 7), writing
the folder whole or not at all, and its "report" MLflow run. ``python -m orchestrator.compare``
runs it; its help describes the files.
"""

from __future__ import annotations

import dataclasses
import html
import os
import shutil
import tempfile
from pathlib import Path

import mlflow.artifacts
import torch
from mlflow.exceptions import MlflowException

from orchestrator import report, tracking
from orchestrator.build import build_run_model
from orchestrator.config import ExperimentConfig
from orchestrator.data import load_split, sharded_test_split, training_mean
from orchestrator.parity import PARITY_COLUMNS, paper_label, parity_table
from orchestrator.results import degradation_findings
from orchestrator.tracking.schema import TRAINING_VIEW, view_errors
from workloads import ensemble as ensemble_math
from workloads.analysis.responses import FIG7_IMAGES, layer_responses, response_layers
from workloads.data import ResidentLoader, dataset_spec
from workloads.engine import config_hash, load_checkpoint
from workloads.models import parse_model_name

FIG7_BATCH = 128  # images per forward pass of that analysis
# Params besides model, shortcut and data set that make two runs the same cell (seeds aside).
SETTING_PARAMS = ("stride_placement", "train_subset", "test_subset", "recipe")
REPORT_FILE = "report.html"
SCREENSHOT = "screenshot.png"  # the page in headless Chromium, where this machine has it

RUN_COLUMNS = [
    "name",
    "dataset",
    "model",
    "net",
    "depth",
    "shortcut",
    "seed",
    "status",
    "iteration",
    "train_error",
    "test_view",
    "test_top1_error",
    "test_top5_error",
    "other_views",
    "setting",
    "git_commit",
    "run_id",
]
CURVE_COLUMNS = ["run_id", "name", "net", "depth", "shortcut", "seed", "metric", "step", "value"]
FIG7_COLUMNS = ["run_id", "name", "net", "depth", "shortcut", "seed", "layer_index", "layer", "std", "rank"]


# ---- selecting runs -------------------------------------------------------------------------------


def find_experiment(client, key: str):
    experiment = client.get_experiment_by_name(key)
    if experiment is None and key.isdigit():
        try:
            experiment = client.get_experiment(key)
        except MlflowException:
            experiment = None
    if experiment is None or experiment.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"unknown MLflow experiment {key!r}; valid: {', '.join(names) or 'none'}")
    return experiment


def select_runs(
    client, *, experiment: str | None = None, parent: str | None = None, filter_string: str | None = None
) -> dict:
    """``{"experiment": Experiment, "parent": Run | None, "filter": str | None, "runs": [Run],
    "evaluations": [Run]}``: the training runs (those with a ``model`` param, not ablation/ensemble/
    report runs), and the finished ensemble evaluations whose members are all among them."""
    experiment_obj = find_experiment(client, experiment) if experiment else None
    parent_run = (
        tracking.find_parent(client, parent, experiment_obj and experiment_obj.experiment_id) if parent else None
    )
    if parent_run is not None:
        if experiment_obj and parent_run.info.experiment_id != experiment_obj.experiment_id:
            raise ValueError(f"--parent {parent!r} is in another experiment than --experiment {experiment!r}")
        experiment_obj = client.get_experiment(parent_run.info.experiment_id)
    experiment_obj = experiment_obj or find_experiment(client, ExperimentConfig.experiment)
    clauses = [f"tags.`{tracking.PARENT_RUN_ID}` = '{parent_run.info.run_id}'"] if parent_run else []
    clauses += [filter_string] if filter_string else []
    try:
        runs = tracking.search_all(client, [experiment_obj.experiment_id], " and ".join(clauses))
    except MlflowException as error:
        raise ValueError(
            f"--filter {filter_string!r} is not a valid MLflow filter: {str(error.message).splitlines()[0]}"
        ) from None
    runs = [r for r in runs if tracking.is_training_run(r)]
    if not runs:
        where = [f"experiment {experiment_obj.name!r}"] + ([f"parent {parent!r}"] if parent else [])
        where += [f"filter {filter_string!r}"] if filter_string else []
        raise ValueError(f"no training runs matched ({', '.join(where)})")
    ids = {r.info.run_id for r in runs}
    evaluations = tracking.search_all(
        client,
        [experiment_obj.experiment_id],
        f"tags.`{tracking.KIND}` = '{tracking.EVALUATION}' and attributes.status = 'FINISHED'",
    )
    evaluations = [
        e for e in evaluations if (members := tracking.member_run_ids(e.data.tags)) and set(members.values()) <= ids
    ]
    return {
        "experiment": experiment_obj,
        "parent": parent_run,
        "filter": filter_string,
        "runs": runs,
        "evaluations": evaluations,
    }


# ---- the data behind the report -----------------------------------------------------------------


def run_record(run) -> dict:
    """One training run as a flat row (errors in %)."""
    params, metrics = run.data.params, run.data.metrics
    spec = parse_model_name(params["model"])
    shortcut = (run.data.tags.get(tracking.SHORTCUT) or spec.default_shortcut) if spec.residual else None
    setting = " ".join(
        f"{k}={v}" for k, v in sorted(params.items()) if k in SETTING_PARAMS or k.split(".")[0] == "recipe_overrides"
    )
    return {
        "run_id": run.info.run_id,
        "name": run.info.run_name,
        "status": run.info.status,
        "dataset": params.get("dataset"),
        "model": spec.name,
        "net": "residual" if spec.residual else "plain",
        "depth": spec.depth,
        "shortcut": shortcut,
        "seed": int(params.get("seed", 0)),
        "setting": setting,
        "iteration": int(metrics["iteration"]) if "iteration" in metrics else None,
        "train_error": metrics.get("train_error"),
        "test_view": TRAINING_VIEW,
        "test_top1_error": metrics.get("test_top1_error"),
        "test_top5_error": metrics.get("test_top5_error"),
        # Views scored after training (ablate: the one the run's paper table needs), by view.
        "views": view_errors(metrics),
        "other_views": " ".join(
            f"{view}={e['top1_error']:.2f}/{e['top5_error']:.2f}" for view, e in sorted(view_errors(metrics).items())
        )
        or None,
        "git_commit": run.data.tags.get(tracking.GIT_COMMIT),
        # The thin training curve: per-logged-step error where the run has it, else per epoch.
        "train_metric": "train_error_step" if "train_error_step" in metrics else "train_error",
    }


def evaluation_record(run) -> dict:
    """One ensemble evaluation run as a flat row: its view and setting, every member's errors (by
    training run id) and the ensemble's (errors in %)."""
    params, metrics = run.data.params, run.data.metrics
    members = [
        {
            "run_id": run_id,
            "top1_error": metrics.get(f"{prefix}.top1_error"),
            "top5_error": metrics.get(f"{prefix}.top5_error"),
        }
        for prefix, run_id in tracking.member_run_ids(run.data.tags).items()
    ]
    return {
        "run_id": run.info.run_id,
        "name": run.info.run_name,
        "dataset": run.data.tags.get(tracking.DATASET),
        "view": params["view"],
        "weights": params["weights"],
        "setting": f"checkpoint={params['checkpoint']} eval_test_subset={params['test_subset']}",
        "members": members,
        "top1_error": metrics.get("ensemble_top1_error"),
        "top5_error": metrics.get("ensemble_top5_error"),
    }


def curve_points(client, records: list[dict]) -> list[dict]:
    """Every logged point of each run's training-error curve and test top-1 error curve (step =
    global iteration, value in %), in step order."""
    points = []
    for r in records:
        for metric in (r["train_metric"], "test_top1_error"):
            history = sorted(client.get_metric_history(r["run_id"], metric), key=lambda m: (m.step, m.timestamp))
            points += [{**_who(r), "metric": metric, "step": m.step, "value": m.value} for m in history]
    return points


def _who(r: dict) -> dict:
    return {k: r[k] for k in ("run_id", "name", "net", "depth", "shortcut", "seed")}


def fig7_responses(
    tracking_uri: str, records: list[dict], *, images: int = FIG7_IMAGES, data_root: str | None = None, echo=print
) -> tuple[list[dict], dict[str, str]]:
    """``(rows, skipped)``: per run and 3x3 layer, the std of its response on the first ``images``
    test images (normalised as in training), from the run's last checkpoint; ``skipped`` maps the
    run ids without a checkpoint artifact (failed runs) to why."""
    rows, skipped, data = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="compare-checkpoints-") as folder:
        for r in records:
            try:
                path = mlflow.artifacts.download_artifacts(
                    run_id=r["run_id"],
                    artifact_path=tracking.checkpoint_artifact("last"),
                    dst_path=os.path.join(folder, r["run_id"]),
                    tracking_uri=tracking_uri,
                )
            except (MlflowException, OSError):
                skipped[r["run_id"]] = (
                    f"{r['name']}: no {tracking.checkpoint_artifact('last')} artifact ({r['status']})"
                )
                continue
            state = load_checkpoint(path)
            os.remove(path)  # one checkpoint on disk at a time
            config = ExperimentConfig(**state["config"])
            model = build_run_model(
                config, state["model"]["conv1.weight"].shape[1], state["model"]["fc.weight"].shape[0]
            )
            model.load_state_dict(state["model"])
            values = layer_responses(model, analysis_batches(config, images, data_root, data))
            layers = [name for name, _ in response_layers(model)]
            rank = {i: n for n, i in enumerate(sorted(range(len(values)), key=lambda i: -values[i]), start=1)}
            rows += [
                {**_who(r), "layer_index": i + 1, "layer": layers[i], "std": v, "rank": rank[i]}
                for i, v in enumerate(values)
            ]
            echo(f"[compare] Fig. 7: {r['name']}: {len(values)} layers, std {min(values):.3f}..{max(values):.3f}")
    return rows, skipped


def analysis_batches(config: ExperimentConfig, images: int, data_root: str | None, cache: dict) -> list:
    """The first ``images`` test images of the run's data, normalised as the run's evaluation saw
    them, in batches; ``cache`` keeps them per data set and subset, as runs of a matrix share them.
    In-memory data sets: the images minus the run's training mean (``data.training_mean``: the
    training split's per-pixel mean image, or its channel average with ``mean=channel``). Sharded
    (ImageNet): the first val rows' center views (shorter side 256, central 224) minus the run's
    mean (``shards.run_mean``)."""
    key = (
        config.dataset,
        data_root or config.data_root,
        config.val_split,
        config.train_subset,
        config.test_subset,
        config.mean,
    )
    if key not in cache:
        config = dataclasses.replace(config, data_root=key[1])
        try:
            if dataset_spec(config.dataset).sharded:
                cache[key] = list(sharded_center_views(config, images).split(FIG7_BATCH))
            else:
                test, train = load_split(config, "test"), load_split(config, "train")
                loader = ResidentLoader(
                    test.images[:images],
                    test.labels[:images],
                    FIG7_BATCH,
                    train=False,
                    mean=training_mean(config, train.images),
                )
                cache[key] = [x for x, _ in loader]
        except (FileNotFoundError, ValueError) as error:
            raise ValueError(
                f"Fig. 7 needs the {config.dataset} images: {str(error).splitlines()[0]} "
                "(pass --data-root, or --no-fig7)"
            ) from None
    return cache[key]


def sharded_center_views(config: ExperimentConfig, images: int) -> torch.Tensor:
    """float32 ``[n,3,224,224]``: the center views of the first ``images`` rows of the run's val
    shards (its ``test_subset`` applied, in shard order), read a batch of rows at a time, decoded and
    cut together (``inference.decode_rows``, ``workloads.ensemble.batch_views``) on the CPU."""
    import pyarrow.parquet as pq

    from orchestrator.inference import decode_rows, image_columns
    from orchestrator.shards import run_mean  # Ray Data: only for sharded runs
    from workloads.data.shards import resolve_output

    split = sharded_test_split(config)
    fs, _ = resolve_output(config.data_root)
    # The mean the run trained with: the train shards' per-pixel mean image [3,224,224] where
    # prepare wrote one, else the data set's per-channel mean [3].
    mean = torch.from_numpy(run_mean(config))
    views, left = [], images
    for path, rows in split.files:
        if left <= 0:
            break
        table = pq.read_table(path, filesystem=fs, columns=image_columns(pq.read_schema(path, filesystem=fs)))
        table = table.take(rows[:left] if rows is not None else list(range(min(left, table.num_rows))))
        for batch in table.to_batches(max_chunksize=FIG7_BATCH):
            [(_, center)] = ensemble_math.batch_views(decode_rows(batch.to_pydict(), "cpu"), mean, "center")
            views.append(center)
        left -= table.num_rows
    return torch.cat(views)


# ---- writing the report -------------------------------------------------------------------------


def check_out(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier report (or empty)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / REPORT_FILE).is_file())):
        raise ValueError(f"--out {out} exists and is not a report folder; choose another folder")


def write_report(
    folder: Path,
    title: str,
    records: list[dict],
    parity: list[dict],
    points: list[dict],
    responses: list[dict],
    skipped: dict[str, str],
    notes: list[str],
) -> list[str]:
    """Every file of the report into ``folder``; returns their names. The page puts the summary
    first (depth against training error, the diffs against the paper), the figures and full tables
    after."""
    files = report.write_rows(records, RUN_COLUMNS, folder, "runs")
    files += report.write_rows(parity, PARITY_COLUMNS, folder, "parity")
    files += report.write_rows(points, CURVE_COLUMNS, folder, "curves")
    curves_png = report.curves_figure(records, points)
    (folder / "curves.png").write_bytes(curves_png)
    files.append(folder / "curves.png")
    summary = [
        ("Degradation (Figs. 1, 4, 6)", degradation_html(records)),
        ("Against the paper", paper_diffs_html(parity)),
    ]
    details = [("Training curves", report.embedded_png(curves_png, "training curves"))]
    if responses or skipped:
        files += report.write_rows(responses, FIG7_COLUMNS, folder, "fig7")
        fig7_png = report.fig7_figure(records, responses)
        (folder / "fig7.png").write_bytes(fig7_png)
        files.append(folder / "fig7.png")
        missing = "".join(f"<li>{html.escape(why)}</li>" for why in skipped.values())
        details.append(
            (
                "Layer responses (Fig. 7)",
                report.embedded_png(fig7_png, "Fig. 7")
                + (f"<p>Not analysed:</p><ul>{missing}</ul>" if missing else ""),
            )
        )
    details += [
        (
            "Every cell",
            "<p>Test error %, mean ± std over seeds; diff is measured minus paper, shown only where "
            "the cell's view is the one the paper's table measured (else: the table's view).</p>"
            + wide_table(
                parity_display(parity),
                [
                    ("dataset", "data set"),
                    ("model", "model"),
                    ("shortcut", "shortcut"),
                    ("setting", "setting"),
                    ("view", "view"),
                    ("runs", "runs"),
                    ("seeds", "seeds"),
                    ("train", "train err"),
                    ("top1", "top-1 err"),
                    ("paper_top1", "paper top-1"),
                    ("diff_top1", "diff"),
                    ("top5", "top-5 err"),
                    ("paper_top5_error", "paper top-5"),
                    ("diff_top5", "diff"),
                    ("paper_table", "paper table"),
                ],
            ),
        ),
        (
            "Runs",
            "<p>Errors in %; commits and run ids shortened (hover for the whole, or see runs.csv).</p>"
            + wide_table(runs_display(records), RUN_HEADERS),
        ),
        ("Selection", "<p>" + "<br>".join(map(html.escape, notes)) + "</p>"),
    ]
    unfinished = [f"{r['name']} ({r['status']})" for r in records if r["status"] != "FINISHED"]
    lead = notes[0] + (
        f"; not finished, so left out of means and findings: {', '.join(unfinished)}" if unfinished else ""
    )
    (folder / REPORT_FILE).write_text(
        report.html_page(title, html.escape(lead), [("Summary", summary), ("Details", details)])
    )
    return sorted([REPORT_FILE] + [p.name for p in files])


def wide_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A page-wide table; a setting that every row shares is said once above it, not in a column
    (the longest cells, repeated, are what pushed the table past the page)."""
    settings = {r["setting"] for r in rows}
    if len(settings) != 1:
        return report.html_table(rows, columns, "wide")
    note = f"<p>Setting of every row: <code>{html.escape(settings.pop() or 'none')}</code></p>"
    return note + report.html_table(rows, [c for c in columns if c[0] != "setting"], "wide")


# The paper's finding: with depth, a plain net's training error rises (the degradation problem),
# a residual net's falls.
PAPER_TREND = {"plain": "rises", "residual": "falls"}


def degradation_html(records: list[dict]) -> str:
    """How training error moves from the shallowest to the deepest finished net, per net type (and
    shortcut and seed), each line marked as agreeing with the paper or not."""
    findings = degradation_findings(records)
    if not findings:
        return "<p>No net type has finished runs at two depths: nothing to say about depth.</p>"
    items = []
    for line in findings:
        agrees = f"training error {PAPER_TREND[line.split()[0]]} " in line
        items.append(
            f"<li class='{'agree' if agrees else 'disagree'}'>{html.escape(line)}: "
            f"{'as in the paper' if agrees else 'unlike the paper'}</li>"
        )
    return (
        "<p>The paper: plain nets' training error rises with depth (the degradation problem), "
        "residual nets' falls.</p><ul class='findings'>" + "".join(items) + "</ul>"
    )


def paper_diffs_html(parity: list[dict]) -> str:
    """The measured cells the paper has a number for, beside it; or why there are none."""
    rows = [r for r in parity_display(parity) if r["paper_table"] and r["runs"]]
    if not rows:
        return (
            f"<p>None of the {len(parity)} cells has both a finished run and a number in the paper, "
            "which reports CIFAR-10 (Table 6, residual nets with option A) and ImageNet (Tables 2-5); "
            "see every cell below.</p>"
        )
    return (
        "<p>Test error %, measured (mean ± std over seeds) minus the paper's, where the view is the "
        "table's (Tables 2/3: 10-crop, Table 4: multi-scale, Table 6: the test image); a cell "
        "measured another way names the table's view instead.</p>"
    ) + report.html_table(
        rows,
        [
            ("model", "model"),
            ("shortcut", "shortcut"),
            ("view", "view"),
            ("seeds", "seeds"),
            ("top1", "top-1 err"),
            ("paper_top1", "paper"),
            ("diff_top1", "diff"),
            ("top5", "top-5 err"),
            ("paper_top5_error", "paper"),
            ("diff_top5", "diff"),
            ("paper_table", "table"),
        ],
    )


def parity_display(parity: list[dict]) -> list[dict]:
    """Parity rows as the page shows them: "mean ± std", signed diffs, and how many seeds."""

    def show(mean, std):
        return None if mean is None else f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")

    return [
        {
            **r,
            "train": show(r["train_error"], None),
            "top1": show(r["test_top1_error"], r["test_top1_std"]),
            "top5": show(r["test_top5_error"], r["test_top5_std"]),
            "seeds": len(set(r["seeds"])),
            "paper_top1": paper_label(r),
            **{k: None if r[k] is None else f"{r[k]:+.2f}" for k in ("diff_top1", "diff_top5")},
        }
        for r in parity
    ]


RUN_HEADERS = [
    ("name", "name"),
    ("dataset", "data set"),
    ("model", "model"),
    ("net", "net"),
    ("depth", "depth"),
    ("shortcut", "shortcut"),
    ("seed", "seed"),
    ("status", "status"),
    ("iteration", "iterations"),
    ("train_error", "train err"),
    ("test_view", "view"),
    ("test_top1_error", "top-1 err"),
    ("test_top5_error", "top-5 err"),
    ("other_views", "other views (top-1/top-5)"),
    ("setting", "setting"),
    ("git_commit", "commit"),
    ("run_id", "run id"),
]


def runs_display(records: list[dict]) -> list[dict]:
    """Run rows as the page shows them: commit and run id cut to 8 characters, whole on hover."""

    def short(value):
        return None if value is None else (value[:8], value)

    return [{**r, "git_commit": short(r["git_commit"]), "run_id": short(r["run_id"])} for r in records]


def take_screenshot(folder: Path) -> str:
    """``folder``'s page as headless Chromium shows it on a laptop, saved as ``SCREENSHOT`` beside it:
    "taken", or "not taken: why" (no Chromium on this machine, or it failed to render)."""
    try:
        (folder / SCREENSHOT).write_bytes(report.screenshot(folder / REPORT_FILE))
    except (OSError, RuntimeError) as error:  # TimeoutError and FileNotFoundError are OSErrors
        return f"not taken: {error}"
    return "taken"


def log_report(client, selection: dict, folder: Path, fig7: bool, counts: dict, screenshot: str) -> str:
    """Log the report folder as artifacts of the selection's "report" run (made once per selection);
    its tag ``tracking.REPORT_SCREENSHOT`` says whether this report's screenshot was taken."""
    parent = selection["parent"]
    experiment = selection["experiment"]
    key = {
        "experiment": experiment.experiment_id,
        "parent": parent and parent.info.run_id,
        "filter": selection["filter"],
        "fig7": fig7,
    }
    run, _ = tracking.get_or_create_run(
        client,
        experiment.experiment_id,
        f"report/{config_hash(key)[:16]}",
        run_name=f"report-{parent.info.run_name if parent else experiment.name}",
        tags={
            tracking.KIND: tracking.REPORT,
            tracking.REPORT_PARENT: parent.info.run_id if parent else "",
            tracking.REPORT_FILTER: selection["filter"] or "",
        },
    )
    run_id = run.info.run_id
    tracking.set_tags(client, run_id, {tracking.REPORT_SCREENSHOT: screenshot})
    client.log_artifacts(run_id, str(folder), tracking.REPORT_FOLDER)
    tracking.log_metrics(client, run_id, counts, step=0)
    tracking.finish(client, run_id, ok=True)
    return run_id


def replace_folder(staging: Path, out: Path) -> None:
    """Move ``staging`` to ``out``; an earlier report there goes only once the new one is in place."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old)


def compare(
    client,
    tracking_uri: str,
    selection: dict,
    out: Path,
    *,
    fig7: bool = True,
    fig7_images: int = FIG7_IMAGES,
    data_root: str | None = None,
    echo=print,
) -> dict:
    """Build the report of ``selection`` (from ``select_runs``) into ``out``; returns the summary
    that ``--json`` writes."""
    check_out(out)
    records = [run_record(r) for r in selection["runs"]]
    evaluations = [evaluation_record(r) for r in selection["evaluations"]]
    parent = selection["parent"]
    notes = [
        f"{len(records)} training runs from experiment {selection['experiment'].name!r} at {tracking_uri}",
        f"parent run: {parent.info.run_name} ({parent.info.run_id})" if parent else "parent run: any",
        f"filter: {selection['filter'] or 'none'}",
        f"{len(evaluations)} ensemble evaluations of these runs (members by view, ensembles beside Table 5)",
        f"code versions (git_commit): {', '.join(sorted({r['git_commit'] or '?' for r in records}))}",
    ]
    for note in notes[:4]:
        echo(f"[compare] {note}")
    parity = parity_table(records, evaluations)
    points = curve_points(client, records)
    responses, skipped = (
        fig7_responses(tracking_uri, records, images=fig7_images, data_root=data_root, echo=echo) if fig7 else ([], {})
    )
    for why in skipped.values():
        echo(f"[compare] Fig. 7 skips {why}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the report is meant to be shared
    try:
        label = parent.info.run_name if parent else selection["experiment"].name
        files = write_report(staging, f"ResNet comparison: {label}", records, parity, points, responses, skipped, notes)
        screenshot = take_screenshot(staging)
        echo(f"[compare] screenshot {screenshot}")
        files = sorted(files + [SCREENSHOT] if screenshot == "taken" else files)
        run_id = log_report(
            client,
            selection,
            staging,
            fig7,
            {"runs": len(records), "cells": len(parity), "evaluations": len(evaluations)},
            screenshot,
        )
        replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    echo(f"[compare] report: {out / REPORT_FILE} | MLflow report run {run_id}")
    return {
        "out": str(out),
        "html": str(out / REPORT_FILE),
        "files": files,
        "report_run_id": run_id,
        "tracking_uri": tracking_uri,
        "experiment": selection["experiment"].name,
        "parent_run_id": parent.info.run_id if parent else None,
        "filter": selection["filter"],
        "run_ids": [r["run_id"] for r in records],
        "evaluation_run_ids": [e["run_id"] for e in evaluations],
        "parity": parity,
        "fig7_skipped": skipped,
        "screenshot": screenshot,
    }
