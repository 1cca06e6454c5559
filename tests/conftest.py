"""How `make test` spreads the suite over two pytest-xdist workers (`-n 2 --dist loadgroup
--no-loadscope-reorder`, the last so units start in this file's order).

Run alone, a third of the suite's time leaves a core idle (Ray starting processes, one-worker runs
training on one core); a second worker fills it: 1.3x faster on 2 cores (59 min instead of 77 on a
fresh clone, 2026-12-03). A plain `pytest` runs serially, in the same order. Two rules keep that
cheap and correct:

- Tests that share a costly fixture run in one worker, or every worker pays for it: a module-scoped
  fixture (a sweep, a data tree, a run trained once for the module's tests) keeps its module
  together, and each session fixture in SHARED keeps every module that uses it together (and apart
  from the other worker's copy). Every other test is scheduled on its own.
- The longest units start first (LONGEST_FIRST, the slowest in CI's --durations table, longest
  first), so neither worker is left running a long test alone at the end. Only the start order
  depends on it: a test missing from it starts later, nothing more.

The groups come from the fixtures each test uses, which only the workers see (they collect; the
controller schedules node ids). So each worker writes {node id: group} to a file the controller
named, and `--dist loadgroup` schedules by that file. xdist's own loadgroup reads `xdist_group`
marks through ``item._nodeid``, which pytest 9 no longer has: it would silently group nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Session fixtures that train or start services (tiny_ablation: an ablation trained once, ~90 s;
# services: PostgreSQL and an MLflow server for the cluster rehearsals). ray_local, a private Ray
# (seconds), is left to start once in each worker.
SHARED = {"tiny_ablation", "services"}

LONGEST_FIRST = (  # CI's --durations of 2026-12-03 (fresh clone, two workers)
    "tests/cluster/test_rehearsal",  # both rehearsals share `services`: ~670 s together
    "tests/orchestrator/test_sweep.py",  # ~1,120 s: the ASHA/FIFO fixture 580 s, PBT, the Optuna resume
    "tests/reliability/test_chaos.py::test_ablation_driver_killed",
    "tests/test_bench_gpu_orchestrated.py",
    "tests/reliability/test_chaos.py::test_packed_trial",
    "tests/orchestrator/test_imagenet_views.py",
    "tests/reliability/test_chaos.py::test_mlflow_server_down",
    "tests/reliability/test_chaos.py::test_workers_sigkilled",
    "tests/orchestrator/test_object_storage.py",
    "tests/orchestrator/test_ensemble.py",
    "tests/orchestrator/test_ablate.py",
    "tests/reliability/test_chaos.py",
    "tests/orchestrator/test_train.py",
    "tests/orchestrator/test_imagenet.py",
)


def _fixture_scopes(item: pytest.Item) -> list[tuple[str, str]]:
    defs = getattr(item, "_fixtureinfo", None)
    if defs is None:
        return []
    return [(name, fixtures[-1].scope) for name, fixtures in defs.name2fixturedefs.items() if fixtures]


def _groups(items: list[pytest.Item]) -> dict[str, str]:
    """{nodeid: group} for the tests that must share a worker: a union of the modules of
    module-scoped fixtures and the SHARED session fixtures each test uses."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    keys_of = {}
    for item in items:
        keys = []
        for name, scope in _fixture_scopes(item):
            if scope in ("module", "class"):
                keys.append(item.nodeid.split("::")[0])
            elif scope == "session" and name in SHARED:
                keys.append(name)
        keys_of[item.nodeid] = keys
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
    return {nodeid: root(keys[0]) for nodeid, keys in keys_of.items() if keys}


def _rank(nodeid: str) -> int:
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if nodeid.startswith(prefix)), len(LONGEST_FIRST))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session, started as the commands start their private one
    (with 2 CPUs whatever the machine); Ray tests take this fixture."""
    import ray

    from orchestrator.cli import start_local_ray

    # A test that ran a CLI's main in this process may have left its Ray up: this one is known.
    ray.shutdown()
    start_local_ray(log_to_driver=True, num_cpus=2)
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    groups = _groups(items)
    # A group starts at its earliest member's rank, and its members stay together in the order.
    first = {}
    for item in items:
        group = groups.get(item.nodeid, item.nodeid)
        first[group] = min(first.get(group, len(LONGEST_FIRST)), _rank(item.nodeid))
    items.sort(key=lambda item: first[groups.get(item.nodeid, item.nodeid)])
    target = getattr(config, "workerinput", {}).get(GROUPS_FILE)
    if target:  # an xdist worker: tell the controller (every worker writes the same, atomically)
        written = Path(f"{target}.{config.workerinput['workerid']}")
        written.write_text(json.dumps(groups))
        os.replace(written, target)


GROUPS_FILE = "tests_groups_file"


def _groups_file(config: pytest.Config) -> Path:
    if not hasattr(config, "_tests_groups_file"):
        config._tests_groups_file = Path(tempfile.mkdtemp(prefix="pytest-groups-")) / "groups.json"
    return config._tests_groups_file


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    node.workerinput[GROUPS_FILE] = str(_groups_file(node.config))


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """xdist's loadscope with the groups the workers wrote as scopes (called once every worker
        has collected, so the file is there)."""

        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                self.groups = json.loads(_groups_file(config).read_text())
            return self.groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "_tests_groups_file"):
        shutil.rmtree(config._tests_groups_file.parent, ignore_errors=True)
