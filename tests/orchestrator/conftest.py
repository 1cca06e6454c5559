"""Fixtures shared by the orchestrator tests."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray (2 CPUs, no dashboard) for the whole test session; Ray tests take this fixture.

    ``address="local"`` starts a fresh Ray even when this machine runs another one (``ray start``
    writes /tmp/ray/ray_current_cluster, which a bare ``ray.init()`` would join).
    """
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="WARNING")
    yield ray
    ray.shutdown()
