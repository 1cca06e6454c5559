"""Security: checkpoints never run code, artifacts downloaded from MLflow stay in their folder, and
the Ray our commands start is private and needs its token.

Covered elsewhere, not repeated here: the cluster configs turn on Ray token auth and MLflow basic
auth (tests/cluster/test_configs.py), no secret is committed (tests/cluster/test_configs.py with
tests/cluster/secret_scan.py), and a Ray client without the token is refused by a `ray start`
cluster (tests/cluster/test_rehearsal.py, which also submits the smoke ablation with `ray job submit`).
"""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator import comparison, members
from workloads.engine import CheckpointError, load_checkpoint, make_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MARKER_ENV = "SECURITY_TEST_MARKER"


class Payload:
    """Unpickling this runs ``os.system``: it would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint that looks like ours but carries a pickled code payload in its metrics."""
    model = torch.nn.Linear(2, 2)
    state = make_checkpoint(
        model, torch.optim.SGD(model.parameters(), lr=0.1), iteration=1, epoch=1, config_hash="x", config={}, metrics={}
    )
    state["metrics"] = {"payload": Payload(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


# --- checkpoints: weights_only, always ----------------------------------------------------------------


def test_the_payload_really_runs_code_when_unpickled_unsafely(tmp_path):
    """The test's own control: the payload is live (so its refusal below means something)."""
    marker = tmp_path / "ran"
    torch.load(evil_checkpoint(tmp_path / "state.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("pickled", ["torch.save", "plain pickle"])
def test_load_checkpoint_refuses_a_code_payload_and_never_runs_it(tmp_path, pickled):
    marker = tmp_path / "ran"
    path = tmp_path / "state.pt"
    if pickled == "torch.save":
        evil_checkpoint(path, marker)
    else:
        path.write_bytes(pickle.dumps({"model": Payload(marker)}))
    with pytest.raises(CheckpointError, match=rf"refused checkpoint {path}.*never run"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_plain_checkpoint_still_loads(tmp_path):
    model = torch.nn.Linear(2, 2)
    state = make_checkpoint(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        iteration=3,
        epoch=1,
        config_hash="h",
        config={"a": [1, "b"]},
        metrics={"loss": 0.5},
    )
    loaded = load_checkpoint(save_checkpoint(state, tmp_path / "state.pt"))
    assert loaded["iteration"] == 3 and loaded["metrics"] == {"loss": 0.5}


def test_every_torch_load_in_the_code_passes_weights_only_true():
    """A static scan of orchestrator/ and workloads/: no torch.load without weights_only=True."""
    calls = []
    for path in sorted((ROOT / "orchestrator").rglob("*.py")) + sorted((ROOT / "workloads").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                weights_only = [k.value for k in node.keywords if k.arg == "weights_only"]
                calls.append(
                    (
                        f"{path.relative_to(ROOT)}:{node.lineno}",
                        len(weights_only) == 1
                        and isinstance(weights_only[0], ast.Constant)
                        and weights_only[0].value is True,
                    )
                )
        text = path.read_text()
        assert "pickle.load(" not in text and "pickle.loads(" not in text, path
    assert calls, "no torch.load found: the scan is broken"
    assert all(ok for _, ok in calls), [where for where, ok in calls if not ok]


@pytest.fixture
def store(tmp_path):
    """A sqlite MLflow store with one FINISHED run whose checkpoints/last/state.pt carries a payload."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("resnet-orchestrator", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment, run_name="evil", tags={"dataset": "fashion-mnist"})
    marker = tmp_path / "ran"
    client.log_artifact(
        run.info.run_id, str(evil_checkpoint(tmp_path / "upload" / "state.pt", marker)), "checkpoints/last"
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return SimpleNamespace(client=client, run=client.get_run(run.info.run_id), marker=marker, folder=tmp_path)


def test_ensemble_refuses_a_code_payload_downloaded_from_mlflow(store, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"run evil \(.*\): checkpoint checkpoints/last/state.pt is unusable: "
        r"refused checkpoint",
    ):
        members.download_checkpoint(store.client, store.run, "last", tmp_path / "download")
    assert not store.marker.exists()


def test_compare_refuses_a_code_payload_downloaded_from_mlflow(store):
    record = {
        "run_id": store.run.info.run_id,
        "name": "evil",
        "status": "FINISHED",
        "net": "residual",
        "depth": 8,
        "shortcut": "A",
        "seed": 0,
    }
    with pytest.raises(CheckpointError, match="refused checkpoint"):
        comparison.fig7_responses(store.client.tracking_uri, [record], images=4, echo=lambda line: None)
    assert not store.marker.exists()


# --- artifacts downloaded from MLflow stay in their folder --------------------------------------------


class EscapingClient:
    """An artifact store that misbehaves: it answers a download with a path it chose."""

    tracking_uri = "test://escaping"

    def __init__(self, answer):
        self.answer = answer

    def download_artifacts(self, run_id, path, dst_path):
        return str(self.answer(Path(dst_path)))


def fake_run(run_id: str = "0" * 32):
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, run_name="r"), data=SimpleNamespace(tags={}))


def _outside_via_symlink(target: Path) -> Path:
    outside = target.parent.parent / "outside.pt"
    outside.write_bytes(b"not ours")
    link = target / "checkpoints" / "last" / "state.pt"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    return link


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda target: target / ".." / ".." / "elsewhere" / "state.pt", id="dot-dot"),
        pytest.param(lambda target: Path("/etc/passwd"), id="absolute"),
        pytest.param(lambda target: target.parent / "sibling" / "state.pt", id="sibling-folder"),
        pytest.param(_outside_via_symlink, id="symlink-escape"),
    ],
)
def test_ensemble_download_refuses_a_file_outside_its_folder(tmp_path, answer):
    folder = tmp_path / "downloads"
    folder.mkdir()
    with pytest.raises(ValueError, match="resolved outside"):
        members.download_checkpoint(EscapingClient(answer), fake_run(), "last", folder)


ESCAPES = [
    "../../evil.pt",
    "checkpoints/../../../evil.pt",
    "%2e%2e%2fevil.pt",
    "%252e%252e%252fevil.pt",
    "..%2f..%2fevil.pt",
    "..\\..\\evil.pt",
    "/tmp/evil.pt",
    "checkpoints\\..\\..\\evil.pt",
]


@pytest.fixture
def real_run(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("x", artifact_location=str(tmp_path / "store" / "artifacts"))
    run = client.create_run(experiment)
    return client, run.info.run_id


@pytest.mark.parametrize("name", ESCAPES)
def test_mlflow_confines_what_a_run_can_log_and_download(real_run, tmp_path, name):
    """A real MLflow run: an artifact path that tries to climb out is refused when logged, or is
    stored literally inside the run's artifact folder; downloading it lands inside the target."""
    client, run_id = real_run
    payload = tmp_path / "payload.txt"
    payload.write_text("payload")
    artifacts = Path(client.get_run(run_id).info.artifact_uri)
    try:
        client.log_artifact(run_id, str(payload), name)
    except MlflowException as error:
        assert "Invalid artifact path" in str(error)
    written = [p for p in tmp_path.rglob("payload.txt") if p != payload]
    assert all(p.resolve().is_relative_to(artifacts.resolve()) for p in written), written
    target = tmp_path / "download"
    target.mkdir()
    for path in (name, f"{name}/payload.txt"):
        try:
            local = Path(client.download_artifacts(run_id, path, str(target)))
        except MlflowException:
            continue
        assert local.resolve().is_relative_to(target.resolve()), local
    outside = [p for p in tmp_path.rglob("*") if p.name.startswith("payload") or p.name.startswith("evil")]
    assert all(
        p == payload or p.resolve().is_relative_to(artifacts.resolve()) or p.resolve().is_relative_to(target.resolve())
        for p in outside
    ), outside
    assert not (tmp_path / "evil.pt").exists() and not Path("/tmp/evil.pt").exists()


# --- the Ray our commands start -----------------------------------------------------------------------

RAY_PROBE = r"""
import json, os, ray
from orchestrator import cli
cli.init_ray()
ctx = ray.get_runtime_context()
from ray._private import worker
node = worker.global_worker.node
watcher = ray.get(ray.remote(lambda: os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")).remote())
print(json.dumps({"gcs": node.gcs_address, "dashboard": ray._private.worker._global_node.address_info.get("webui_url"),
                  "session_dir": node.get_session_dir_path(), "preemption_watcher": watcher}))
"""


@pytest.mark.timeout(300)
def test_init_ray_starts_a_private_ray_with_token_auth_and_no_dashboard(tmp_path):
    """``cli.init_ray`` with no RAY_ADDRESS: a new local Ray with no dashboard, and a client that
    presents no token (RAY_AUTH_MODE=disabled) is refused by its GCS."""
    import json

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    probe = subprocess.Popen(
        [sys.executable, "-c", RAY_PROBE + "\nimport sys; sys.stdout.flush(); sys.stdin.read()"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = probe.stdout.readline()
        assert line, probe.stderr.read()[-3000:] if probe.poll() is not None else "no output"
        info = json.loads(line)
        assert info["dashboard"] in (None, "")  # include_dashboard=False: nothing to reach over HTTP
        # Ray's processes (Ray Train's controller among them) start no preemption watcher on one machine.
        assert info["preemption_watcher"] == "0"
        # Not asserted: the GCS address is the machine's IP, and Ray 2.60 binds gRPC to every
        # interface (docs/ARCHITECTURE.md): the token below is what guards it.
        # A client that presents no token is refused by the cluster's GCS.
        refused = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import ray; ray.init(address='{info['gcs']}', logging_level='ERROR'); print(ray.cluster_resources())",
            ],
            env=env | {"RAY_AUTH_MODE": "disabled"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode != 0, (refused.stdout, refused.stderr[-2000:])
        assert (
            "auth" in (refused.stdout + refused.stderr).lower() or "token" in (refused.stdout + refused.stderr).lower()
        )
    finally:
        probe.stdin.close()
        try:
            probe.wait(timeout=60)
        except subprocess.TimeoutExpired:
            import signal

            os.killpg(probe.pid, signal.SIGKILL)
            probe.wait()
