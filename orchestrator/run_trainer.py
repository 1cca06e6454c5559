"""``RunTrainer``: Ray Train's ``TorchTrainer`` without the controller helpers a run gives nothing to do,
and with a controller that keeps up with short epochs.

Each helper Ray Train starts for a run is one more Ray process, ~3 CPU-s to start and poll (measured
on 2 cores: a tiny run's 44 CPU-s fell to 34 without these two and the preemption watcher, which
``cli.start_local_ray`` turns off). Two of them have nothing to do in many runs:

- the Ray Data shard manager (``DatasetsCallback``), for a run that feeds no Ray Dataset (every
  in-memory data set: its workers load their own split);
- the placement-group cleaner (``PlacementGroupCleanerCallback``), on a Ray without a dashboard
  (the private local one): it watches the controller through the state API, which the dashboard
  serves, so there it could never see the controller die and only logs, every second, that
  it cannot ask. Clusters (``cluster/``) run a dashboard and keep it.

Both are Ray Train's internal classes (Ray 2.60); where a Ray version lacks them, every helper stays.

It also has the controller poll the workers every ``POLL_INTERVAL_S`` instead of Ray's 2 s, because
the poll sets how often a run can report: each worker's report waits in a one-slot queue that a poll
empties, so under Ray's default a run whose epochs take less than 2 s trains one epoch every 2 s.
ResNet-20 on an H200 does (~1 s an epoch of work): it ran at 1.99 s an epoch, 2.75x the bare
trainer (docs/PERFORMANCE.md). A poll is one small actor call per worker.

Ctrl-C during a run fitted on the main thread aborts it as Ray Train's own handler does, then raises
``KeyboardInterrupt`` out of ``fit()`` for the caller to close the run and say so; Ray's handler
exits the process instead (status 0 or 1, nothing said, the MLflow run left RUNNING). After the run
Ctrl-C is the caller's again: Ray's handler stayed installed, holding the finished run's controller.
The handler is installed through Ray Train's internal ``_register_sigint_handler`` (Ray 2.60);
tests/reliability/test_chaos.py's Ctrl-C test fails if Ray stops calling it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import ray
from ray.train.torch import TorchTrainer

try:
    from ray.train.v2._internal.callbacks import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
except ImportError:  # another Ray's layout: keep all of its helpers
    DatasetsCallback = PlacementGroupCleanerCallback = None


# Ray Train's variable for the controller's poll interval (s); fit() passes it on to the controller.
POLL_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
POLL_INTERVAL_S = 0.25  # s: a report waits at most this long for its slot


def idle_helpers(feeds_datasets: bool, has_dashboard: bool) -> tuple[type, ...]:
    """The helper callback classes a run leaves out."""
    idle = []
    if not feeds_datasets and DatasetsCallback is not None:
        idle.append(DatasetsCallback)
    if not has_dashboard and PlacementGroupCleanerCallback is not None:
        idle.append(PlacementGroupCleanerCallback)
    return tuple(idle)


def dashboard_running() -> bool:
    """Whether the connected Ray runs a dashboard: the web UI's address its head publishes in the
    GCS, empty where it started without one (the API server it starts then serves no state API)."""
    from ray._private.services import get_webui_url_from_internal_kv

    return bool(get_webui_url_from_internal_kv())


class RunTrainer(TorchTrainer):
    def fit(self):
        # Ray Train hands the variables the caller's process has to the controller it starts (the
        # driver's, or a Tune trial's); one the user set stays as set.
        os.environ.setdefault(POLL_INTERVAL_ENV, str(POLL_INTERVAL_S))
        on_main_thread = threading.current_thread() is threading.main_thread()
        before = signal.getsignal(signal.SIGINT) if on_main_thread else None
        try:
            return super().fit()
        finally:
            if before is not None:
                signal.signal(signal.SIGINT, before)

    def _register_sigint_handler(self, controller) -> None:
        """Ctrl-C: the controller aborts the run (stops its workers, releases their placement group;
        the checkpoints stay), then ``fit()`` raises KeyboardInterrupt. A second Ctrl-C while the
        abort runs raises at once."""
        aborting = False

        def on_ctrl_c(signum, frame):
            nonlocal aborting
            if not aborting:
                aborting = True
                print(
                    f"[{self.run_config.name}] Ctrl-C: stopping the run's workers (Ctrl-C again: stop waiting)",
                    file=sys.stderr,
                    flush=True,
                )
                try:
                    ray.get(controller.abort.remote())
                except ray.exceptions.RayActorError:  # the abort ends the controller's process
                    pass
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_ctrl_c)

    def _create_default_callbacks(self) -> list:
        idle = idle_helpers(bool(self.datasets), dashboard_running())
        return [callback for callback in super()._create_default_callbacks() if not isinstance(callback, idle)]
