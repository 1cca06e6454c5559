"""Driver-side progress: poll the runs' MLflow metrics and print one line per new epoch.

Workers stay quiet; rank 0 logs each epoch to MLflow, and the driver reads it back from there, so
the same code reports a single run, a whole ablation, or runs on another node.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from orchestrator import tracking


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def epoch_line(label: str, m: dict, eta_seconds: float | None) -> str:
    eta = f" | ETA {format_duration(eta_seconds)}" if eta_seconds is not None else ""
    return (f"[{label}] epoch {int(m['epoch'])}/{int(m.get('epochs', 0))} "
            f"iter {int(m['iteration'])}/{int(m.get('total_iterations', 0))} | "
            f"train loss {m.get('train_loss', float('nan')):.3f} err {m.get('train_error', float('nan')):.1f}% | "
            f"test top-1 {m.get('test_top1_error', float('nan')):.1f}% top-5 {m.get('test_top5_error', float('nan')):.1f}% | "
            f"{m.get('images_per_second', 0):,.0f} img/s{eta}")


class RunWatcher:
    """Polls ``runs`` (label -> MLflow run id) every ``interval`` seconds in a daemon thread and
    calls ``on_epoch(label, metrics, eta_seconds)`` once per newly logged epoch of each run.

    Epochs logged before the watcher started (by an earlier attempt) are not reported again. The
    ETA extrapolates the wall time per iteration since a run's first reported epoch (None before).
    """

    def __init__(self, tracking_uri: str, runs: dict[str, str],
                 on_epoch: Callable[[str, dict, float | None], None], interval: float = 2.0):
        self.client = tracking.MlflowClient(tracking_uri=tracking_uri)
        self.runs, self.on_epoch, self.interval = dict(runs), on_epoch, interval
        self.seen: dict[str, float | None] = {}
        self.reference: dict[str, tuple[float, float]] = {}  # label -> (time, iteration)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-watcher", daemon=True)

    def __enter__(self) -> "RunWatcher":
        for label, run_id in self.runs.items():
            self.seen[label] = self.client.get_run(run_id).data.metrics.get("epoch")
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
        except Exception:  # noqa: BLE001 - progress must never kill the run it reports on (e.g. MLflow down)
            pass

    def poll(self) -> None:
        for label, run_id in self.runs.items():
            metrics = self.client.get_run(run_id).data.metrics
            epoch = metrics.get("epoch")
            if epoch is None or epoch == self.seen.get(label):
                continue
            self.seen[label] = epoch
            now, iteration = time.time(), metrics.get("iteration", 0)
            start_time, start_iteration = self.reference.setdefault(label, (now, iteration))
            eta = None
            if iteration > start_iteration:
                remaining = metrics.get("total_iterations", iteration) - iteration
                eta = remaining * (now - start_time) / (iteration - start_iteration)
            self.on_epoch(label, metrics, eta)
