"""The driver's progress lines: one per epoch of each run, in order, read back from MLflow."""

from orchestrator import tracking
from orchestrator.progress import RunWatcher, epoch_line


def log_epoch(client, run_id: str, epoch: int) -> None:
    iteration = 10 * epoch  # an epoch's metrics share its step, the iteration
    tracking.log_metrics(
        client,
        run_id,
        {
            "epoch": epoch,
            "epochs": 5,
            "iteration": iteration,
            "total_iterations": 50,
            "train_loss": 2.0 / epoch,
            "train_error": 50.0 - epoch,
            "test_top1_error": 60.0 - epoch,
            "test_top5_error": 10.0,
            "images_per_second": 100.0,
        },
        step=iteration,
    )


def test_every_epoch_is_reported_once_in_order_even_when_several_land_between_polls(tmp_path):
    client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracking.ensure_experiment(client, "progress")
    run, _ = tracking.get_or_create_run(client, experiment, "a", run_name="a")
    log_epoch(client, run.info.run_id, 1)  # before the watcher: an earlier attempt's, not reported again
    lines = []
    watcher = RunWatcher(
        client.tracking_uri,
        {"a": run.info.run_id},
        lambda label, m, eta: lines.append(epoch_line(label, m, eta)),
        interval=3600,
    )
    with watcher:
        for epoch in (2, 3, 4):  # three epochs between two polls
            log_epoch(client, run.info.run_id, epoch)
        watcher.poll()
        watcher.poll()  # nothing new
        log_epoch(client, run.info.run_id, 5)
    assert [line.split(" iter")[0] for line in lines] == [f"[a] epoch {e}/5" for e in (2, 3, 4, 5)]
    assert "iter 30/50 | train loss 0.667 err 47.0% | test top-1 57.0% top-5 10.0%" in lines[1]


def test_restarted_workers_and_a_checkpoint_fallback_are_one_line_each(tmp_path):
    client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run, _ = tracking.get_or_create_run(client, tracking.ensure_experiment(client, "progress"), "b", run_name="b")
    log = tracking.MetricsLog(client.tracking_uri, run.info.run_id)
    log.started(0)  # an earlier command's start: not this one's business
    events = []
    watcher = RunWatcher(
        client.tracking_uri, {"b": run.info.run_id}, lambda *a: None, interval=3600, on_event=events.append
    )
    with watcher:
        log.started(0)  # this command's own start
        watcher.poll()
        assert events == []
        log.started(2)  # a worker lost: the group restarts from epoch 2's checkpoint
        tracking.set_tags(client, run.info.run_id, {tracking.CHECKPOINT_FALLBACK: "resumed from X (epoch 1)"})
        watcher.poll()
        watcher.poll()
    assert events == [
        "[b] a worker was lost or failed: Ray Train restarted the run's workers (restart 1), "
        "resuming from epoch 2's checkpoint",
        "[b] resumed from X (epoch 1)",
    ]


def test_an_unreachable_tracking_server_is_one_line_not_an_error():
    tracking.fail_fast()
    events = []
    watcher = RunWatcher("http://127.0.0.1:9", {"c": "0" * 32}, lambda *a: None, on_event=events.append)
    watcher._quiet_poll()
    watcher._quiet_poll()
    assert events == [
        "[progress] MLflow at http://127.0.0.1:9 is unreachable; training goes on and its metrics "
        "stay pending until it answers"
    ]
