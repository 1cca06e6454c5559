"""Process helpers for the chaos tests: CLIs in sessions of their own, found and killed by pid.

Only processes these helpers started (and their descendants) are ever signalled: never by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict:
    """This environment without a Ray address or tracking URI to inherit, output unbuffered."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return env | {"PYTHONUNBUFFERED": "1"} | extra


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Command:
    """``python -m MODULE ARGS`` in a session of its own (``start_new_session``), output to files."""

    def __init__(self, module: str, args: list[str], folder: Path, label: str, cwd: Path | None = None):
        self.stdout_path, self.stderr_path = folder / f"{label}.out", folder / f"{label}.err"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=cwd or folder,
                env=clean_env(),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid = self.process.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def describe(self) -> str:
        return f"--- stdout\n{self.stdout()[-4000:]}\n--- stderr (end)\n{self.stderr()[-4000:]}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout:.0f}s\n{self.describe()}") from None

    def kill(self) -> None:
        """SIGKILL the command and everything it started (its private Ray included)."""
        kill_tree(self.pid)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def session_processes(sid: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid and process.pid != os.getpid():
                found.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return found


def kill_tree(pid: int, timeout: float = 30) -> None:
    """SIGKILL ``pid``'s session (the CLI, its Ray and Ray's workers: Ray puts its workers in process
    groups of their own, but they stay in the session) and any descendant outside it, until none is left."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        victims = session_processes(pid) + [p for p in descendants if p.is_running()]
        if not victims:
            return
        for process in victims:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        time.sleep(0.2)


def train_workers(pid: int) -> list[psutil.Process]:
    """The Ray Train worker processes below ``pid`` (Ray titles them ``ray::RayTrainWorker...``)."""
    workers = []
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    for child in children:
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()):
                workers.append(child)
        except psutil.Error:
            pass
    return workers


def wait_until(probe, timeout: float, what: str, command: Command | None = None, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if command is not None and not command.alive():
            raise AssertionError(f"exited ({command.process.returncode}) before {what}\n{command.describe()}")
        time.sleep(interval)
    raise AssertionError(f"no {what} after {timeout:.0f}s" + (f"\n{command.describe()}" if command else ""))


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 (sqlite backend, local artifacts) that can be killed and
    restarted on the same port."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> float:
        started = time.monotonic()
        with open(self.folder / "mlflow-server.log", "a") as log:
            self.process = subprocess.Popen(
                [
                    str(BIN / "mlflow"),
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{self.folder / 'server.db'}",
                    "--artifacts-destination",
                    str(self.folder / "artifacts"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                cwd=self.folder,
                env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),  # as cluster/mlflow/start-server.sh
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_until(self.healthy, timeout, "MLflow server health")
        return time.monotonic() - started

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            kill_tree(self.process.pid)
            self.process.wait(timeout=30)
            self.process = None
