"""Rank 0's MLflow metrics writer: exactly once per step, across kills, restarts and server outages."""

from __future__ import annotations

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from orchestrator.tracking.schema import CHECKPOINT_FALLBACK, DIVERGED, RESUMED_FROM_EPOCH, WORKER_STARTS
from orchestrator.tracking.store import fail_fast, is_transient, now_ms, retrying, set_tags


class MetricsLog:
    """Rank 0's MLflow writer. One ``log_batch`` per epoch, skipping steps already logged.

    A worker killed mid-epoch restarts from the last checkpoint and redoes that epoch; the steps
    logged before the kill are not logged twice (exactly-once per step, by a high-water mark
    read from the run when the worker starts). If the tracking server is unreachable, training
    goes on: the metrics stay pending (and ride in each checkpoint, ``unlogged``, so a restart
    does not lose them) until a later flush gets through; the run's last flush (``final``) waits
    for the server up to ``tracking_patience_s()``, then fails the run.
    """

    def __init__(self, tracking_uri: str, run_id: str):
        fail_fast()
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        history = retrying(lambda: self.client.get_metric_history(run_id, "epoch"), "reading the run's logged epochs")
        self.logged_up_to = max((m.step for m in history), default=-1)
        self.pending: list[list] = []  # [step, timestamp in ms, {metric: value}], by step

    def add(self, metrics: dict, step: int, timestamp_ms: int | None = None) -> None:
        # The timestamp is fixed here, so a batch resent after a timeout that did land repeats
        # exactly what is stored, which MLflow's SQL store drops instead of duplicating.
        if step > self.logged_up_to:
            self.pending.append([step, timestamp_ms or now_ms(), metrics])

    def resume(self, restored: dict, fallback: str | None) -> None:
        """After a restore from a checkpoint holding ``restored`` metrics: what was pending when it
        was taken (MLflow was down) is pending again, and a fallback past unreadable newer
        checkpoints is noted on the run."""
        for step, timestamp, metrics in restored.get("unlogged", []):
            self.add(metrics, step, timestamp)
        if fallback:
            self.tag({CHECKPOINT_FALLBACK: fallback}, "recording the checkpoint fallback")

    def started(self, epoch: int) -> None:
        """Record a start of the run's workers, resuming from ``epoch`` (0: from scratch); the driver's
        progress reports the starts after its first as restarts."""
        starts = len(
            retrying(
                lambda: self.client.get_metric_history(self.run_id, WORKER_STARTS), "reading the run's worker starts"
            )
        )
        batch = [
            Metric(WORKER_STARTS, float(starts + 1), now_ms(), starts),
            Metric(RESUMED_FROM_EPOCH, float(epoch), now_ms(), starts),
        ]
        retrying(lambda: self.client.log_batch(self.run_id, metrics=batch), "recording the workers' start")

    def diverged(self, error) -> None:
        """Record a divergence (``DivergenceError`` or its text) on the run, after what is pending."""
        self.flush(final=True)
        self.tag({DIVERGED: str(error)}, "recording the divergence")

    def tag(self, tags: dict, doing: str) -> None:
        retrying(lambda: set_tags(self.client, self.run_id, tags), doing)

    def unlogged(self) -> list[list]:
        """What is pending, as a checkpoint can hold it (primitives only)."""
        return [[step, ts, dict(metrics)] for step, ts, metrics in self.pending]

    def flush(self, final: bool = False) -> bool:
        """Send the pending steps, oldest first, whole steps per batch (so a failure part-way sends
        none twice); returns whether all went. ``final`` waits for the server instead."""
        while self.pending:
            count, size = 0, 0
            for _, _, metrics in self.pending:  # MLflow takes at most 1000 metrics per batch
                if count and size + len(metrics) > 1000:
                    break
                count, size = count + 1, size + len(metrics)
            batch = [
                Metric(k, float(v), ts, step) for step, ts, metrics in self.pending[:count] for k, v in metrics.items()
            ]
            try:
                if final:
                    retrying(
                        lambda: self.client.log_batch(self.run_id, metrics=batch), "logging the run's last metrics"
                    )
                else:
                    self.client.log_batch(self.run_id, metrics=batch)
            except Exception as error:  # noqa: BLE001 - kept for the next flush when transient
                if final or not is_transient(error):
                    raise
                return False
            self.logged_up_to = self.pending[count - 1][0]
            del self.pending[:count]
        return True
