"""Real services on 127.0.0.1 for the cluster rehearsal: PostgreSQL, the MLflow tracking server
(started by cluster/mlflow/start-server.sh) and Ray nodes (`ray start`), each stopped BY PID.

Never `ray stop` or `pkill`: this machine is shared, and they would kill other people's clusters.
Every process started here is remembered (with its descendants) and killed in ``stop``.
"""

from __future__ import annotations

import os
import pwd
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

from orchestrator.run_trainer import POLL_INTERVAL_ENV
from tests.cluster.shipped import Node, for_this_machine

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_SERVER = ROOT / "cluster" / "mlflow" / "start-server.sh"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now that this process has not handed out before: the kernel may give a port
    just closed again, and two components of a node on one port fail its `ray start` (seen in CI:
    the node manager's port again for the metrics exporter)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def free_port_range(size: int = 200) -> tuple[int, int]:
    """A run of ``size`` ports that are free now, for one Ray node's workers (distinct per node:
    two raylets on one machine must not hand out the same worker ports)."""
    for _ in range(200):
        # Below Linux's ephemeral range (32768-60999), where free_port()'s picks come from: a
        # worker range there could swallow another component's port.
        base = random.randrange(10000, 32768 - size)
        sample = [base, base + size // 2, base + size - 1]
        try:
            for port in sample:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base, base + size - 1
    raise RuntimeError("no free port range found")


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants (by pid, never by name)."""
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    family = parent.children(recursive=True) + [parent]
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)


def kill_mentioning(text: str) -> int:
    """SIGKILL every process whose command line contains ``text`` (a private temp folder)."""
    victims = []
    for process in psutil.process_iter(["cmdline"]):
        if process.pid == os.getpid():
            continue
        if text in " ".join(process.info["cmdline"] or []):
            victims.append(process)
    for process in victims:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=10)
    return len(victims)


class Fatal(RuntimeError):
    """Raised by a ``wait_for`` predicate to stop waiting at once (the service died)."""


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Fatal:
            raise
        except Exception as error:  # noqa: BLE001 - services come up gradually
            last = error
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r})")


# ---- PostgreSQL ------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


class Postgres:
    """A private PostgreSQL on 127.0.0.1:<port> with a fresh data dir, run as the `postgres`
    user when we are root (initdb refuses root). Not systemd, not the Debian cluster."""

    def __init__(self, base: Path):
        self.bin = postgres_bin()
        self.base = base
        self.data = base / "pgdata"
        self.socket_dir = base / "pgsock"
        self.log = base / "pglog" / "postgres.log"
        self.port = free_port()
        self.user = "mlflow"
        self.password = secrets.token_urlsafe(24)  # generated now; never written to the repo
        self.runas: list[str] = []
        self.owner = None
        if os.geteuid() == 0:
            self.owner = pwd.getpwnam("postgres")
            self.runas = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd, **kw):
        return subprocess.run(
            self.runas + [str(c) for c in cmd],
            check=True,
            capture_output=True,
            text=True,
            timeout=kw.pop("timeout", 120),
            **kw,
        )

    def start(self) -> None:
        for folder in (self.data, self.socket_dir, self.log.parent):
            folder.mkdir(parents=True)
            if self.owner:
                os.chown(folder, self.owner.pw_uid, self.owner.pw_gid)
        self.data.chmod(0o700)
        self._run(
            self.bin / "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-instructions",
        )
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off"
        self._run(self.bin / "pg_ctl", "-D", self.data, "-o", options, "-l", self.log, "-w", "-t", "60", "start")
        sql = (
            f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}';"
            f"CREATE DATABASE mlflow OWNER {self.user};"
            f"CREATE DATABASE mlflow_auth OWNER {self.user};"
        )
        for statement in sql.split(";")[:-1]:
            self._run(
                self.bin / "psql",
                "-h",
                self.socket_dir,
                "-p",
                self.port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                statement,
            )

    def uri(self, database: str) -> str:
        # +psycopg2 explicitly: SQLAlchemy 2.1 maps plain postgresql:// to psycopg (3).
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def query(self, sql: str, database: str = "mlflow", params=None) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database,
            connect_timeout=10,
        ) as conn:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        pid = self.postmaster_pid()
        if pid is None:
            return
        try:
            self._run(self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-t", "30", "stop")
        except (subprocess.SubprocessError, OSError):
            pass
        kill_tree(pid)


# ---- MLflow tracking server ------------------------------------------------------------------


class MlflowServer:
    """cluster/mlflow/start-server.sh on 127.0.0.1 with basic auth, PostgreSQL and served artifacts."""

    def __init__(self, base: Path, postgres: Postgres):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = ("admin", secrets.token_urlsafe(18))
        self.artifacts = base / "mlflow-artifacts"  # stands for s3://bucket/... or an NFS folder
        self.runtime = base / "mlflow-runtime"
        self.log = base / "mlflow-server.log"
        self.env = os.environ | {
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "MLFLOW_BACKEND_STORE_URI": postgres.uri("mlflow"),
            "MLFLOW_AUTH_DATABASE_URI": postgres.uri("mlflow_auth"),
            "MLFLOW_ARTIFACTS_DESTINATION": str(self.artifacts),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            "MLFLOW_AUTH_ADMIN_USERNAME": self.admin[0],
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin[1],
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(self.port),
            "MLFLOW_WORKERS": "2",
            "MLFLOW_UVICORN_OPTS": "--timeout-worker-healthcheck 120",
            "MLFLOW_RUNTIME_DIR": str(self.runtime),
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        self.artifacts.mkdir()
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [str(START_SERVER)], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.runtime.parent
            )

        def up():
            if self.process.poll() is not None:
                raise Fatal(f"mlflow server exited {self.process.returncode}:\n{self.tail()}")
            return requests.get(f"{self.url}/health", timeout=5).status_code == 200

        wait_for(up, timeout, "the MLflow server's /health")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text()[-chars:] if self.log.exists() else ""

    def create_user(self, username: str) -> tuple[str, str]:
        """A non-admin user for the jobs (the admin's password stays with whoever runs the server)."""
        password = secrets.token_urlsafe(18)
        response = requests.post(
            f"{self.url}/api/2.0/mlflow/users/create",
            auth=self.admin,
            json={"username": username, "password": password},
            timeout=30,
        )
        response.raise_for_status()
        return username, password

    def stop(self) -> None:
        if self.process is not None:
            kill_tree(self.process.pid)


# ---- Ray nodes -------------------------------------------------------------------------------


class RayNode:
    """One `ray start` node with the flags a shipped config gives it (``tests/cluster/shipped.py``,
    rewritten for this machine), plus what only one machine running several nodes needs: its own
    temp dir, ports and worker port range, and ``--node-name`` (how the tests tell the nodes apart).
    Token auth on, as every shipped config turns it on."""

    def __init__(
        self, base: Path, name: str, token: str, flags: list[str], head: bool, head_address: str | None = None
    ):
        self.name = name
        self.temp = base / name  # short: Ray's unix socket paths must fit in 107 characters
        self.head, self.head_address, self.flags = head, head_address, list(flags)
        self.gcs_port = free_port()
        self.node_manager_port = free_port()
        self.dashboard_port = free_port()
        self.env = os.environ | {
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env.pop("RAY_ADDRESS", None)
        # What a private local Ray or a run sets in the process that started it (cli.start_local_ray,
        # RunTrainer.fit; maybe this test process): a cluster node keeps Ray Train's defaults.
        self.env.pop("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", None)
        self.env.pop(POLL_INTERVAL_ENV, None)
        self.raylet_pid: int | None = None
        self.pids: set[int] = set()
        self.node_id: str | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def command(self) -> list[str]:
        low, high = free_port_range()
        cmd = [
            str(BIN / "ray"),
            "start",
            *self.flags,
            f"--node-name={self.name}",
            f"--temp-dir={self.temp}",
            f"--node-manager-port={self.node_manager_port}",
            f"--object-manager-port={free_port()}",
            f"--min-worker-port={low}",
            f"--max-worker-port={high}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
        if self.head:
            cmd += [
                "--head",
                f"--port={self.gcs_port}",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-port={self.dashboard_port}",
            ]
        else:
            cmd += [f"--address={self.head_address}"]
        return cmd

    def start(self) -> None:
        before = {p.pid for p in psutil.process_iter()}
        try:
            subprocess.run(self.command(), env=self.env, check=True, capture_output=True, text=True, timeout=180)
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"{self.name}: ray start failed:\n{error.stdout[-2000:]}\n{error.stderr[-2000:]}")
        finally:
            self._remember(before)

    def _remember(self, before: set[int]) -> None:
        """The processes this `ray start` left running: new ones naming our port or temp dir."""
        for process in psutil.process_iter(["cmdline"]):
            if process.pid in before:
                continue
            line = " ".join(process.info["cmdline"] or [])
            if str(self.temp) in line or f"node_manager_port={self.node_manager_port}" in line:
                self.pids.add(process.pid)
                if "raylet" in line.split(" ")[0] and f"node_manager_port={self.node_manager_port}" in line:
                    self.raylet_pid = process.pid

    def crash(self) -> None:
        """SIGKILL the raylet (a node lost with its machine), then its workers and daemons."""
        assert self.raylet_pid is not None, "raylet pid unknown"
        victims = [self.raylet_pid] + list(self.pids)
        try:
            victims += [c.pid for c in psutil.Process(self.raylet_pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
        os.kill(self.raylet_pid, 9)
        for pid in victims:
            kill_tree(pid)

    def stop(self) -> None:
        for pid in [self.raylet_pid, *self.pids]:
            if pid is not None:
                kill_tree(pid)
        kill_mentioning(str(self.temp))


class Dashboard:
    """The head's dashboard REST API (jobs, state) with the Ray token as a bearer header."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params):
        response = requests.get(f"{self.url}{path}", headers=self.headers, params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def job(self, submission_id: str) -> dict:
        return self.get(f"/api/jobs/{submission_id}")

    def job_logs(self, submission_id: str) -> str:
        return self.get(f"/api/jobs/{submission_id}/logs").get("logs", "")

    def _state(self, kind: str, **filters) -> list[dict]:
        params = {"limit": 10000, "detail": 1}
        keys, values = list(filters), list(filters.values())
        if keys:
            params |= {"filter_keys": keys, "filter_predicates": ["="] * len(keys), "filter_values": values}
        payload = self.get(f"/api/v0/{kind}", **params)
        return payload["data"]["result"]["result"]

    def nodes(self) -> list[dict]:
        return self._state("nodes")

    def actors(self, **filters) -> list[dict]:
        return self._state("actors", **filters)


class LocalCluster:
    """A Ray cluster on 127.0.0.1 shaped as a shipped config starts one: its head with the config's
    head flags, worker nodes added one by one (as an autoscaler adds them) with its worker flags."""

    def __init__(self, base: Path, token: str, head: Node, worker: Node, label: str):
        self.base, self.token, self.label, self.worker_shape = base, token, label, worker
        self.head = RayNode(base, f"{label}h", token, for_this_machine(head), head=True)
        self.workers: list[RayNode] = []
        self.dashboard = Dashboard(f"http://127.0.0.1:{self.head.dashboard_port}", token)

    def _alive_id(self, node: RayNode) -> str:
        def alive():
            found = [n for n in self.dashboard.nodes() if n.get("node_name") == node.name and n["state"] == "ALIVE"]
            return found[0]["node_id"] if found else None

        return wait_for(alive, 120, f"Ray node {node.name} alive")

    def start(self) -> LocalCluster:
        self.head.start()
        self.head.node_id = self._alive_id(self.head)
        return self

    def add_worker(self) -> RayNode:
        node = RayNode(
            self.base,
            f"{self.label}w{len(self.workers) + 1}",
            self.token,
            for_this_machine(self.worker_shape),
            head=False,
            head_address=self.head.address,
        )
        self.workers.append(node)
        node.start()
        node.node_id = self._alive_id(node)
        return node

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            try:
                node.stop()
            except Exception as error:  # noqa: BLE001 - stop the rest anyway
                print(f"cleanup: {node.name}: {error!r}")


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
