"""What every CLI shares: one-line errors with exit code 2, ``--json`` output, starting Ray."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import Unavailable

PACKAGE = "resnet-orchestrator"  # the distribution name in pyproject.toml

USAGE_ERROR = 2


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Run a CLI's ``main``; a user's mistake (ValueError, FileNotFoundError) becomes one line on
    stderr and exit code 2, never a traceback."""
    # MLflow draws a tqdm bar on stderr for every artifact download when tqdm is installed (optuna
    # brings it): the commands print their own progress, and an error stays one line.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        code = main(argv)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except Unavailable as error:  # not the user's, not our bug
        print(f"error: {error}; rerun the same command to resume", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(code)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with our error convention: one ``error:`` line and exit 2, no usage block."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    p = ArgumentParser(prog=f"python -m {prog}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    return p


def version() -> str:
    """The installed package's version (``pyproject.toml``), or "unknown" when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(PACKAGE)
    except PackageNotFoundError:
        return "unknown"


def add_tracking_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<storage-path>/mlflow.db)",
    )
    p.add_argument(
        "--storage-path",
        help="Ray Train storage for checkpoints: a folder, or s3://, or an NFS path on a cluster (default: ./runs)",
    )
    p.add_argument(
        "--json", metavar="PATH", type=Path, help="write a machine-readable summary (run ids, metrics, URIs) to PATH"
    )


def add_length_args(p: argparse.ArgumentParser, runs: str = "the run") -> None:
    """``--iterations`` / ``--epochs``: train ``runs`` this long, the lr milestones moved along."""
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=int, help=f"train {runs} this many iterations (milestones scale along)")
    length.add_argument("--epochs", type=int, help=f"train {runs} this many epochs, for epoch-based recipes")


def add_wait_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait-for-resources",
        type=float,
        metavar="MINUTES",
        help="on a cluster (RAY_ADDRESS): how long to wait for nodes that can hold the work, asking "
        "the autoscaler for them (default 30; 0: fail at once). A private local Ray never "
        "grows: work it cannot hold is refused at once",
    )


def private_ray() -> bool:
    """Whether this command runs on its own local Ray (no ``$RAY_ADDRESS``), which can never grow."""
    return not os.environ.get("RAY_ADDRESS")


def write_json(path: Path, payload) -> None:
    """Write ``payload`` to ``path`` atomically: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(payload, tmp, indent=2, default=str)
        tmp.write("\n")
    os.replace(tmp.name, path)


def check_writable(path: Path | None) -> None:
    """Refuse a ``--json`` path that cannot be written, before any work starts."""
    if path is None:
        return
    folder = Path(path).resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"--json {path}: folder {folder} does not exist or is not writable")


class RayUnavailable(Unavailable):
    """Ray itself did not come up: not the user's mistake, and nothing was written yet."""


def restart_ray() -> None:
    """A fresh private Ray: everything the old one held (actors, placement groups) is gone."""
    import ray

    ray.shutdown()
    init_ray()


def init_ray() -> None:
    """Connect to ``$RAY_ADDRESS`` (a cluster, or under ``ray job submit``), else start a private
    local Ray bound to 127.0.0.1 without a dashboard."""
    import logging

    import ray

    # Ray 2.60 turns token auth on for a new local cluster and warns about it on every start.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    # Workers stay quiet: the driver prints progress from MLflow, a failure surfaces as the run's
    # error. ORCHESTRATOR_WORKER_LOGS=1 streams the workers' own output for debugging.
    log_to_driver = os.environ.get("ORCHESTRATOR_WORKER_LOGS") == "1"
    if address:
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=log_to_driver)
        except ConnectionError as error:
            raise ValueError(f"cannot connect to Ray at RAY_ADDRESS={address!r}: {error}") from None
    else:
        start_local_ray(log_to_driver)
    if not log_to_driver:
        quiet_ray_errors()


# Ray gives a new node's raylet a fixed 30 s to register (ray/_private/node.py); on a machine
# this busy (other trainings, a test suite on every core) it can miss that, and a second start
# usually makes it.
LOCAL_RAY_STARTS = 3


def start_local_ray(log_to_driver: bool, num_cpus: int | None = None) -> None:
    """A private Ray on this machine (``num_cpus``: Ray's default, every core), started again
    (saying so) when it misses Ray's start-up deadline, up to LOCAL_RAY_STARTS times."""
    import ray

    # One machine, so no node for a cloud to preempt or drain: Ray Train's preemption
    # watcher would be one more actor polling on the training cores (~0.8% of a core each).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    for start in range(1, LOCAL_RAY_STARTS + 1):
        try:
            # address="local": a plain ray.init() would silently join any cluster that
            # `ray start` left running on this machine, with its own Python environment.
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                logging_level="WARNING",
                log_to_driver=log_to_driver,
            )
            return
        except Exception as error:  # noqa: BLE001 - Ray raises a bare Exception when its processes time out
            if "timed out during startup" not in str(error):
                raise
            stop_failed_start(error)
            if start == LOCAL_RAY_STARTS:
                raise RayUnavailable(
                    f"the local Ray did not start in time, {LOCAL_RAY_STARTS} times (a machine this busy "
                    f"delays its processes): {str(error).splitlines()[0]}"
                ) from None
            print(
                f"[ray] the local Ray missed its start-up deadline (a busy machine); starting it again "
                f"(start {start + 1} of {LOCAL_RAY_STARTS})",
                file=sys.stderr,
                flush=True,
            )


def stop_failed_start(error: BaseException) -> None:
    """Stop the processes a ``ray.init`` that missed its deadline had started (its GCS, its raylet):
    Ray raises from inside its ``Node`` before handing the node to anyone, so they are reached
    through the traceback. They would die with this process anyway; not with the next start."""
    import ray
    from ray._private.node import Node

    frame = error.__traceback__
    while frame is not None:
        node = frame.tb_frame.f_locals.get("self")
        if isinstance(node, Node):
            node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
            break
        frame = frame.tb_next
    ray.shutdown()


def quiet_ray_errors() -> None:
    """Keep the raylet's messages ("A worker died or was killed while executing a task...", worker
    start-up warnings) off the driver's stderr. Ray's driver prints them from a thread of its own
    whatever ``log_to_driver`` says, through ``ray._private.worker.print_to_stdstream``, which it
    looks up on every message; the progress lines say what happened in the project's words instead
    (``progress.RunWatcher``). ORCHESTRATOR_WORKER_LOGS=1 leaves Ray's own output alone."""
    import ray._private.worker as ray_worker

    if hasattr(ray_worker, "print_to_stdstream"):  # a Ray without it prints as it likes; nothing breaks
        ray_worker.print_to_stdstream = lambda data, ignore_prefix=False: None
