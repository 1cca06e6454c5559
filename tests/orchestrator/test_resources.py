"""Demands checked before anything waits: refused at once on a Ray that cannot grow, waited for
visibly (and then refused) on a cluster, and placement groups left waiting reported while running."""

from __future__ import annotations

import pytest

from orchestrator import resources
from orchestrator.config import load_config
from orchestrator.resources import Demand, ResourcesUnavailable, copies_that_fit, shortfall
from tests.orchestrator.conftest import python_in_fresh_process

GPU_NODE = {"CPU": 8.0, "GPU": 1.0}


def test_copies_that_fit_places_whole_bundles_on_single_nodes():
    one_gpu = Demand("trial", 1, {"CPU": 1.0, "GPU": 1.0})
    assert copies_that_fit(one_gpu, [GPU_NODE, GPU_NODE]) == 2
    assert copies_that_fit(Demand("trial", 1, {"CPU": 1.0, "GPU": 0.25}), [GPU_NODE]) == 4
    two_gpus = Demand("run", 2, {"CPU": 4.0, "GPU": 1.0})
    assert copies_that_fit(two_gpus, [GPU_NODE, GPU_NODE]) == 1  # one worker a node
    assert copies_that_fit(two_gpus, [{"CPU": 8.0, "GPU": 2.0}]) == 1
    assert copies_that_fit(Demand("run", 1, {"CPU": 1.0, "GPU": 8.0}), [{"CPU": 64.0, "GPU": 4.0}] * 2) == 0
    assert copies_that_fit(Demand("run", 3, {"CPU": 1.0}), [{"CPU": 2.0}]) == 0
    assert copies_that_fit(Demand("run", 64, {"CPU": 1.0}), [{"CPU": 2.0}] * 40) == 1
    assert copies_that_fit(Demand("run", 1, {"CPU": 1.0}), []) == 0


def test_shortfall_names_what_was_asked_and_what_there_is():
    assert (
        shortfall(Demand("run smoke", 64, {"CPU": 1.0}), [{"CPU": 2.0}], "this machine")
        == "asks for 64 workers x {1 CPU} = 64 CPU; this machine has 2 CPU"
    )
    too_big = shortfall(Demand("run r50", 1, {"CPU": 1.0, "GPU": 8.0}), [{"CPU": 64.0, "GPU": 4.0}] * 2, "the cluster")
    assert (
        too_big == "asks for 1 worker x {1 CPU, 8 GPU}; no node of the cluster holds one worker "
        "(the largest has 64 CPU, 4 GPU)"
    )


def test_a_run_demand_is_its_scaling():
    config = load_config("smoke", {"workers": 4, "use_gpu": True, "gpus_per_worker": 0.5, "cpus_per_worker": 2.0})
    demand = resources.run_demand(config, "run smoke")
    assert (demand.count, demand.bundle) == (4, {"CPU": 2.0, "GPU": 0.5})
    assert resources.run_demand(load_config("smoke"), "x").bundle == {"CPU": 1.0}


@pytest.mark.parametrize("minutes,seconds", [(None, 1800.0), (0, 0.0), (2.5, 150.0)])
def test_wait_for_resources_is_minutes(minutes, seconds):
    assert resources.wait_seconds(minutes) == seconds


@pytest.mark.parametrize("minutes", [-1, float("nan"), float("inf")])
def test_a_bad_wait_is_refused(minutes):
    with pytest.raises(ValueError, match="--wait-for-resources"):
        resources.wait_seconds(minutes)


def test_ray_trains_worker_group_start_is_bounded_by_the_wait(monkeypatch):
    monkeypatch.delenv(resources.START_TIMEOUT_ENV, raising=False)
    assert resources.start_timeout_failures(1800) == (60.0, 29)  # 30 attempts of 60 s
    assert resources.start_timeout_failures(0) == (60.0, 0)
    monkeypatch.setenv(resources.START_TIMEOUT_ENV, "900")  # a user's own setting, as Ray reads it
    assert resources.start_timeout_failures(1800) == (900.0, 1)


def test_on_a_private_ray_an_impossible_demand_is_refused_at_once(ray_local):
    gpus = Demand("run big", 2, {"CPU": 1.0, "GPU": 1.0})
    with pytest.raises(
        ValueError,
        match=r"run big asks for 2 workers x \{1 CPU, 1 GPU\} = 2 CPU, 2 GPU; "
        r"this machine has 2 CPU, 0 GPU \(a private local Ray: it cannot grow\)",
    ):
        resources.ensure([gpus], private=True, wait_s=1800, echo=print)
    resources.ensure([Demand("run small", 2, {"CPU": 1.0})], private=True, wait_s=0, echo=print)  # fits


def test_on_a_cluster_a_demand_is_waited_for_visibly_then_refused(ray_local, monkeypatch):
    monkeypatch.setattr(resources, "REPORT_EVERY_S", 1.0)
    monkeypatch.setattr(resources, "POLL_S", 0.2)
    asked = []
    monkeypatch.setattr(resources, "_request", asked.append)  # the autoscaler request, as sent
    lines = []
    gpu = Demand("trial t", 1, {"CPU": 1.0, "GPU": 1.0})
    with pytest.raises(ResourcesUnavailable, match=r"trial t asks for .* after waiting 3s \(--wait-for-resources\)"):
        resources.ensure([gpu], private=False, wait_s=3, echo=lines.append, who="abl")
    assert asked == [[{"CPU": 1.0, "GPU": 1.0}], []]  # asked for, then withdrawn
    assert len(lines) >= 3, lines
    assert lines[0].startswith(
        "[abl] waiting for 1 CPU, 1 GPU (trial t: 1 worker x {1 CPU, 1 GPU}): the cluster "
        "has 2 CPU, 0 GPU; autoscaler asked; giving up in 3s"
    ), lines
    with pytest.raises(ResourcesUnavailable, match="--wait-for-resources is 0"):
        resources.ensure([gpu], private=False, wait_s=0, echo=lines.append)


def test_the_real_autoscaler_request_goes_through(ray_local):
    # No autoscaler runs beside this local Ray, but the request is Ray's real call, sent and withdrawn.
    with pytest.raises(ResourcesUnavailable):
        resources.ensure([Demand("t", 1, {"GPU": 1.0})], private=False, wait_s=0.5, echo=print)


def test_a_waiting_placement_group_of_the_job_is_reported(ray_local):
    from ray.util.placement_group import placement_group, remove_placement_group

    watch = resources.PendingWatch(print, "abl")
    assert watch.poll() is None
    group = placement_group([{"CPU": 1.0, "GPU": 1.0}])
    try:
        assert watch.poll() is None  # waiting less than an interval: normal start-up
        line = watch.poll()
    finally:
        remove_placement_group(group)
    assert (
        line.startswith("[abl] waiting ")
        and "1 worker group(s) not placed yet, asking 1 CPU, 1 GPU; the cluster has 2 CPU, 0 GPU in all" in line
    ), line
    assert watch.poll() is None


RESTART_WHILE_WATCHED = """
import ray
from orchestrator import cli, resources

cli.init_ray()
with resources.PendingWatch(print, "w", interval=0.002) as watch:
    for _ in range(3):
        watch.while_paused(cli.restart_ray)
        ray.cluster_resources()  # the new Ray answers
print("node", ray.get_runtime_context().get_node_id())
"""


def test_the_watch_never_touches_ray_while_the_driver_restarts_it():
    # A poll between ray.shutdown() and ray.init would auto-start a Ray of its own (measured: the
    # driver's ray.init then failed with "called ray.init twice", or the process died 60 s later
    # waiting for the dead cluster's GCS). A fresh process: the restarts need a private Ray.
    done = python_in_fresh_process(RESTART_WHILE_WATCHED)
    assert done.returncode == 0 and "node " in done.stdout, done.stderr[-3000:]
