"""An ablation's results table: one row per trial, read back from MLflow, beside the paper.

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
    "test_top1_error",
    "test_top5_error",
    "wall_seconds",
    "paper_table",
    "paper_top1_error",
    "paper_top5_error",
    "diff_top1",
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
        top1 = metrics.get("test_top1_error")
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
                "test_top1_error": top1,
                "test_top5_error": metrics.get("test_top5_error"),
                "wall_seconds": (end - run.info.start_time) / 1000 if run.info.start_time else None,
                "paper_table": paper.table if paper else None,
                "paper_top1_error": paper.top1_error if paper else None,
                "paper_top5_error": paper.top5_error if paper else None,
                "diff_top1": (top1 - paper.top1_error) if paper and top1 is not None and paper.top1_error else None,
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
        "wall_seconds",
        "paper_top1_error",
        "paper_top5_error",
        "diff_top1",
    )
    return pa.schema([(c, types.get(c, pa.float64() if c in floats else pa.string())) for c in COLUMNS])


def format_table(rows: list[dict]) -> str:
    header = (
        "trial",
        "net",
        "depth",
        "sc",
        "params",
        "MACs",
        "train err",
        "top-1",
        "top-5",
        "wall",
        "paper",
        "diff",
        "status",
    )
    lines = [header]
    for r in rows:
        lines.append(
            (
                r["trial"],
                r["net"],
                str(r["depth"]),
                r["shortcut"],
                f"{r['params'] / 1e6:.2f}M",
                f"{r['multiply_adds'] / 1e6:.1f}M",
                _pct(r["train_error"]),
                _pct(r["test_top1_error"]),
                _pct(r["test_top5_error"]),
                _secs(r["wall_seconds"]),
                _pct(r["paper_top1_error"]),
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
