"""A database tracking URI (MLflow's SQL store) works with the driver the project installs, and a
URI whose driver is missing is one line naming the package, not a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from orchestrator import tracking
from tests.cluster.local_cluster import Postgres, postgres_bin, remove


@pytest.fixture(scope="module")
def postgres():
    if postgres_bin() is None:
        pytest.fail("PostgreSQL is not installed: run `make test-services` (Debian: apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="pgt", dir="/tmp"))
    base.chmod(0o755)  # the postgres user must reach its data dir inside
    server = Postgres(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        remove(base)


def test_a_plain_postgresql_uri_tracks_runs(postgres):
    # postgresql:// (no +driver): SQLAlchemy 2.1 picks psycopg 3, which the project depends on.
    uri = f"postgresql://{postgres.user}:{postgres.password}@127.0.0.1:{postgres.port}/mlflow"
    client = tracking.connect(uri)
    experiment_id = tracking.ensure_experiment(client, "resnet-orchestrator")
    run, created = tracking.get_or_create_run(client, experiment_id, "pg-run", run_name="pg-run", tags={"depth": 8})
    assert created
    tracking.log_metrics(client, run.info.run_id, {"epoch": 1.0, "test_top1_error": 12.5}, step=8)
    tracking.finish(client, run.info.run_id, ok=True)
    again, created = tracking.get_or_create_run(client, experiment_id, "pg-run", run_name="pg-run")
    assert not created and again.info.status == "FINISHED"
    assert again.data.metrics == {"epoch": 1.0, "test_top1_error": 12.5}
    assert postgres.query("SELECT status FROM runs WHERE run_uuid = %s", params=(run.info.run_id,)) == [("FINISHED",)]


@pytest.mark.parametrize(
    "uri,package", [("mysql://127.0.0.1:1/db", "mysqlclient"), ("mssql+pyodbc://127.0.0.1:1/db", "pyodbc")]
)
def test_a_missing_database_driver_is_named(uri, package):
    with pytest.raises(
        ValueError,
        match=rf"^MLflow tracking URI \w+(\+\w+)?://\.\.\. needs the Python package "
        rf"'{package}', which is not installed \(pip install {package}\)$",
    ):
        tracking.connect(uri)
