"""The paper-parity table: every measured cell beside the paper's number, from plain rows.

Three sources of measurements (all read from MLflow by ``orchestrator.compare``):
- training runs (``records``): the test errors their training loop logged, with its single test
  view (``TRAINING_VIEW``: the whole small image, or ImageNet's central 224 crop);
- the same runs' errors under the view their paper table needs, which ``ablate`` scores after
  training (``records[i]["views"]``, e.g. 10-crop for Tables 2/3);
- ensemble evaluations (``evaluations``): each member's errors with the evaluation's view (e.g.
  10-crop, multi-scale) and the ensemble's errors.

A cell is (data set, model, shortcut, setting, view); seeds of one cell give mean and sample std.
The paper's numbers come from ``workloads.analysis.paper``: a member cell by its view (multi-scale:
Table 4, else Tables 2/3/6), an ensemble of two or more members from Table 5. Like for like only:
a cell shows the paper's number and the difference only when its view is the one the table was
measured with (``TABLE_VIEWS``); otherwise the row names the table and its view ("paper: 10-crop")
and leaves the number and the difference empty.
"""

from __future__ import annotations

import statistics

from orchestrator.tracking.schema import TRAINING_VIEW
from workloads.analysis.paper import paper_ensemble, paper_result

# The view each table of the paper was measured with (PAPER.md): Tables 2 and 3 "10-crop testing",
# Table 4 the fully-convolutional form averaged over scales, Table 6 the single 32x32 test image
# (what the training loop's own view is on CIFAR). Table 5 (the ensemble, on the ILSVRC test set)
# states no view: its number stays beside any view, as a reference (its split differs anyway).
TABLE_VIEWS = {"Table 2": "10crop", "Table 3": "10crop", "Table 4": "multiscale", "Table 6": "center"}
VIEW_LABELS = {"center": "center", "flip": "flip", "10crop": "10-crop", "multiscale": "multi-scale"}
PARITY_COLUMNS = [
    "dataset",
    "model",
    "net",
    "depth",
    "shortcut",
    "setting",
    "view",
    "runs",
    "seeds",
    "train_error",
    "test_top1_error",
    "test_top1_std",
    "test_top5_error",
    "test_top5_std",
    "paper_table",
    "paper_view",
    "paper_top1_error",
    "paper_top5_error",
    "diff_top1",
    "diff_top5",
    "run_ids",
    "unfinished",
    "evaluation_run_ids",
]


def parity_table(records: list[dict], evaluations: list[dict] = ()) -> list[dict]:
    """One row per cell: finished runs' errors as mean and sample std over seeds (std None for one
    run), the paper's numbers and measured minus paper; then one row per evaluated ensemble.

    ``records``: training runs (``compare.run_record``). ``evaluations``: ensemble evaluations
    (``compare.evaluation_record``) whose members are all in ``records``. A member measured twice
    the same way (same view and setting, e.g. in an ensemble and in a subset of it) counts once.
    """
    by_id = {r["run_id"]: r for r in records}
    measured = [{**r, "view": TRAINING_VIEW, "evaluation_run_id": None} for r in records]
    measured += [
        {
            **r,
            "view": view,
            "evaluation_run_id": None,
            "test_top1_error": errors["top1_error"],
            "test_top5_error": errors["top5_error"],
        }
        for r in records
        for view, errors in sorted((r.get("views") or {}).items())
    ]
    seen = set()
    for e in evaluations:
        for member in e["members"]:
            run = by_id[member["run_id"]]
            setting = f"{run['setting']} {e['setting']}".strip()
            if (run["run_id"], e["view"], setting) not in seen:
                seen.add((run["run_id"], e["view"], setting))
                measured.append(
                    {
                        **run,
                        "setting": setting,
                        "view": e["view"],
                        "evaluation_run_id": e["run_id"],
                        "test_top1_error": member["top1_error"],
                        "test_top5_error": member["top5_error"],
                    }
                )
    cells: dict[tuple, list[dict]] = {}
    for r in measured:
        cells.setdefault((r["dataset"], r["model"], r["shortcut"], r["setting"], r["view"]), []).append(r)
    rows = [_cell_row(group) for group in cells.values()]
    rows += [_ensemble_row(e, [by_id[m["run_id"]] for m in e["members"]]) for e in evaluations if len(e["members"]) > 1]
    return sorted(
        rows,
        key=lambda r: (
            r["dataset"] or "",
            r["net"] == "ensemble",
            r["net"],
            r["depth"] or 0,
            r["shortcut"] or "",
            r["setting"],
            r["view"],
        ),
    )


def _cell_row(group: list[dict]) -> dict:
    first = group[0]
    done = [r for r in group if r["status"] == "FINISHED"]
    top1_mean, top1_std = _mean_std([r["test_top1_error"] for r in done])
    top5_mean, top5_std = _mean_std([r["test_top5_error"] for r in done])
    return {
        "dataset": first["dataset"],
        "model": first["model"],
        "net": first["net"],
        "depth": first["depth"],
        "shortcut": first["shortcut"],
        "setting": first["setting"],
        "view": first["view"],
        "runs": len(done),
        "seeds": sorted(r["seed"] for r in done),
        "train_error": _mean_std([r["train_error"] for r in done])[0],
        "test_top1_error": top1_mean,
        "test_top1_std": top1_std,
        "test_top5_error": top5_mean,
        "test_top5_std": top5_std,
        **paper_columns(
            paper_result(first["dataset"], first["model"], first["shortcut"], first["view"]),
            first["view"],
            top1_mean,
            top5_mean,
        ),
        "run_ids": [r["run_id"] for r in done],
        "unfinished": [r["run_id"] for r in group if r["status"] != "FINISHED"],
        "evaluation_run_ids": sorted({r["evaluation_run_id"] for r in done if r["evaluation_run_id"]}),
    }


def _ensemble_row(e: dict, members: list[dict]) -> dict:
    """One evaluated ensemble: its own errors (one measurement, no spread) beside Table 5."""
    return {
        "dataset": e["dataset"],
        "model": "ensemble",
        "net": "ensemble",
        "depth": None,
        "shortcut": None,
        "setting": f"members={','.join(m['name'] for m in members)} weights={e['weights']} {e['setting']}",
        "view": e["view"],
        "runs": len(members),
        "seeds": sorted(m["seed"] for m in members),
        "train_error": None,
        "test_top1_error": e["top1_error"],
        "test_top1_std": None,
        "test_top5_error": e["top5_error"],
        "test_top5_std": None,
        **paper_columns(paper_ensemble(e["dataset"]), e["view"], e["top1_error"], e["top5_error"]),
        "run_ids": [m["run_id"] for m in members],
        "unfinished": [],
        "evaluation_run_ids": [e["run_id"]],
    }


def paper_columns(paper, view: str, top1: float | None, top5: float | None) -> dict:
    """The paper's table, the view it was measured with, and, only where ``view`` (how the cell was
    measured) is that view, its numbers and measured minus paper."""
    table_view = TABLE_VIEWS.get(paper.table) if paper else None
    like = paper is not None and table_view in (None, view)
    paper_top1, paper_top5 = (paper.top1_error, paper.top5_error) if like else (None, None)
    return {
        "paper_table": paper.table if paper else None,
        "paper_view": table_view,
        "paper_top1_error": paper_top1,
        "paper_top5_error": paper_top5,
        "diff_top1": _diff(top1, paper_top1),
        "diff_top5": _diff(top5, paper_top5),
    }


def paper_label(row: dict) -> str | None:
    """How a parity row shows the paper's top-1 number: the number, "paper: 10-crop" where the
    row's view is not the table's (nothing like for like to show), or None (no number)."""
    if row["paper_top1_error"] is not None:
        return f"{row['paper_top1_error']:.2f}"
    if row["paper_view"] not in (None, row["view"]):
        return unlike_label(row["paper_view"])
    return None


def unlike_label(paper_view: str) -> str:
    """What stands in for the paper's number beside a measurement with another view."""
    return f"paper: {VIEW_LABELS.get(paper_view, paper_view)}"


def _mean_std(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _diff(measured: float | None, paper: float | None) -> float | None:
    return None if measured is None or paper is None else measured - paper
