"""python -m orchestrator.compare: the parity builder on the paper's cells, and a report over the
runs of one small real ablation (Ray Tune + MLflow + Fashion-MNIST), checked against MLflow and
opened in headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import base64
import json
import math
import re
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow.artifacts
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import sync_playwright

from orchestrator import cli, compare, comparison, parity, report, tracking
from orchestrator.ablation import place_trials
from orchestrator.build import build_run_model
from orchestrator.config import ExperimentConfig
from orchestrator.results import degradation_findings
from workloads.analysis.responses import layer_responses
from workloads.engine import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
FIG7_IMAGES = 64
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; make test-services installs it


def record(model, seed=0, dataset="cifar10", shortcut=None, top1=None, top5=None, status="FINISHED"):
    residual = "resnet" in model
    return {
        "run_id": f"{model}-{shortcut}-{seed}",
        "name": model,
        "status": status,
        "dataset": dataset,
        "model": model,
        "net": "residual" if residual else "plain",
        "depth": int(re.sub(r"\D", "", model)),
        "shortcut": shortcut,
        "seed": seed,
        "setting": "recipe=cifar",
        "train_error": 1.0,
        "test_top1_error": top1,
        "test_top5_error": top5,
    }


def test_parity_table_puts_the_papers_numbers_beside_mean_and_std_over_seeds():
    records = [record("cifar_resnet110", seed, shortcut="A", top1=e) for seed, e in enumerate([6.5, 6.7, 6.9])]
    records += [
        record("cifar_resnet110", 3, shortcut="A", top1=50.0, status="FAILED"),
        record("cifar_plain20", top1=9.0),
        record("resnet34", dataset="imagenet", shortcut="B", top1=25.0, top5=8.0),
        record("resnet34", 1, dataset="imagenet", shortcut="B", top1=25.5, top5=8.5),
        record("plain34", dataset="imagenet", top1=29.0, top5=10.5),
    ]
    rows = {(r["dataset"], r["model"], r["shortcut"]): r for r in parity.parity_table(records)}

    r110 = rows["cifar10", "cifar_resnet110", "A"]
    assert (r110["paper_table"], r110["paper_top1_error"]) == ("Table 6", 6.43)
    assert r110["runs"] == 3 and r110["seeds"] == [0, 1, 2]  # the failed seed stays out of the mean
    assert r110["unfinished"] == ["cifar_resnet110-A-3"]
    assert r110["test_top1_error"] == pytest.approx(6.7)
    assert r110["test_top1_std"] == pytest.approx(statistics.stdev([6.5, 6.7, 6.9]))
    assert r110["diff_top1"] == pytest.approx(6.7 - 6.43)

    plain20 = rows["cifar10", "cifar_plain20", None]
    assert plain20["paper_top1_error"] is None and plain20["diff_top1"] is None  # Fig. 6 only
    assert plain20["test_top1_std"] is None  # one run: no spread

    # ImageNet training runs log the center crop; Table 3 is 10-crop: the table and its view are
    # named, and there is no number or difference to set beside them.
    r34 = rows["imagenet", "resnet34", "B"]
    assert (r34["paper_table"], r34["paper_view"], r34["paper_top1_error"], r34["paper_top5_error"]) == (
        "Table 3",
        "10crop",
        None,
        None,
    )
    assert r34["diff_top1"] is None and r34["diff_top5"] is None
    assert parity.paper_label(r34) == "paper: 10-crop"
    assert rows["imagenet", "plain34", None]["paper_top1_error"] is None
    assert (r110["paper_view"], parity.paper_label(r110)) == ("center", "6.43")  # Table 6: the test image
    # by data set, net, depth
    assert [r["model"] for r in parity.parity_table(records)] == [
        "cifar_plain20",
        "cifar_resnet110",
        "plain34",
        "resnet34",
    ]


def evaluation(run_id, view, members, top1=20.0, top5=4.0):
    """An ensemble evaluation as ``comparison.evaluation_record`` reads it: members are (run id, top-1, top-5)."""
    return {
        "run_id": run_id,
        "name": run_id,
        "dataset": "imagenet",
        "view": view,
        "weights": "None",
        "setting": "checkpoint=last eval_test_subset=None",
        "top1_error": top1,
        "top5_error": top5,
        "members": [{"run_id": i, "top1_error": e1, "top5_error": e5} for i, e1, e5 in members],
    }


def test_parity_table_puts_evaluated_views_beside_tables_3_4_and_ensembles_beside_table_5():
    records = [record("resnet152", seed, dataset="imagenet", shortcut="B", top1=30.0, top5=9.0) for seed in (0, 1)]
    records.append(record("resnet18", dataset="imagenet", shortcut="B", top1=35.0, top5=12.0))
    ids = [r["run_id"] for r in records]
    evaluations = [
        evaluation("six", "multiscale", [(ids[0], 19.0, 4.4), (ids[1], 20.0, 4.6), (ids[2], 25.0, 7.0)]),
        evaluation("pair", "multiscale", [(ids[0], 19.0, 4.4), (ids[1], 20.0, 4.6)]),  # the same measurements
        evaluation("ten", "10crop", [(ids[0], 21.0, 5.5)]),  # one member: no ensemble
    ]
    rows = parity.parity_table(records, evaluations)
    cells = {(r["model"], r["view"], r["setting"].split()[-1]): r for r in rows}

    trained = cells["resnet152", "center", "recipe=cifar"]  # the training loop's own view and numbers
    assert (trained["test_top1_error"], trained["paper_table"], trained["evaluation_run_ids"]) == (30.0, "Table 3", [])
    assert trained["paper_top1_error"] is None and trained["diff_top1"] is None  # center is not Table 3's 10-crop
    multiscale = cells["resnet152", "multiscale", "eval_test_subset=None"]
    assert multiscale["runs"] == 2 and multiscale["seeds"] == [0, 1]  # "pair" repeats "six": counted once
    assert multiscale["test_top1_error"] == pytest.approx(19.5)
    assert multiscale["test_top5_std"] == pytest.approx(statistics.stdev([4.4, 4.6]))
    assert (multiscale["paper_table"], multiscale["paper_top1_error"], multiscale["paper_top5_error"]) == (
        "Table 4",
        19.38,
        4.49,
    )
    assert multiscale["diff_top5"] == pytest.approx(4.5 - 4.49)
    assert multiscale["evaluation_run_ids"] == ["six"]
    ten_crop = cells["resnet152", "10crop", "eval_test_subset=None"]
    assert (ten_crop["paper_table"], ten_crop["paper_top1_error"], ten_crop["test_top1_error"]) == (
        "Table 3",
        21.43,
        21.0,
    )
    assert ten_crop["diff_top1"] == pytest.approx(21.0 - 21.43)
    assert cells["resnet18", "multiscale", "eval_test_subset=None"]["paper_table"] is None  # not in Table 4

    ensembles = [r for r in rows if r["model"] == "ensemble"]
    assert [e["evaluation_run_ids"] for e in ensembles] == [["pair"], ["six"]]  # by member list
    six = ensembles[1]
    assert (six["paper_table"], six["paper_top1_error"], six["paper_top5_error"]) == ("Table 5", None, 3.57)
    assert (six["test_top5_error"], six["diff_top5"], six["runs"]) == (4.0, pytest.approx(4.0 - 3.57), 3)
    assert rows[-2:] == ensembles  # after the single models of their data set


def test_views_a_training_run_was_scored_with_after_training_are_cells_of_their_own():
    run = record("resnet18", dataset="imagenet", shortcut="A", top1=31.0, top5=11.0)
    run["views"] = {"10crop": {"top1_error": 29.0, "top5_error": 10.0}}
    plain = record("plain18", dataset="imagenet", top1=33.0, top5=12.0)  # not scored 10-crop
    rows = {(r["model"], r["view"]): r for r in parity.parity_table([run, plain])}
    assert set(rows) == {("resnet18", "center"), ("resnet18", "10crop"), ("plain18", "center")}
    ten_crop = rows["resnet18", "10crop"]
    assert (ten_crop["test_top1_error"], ten_crop["paper_table"], ten_crop["paper_top1_error"]) == (
        29.0,
        "Table 2",
        27.88,
    )
    assert ten_crop["diff_top1"] == pytest.approx(29.0 - 27.88) and ten_crop["evaluation_run_ids"] == []
    assert ten_crop["setting"] == run["setting"] and ten_crop["run_ids"] == [run["run_id"]]
    for center in (rows["resnet18", "center"], rows["plain18", "center"]):
        assert (center["paper_table"], center["paper_top1_error"], center["diff_top1"]) == ("Table 2", None, None)
        assert parity.paper_label(center) == "paper: 10-crop"


@pytest.fixture(scope="module")
def ablation_report(tiny_ablation, tmp_path_factory):
    """The report over the runs of the session's tiny ablation."""
    ablation, summary, _ = tiny_ablation
    folder = tmp_path_factory.mktemp("compare")
    assert summary["failed"] == []
    uri = place_trials(ablation)[0].config.tracking_uri
    client = MlflowClient(uri)
    selection = comparison.select_runs(client, parent=ablation.name)
    lines = []
    report = comparison.compare(client, uri, selection, folder / "report", fig7_images=FIG7_IMAGES, echo=lines.append)
    runs = client.search_runs(
        [selection["experiment"].experiment_id], f"tags.`mlflow.parentRunId` = '{summary['parent_run_id']}'"
    )
    return {
        "folder": folder,
        "uri": uri,
        "client": client,
        "report": report,
        "runs": runs,
        "out": folder / "report",
        "lines": lines,
        "selection": selection,
    }


def table(ablation_report, name):
    return pq.read_table(ablation_report["out"] / f"{name}.parquet").to_pylist()


def test_the_report_covers_every_run(ablation_report):
    ids = {r.info.run_id for r in ablation_report["runs"]}
    assert len(ids) == 4 and set(ablation_report["report"]["run_ids"]) == ids
    assert {r["run_id"] for r in table(ablation_report, "runs")} == ids
    parity = table(ablation_report, "parity")
    assert sorted(i for r in parity for i in r["run_ids"].split()) == sorted(ids)
    assert {r["run_id"] for r in table(ablation_report, "curves")} == ids
    assert {r["run_id"] for r in table(ablation_report, "fig7")} == ids
    for row in parity:  # one seed per cell: the mean is the run's own number, with no spread
        run = next(r for r in ablation_report["runs"] if r.info.run_id == row["run_ids"])
        assert row["test_top1_error"] == pytest.approx(run.data.metrics["test_top1_error"])
        assert row["test_top1_std"] is None and row["paper_top1_error"] is None  # Fashion-MNIST


def test_curve_points_are_the_runs_logged_metrics(ablation_report):
    points = table(ablation_report, "curves")
    client = ablation_report["client"]
    for run in ablation_report["runs"]:
        for metric in ("train_error_step", "test_top1_error"):
            logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric))
            drawn = [
                (p["step"], p["value"]) for p in points if p["run_id"] == run.info.run_id and p["metric"] == metric
            ]
            assert drawn == logged and len(logged) >= 2
        assert {p["metric"] for p in points if p["run_id"] == run.info.run_id} == {
            "train_error_step",
            "test_top1_error",
        }


def test_fig7_values_come_from_each_runs_checkpoint(ablation_report):
    rows = table(ablation_report, "fig7")
    by_run = {}
    for row in sorted(rows, key=lambda r: r["layer_index"]):
        by_run.setdefault(row["name"], []).append(row["std"])
    for run in ablation_report["runs"]:
        depth = int(run.data.tags["depth"])
        assert len(by_run[run.info.run_name]) == depth - 2  # 6n 3x3 convs in the blocks of a 6n+2 net
        assert all(math.isfinite(v) and v > 0 for v in by_run[run.info.run_name])
    assert by_run["tiny-cifar_plain8-s0"] != pytest.approx(by_run["tiny-cifar_resnet8-A-s0"])

    # Recomputed here from the run's checkpoint artifact on the same images: the same numbers.
    run = next(r for r in ablation_report["runs"] if r.info.run_name == "tiny-cifar_resnet14-A-s0")
    path = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path=tracking.checkpoint_artifact("last"),
        dst_path=str(ablation_report["folder"] / "check"),
        tracking_uri=ablation_report["uri"],
    )
    state = load_checkpoint(path)
    config = ExperimentConfig(**state["config"])
    model = build_run_model(config, state["model"]["conv1.weight"].shape[1], state["model"]["fc.weight"].shape[0])
    model.load_state_dict(state["model"])
    values = layer_responses(model, comparison.analysis_batches(config, FIG7_IMAGES, None, {}))
    assert by_run[run.info.run_name] == pytest.approx(values)


def test_html_embeds_both_figures_and_the_report_run_holds_every_file(ablation_report):
    out, report = ablation_report["out"], ablation_report["report"]
    page = (out / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 2 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "tiny-cifar_resnet14-A-s0" in page and "<table class='wide'>" in page
    assert sorted(p.name for p in out.iterdir()) == report["files"]
    assert {"curves.png", "fig7.png", "parity.csv", "parity.parquet", "fig7.parquet"} <= set(report["files"])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".report.")]  # no staging left

    client = ablation_report["client"]
    run = client.get_run(report["report_run_id"])
    assert run.data.tags["orchestrator.kind"] == "report" and run.info.status == "FINISHED"
    assert run.info.experiment_id == ablation_report["selection"]["experiment"].experiment_id
    logged = sorted(a.path.removeprefix("report/") for a in client.list_artifacts(run.info.run_id, "report"))
    assert logged == report["files"]
    # A report run is not a training run: comparing the experiment again leaves it out.
    again = comparison.select_runs(client, experiment="resnet-orchestrator")
    assert {r.info.run_id for r in again["runs"]} == set(report["run_ids"])


def test_cli_selects_by_filter_and_writes_json(ablation_report, capsys):
    out, summary = ablation_report["folder"] / "by-filter", ablation_report["folder"] / "s.json"
    argv = [
        "--tracking-uri",
        ablation_report["uri"],
        "--experiment",
        "resnet-orchestrator",
        "--filter",
        "params.model = 'cifar_resnet8'",
        "--no-fig7",
        "--out",
        str(out),
        "--json",
        str(summary),
    ]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(compare.main, argv)
    assert exit_info.value.code == 0
    payload = json.loads(summary.read_text())
    assert [r["model"] for r in payload["parity"]] == ["cifar_resnet8"] and len(payload["run_ids"]) == 1
    assert "fig7.csv" not in payload["files"] and (out / "report.html").is_file()
    assert "report:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--experiment", "nope"], "unknown MLflow experiment 'nope'; valid: Default, resnet-orchestrator"),
        (["--parent", "no-such-ablation"], "--parent 'no-such-ablation': no MLflow run has this id or name"),
        (["--filter", "params.model ==== 'x'"], "is not a valid MLflow filter"),
        (["--filter", "params.model = 'cifar_resnet1202'"], "no training runs matched"),
        (["--parent", "tiny", "--data-root", "/nonexistent"], "Fig. 7 needs the fashion-mnist images"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(ablation_report, capsys, args, message):
    out, summary = ablation_report["folder"] / "bad" / "report", ablation_report["folder"] / "bad.json"
    with pytest.raises(SystemExit) as exit_info:
        cli.run(
            compare.main, ["--tracking-uri", ablation_report["uri"], "--out", str(out), "--json", str(summary), *args]
        )
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error:") and message in err
    assert not out.parent.exists() and not summary.exists()


def test_cli_refuses_a_missing_database_in_one_line(tmp_path):
    missing = tmp_path / "nowhere" / "mlflow.db"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.compare",
            "--tracking-uri",
            f"sqlite:///{missing}",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"no MLflow database at {missing}" in result.stderr
    assert not missing.parent.exists() and not (tmp_path / "out").exists()


# ---- the page in a real browser ----------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium at a laptop's viewport, on a fresh profile, driven by Playwright."""
    if not CHROMIUM.is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make test-services` (installs Debian's chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(report.CHROMIUM_FLAGS),
            viewport={"width": report.PAGE_WIDTH, "height": report.PAGE_HEIGHT},
        )
        yield context
        context.close()


def open_page(browser, path: Path):
    """``(page, problems)``: ``path`` loaded, with every console error, page error and failed request."""
    page = browser.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request {r.url[:80]} {r.failure}"))
    page.goto(path.resolve().as_uri(), wait_until="load")
    return page, problems


def layout(page) -> dict:
    """What a reader sees: page and table widths, images' natural sizes, where sections start."""
    return page.evaluate("""() => {
        const top = e => e.getBoundingClientRect().top + window.scrollY;
        const head = text => [...document.querySelectorAll('h2, h3')].find(h => h.textContent === text);
        return {
            viewport: document.documentElement.clientWidth, page: document.documentElement.scrollWidth,
            tables: [...document.querySelectorAll('table')].map(t => t.getBoundingClientRect().right),
            images: [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]),
            firstImage: document.images.length ? top(document.images[0]) : null,
            summary: top(head('Summary')), details: top(head('Details')),
            findings: [...document.querySelectorAll('ul.findings li')].map(li => [li.className, li.textContent]),
        };
    }""")


def column(page, heading: str, header: str) -> list[str]:
    """The cells under ``header`` in the table after the subsection ``heading``."""
    return page.evaluate(
        """([heading, header]) => {
        const h = [...document.querySelectorAll('h3')].find(h => h.textContent === heading);
        let table = h.nextElementSibling;
        while (table.tagName !== 'TABLE') table = table.nextElementSibling;
        const i = [...table.querySelectorAll('th')].findIndex(th => th.textContent === header);
        return [...table.querySelectorAll('tbody tr')].map(tr => tr.children[i].textContent);
    }""",
        [heading, header],
    )


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_report_reads_summary_first_and_fits_a_laptop_screen_in_chromium(ablation_report, browser):
    out = ablation_report["out"]
    page, problems = open_page(browser, out / "report.html")
    seen = layout(page)
    assert problems == []
    # Both figures loaded, at the size of the PNG files beside the page.
    assert [i[:2] for i in seen["images"]] == [["training curves", True], ["Fig. 7", True]]
    assert [tuple(i[2:]) for i in seen["images"]] == [
        png_size((out / "curves.png").read_bytes()),
        png_size((out / "fig7.png").read_bytes()),
    ]
    # Nothing wider than the window: no sideways scrolling, every table inside it.
    assert seen["page"] <= seen["viewport"] and len(seen["tables"]) == 2
    assert all(right <= seen["viewport"] for right in seen["tables"])
    # The summary opens the page, within the first screen, before any figure or full table.
    assert seen["summary"] < report.PAGE_HEIGHT and seen["summary"] < seen["details"] < seen["firstImage"]
    # The ablation's depth trends, as `ablate` prints them, each with its verdict (judged in the test below).
    lines = degradation_findings([comparison.run_record(r) for r in ablation_report["selection"]["runs"]])
    assert len(lines) == 2 and [text.rsplit(": ", 1)[0] for _, text in seen["findings"]] == lines
    assert column(page, "Every cell", "seeds") == ["1"] * 4  # one seed per cell (it read "0", the seed)
    page.close()


def test_the_report_run_holds_a_screenshot_of_the_whole_page(ablation_report, browser):
    client, summary = ablation_report["client"], ablation_report["report"]
    run = client.get_run(summary["report_run_id"])
    assert summary["screenshot"] == "taken" and run.data.tags[tracking.REPORT_SCREENSHOT] == "taken"
    path = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path=f"report/{comparison.SCREENSHOT}",
        dst_path=str(ablation_report["folder"] / "shot"),
        tracking_uri=ablation_report["uri"],
    )
    shot = Path(path).read_bytes()
    assert shot == (ablation_report["out"] / comparison.SCREENSHOT).read_bytes()
    # A laptop's width, and as tall as the page Playwright lays out at that width: the whole page.
    page, _ = open_page(browser, ablation_report["out"] / "report.html")
    height = page.evaluate("document.documentElement.scrollHeight")
    page.close()
    assert png_size(shot) == (report.PAGE_WIDTH, height) and height > 2 * report.PAGE_HEIGHT
    assert len(shot) > 100_000  # two figures' worth of pixels, not a blank page


def test_the_summary_puts_each_paper_cell_beside_its_number_and_judges_depth(tmp_path, browser):
    """Cells from the paper's tables (CIFAR-10, Table 6) over several seeds, in Chromium: the
    summary lists the measured ones with seed counts and signed diffs, and marks each depth trend
    as agreeing with the paper or not."""
    records = [record("cifar_resnet110", seed, shortcut="A", top1=e) for seed, e in enumerate([6.5, 6.7, 6.9])]
    records += [
        record("cifar_resnet20", shortcut="A", top1=8.9),
        record("cifar_resnet56", shortcut="A", status="FAILED"),
        record("cifar_plain20", top1=9.0),
        record("cifar_plain56", top1=12.0),
        # an ImageNet training run: its center-crop errors are not Table 3's 10-crop ones
        record("resnet34", dataset="imagenet", shortcut="B", top1=25.0, top5=8.0),
    ]
    train = {"cifar_plain20": 5.0, "cifar_plain56": 7.0, "cifar_resnet20": 2.0, "cifar_resnet110": 3.0}
    for r in records:
        r.update(train_error=train.get(r["model"]), iteration=64000, git_commit="0" * 40, train_metric="train_error")
    comparison.write_report(tmp_path, "paper cells", records, parity.parity_table(records), [], [], {}, ["6 runs"])
    page, problems = open_page(browser, tmp_path / "report.html")
    seen = layout(page)
    assert problems == [] and seen["page"] <= seen["viewport"]
    assert all(right <= seen["viewport"] for right in seen["tables"])
    assert column(page, "Against the paper", "model") == ["cifar_resnet20", "cifar_resnet110", "resnet34"]
    assert column(page, "Against the paper", "seeds") == ["1", "3", "1"]  # not the failed resnet56
    assert column(page, "Against the paper", "view") == ["center", "center", "center"]
    assert column(page, "Against the paper", "top-1 err") == ["8.90", "6.70 ± 0.20", "25.00"]
    assert column(page, "Against the paper", "paper") == ["8.75", "6.43", "paper: 10-crop"]
    assert column(page, "Against the paper", "diff")[:3] == ["+0.15", "+0.27", "–"]
    assert seen["findings"] == [
        [
            "agree",
            "plain nets (seed 0): training error rises with depth, 20 layers 5.0% -> 56 layers 7.0%: as in the paper",
        ],
        [
            "disagree",
            "residual nets (seed 0): training error rises with depth, 20 layers 2.0% -> 110 layers 3.0%: "
            "unlike the paper",
        ],
    ]
    assert "cifar_resnet56 (FAILED)" in page.inner_text("p.lead")
    page.close()
