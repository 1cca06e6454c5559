"""Driver-side progress: poll the runs' MLflow metrics and print one line per new epoch.

Workers stay quiet; rank 0 logs each epoch to MLflow, and the driver reads it back from there, so
the same code reports a single run, a whole ablation, or runs on another node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from orchestrator import tracking


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def epoch_line(label: str, m: dict, eta_seconds: float | None) -> str:
    eta = f" | ETA {format_duration(eta_seconds)}" if eta_seconds is not None else ""
    val = f"val top-1 {m['val_top1_error']:.1f}% | " if "val_top1_error" in m else ""
    return (
        f"[{label}] epoch {int(m['epoch'])}/{int(m.get('epochs', 0))} "
        f"iter {int(m['iteration'])}/{int(m.get('total_iterations', 0))} | "
        f"train loss {m.get('train_loss', float('nan')):.3f} err {m.get('train_error', float('nan')):.1f}% | "
        f"test top-1 {m.get('test_top1_error', float('nan')):.1f}% "
        f"top-5 {m.get('test_top5_error', float('nan')):.1f}% | {val}"
        f"{m.get('images_per_second', 0):,.0f} img/s{eta}"
    )


# What epoch_line prints, besides the epoch itself.
EPOCH_KEYS = (
    "epochs",
    "iteration",
    "total_iterations",
    "train_loss",
    "train_error",
    "test_top1_error",
    "test_top5_error",
    "val_top1_error",  # runs with a validation split
    "images_per_second",
)


class RunWatcher:
    """Polls ``runs`` (label -> MLflow run id) every ``interval`` seconds in a daemon thread and
    calls ``on_epoch(label, metrics, eta_seconds)`` once per newly logged epoch of each run, in epoch
    order: epochs logged between two polls (fast epochs, a tracking server that was away) are read
    back from the run's metric histories, so none is skipped.

    Epochs logged before the watcher started (by an earlier attempt) are not reported again. The
    ETA extrapolates the wall time per iteration since a run's first reported epoch (None before).

    ``on_event(line)`` gets one line per fault, in the project's words: a run's workers restarted
    (a worker or its node lost: Ray Train starts the group again from the latest checkpoint), a
    fallback past unreadable checkpoints, the tracking server unreachable and back.
    """

    def __init__(
        self,
        tracking_uri: str,
        runs: dict[str, str],
        on_epoch: Callable[[str, dict, float | None], None],
        interval: float = 2.0,
        on_event: Callable[[str], None] = lambda line: None,
    ):
        self.client = tracking.MlflowClient(tracking_uri=tracking_uri)
        self.uri, self.runs, self.interval = tracking_uri, dict(runs), interval
        self.on_epoch, self.on_event = on_epoch, on_event
        self.seen: dict[str, float | None] = {}
        self.starts: dict[str, float] = {}  # label -> worker starts on record when watching began
        self.restarts: dict[str, int] = {}  # label -> restarts reported
        self.fallbacks: dict[str, str | None] = {}
        self.unreachable = False
        self.reference: dict[str, tuple[float, float]] = {}  # label -> (time, iteration)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-watcher", daemon=True)

    def __enter__(self) -> RunWatcher:
        for label, run_id in self.runs.items():
            run = self.client.get_run(run_id)
            self.seen[label] = run.data.metrics.get("epoch")
            self.starts[label] = run.data.metrics.get(tracking.WORKER_STARTS, 0)
            self.fallbacks[label] = run.data.tags.get(tracking.CHECKPOINT_FALLBACK)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._quiet_poll()  # the last epoch, logged just before the run returned

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._quiet_poll()

    def _quiet_poll(self) -> None:
        try:
            self.poll()
        except Exception as error:  # noqa: BLE001 - progress must never kill the run it reports on
            if not self.unreachable and tracking.is_transient(error):
                self.unreachable = True
                self.on_event(
                    f"[progress] MLflow at {self.uri} is unreachable; training goes on and its metrics "
                    "stay pending until it answers"
                )
            return
        if self.unreachable:
            self.unreachable = False
            self.on_event(f"[progress] MLflow at {self.uri} answers again; pending metrics follow")

    def poll(self) -> None:
        for label, run_id in self.runs.items():
            run = self.client.get_run(run_id)
            self._faults(label, run)
            metrics = run.data.metrics
            epoch = metrics.get("epoch")
            seen = self.seen.get(label)
            if epoch is None or (seen is not None and epoch <= seen):
                continue
            if epoch > (seen or 0) + 1:  # more than one epoch since the last poll: each in order
                for missed in self._epochs_between(run_id, seen or 0, epoch):
                    self.on_epoch(label, missed, None)
            self.seen[label] = epoch
            now, iteration = time.time(), metrics.get("iteration", 0)
            start_time, start_iteration = self.reference.setdefault(label, (now, iteration))
            eta = None
            if iteration > start_iteration:
                remaining = metrics.get("total_iterations", iteration) - iteration
                eta = remaining * (now - start_time) / (iteration - start_iteration)
            self.on_epoch(label, metrics, eta)

    def _faults(self, label: str, run) -> None:
        """Lines for what happened to the run's workers since the last poll."""
        # The first start after watching began is this command's own; later ones are restarts.
        restarts = int(run.data.metrics.get(tracking.WORKER_STARTS, 0) - self.starts[label] - 1)
        if restarts > self.restarts.get(label, 0):
            self.restarts[label] = restarts
            epoch = int(run.data.metrics.get(tracking.RESUMED_FROM_EPOCH, 0))
            where = f"epoch {epoch}'s checkpoint" if epoch else "the start (no checkpoint yet)"
            self.on_event(
                f"[{label}] a worker was lost or failed: Ray Train restarted the run's workers "
                f"(restart {restarts}), resuming from {where}"
            )
        fallback = run.data.tags.get(tracking.CHECKPOINT_FALLBACK)
        if fallback and fallback != self.fallbacks[label]:
            self.fallbacks[label] = fallback
            self.on_event(f"[{label}] {fallback}")

    def _epochs_between(self, run_id: str, after: float, before: float) -> list[dict]:
        """The metrics of each epoch logged after epoch ``after`` and before ``before``, oldest first,
        from the run's metric histories (an epoch's metrics share its step, the iteration)."""
        steps = {m.step: m.value for m in self.client.get_metric_history(run_id, "epoch") if after < m.value < before}
        if not steps:
            return []
        epochs = {step: {"epoch": value} for step, value in steps.items()}
        for key in EPOCH_KEYS:
            for m in self.client.get_metric_history(run_id, key):
                if m.step in epochs:
                    epochs[m.step][key] = m.value
        return [epochs[step] for step in sorted(epochs)]
