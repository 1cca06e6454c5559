"""Writing a comparison report: figures (matplotlib, Agg, PNG), one self-contained HTML page with
the figures embedded as base64, and the data behind every table and figure as CSV and Parquet.

Everything here works on plain rows (lists of dicts) built by ``orchestrator.compare``; nothing
reads MLflow.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node or in CI
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

NETS = ("plain", "residual")


def write_rows(rows: list[dict], columns: list[str], folder: Path, stem: str) -> list[Path]:
    """``<stem>.csv`` and ``<stem>.parquet`` in ``folder``; list cells are joined with spaces."""
    flat = [{c: " ".join(map(str, r[c])) if isinstance(r.get(c), list) else r.get(c) for c in columns}
            for r in rows]
    csv_path, parquet_path = folder / f"{stem}.csv", folder / f"{stem}.parquet"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    pq.write_table(pa.Table.from_pylist(flat, schema=_schema(flat, columns)), parquet_path)
    return [csv_path, parquet_path]


def _schema(rows: list[dict], columns: list[str]) -> pa.Schema:
    """Column types from the values: a column of ints with a None stays int, not null or float."""
    def kind(column):
        values = [r[column] for r in rows if r[column] is not None]
        if values and all(isinstance(v, bool) for v in values):
            return pa.bool_()
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return pa.int64()
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return pa.float64()
        return pa.string()
    return pa.schema([(c, kind(c)) for c in columns])


def curve_label(run: dict, several_seeds: bool, several_shortcuts: bool) -> str:
    """"plain-20", "ResNet-56", with the shortcut and seed where the figure mixes several."""
    label = f"{'ResNet' if run['net'] == 'residual' else 'plain'}-{run['depth']}"
    if several_shortcuts and run["shortcut"]:
        label += f" {run['shortcut']}"
    return label + (f" seed {run['seed']}" if several_seeds else "")


def curves_figure(runs: list[dict], points: list[dict]) -> bytes:
    """Figs. 1/4/6: error (%) against iterations, plain nets left and residual nets right; one
    colour per run, training error thin and dashed, test error bold."""
    several_seeds = len({r["seed"] for r in runs}) > 1
    several_shortcuts = len({r["shortcut"] for r in runs if r["shortcut"]}) > 1
    by_run: dict[tuple[str, str], list[dict]] = {}
    for p in points:
        by_run.setdefault((p["run_id"], p["metric"]), []).append(p)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, net in zip(axes, NETS):
        mine = sorted((r for r in runs if r["net"] == net), key=lambda r: (r["depth"], r["shortcut"] or "", r["seed"]))
        colours = plt.get_cmap("viridis")([i / max(1, len(mine) - 1) * 0.9 for i in range(len(mine))])
        for run, colour in zip(mine, colours):
            label = curve_label(run, several_seeds, several_shortcuts)
            train = by_run.get((run["run_id"], run["train_metric"]), [])
            test = by_run.get((run["run_id"], "test_top1_error"), [])
            ax.plot([p["step"] for p in train], [p["value"] for p in train], "--", lw=0.8, color=colour)
            ax.plot([p["step"] for p in test], [p["value"] for p in test], "-", lw=2.2, color=colour, label=label)
        ax.set_title(f"{'residual' if net == 'residual' else 'plain'} nets"
                     + ("" if mine else " (none selected)"))
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        if mine:
            ax.legend(fontsize=8, title="bold: test, dashed: train", title_fontsize=8)
    axes[0].set_ylabel("error (%)")
    return _png(figure)


def fig7_figure(runs: list[dict], responses: list[dict]) -> bytes:
    """Fig. 7: std of each 3x3 layer's response, in layer order (top) and sorted by magnitude
    (bottom); plain nets dashed, residual nets solid."""
    several_seeds = len({r["seed"] for r in runs}) > 1
    several_shortcuts = len({r["shortcut"] for r in runs if r["shortcut"]}) > 1
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7.5))
    analysed = [r for r in runs if any(p["run_id"] == r["run_id"] for p in responses)]
    analysed.sort(key=lambda r: (r["net"], r["depth"], r["shortcut"] or "", r["seed"]))
    colours = plt.get_cmap("tab10")
    for i, run in enumerate(analysed):
        mine = sorted((p for p in responses if p["run_id"] == run["run_id"]), key=lambda p: p["layer_index"])
        style = dict(ls="--" if run["net"] == "plain" else "-", color=colours(i % 10), lw=1.2,
                     label=curve_label(run, several_seeds, several_shortcuts))
        top.plot([p["layer_index"] for p in mine], [p["std"] for p in mine], **style)
        bottom.plot(range(1, len(mine) + 1), sorted((p["std"] for p in mine), reverse=True), **style)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std of response")
        ax.grid(alpha=0.3)
    if analysed:
        top.legend(fontsize=8, ncol=2)
    return _png(figure)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def html_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """``columns``: (key, header). Numbers print with two decimals, lists joined with spaces."""
    def cell(value):
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.2f}"
        return " ".join(map(str, value)) if isinstance(value, list) else str(value)
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(r.get(k)))}</td>" for k, _ in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, sections: list[tuple[str, str]]) -> str:
    """One self-contained page: ``sections`` are (heading, inner HTML)."""
    style = ("body{font-family:sans-serif;margin:2em;max-width:1200px}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
             "text-align:right}th{background:#eee}img{max-width:100%}")
    parts = [f"<h2>{html.escape(heading)}</h2>\n{inner}" for heading, inner in sections]
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def embedded_png(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
