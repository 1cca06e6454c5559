"""The private Ray a CLI starts: a start that misses Ray's start-up deadline is stopped and started
again, saying so. A fresh process each: a private Ray needs one."""

from __future__ import annotations

from tests.orchestrator.conftest import python_in_fresh_process

# Ray's own deadline path, forced: the first start's raylet never shows up as registered (Ray's
# check raises as it does while a raylet is still coming up), so after its real 30 s Ray raises
# "The current node timed out during startup" with that start's GCS and raylet running.
MISSED_DEADLINE = """
import psutil
import ray
import ray._private.services as services
from orchestrator import cli

real_get_node = services.get_node
first = {"missed": False}

def get_node(*args, **kwargs):
    if not first["missed"]:
        raise RuntimeError("node not registered yet (injected)")
    return real_get_node(*args, **kwargs)

services.get_node = get_node
real_stop = cli.stop_failed_start

def stop(error):
    first["missed"] = True
    before = [p for p in psutil.Process().children(recursive=True) if "gcs_server" in p.name()]
    real_stop(error)
    print("first start's GCS stopped:", not any(p.is_running() and p.status() != "zombie" for p in before))

cli.stop_failed_start = stop
cli.init_ray()
gcs = [p for p in psutil.Process().children(recursive=True) if "gcs_server" in p.name()]
print("GCS processes now:", len(gcs), "CPUs:", ray.cluster_resources().get("CPU"))
"""


def test_a_local_ray_that_misses_its_startup_deadline_is_stopped_and_started_again():
    done = python_in_fresh_process(MISSED_DEADLINE)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "first start's GCS stopped: True" in done.stdout, done.stdout
    assert "GCS processes now: 1 CPUs:" in done.stdout, done.stdout
    assert (
        "[ray] the local Ray missed its start-up deadline (a busy machine); starting it again (start 2 of 3)"
        in done.stderr
    ), done.stderr[-3000:]
