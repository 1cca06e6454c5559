"""``RunTrainer``: Ray Train's ``TorchTrainer`` without the controller helpers a run gives nothing to do.

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
"""

from __future__ import annotations

from ray.train.torch import TorchTrainer

try:
    from ray.train.v2._internal.callbacks import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
except ImportError:  # another Ray's layout: keep all of its helpers
    DatasetsCallback = PlacementGroupCleanerCallback = None


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
    def _create_default_callbacks(self) -> list:
        idle = idle_helpers(bool(self.datasets), dashboard_running())
        return [callback for callback in super()._create_default_callbacks() if not isinstance(callback, idle)]
