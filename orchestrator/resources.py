"""What a command asks Ray for, checked against the cluster before anything waits on it.

Ray queues a placement group it cannot place, silently and for ever: Ray Train retries a worker
group that does not start (``controller_failure_limit`` -1 by default), a task waits for a GPU that
no node has. So every command states its demand up front (``Demand``: the bundles one run, trial or
task places at once) and calls ``ensure``:

- a private local Ray never grows: a demand it cannot hold is a ``ValueError`` naming what was asked
  and what the machine has (one ``error:`` line, exit 2) before any MLflow run is written;
- on a cluster (``$RAY_ADDRESS``), a demand the current nodes cannot hold is asked of the autoscaler
  (``ray.autoscaler.sdk.request_resources``) and waited for, with a line at least every 30 s, up to
  the command's ``--wait-for-resources``; then ``ResourcesUnavailable`` (one line, exit 1). A demand
  above what the autoscaler's own config can ever reach fails at once.

Once running, ``PendingWatch`` reports the job's placement groups that wait (a node lost mid-run,
trials queued for nodes the autoscaler is bringing up), and ``start_timeout_failures`` bounds how
long Ray Train keeps retrying a worker group that cannot start.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass

from orchestrator.errors import Unavailable

DEFAULT_WAIT_MINUTES = 30.0
REPORT_EVERY_S = 30.0  # at most this long between two "waiting" lines
POLL_S = 2.0  # how often a wait looks at the cluster again
# Ray Train's own wait for a worker group's placement group, per attempt (its default, 60 s);
# ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` overrides it, as in Ray.
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
DEFAULT_START_TIMEOUT_S = 60.0
# What a node reports but no demand of ours asks for.
_NOT_SCHEDULED_ON = ("memory", "object_store_memory")


class ResourcesUnavailable(Unavailable):
    """A cluster did not provide a demand within the command's ``--wait-for-resources``."""


@dataclass(frozen=True)
class Demand:
    """``count`` bundles of ``bundle`` (e.g. {"CPU": 1.0, "GPU": 1.0}) placed at once: the workers of
    one Ray Train run (Ray's default PACK strategy may spread them over nodes, a bundle never)."""

    label: str  # whose demand, e.g. "run smoke" or "trial smoke-cifar_plain8-s0"
    count: int
    bundle: dict

    def total(self) -> dict:
        return {k: v * self.count for k, v in self.bundle.items()}

    def describe(self) -> str:
        each = ", ".join(f"{v:g} {k}" for k, v in self.bundle.items())
        unit = "worker" if self.count == 1 else "workers"
        return f"{self.count} {unit} x {{{each}}}"


def run_demand(config, label: str) -> Demand:
    """A Ray Train run's workers (an ``ExperimentConfig``): ``cpus_per_worker`` CPU each, and
    ``gpus_per_worker`` GPU each when it uses GPUs. The same numbers make its ``ScalingConfig``."""
    bundle = {"CPU": config.cpus_per_worker}
    if config.use_gpu:
        bundle["GPU"] = config.gpus_per_worker
    return Demand(label, config.workers, bundle)


def node_capacities() -> list[dict]:
    """Every alive node's total resources that a demand can ask for (CPU, GPU, custom ones)."""
    import ray

    return [
        {k: v for k, v in node["Resources"].items() if k not in _NOT_SCHEDULED_ON and not k.startswith("node:")}
        for node in ray.nodes()
        if node["Alive"]
    ]


def copies_that_fit(demand: Demand, nodes: list[dict]) -> int:
    """How many copies of ``demand`` the nodes hold side by side (first fit, largest nodes first)."""
    if demand.count < 1 or not any(demand.bundle.values()):
        return len(nodes)  # asks for nothing: placed anywhere
    free = sorted((dict(n) for n in nodes), key=lambda n: -sum(n.values()))
    copies = 0
    while True:
        for _ in range(demand.count):
            home = next((n for n in free if all(n.get(k, 0) >= v - 1e-9 for k, v in demand.bundle.items())), None)
            if home is None:
                return copies
            for k, v in demand.bundle.items():
                home[k] = home.get(k, 0) - v
        copies += 1


def _amounts(resources: dict, keys) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in keys)


def shortfall(demand: Demand, nodes: list[dict], where: str) -> str:
    """Why ``demand`` does not fit ``nodes`` (``where``: "this machine", "the cluster"), in words:
    the totals, else the largest node."""
    keys = list(demand.bundle)
    totals = {k: sum(n.get(k, 0) for n in nodes) for k in keys}
    asked = demand.total()
    if any(asked[k] > totals[k] + 1e-9 for k in keys):
        return f"asks for {demand.describe()} = {_amounts(asked, keys)}; {where} has {_amounts(totals, keys)}"
    largest = max(nodes, key=lambda n: [n.get(k, 0) for k in keys], default={})
    return (
        f"asks for {demand.describe()}; no node of {where} holds one worker (the largest has {_amounts(largest, keys)})"
    )


def autoscaler_ceiling() -> dict | None:
    """The most of each resource the autoscaler's config can ever provide (None: no autoscaler)."""
    try:
        from ray._private.state import state

        return state.get_max_resources_from_cluster_config() or None
    except Exception:  # noqa: BLE001 - a private API: without it we just cannot tell early
        return None


def ensure(demands: list[Demand], *, private: bool, wait_s: float, echo=print, who: str = "") -> None:
    """Return once every demand fits the cluster's nodes (one at a time), as the module says."""
    nodes = node_capacities()
    unmet = [d for d in demands if copies_that_fit(d, nodes) == 0]
    if not unmet:
        return
    first = unmet[0]
    if private:
        raise ValueError(
            f"{first.label} {shortfall(first, nodes, 'this machine')} "
            "(a private local Ray: it cannot grow); lower workers, cpus_per_worker or "
            "gpus_per_worker, or run on a cluster (RAY_ADDRESS)"
        )
    ceiling = autoscaler_ceiling()
    if ceiling is not None:
        for demand in unmet:
            over = {k: v for k, v in demand.total().items() if v > ceiling.get(k, 0) + 1e-9}
            if over:
                raise ValueError(
                    f"{demand.label} asks for {demand.describe()}, but the cluster's autoscaler "
                    f"can grow it to at most {_amounts(ceiling, list(over))}"
                )
    prefix = f"[{who}] " if who else ""
    if wait_s <= 0:
        raise ResourcesUnavailable(
            f"{first.label} {shortfall(first, nodes, 'the cluster')}, and --wait-for-resources is 0 (do not wait)"
        )
    request = [dict(d.bundle) for d in unmet for _ in range(d.count)]
    _request(request)
    started = time.monotonic()
    last_line = -math.inf
    try:
        while True:
            waited = time.monotonic() - started
            if waited - last_line >= REPORT_EVERY_S:
                echo(
                    f"{prefix}{_waiting_line(first, nodes)}; autoscaler asked; giving up in "
                    f"{_minutes(wait_s - waited)} (--wait-for-resources)"
                )
                last_line = waited
            if waited >= wait_s:
                raise ResourcesUnavailable(
                    f"{first.label} {shortfall(first, nodes, 'the cluster')} "
                    f"after waiting {_minutes(wait_s)} (--wait-for-resources)"
                )
            time.sleep(POLL_S)
            nodes = node_capacities()
            unmet = [d for d in unmet if copies_that_fit(d, nodes) == 0]
            if not unmet:
                echo(
                    f"{prefix}resources arrived after {time.monotonic() - started:.0f}s: "
                    f"{_amounts(_summed(nodes), sorted(_summed(nodes)))}"
                )
                return
            first = unmet[0]
    finally:
        _request([])  # the demand is the runs' own from here on (their placement groups)


def _waiting_line(demand: Demand, nodes: list[dict]) -> str:
    keys = list(demand.bundle)
    return (
        f"waiting for {_amounts(demand.total(), keys)} ({demand.label}: {demand.describe()}): "
        f"the cluster has {_amounts(_summed(nodes), keys)}"
    )


def _request(bundles: list[dict]) -> None:
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)


def _summed(nodes: list[dict]) -> dict:
    total: dict = {}
    for node in nodes:
        for k, v in node.items():
            total[k] = total.get(k, 0) + v
    return total


def _minutes(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f}s"


def wait_seconds(minutes: float | None) -> float:
    """``--wait-for-resources`` MINUTES (default 30) in seconds; a negative or NaN value is refused."""
    minutes = DEFAULT_WAIT_MINUTES if minutes is None else minutes
    if not minutes >= 0 or math.isinf(minutes):
        raise ValueError(f"--wait-for-resources {minutes!r}: give minutes >= 0 (0: do not wait)")
    return minutes * 60.0


def start_timeout_failures(wait_s: float) -> tuple[float, int]:
    """``(seconds per attempt, attempts after the first)`` for Ray Train's worker-group start: together
    about ``wait_s``, so a worker group that cannot be placed (a node lost, none coming back) fails the
    run after the command's wait instead of being retried for ever."""
    try:
        per_attempt = float(os.environ.get(START_TIMEOUT_ENV, DEFAULT_START_TIMEOUT_S))
    except ValueError:
        raise ValueError(f"{START_TIMEOUT_ENV}={os.environ[START_TIMEOUT_ENV]!r} is not a number of seconds") from None
    return per_attempt, max(0, math.ceil(wait_s / per_attempt) - 1)


class PendingWatch:
    """Prints, at most every ``REPORT_EVERY_S``, what this job's placement groups are waiting for
    (Ray Train worker groups not yet placed): after a node is lost, or while trials queue for nodes
    the autoscaler is bringing up. Quiet while nothing waits; never raises.

    It looks at Ray only while Ray is up and never while ``while_paused`` restarts it: a Ray call
    between ``ray.shutdown()`` and the next ``ray.init`` would start a Ray of its own (Ray's
    auto-init), joining the dead cluster's address, and Ray ends the process 60 s later for want
    of that cluster's GCS."""

    def __init__(self, echo, who: str, interval: float = REPORT_EVERY_S):
        import ray

        self.echo, self.who, self.interval = echo, who, interval
        self.job = ray.get_runtime_context().get_job_id()
        self._since: float | None = None
        self._ray = threading.Lock()  # held while polling, and across a restart of Ray
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pending-watch", daemon=True)

    def __enter__(self) -> PendingWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def while_paused(self, restart) -> None:
        """Run ``restart`` (one that shuts Ray down and starts it again) with no poll in between."""
        import ray

        with self._ray:
            restart()
            self.job, self._since = ray.get_runtime_context().get_job_id(), None

    def _loop(self) -> None:
        import ray

        while not self._stop.wait(self.interval):
            with self._ray:
                if not ray.is_initialized():
                    continue
                try:
                    line = self.poll()
                except Exception:  # noqa: BLE001 - reporting must never kill the run it reports on
                    continue
            if line:
                self.echo(line)

    def poll(self) -> str | None:
        """The line to print now, or None while nothing of this job has waited a whole interval."""
        from ray.util.placement_group import placement_group_table

        waiting = [
            pg for pg_id, pg in placement_group_table().items() if pg_id.endswith(self.job) and pg["state"] == "PENDING"
        ]
        now = time.monotonic()
        if not waiting:
            self._since = None
            return None
        if self._since is None:
            self._since = now
            return None
        asked: dict = {}
        for pg in waiting:
            for bundle in pg["bundles"].values():
                for k, v in bundle.items():
                    asked[k] = asked.get(k, 0) + v
        keys = [k for k in sorted(asked) if not k.startswith("node:")]
        have = _summed(node_capacities())
        return (
            f"[{self.who}] waiting {now - self._since:.0f}s for resources: {len(waiting)} worker group(s) "
            f"not placed yet, asking {_amounts(asked, keys)}; the cluster has {_amounts(have, keys)} "
            "in all (busy, or nodes still coming)"
        )
