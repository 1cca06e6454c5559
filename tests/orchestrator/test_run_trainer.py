"""``RunTrainer``'s own settings, on the real local Ray (its helper actors: test_train.py's
``test_a_run_on_a_private_ray_starts_no_helper_process_it_has_no_use_for``)."""

import json
import os
import signal
import time

import psutil
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


def train_controllers() -> list[psutil.Process]:
    """The Ray Train controllers of this process's private Ray (its raylet's workers are its
    descendants; another test worker's Ray is not)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.cmdline()[:1] and process.cmdline()[0].startswith("ray::TrainController"):
                found.append(process)
        except psutil.Error:  # ended while listed
            pass
    return found


def test_after_a_run_ctrl_c_interrupts_again_and_the_controller_ends(ray_local, tmp_path):
    """A run fitted on the main thread has a Ctrl-C handler of its own (it aborts the run); after
    the run the caller's handler is back and the finished run's controller ends. Ray Train left its
    handler installed, holding the controller: a CLI swallowed Ctrl-C while it closed the run
    (MLflow uploads, the model's export), and the idle controller lived as long as the process.
    Ctrl-C during a run: tests/reliability/test_chaos.py."""

    def loop(config):
        import ray.train

        ray.train.report({"done": 1})

    pressed = []

    def callers_handler(signum, frame):
        pressed.append(signum)

    outer = signal.signal(signal.SIGINT, callers_handler)  # the process's own (an xdist worker ignores it)
    try:
        RunTrainer(
            loop,
            scaling_config=ScalingConfig(num_workers=1),
            run_config=RunConfig(name="handler", storage_path=str(tmp_path / "runs")),
        ).fit()
        assert signal.getsignal(signal.SIGINT) is callers_handler
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs at the next bytecode: this only bounds a lost signal
        assert pressed == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, outer)
    deadline = time.monotonic() + 30  # s: Ray ends an actor soon after its last handle is released
    while train_controllers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not train_controllers(), "the finished run's controller is still alive"
