"""An ablation's results table: one row per trial, read back from MLflow, beside the paper.

Every error carries its view: ``test_*`` are the training loop's own (``test_view``: the whole small
image, ImageNet's central 224 crop), ``eval_*`` the view a trial's paper table needs, scored after
training (``eval_view``, e.g. 10-crop beside Tables 2/3). The paper's number and the difference
appear only beside a measurement with the table's view (``parity.TABLE_VIEWS``); otherwise the
table shows "paper: 10-crop" and no difference.

Saved as CSV and Parquet (pyarrow), printed as text, and summarised as findings (does a plain
net's training error rise with depth, as in the paper's degradation problem?).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from orchestrator import tracking
from orchestrator.build import build_run_model
from orchestrator.parity import TABLE_VIEWS, VIEW_LABELS, paper_columns, unlike_label
from orchestrator.tracking.schema import TRAINING_VIEW, view_errors
from workloads.analysis import count_multiply_adds, count_parameters
from workloads.analysis.paper import paper_result
from workloads.models import parse_model_name

COLUMNS = (
    "trial",
    "model",
    "depth",
    "net",
    "shortcut",
    "seed",
    "params",
    "multiply_adds",
    "train_error",
    "test_view",
    "test_top1_error",
    "test_top5_error",
    "eval_view",
    "eval_top1_error",
    "eval_top5_error",
    "wall_seconds",
    "paper_table",
    "paper_view",
    "paper_top1_error",
    "paper_top5_error",
    "diff_top1",
    "diff_top5",
    "status",
    "error",
    "run_id",
)


def model_cost(config, shape: tuple[int, int, int]) -> tuple[int, int]:
    """(parameters, multiply-adds per image) at ``shape`` = (in_channels, num_classes, image_size)."""
    in_channels, num_classes, size = shape
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = build_run_model(config, in_channels, num_classes)
    return count_parameters(model), count_multiply_adds(model, (in_channels, size, size))


def results_table(client, trials, children: dict, shapes: dict) -> list[dict]:
    """One row per trial; ``shapes`` maps a data set name to (in_channels, num_classes, image_size)."""
    rows = []
    for trial in trials:
        config, run = trial.config, client.get_run(children[trial.name].info.run_id)
        spec = parse_model_name(config.model)
        params, macs = model_cost(config, shapes[config.dataset])
        metrics = run.data.metrics
        shortcut = None if not spec.residual else (config.shortcut or spec.default_shortcut)
        paper = paper_result(config.dataset, config.model, shortcut)
        views = view_errors(metrics)
        # The view scored after training: the paper table's, if this run has it.
        wanted = TABLE_VIEWS.get(paper.table) if paper else None
        eval_view = wanted if wanted in views else next(iter(sorted(views)), None)
        measured = {
            TRAINING_VIEW: (metrics.get("test_top1_error"), metrics.get("test_top5_error")),
            **{v: (e["top1_error"], e["top5_error"]) for v, e in views.items()},
        }
        compared = wanted if wanted in measured else TRAINING_VIEW
        end = run.info.end_time or run.info.start_time
        rows.append(
            {
                "trial": trial.name,
                "model": config.model,
                "depth": spec.depth,
                "net": "residual" if spec.residual else "plain",
                "shortcut": shortcut or "-",
                "seed": config.seed,
                "params": params,
                "multiply_adds": macs,
                "train_error": metrics.get("train_error"),
                "test_view": TRAINING_VIEW,
                "test_top1_error": metrics.get("test_top1_error"),
                "test_top5_error": metrics.get("test_top5_error"),
                "eval_view": eval_view,
                "eval_top1_error": views[eval_view]["top1_error"] if eval_view else None,
                "eval_top5_error": views[eval_view]["top5_error"] if eval_view else None,
                "wall_seconds": (end - run.info.start_time) / 1000 if run.info.start_time else None,
                **paper_columns(paper, compared, *measured[compared]),
                "status": run.info.status,
                "error": run.data.tags.get(tracking.ERROR),
                "run_id": run.info.run_id,
            }
        )
    return rows


def save_table(rows: list[dict], folder: Path) -> dict[str, Path]:
    """Write ``results.csv`` and ``results.parquet`` into ``folder`` (atomically each)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / "results.csv", "parquet": folder / "results.parquet"}
    tmp_csv = paths["csv"].with_suffix(".csv.tmp")
    with tmp_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp_csv.replace(paths["csv"])
    tmp_parquet = paths["parquet"].with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=_schema()), tmp_parquet)
    tmp_parquet.replace(paths["parquet"])
    return paths


def _schema() -> pa.Schema:
    types = {"depth": pa.int64(), "seed": pa.int64(), "params": pa.int64(), "multiply_adds": pa.int64()}
    floats = (
        "train_error",
        "test_top1_error",
        "test_top5_error",
        "eval_top1_error",
        "eval_top5_error",
        "wall_seconds",
        "paper_top1_error",
        "paper_top5_error",
        "diff_top1",
        "diff_top5",
    )
    return pa.schema([(c, types.get(c, pa.float64() if c in floats else pa.string())) for c in COLUMNS])


def format_table(rows: list[dict]) -> str:
    """The table as text. Where some trial has errors under another view than the training loop's,
    both views get columns named after them ("center top-1", "10-crop top-1"); "paper" is the
    table's top-1 number beside the view it was measured with, else "paper: <its view>"."""
    eval_views = sorted({r["eval_view"] for r in rows if r["eval_view"]})
    if eval_views:
        test_label = VIEW_LABELS.get(TRAINING_VIEW, TRAINING_VIEW) + " "
        eval_label = (VIEW_LABELS.get(eval_views[0], eval_views[0]) if len(eval_views) == 1 else "eval") + " "
        errors = (f"{test_label}top-1", f"{test_label}top-5", f"{eval_label}top-1", f"{eval_label}top-5")
    else:
        errors = ("top-1", "top-5")
    header = ("trial", "net", "depth", "sc", "params", "MACs", "train err", *errors, "wall", "paper", "diff", "status")
    lines = [header]
    for r in rows:
        measured = [_pct(r["test_top1_error"]), _pct(r["test_top5_error"])]
        if eval_views:
            view = "" if len(eval_views) == 1 or not r["eval_view"] else f" ({r['eval_view']})"
            measured += [_pct(r["eval_top1_error"]) + view, _pct(r["eval_top5_error"])]
        paper = _pct(r["paper_top1_error"])
        if r["paper_top1_error"] is None and r["paper_top5_error"] is None and r["paper_view"]:
            paper = unlike_label(r["paper_view"])
        lines.append(
            (
                r["trial"],
                r["net"],
                str(r["depth"]),
                r["shortcut"],
                f"{r['params'] / 1e6:.2f}M",
                f"{r['multiply_adds'] / 1e6:.1f}M",
                _pct(r["train_error"]),
                *measured,
                _secs(r["wall_seconds"]),
                paper,
                _signed(r["diff_top1"]),
                r["status"],
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def degradation_findings(rows: list[dict]) -> list[str]:
    """For plain and residual nets alike: how the final training error moves from the shallowest
    to the deepest finished net (same shortcut and seed). The paper: plain rises, residual falls."""
    findings = []
    for net in ("plain", "residual"):
        finished = [r for r in rows if r["net"] == net and r["status"] == "FINISHED" and r["train_error"] is not None]
        groups: dict[tuple, list[dict]] = {}
        for r in finished:
            groups.setdefault((r["shortcut"], r["seed"]), []).append(r)
        for (shortcut, seed), group in sorted(groups.items(), key=str):
            if len({r["depth"] for r in group}) < 2:
                continue
            shallow = min(group, key=lambda r: r["depth"])
            deep = max(group, key=lambda r: r["depth"])
            trend = "rises" if deep["train_error"] > shallow["train_error"] else "falls"
            findings.append(
                f"{net} nets (seed {seed}): training error {trend} with depth, "
                f"{shallow['depth']} layers {shallow['train_error']:.1f}% -> "
                f"{deep['depth']} layers {deep['train_error']:.1f}%"
            )
    return findings


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _signed(value) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _secs(value) -> str:
    return "-" if value is None else f"{value:.0f}s"
