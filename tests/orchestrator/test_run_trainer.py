"""``RunTrainer``'s own settings, on the real local Ray (its helper actors: test_train.py's
``test_a_run_on_a_private_ray_starts_no_helper_process_it_has_no_use_for``)."""

import json

from ray.train import RunConfig, ScalingConfig

from orchestrator.run_trainer import RunTrainer

REPORTS = 6
RAY_POLL_S = 2.0  # Ray Train's own controller poll interval


def test_reports_are_not_held_to_ray_trains_two_second_poll(ray_local, tmp_path):
    """A worker's report waits until the controller's poll takes the one before it: under Ray's
    2-s poll, REPORTS back-to-back reports take at least (REPORTS - 2) x 2 s; a GPU epoch is ~1 s."""
    out = tmp_path / "report_times.json"

    def loop(config):  # nested: pickled by value, so the workers need not import this module
        import time

        import ray.train

        times = []
        for i in range(REPORTS):
            ray.train.report({"report": i})
            times.append(time.monotonic())
        with open(config["out"], "w") as f:
            json.dump(times, f)

    RunTrainer(
        loop,
        train_loop_config={"out": str(out)},
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(name="reports", storage_path=str(tmp_path / "runs")),
    ).fit()
    times = json.loads(out.read_text())
    assert len(times) == REPORTS
    span = times[-1] - times[0]  # REPORTS - 1 reports, each waiting for the poll that empties the slot
    assert span < (REPORTS - 3) * RAY_POLL_S, f"{REPORTS} reports took {span:.1f} s"
