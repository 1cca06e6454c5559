"""Bad input everywhere a user types: every CLI entry point (train, ablate, prepare, compare,
ensemble train/evaluate/combine) with its bad config keys and values, presets, data set paths,
model names, run ids, checkpoints, filter strings and member lists.

Each case must end with exit code 2, exactly one line on stderr that starts with "error:", no
traceback, and nothing half-written: no ``--json`` file, no run folder, no MLflow database, no
report, no shard folder (the case's own folder stays empty, and the shared MLflow store that some
cases read is unchanged).

A spawn costs 5-20 s of imports (torch, Ray, MLflow) on this busy 2-core machine, so the whole
table runs in-process through ``orchestrator.cli.run`` (the code path of ``python -m``, stdout and
stderr captured, exit code from ``SystemExit``), one case after another, and one case per entry
point kinds also run as real subprocesses (4 at once): the same checks on the real process.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from orchestrator import cli
from orchestrator.prepare import prepare
from tests.reliability.procs import clean_env
from tests.shared_data import needs_fashion_mnist
from tests.workloads.data_fixtures import write_png_tree
from workloads import ensemble as ensemble_math

UNKNOWN_ID = "0123456789abcdef0123456789abcdef"

# module -> [(case name, argv, regex the one error line must match)]. Placeholders: {case} (the
# case's empty folder, its cwd), {store} (the shared MLflow folder), {uri} (its tracking URI),
# {nockpt} / {garbage} / {running} (run ids there), {parquet} (a stored probability table).
CASES: dict[str, list[tuple[str, list[str], str]]] = {
    "orchestrator.train": [
        # More train cases (unknown key/model/preset, unreachable URI...) are in tests/orchestrator/test_train.py.
        ("set-not-key-value", ["--set", "seed"], r"override 'seed' is not key=value"),
        ("workers-zero", ["--set", "workers=0"], r"(world_size|workers) must be .*>= 1, got 0"),
        ("bad-shortcut", ["--set", "shortcut=Z"], r"shortcut"),
        ("bad-inject-nan", ["--set", "inject_nan=x"], r"inject_nan 'x' must be RANK:ITERATION"),
        ("name-with-slash", ["--name", "a/b"], r"name 'a/b' must be non-empty, without '/'"),
        ("unknown-dataset", ["--dataset", "mnist9"], r"unknown dataset 'mnist9'; valid: "),
        ("unknown-recipe", ["--recipe", "fast"], r"unknown recipe 'fast'; valid: "),
        ("bad-recipe-field", ["--set", "recipe.nope=1"], r"nope"),
        ("preset-file-missing", ["-p", "{case}/nowhere.yaml"], r"config file '.*nowhere.yaml' not found"),
        ("preset-not-a-mapping", ["-p", "{store}/list.yaml"], r"list.yaml: expected a mapping of config keys"),
        ("preset-bad-yaml", ["-p", "{store}/broken.yaml"], r"broken.yaml: not valid YAML"),
        ("file-tracking-uri", ["--tracking-uri", "file:///{case}/mlruns"], r"is a file store, deprecated"),
        ("json-folder-missing", ["--json", "{case}/no/such/out.json"], r"--json .*does not exist or is not writable"),
        ("epochs-for-iteration-recipe", ["--epochs", "2"], r"recipe 'smoke' counts iterations; use --iterations"),
        ("unknown-decode", ["--set", "decode=gpu"], r"unknown decode 'gpu'; valid: cpu, device"),
        (
            "device-decode-in-memory",
            ["--set", "decode=device"],
            r"decode 'device' needs a sharded data set \(imagenet\), not the in-memory 'fashion-mnist'",
        ),
        # The imagenet preset decodes on the device; these shards hold pixels.
        # Demands a private local Ray can never meet (it cannot grow): refused before any MLflow write.
        (
            "gpu-without-gpu",
            ["--gpu", "--iterations", "4"],
            r"run smoke asks for 2 workers x \{1 CPU, 1 GPU\} = 2 CPU, 2 GPU; this machine has \d+ CPU, 0 GPU "
            r"\(a private local Ray: it cannot grow\)",
        ),
        (
            "more-workers-than-cores",
            ["--set", "workers=64", "--iterations", "4"],
            r"run smoke asks for 64 workers x \{1 CPU\} = 64 CPU; this machine has \d+ CPU",
        ),
        (
            "gpu-fraction-above-one",
            ["--gpu", "--set", "gpus_per_worker=1.5"],
            r"gpus_per_worker must be a fraction in \(0, 1\] or a whole number, got 1.5",
        ),
        ("negative-wait", ["--wait-for-resources", "-1"], r"--wait-for-resources -1.0: give minutes >= 0"),
        ("name-too-long", ["--name", "n" * 300], r"name 'n+'\.\.\. is 300 bytes long; at most 200"),
        (
            "missing-db-driver",
            ["--tracking-uri", "mysql://127.0.0.1:1/db"],
            r"MLflow tracking URI mysql://\.\.\. needs the Python package 'mysqlclient'",
        ),
        (
            "device-decode-raw-shards",
            ["-p", "imagenet", "--data-root", "{store}/raw-shards"],
            r"decode 'device' decodes JPEG bytes, but .*raw-shards/train holds 'raw' pixels .*use decode=cpu, or "
            r"prepare the train split again with --format encoded",
        ),
    ],
    "orchestrator.ablate": [
        ("unknown-preset", ["-p", "nope"], r"unknown preset 'nope'; valid: "),
        ("unknown-axis", ["--axis", "colour=[1]"], r"unknown matrix axis 'colour'"),
        ("derived-axis", ["--axis", "model=[x]"], r"matrix axis 'model' is derived"),
        ("bad-depth", ["--axis", "depth=[7]"], r"not 6n\+2"),
        ("unknown-key", ["--set", "colour=red"], r"unknown config key\(s\) colour"),
        ("name-with-slash", ["--name", "a/b"], r"ablation name 'a/b' must be non-empty and without '/'"),
        ("missing-data-root", ["--data-root", "{case}/nowhere", "--axis", "depth=[8]"], r"nowhere"),
        ("max-concurrent-zero", ["--max-concurrent", "0"], r"max_concurrent must be >= 1 trial at a time, got 0"),
        (
            "gpu-trials-without-gpu",
            ["--set", "use_gpu=true", "--axis", "depth=[8]"],
            r"trial smoke-cifar_\S+ asks for 1 worker x \{0.95 CPU, 1 GPU\} = 0.95 CPU, 1 GPU; this machine has "
            r"\d+ CPU, 0 GPU",
        ),
        ("name-too-long", ["--name", "n" * 300], r"ablation name 'n+'\.\.\. is 300 bytes long; at most 200"),
    ],
    "orchestrator.prepare": [
        ("unknown-dataset", ["--dataset", "nope", "--out", "{case}/shards"], r"unknown data set 'nope'; valid: "),
        (
            "missing-data-root",
            ["--dataset", "cifar10", "--data-root", "{case}/nowhere", "--out", "{case}/shards"],
            r"nowhere",
        ),
        (
            "bad-split",
            ["--dataset", "folder", "--data-root", "{store}", "--split", "dev", "--out", "{case}/shards"],
            r"folder split 'dev'; valid: ",
        ),
        (
            "zero-shard-size",
            ["--dataset", "fashion-mnist", "--shard-size", "0", "--out", "{case}/shards"],
            r"shard size 0: must be >= 1",
        ),
        (
            "bad-fraction",
            ["--dataset", "fashion-mnist", "--max-bad-fraction", "1.5", "--out", "{case}/shards"],
            r"max bad fraction 1.5",
        ),
        (
            "encoded-from-memory",
            ["--dataset", "fashion-mnist", "--format", "encoded", "--out", "{case}/shards"],
            r"held in memory as pixels",
        ),
    ],
    "orchestrator.compare": [
        ("no-database", ["--tracking-uri", "sqlite:///{case}/none/mlflow.db"], r"no MLflow database at "),
        ("unknown-parent", ["--tracking-uri", "{uri}", "--parent", "nope"], r"--parent 'nope': no MLflow run"),
        ("traversal-parent", ["--tracking-uri", "{uri}", "--parent", "../../etc"], r"--parent '../../etc'"),
        ("quote-parent", ["--tracking-uri", "{uri}", "--parent", "a' or '1'='1"], r"cannot contain a quote"),
        (
            "unknown-experiment",
            ["--tracking-uri", "{uri}", "--experiment", "nope"],
            r"unknown MLflow experiment 'nope'",
        ),
        ("bad-filter", ["--tracking-uri", "{uri}", "--filter", "params.seed = = '0'"], r"not a valid MLflow filter"),
        (
            "injection-filter",
            ["--tracking-uri", "{uri}", "--filter", "1=1; DROP TABLE runs"],
            r"not a valid MLflow filter",
        ),
        ("nothing-matches", ["--tracking-uri", "{uri}", "--filter", "params.seed = '99'"], r"no training runs matched"),
        ("out-is-a-file", ["--tracking-uri", "{uri}", "--out", "{store}/a-file"], r"exists and is not a report folder"),
        ("zero-fig7-images", ["--tracking-uri", "{uri}", "--fig7-images", "0"], r"--fig7-images must be >= 1"),
    ],
    "orchestrator.ensemble": [
        ("train-unknown-preset", ["train", "-p", "nope"], r"unknown preset 'nope'; valid: "),
        ("train-no-members", ["train", "-p", "{store}/no-members.yaml"], r"'members' must be a non-empty list"),
        ("train-same-members", ["train", "-p", "{store}/twins.yaml"], r"two members give the same run"),
        ("train-unknown-key", ["train", "--set", "colour=red"], r"unknown config key\(s\) colour"),
        ("train-max-concurrent-zero", ["train", "--max-concurrent", "0"], r"max_concurrent must be >= 1"),
        (
            "train-gpu-without-gpu",
            ["train", "--set", "use_gpu=true"],
            r"trial ensemble-smoke-cifar_resnet\S+ asks for 1 worker x \{0.95 CPU, 1 GPU\}.*0 GPU",
        ),
        (
            "eval-unknown-run",
            ["evaluate", "--tracking-uri", "{uri}", "--runs", UNKNOWN_ID],
            rf"unknown MLflow run id '{UNKNOWN_ID}'",
        ),
        (
            "eval-traversal-run-id",
            ["evaluate", "--tracking-uri", "{uri}", "--runs", "../../etc/passwd"],
            r"unknown MLflow run id '../../etc/passwd'",
        ),
        (
            "eval-duplicate-runs",
            ["evaluate", "--tracking-uri", "{uri}", "--runs", "{nockpt},{nockpt}"],
            r"a run is listed twice",
        ),
        (
            "eval-unfinished-run",
            ["evaluate", "--tracking-uri", "{uri}", "--runs", "{running}"],
            r"is RUNNING, not FINISHED",
        ),
        (
            "eval-run-without-checkpoint",
            ["evaluate", "--tracking-uri", "{uri}", "--runs", "{nockpt}"],
            r"has no checkpoint checkpoints/last/state.pt",
        ),
        (
            "eval-garbage-checkpoint",
            ["evaluate", "--tracking-uri", "{uri}", "--runs", "{garbage}"],
            r"checkpoint checkpoints/last/state.pt is unusable",
        ),
        (
            "eval-unknown-parent",
            ["evaluate", "--tracking-uri", "{uri}", "--parent", "nope"],
            r"--parent 'nope': no MLflow run has this id or name in experiment 'resnet-orchestrator'",
        ),
        ("eval-best-zero", ["evaluate", "--tracking-uri", "{uri}", "--best", "0"], r"--best must be >= 1"),
        (
            "eval-bad-filter",
            ["evaluate", "--tracking-uri", "{uri}", "--best", "1", "--filter", "tags.x ~ 'y'"],
            r"bad --filter",
        ),
        (
            "eval-bad-weights",
            ["evaluate", "--tracking-uri", "{uri}", "--runs", "{nockpt}", "--weights", "a"],
            r"--weights 'a' must be comma-separated numbers",
        ),
        (
            "eval-unknown-view",
            ["evaluate", "--tracking-uri", "{uri}", "--runs", "{nockpt}", "--view", "5crop"],
            r"argument --view: invalid choice: '5crop' \(choose from 'center', 'flip', '10crop', 'multiscale'\)",
        ),
        (
            "eval-zero-test-subset",
            ["evaluate", "--tracking-uri", "{uri}", "--runs", "{nockpt}", "--test-subset", "0"],
            r"--test-subset must be >= 1, got 0",
        ),
        (
            "eval-zero-shards",
            ["evaluate", "--tracking-uri", "{uri}", "--runs", "{nockpt}", "--shards", "0"],
            r"--shards must be >= 1, got 0",
        ),
        (
            "eval-zero-cpus",
            ["evaluate", "--tracking-uri", "{uri}", "--runs", "{nockpt}", "--cpus", "0"],
            r"--cpus must be > 0, got 0.0",
        ),
        (
            "combine-missing-source",
            ["combine", "--tracking-uri", "{uri}", "--from", "{case}/none.parquet"],
            r"unknown MLflow run id",
        ),
        (
            "combine-not-parquet",
            ["combine", "--tracking-uri", "{uri}", "--from", "{store}/list.yaml"],
            r"is not a readable Parquet file",
        ),
        (
            "combine-run-without-table",
            ["combine", "--tracking-uri", "{uri}", "--from", "{nockpt}"],
            r"has no ensemble/probabilities.parquet",
        ),
        (
            "combine-unknown-member",
            ["combine", "--tracking-uri", "{uri}", "--from", "{parquet}", "--members", "a,zz"],
            r"--members a,zz: unknown or repeated",
        ),
        (
            "combine-repeated-member",
            ["combine", "--tracking-uri", "{uri}", "--from", "{parquet}", "--members", "a,a"],
            r"unknown or repeated",
        ),
        (
            "combine-weights-count",
            ["combine", "--tracking-uri", "{uri}", "--from", "{parquet}", "--members", "a,b", "--weights", "1,2,3"],
            r"--weights gives 3 weight\(s\) for 2 members",
        ),
        (
            "combine-negative-weight",
            ["combine", "--tracking-uri", "{uri}", "--from", "{parquet}", "--weights=-1,1"],
            r"each must be a finite number >= 0",
        ),
        (
            "combine-nan-weight",
            ["combine", "--tracking-uri", "{uri}", "--from", "{parquet}", "--weights=nan,1"],
            r"each must be a finite number >= 0",
        ),
    ],
}

# Mistakes argparse itself catches (a type, a choice, a missing argument): exit 2, no traceback,
# nothing written; argparse prints its usage first, so more than one line.
ARGPARSE_CASES = [
    ("orchestrator.train", "workers-not-int", ["--workers", "two"], r"argument --workers: invalid int value"),
    (
        "orchestrator.ensemble",
        "checkpoint-uri",
        ["evaluate", "--runs", UNKNOWN_ID, "--checkpoint", "s3://b/x.pt"],
        r"argument --checkpoint: invalid choice",
    ),
    ("orchestrator.prepare", "no-out", ["--dataset", "cifar10"], r"the following arguments are required: --out"),
]

# A few cases run again as real ``python -m`` processes (one wave of 4: spawns are slow here).
SUBPROCESS_CASES = {
    ("orchestrator.train", "gpu-without-gpu"),
    ("orchestrator.compare", "bad-filter"),
    ("orchestrator.ensemble", "eval-garbage-checkpoint"),
}

pytestmark = needs_fashion_mnist


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.endswith("-journal")}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A shared MLflow store (sqlite, artifacts beside it) with runs that make good bad input."""
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("resnet-orchestrator", artifact_location=str(folder / "artifacts"))
    tags = {"dataset": "fashion-mnist", "model": "cifar_resnet8"}
    ids = {}
    for label in ("nockpt", "garbage", "running"):
        run = client.create_run(experiment, run_name=label, tags=tags)
        ids[label] = run.info.run_id
        client.log_param(run.info.run_id, "model", "cifar_resnet8")
        client.log_param(run.info.run_id, "seed", "0")
        if label != "running":
            client.set_terminated(run.info.run_id, "FINISHED")
    garbage = folder / "garbage" / "state.pt"
    garbage.parent.mkdir()
    garbage.write_bytes(b"PK\x03\x04 not a checkpoint at all" * 10)
    client.log_artifact(ids["garbage"], str(garbage), "checkpoints/last")
    (folder / "list.yaml").write_text("- a\n- b\n")
    (folder / "broken.yaml").write_text("model: [cifar_resnet8\n")
    (folder / "no-members.yaml").write_text("name: e\nbase: {preset: smoke}\nmembers: []\n")
    (folder / "twins.yaml").write_text("name: e\nbase: {preset: smoke}\nmembers: [{depth: 8}, {depth: 8}]\n")
    (folder / "a-file").write_text("a file, not a folder\n")
    for split in ("train", "val"):  # ImageNet shards of pixels, which decode=device cannot read
        write_png_tree(folder / "ilsvrc" / split, ["n01440764", "n01443537"], per_class=1, suffix=".JPEG")
        prepare(
            "imagenet",
            str(folder / "raw-shards"),
            split=split,
            data_root=str(folder / "ilsvrc"),
            image_format="raw",
            echo=lambda line: None,
        )
    (folder / "classes" / "cat").mkdir(parents=True)
    labels = torch.tensor([0, 1, 2, 1])
    probabilities = {name: torch.softmax(torch.randn(4, 3), 1) for name in ("a", "b", "c")}
    parquet = ensemble_math.write_probabilities(
        folder / "probs" / "probabilities.parquet",
        probabilities,
        labels,
        torch.tensor([True, True, False, False]),
        {"members": [{"name": n, "run_id": n} for n in probabilities]},
    )
    return {"folder": folder, "uri": uri, "parquet": str(parquet), **ids}


@pytest.fixture
def clean_environment(monkeypatch):
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)


def prepare_case(module: str, case: str, argv: list[str], store: dict, base: Path) -> tuple[Path, list[str]]:
    """The case's own empty folder and its argv, placeholders filled, ``--json`` (and for train and
    ablate ``--storage-path``) pointing into that folder."""
    folder = base / f"{module.split('.')[-1]}-{case}"
    folder.mkdir()
    values = {k: v for k, v in store.items() if k != "folder"} | {"case": folder, "store": store["folder"]}
    argv = [arg.format(**values) for arg in argv]
    if "--json" not in argv and (module, case) not in {(m, c) for m, c, _, _ in ARGPARSE_CASES}:
        argv += ["--json", str(folder / "out.json")]
    if module in ("orchestrator.train", "orchestrator.ablate") and "--storage-path" not in argv:
        argv += ["--storage-path", str(folder / "runs")]
    return folder, argv


def in_process(module: str, case: str, argv: list[str], store: dict, base: Path) -> dict:
    """``python -m MODULE ARGV`` through ``cli.run`` in this process, in the case's folder."""
    folder, argv = prepare_case(module, case, argv, store, base)
    main = importlib.import_module(module).main
    out, err = io.StringIO(), io.StringIO()
    started, cwd, code = time.monotonic(), os.getcwd(), None
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.run(main, argv)
            except SystemExit as exit_:
                code = exit_.code
            except BaseException:  # noqa: BLE001 - what `python -m` would print as a traceback
                err.write(traceback.format_exc())
                code = 1
    finally:
        os.chdir(cwd)
    return {
        "folder": folder,
        "argv": argv,
        "code": code,
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
        "seconds": time.monotonic() - started,
        "left": sorted(_snapshot(folder)),
    }


def as_subprocess(module: str, case: str, argv: list[str], store: dict, base: Path) -> dict:
    folder, argv = prepare_case(module, case, argv, store, base)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", module, *argv],
        cwd=folder,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    return {
        "folder": folder,
        "argv": argv,
        "code": done.returncode,
        "stdout": done.stdout,
        "stderr": done.stderr,
        "seconds": time.monotonic() - started,
        "left": sorted(_snapshot(folder)),
    }


def problems_of(r: dict, pattern: str) -> list[str]:
    lines = r["stderr"].splitlines()
    problems = []
    if r["code"] != 2:
        problems.append(f"exit code {r['code']}, not 2")
    if "Traceback" in r["stderr"] + r["stdout"]:
        problems.append("a traceback")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        problems.append(f"{len(lines)} stderr line(s), not one 'error: ' line")
    elif not re.search(pattern, lines[0]):
        problems.append(f"the error does not match {pattern!r}")
    if r["left"]:
        problems.append(f"left files behind: {r['left'][:5]}")
    return problems


def check_all(results: list[tuple[tuple, dict]], label: str) -> None:
    failures = [
        f"{module} {name} {' '.join(r['argv'])}: {'; '.join(p)}\n    stderr: {r['stderr'][-600:]!r}"
        for (module, name, _, pattern), r in results
        if (p := problems_of(r, pattern))
    ]
    assert not failures, f"{label}: {len(failures)} of {len(results)} cases misbehave:\n" + "\n".join(failures)


def test_every_cli_refuses_bad_input_in_one_line_with_exit_2(store, tmp_path, clean_environment):
    cases = [(module, name, argv, pattern) for module, rows in CASES.items() for name, argv, pattern in rows]
    before = _snapshot(store["folder"])
    started = time.monotonic()
    results = [(case, in_process(case[0], case[1], case[2], store, tmp_path)) for case in cases]
    seconds = time.monotonic() - started
    print(
        f"\n{len(cases)} bad-input cases in-process in {seconds:.1f}s "
        f"(slowest {max(r['seconds'] for _, r in results):.1f}s)"
    )
    check_all(results, "in-process")
    assert _snapshot(store["folder"]) == before, "a bad command wrote into the shared MLflow store"


def test_one_bad_input_per_entry_point_as_a_real_process(store, tmp_path):
    """The real processes: exit code 2, one "error:" line (no warnings or logs from imports), no
    traceback, nothing written; and argparse's own mistakes exit 2 without a traceback."""
    cases = [
        (module, name, argv, pattern)
        for module, rows in CASES.items()
        for name, argv, pattern in rows
        if (module, name) in SUBPROCESS_CASES
    ]
    assert len(cases) == len(SUBPROCESS_CASES)
    before = _snapshot(store["folder"])
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            (case, pool.submit(as_subprocess, case[0], case[1], case[2], store, tmp_path))
            for case in cases + ARGPARSE_CASES[:1]
        ]
        results = [(case, future.result()) for case, future in futures]
    seconds = time.monotonic() - started
    print(
        f"\n{len(results)} bad-input processes in {seconds:.1f}s (slowest {max(r['seconds'] for _, r in results):.1f}s)"
    )
    check_all(results[: len(cases)], "subprocess")
    for (module, name, _, pattern), r in results[len(cases) :]:
        assert r["code"] == 2, (module, name, r["stderr"])
        assert "Traceback" not in r["stderr"], (module, name, r["stderr"])
        assert re.search(pattern, r["stderr"].splitlines()[-1]), (module, name, r["stderr"])
        assert r["left"] == [], (module, name, r["left"])
    assert _snapshot(store["folder"]) == before


def test_argparse_mistakes_are_one_error_line(store, tmp_path, clean_environment):
    results = [(case, in_process(case[0], case[1], case[2], store, tmp_path)) for case in ARGPARSE_CASES]
    check_all(results, "argparse")


def test_storage_path_that_cannot_be_a_folder_is_one_error_line(store, tmp_path, clean_environment):
    case = ("orchestrator.train", "storage-under-a-file", ["--storage-path", "{store}/a-file/runs"], r"a-file")
    check_all([(case, in_process(*case[:3], store, tmp_path))], "storage")
