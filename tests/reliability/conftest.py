"""Fixtures of the reliability tests."""

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """The session's local Ray: the one tests/orchestrator's ``ray_local`` started when it runs first,
    else a private one (2 CPUs, no dashboard, ``address="local"``) shut down at the end."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING"
    )
    yield ray
    ray.shutdown()
