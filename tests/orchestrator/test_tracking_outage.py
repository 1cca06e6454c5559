"""Rank 0's metrics writer while the tracking server is unreachable: training goes on, nothing is
dropped or sent twice, and the run's last flush fails clearly instead of losing metrics.

A real sqlite store holds the run; the "outage" is a real client pointed at a closed local port
(connection refused), as a worker sees a tracking server that is down. The whole fault, with a real
`mlflow server` stopped mid-run, is tests/reliability/test_chaos.py's long MLflow test.
"""

import socket

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from orchestrator import tracking
from orchestrator.tracking import MetricsLog


def closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once, no backoff
    monkeypatch.setenv("ORCHESTRATOR_TRACKING_PATIENCE_S", "1")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.connect(uri)
    experiment = tracking.ensure_experiment(client, "outage")
    run, _ = tracking.get_or_create_run(client, experiment, "r", run_name="r")
    return uri, client, run.info.run_id


def epochs(client, run_id):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "epoch"))


def test_metrics_stay_pending_while_the_server_is_down_and_land_once(run):
    uri, client, run_id = run
    log = MetricsLog(uri, run_id)
    log.add({"epoch": 1, "train_loss": 2.0}, 10)
    assert log.flush() and epochs(client, run_id) == [(10, 1.0)]

    reachable, log.client = log.client, tracking.MlflowClient(closed_port_uri())  # the server goes down
    for epoch in (2, 3):
        log.add({"epoch": epoch, "train_loss": 2.0 - epoch / 10}, 10 * epoch)
        assert log.flush() is False  # training goes on; nothing raised
    assert [step for step, _, _ in log.pending] == [20, 30]
    with pytest.raises(
        tracking.TrackingUnavailable,
        match=r"MLflow tracking server unreachable while logging "
        r"the run's last metrics \(gave up after 1s\)",
    ):
        log.flush(final=True)
    assert [step for step, _, _ in log.pending] == [20, 30]  # still held: nothing dropped

    # The worker restarts (from a checkpoint that carried what was pending) and the server is back.
    saved = log.unlogged()
    assert [step for step, _, _ in saved] == [20, 30]
    restarted = MetricsLog(uri, run_id)
    for step, timestamp, metrics in saved:
        restarted.add(metrics, step, timestamp)
    assert restarted.flush(final=True)
    assert epochs(client, run_id) == [(10, 1.0), (20, 2.0), (30, 3.0)]
    stamps = {m.step: m.timestamp for m in client.get_metric_history(run_id, "epoch")}
    assert [stamps[step] for step, _, _ in saved] == [ts for _, ts, _ in saved]  # when measured, not sent
    restarted.add({"epoch": 3, "train_loss": 1.7}, 30)  # a redone epoch after a restart is not logged twice
    assert restarted.flush() and epochs(client, run_id) == [(10, 1.0), (20, 2.0), (30, 3.0)]
    assert reachable is not None


def test_a_flush_split_over_batches_sends_whole_steps_and_keeps_the_rest(run):
    uri, client, run_id = run
    log = MetricsLog(uri, run_id)
    for step in range(1, 401):  # 400 steps x 3 metrics: two batches of 333 steps and one of 67
        log.add({"epoch": step, "a": 1.0, "b": 2.0}, step)
    sent = []
    real_log_batch = log.client.log_batch

    def second_batch_fails(run_id, metrics):  # the server goes away after the first batch
        if sent:
            raise ConnectionRefusedError("[Errno 111] Connection refused")
        sent.append(len(metrics))
        real_log_batch(run_id, metrics=metrics)

    log.client.log_batch = second_batch_fails
    assert log.flush() is False
    assert sent == [999] and log.logged_up_to == 333 and log.pending[0][0] == 334
    log.client.log_batch = real_log_batch
    assert log.flush()
    assert [step for step, _ in epochs(client, run_id)] == list(range(1, 401))


def test_retrying_gives_up_on_a_lasting_outage_and_passes_real_errors_through():
    calls = []

    def refused():
        calls.append(1)
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    with pytest.raises(
        tracking.TrackingUnavailable,
        match=r"unreachable while closing the run \(gave up after "
        r"0\.2s\): \[Errno 111\] Connection refused",
    ):
        tracking.retrying(refused, "closing the run", patience_s=0.2, pause_s=0.05)
    assert len(calls) >= 2  # it did try again

    def bad_request():
        raise MlflowException("bad metric", error_code=INVALID_PARAMETER_VALUE)

    with pytest.raises(MlflowException, match="bad metric"):  # not transient: at once, unchanged
        tracking.retrying(bad_request, "logging", patience_s=60)
    with pytest.raises(IsADirectoryError):  # a local error is not an outage either
        tracking.retrying(lambda: open("/", "wb"), "logging", patience_s=60)


@pytest.mark.parametrize("value", ["ten", "-1", "nan"])
def test_a_bad_patience_setting_is_refused_when_a_command_connects(monkeypatch, tmp_path, value):
    monkeypatch.setenv("ORCHESTRATOR_TRACKING_PATIENCE_S", value)
    message = f"ORCHESTRATOR_TRACKING_PATIENCE_S='{value}' is not a number of seconds >= 0"
    with pytest.raises(ValueError, match=message):  # cli.run prints it as one error line, exit 2
        tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ValueError, match=message):
        tracking.retrying(lambda: None, "logging")


def test_a_command_that_gives_up_on_the_server_says_so_in_one_line(capsys):
    from orchestrator import cli

    def main(argv):
        raise tracking.TrackingUnavailable(
            "MLflow tracking server unreachable while closing the run (gave up after 600s): connection refused"
        )

    with pytest.raises(SystemExit) as exit_:
        cli.run(main, [])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        "error: MLflow tracking server unreachable while closing the run (gave up "
        "after 600s): connection refused; rerun the same command to resume\n"
    )
