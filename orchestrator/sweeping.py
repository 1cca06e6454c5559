"""A hyperparameter sweep on Ray Tune: each trial a Ray Train run that reports (and checkpoints) every
epoch to Tune, which stops the worst early (ASHA) or hands them a better peer's checkpoint with a
perturbed lr (PBT); the sampler is random or Optuna's TPE. ``python -m orchestrator.sweep`` runs it.

In MLflow a sweep is one parent run (the best config, the table of trials, the iterations spent and
saved) and a child training run per trial (created by the trial when it first starts, found again
by its Tune trial id, so a restart never duplicates it). A trial the scheduler stopped early is
closed by the driver as FINISHED and tagged ``tracking.SWEEP_STOPPED`` with the iteration it
reached, its last checkpoint logged; one that trained to its end is closed as any training run is
(checkpoints and the model). The winner, the finished trial with the lowest metric, is registered
in the Model Registry under the sweep's name with the alias ``best``.

Rerunning the same sweep after its driver died continues it through ``Tuner.restore`` (the
searcher's and the scheduler's state are Tune's, pickled in its experiment folder): trials resume
from their last checkpoint reported to Tune.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import queue as local_queue
import signal
import threading
import time

import ray
import ray.train
import ray.train.torch
from ray import tune
from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Empty, Queue

from orchestrator import cli, resources, storage, tracking
from orchestrator.ablation import HEAD_NODE, TRIAL_DRIVER, quiet_tune, trials_at_once
from orchestrator.build import run_recipe
from orchestrator.config import ExperimentConfig
from orchestrator.progress import epoch_line
from orchestrator.resources import DEFAULT_WAIT_MINUTES
from orchestrator.search_space import PBT_MUTABLE, Sweep, trial_config
from orchestrator.trainer import check_data, fit, fluent_tracking_uri, record_result
from orchestrator.worker import TRAINED, train_worker
from workloads.engine import Recipe

TUNE_FOLDER = "tune"  # the Tune experiment's folder under <storage>/<sweep>/
# s: a stopped trial's run waiting at its decision epoch ends within about a second of the word to
# stop; one still mid-epoch (stopped elsewhere, or the sweep interrupted) is aborted after this.
STOP_GRACE_S = 10.0


class Relay(UserCallback):
    """Ray Train's controller hands each report (rank 0's metrics, the checkpoint's path) to the
    trial through a one-slot queue, so the trial reports it to Tune with the checkpoint (Ray's
    ``TuneReportCallback`` passes only the path, which PBT cannot exploit)."""

    def __init__(self, queue: Queue):
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint) -> None:
        self.queue.put((dict(metrics[0]), checkpoint.path if checkpoint else None))


def child_key(sweep_name: str, trial_id: str) -> str:
    return f"{sweep_name}/{trial_id}"


def trial_label(sweep_name: str, trial_id: str) -> str:
    """A trial's run name: the sweep's, then Tune's trial number (stable across restores)."""
    return f"{sweep_name}-{trial_id.rsplit('_', 1)[-1]}"


def run_trial(trial_spec: dict) -> None:
    """Tune's function trainable: one trial = one Ray Train run of the sampled config (continued
    from the trial's Tune checkpoint, maybe a PBT peer's), its epochs reported to Tune as they end,
    closed in MLflow once trained; the last epoch is reported after that, so a scheduler that stops
    the trial there never cuts its record short."""
    static = trial_spec["sweep"]
    values = {key: trial_spec[key] for key in static["keys"]}
    trial_id = tune.get_context().get_trial_id()
    name = trial_label(static["name"], trial_id)
    config = trial_config(ExperimentConfig(**static["base"]), values, name)
    recipe = run_recipe(config)
    client = tracking.MlflowClient(tracking_uri=config.tracking_uri)
    run, created = tracking.get_or_create_run(
        client,
        static["experiment_id"],
        child_key(static["name"], trial_id),
        run_name=name,
        tags=tracking.training_tags(config) | {tracking.SWEEP_NAME: static["name"], tracking.SWEEP_TRIAL: trial_id},
        parent_run_id=static["parent_id"],
    )
    run_id = run.info.run_id
    if created:
        tracking.log_params(client, run_id, tracking.training_params(config, recipe))
    elif run.info.status == "FINISHED" and run.data.tags.get(tracking.SWEEP_STOPPED) == "false":
        # Trained to its end and closed before the driver died, whose Tune state did not get the
        # last report: reported from MLflow, not trained again.
        if static["scheduler"] != "pbt":
            tune.report(_reported(run.data.metrics))
        return
    else:
        tracking.reopen(client, run_id)
    start = tune.get_checkpoint()
    train_name = name
    if start is not None:  # a fresh Ray Train run from that checkpoint: its own would shadow it
        train_name = f"{name}-{hashlib.sha256(start.path.encode()).hexdigest()[:8]}"
        if trial_id not in start.path:  # a PBT peer's, with its config and our lr perturbed
            tracking.set_tags(client, run_id, {tracking.SWEEP_EXPLOITED: f"{start.path} with {values}"})
    tracking.log_metrics(
        client, run_id, {tracking.sweep_value_metric(k): v for k, v in values.items() if _number(v)}, step=0
    )
    relay = Queue(actor_options={"num_cpus": 0})  # unbounded: Ray Train waits on the trial only at pause_at
    halt = Queue(maxsize=1, actor_options={"num_cpus": 0})
    loop_config = {
        "config": config.to_dict(),
        "recipe": recipe.to_dict(),
        "run_id": run_id,
        "tracking_uri": config.tracking_uri,
        "start": start,
    }
    # Ray Train runs in an actor of its own: when Tune stops or pauses the trial (tune.report raises
    # SystemExit here, or the process ends), ``halt`` makes that actor end the run (``TrialTraining``),
    # so its controller ends it and releases its placement group (killing the controller would leave
    # that behind). Detached: Tune ends a stopped trial's process soon after, and an actor it owned
    # would die with it, leaving the run's placement group behind; this one ends the run first.
    runner = TrialTraining.options(
        lifetime="detached", resources={HEAD_NODE: TRIAL_DRIVER[HEAD_NODE]}, scheduling_strategy="DEFAULT"
    ).remote()
    # Training stops after each decision epoch until Tune has ruled on its report (as a function
    # trainable stops in tune.report), so a trial Tune stops there trains no further. The gate is
    # the runner's: a stopped trial's process exits at once, and a gate it owned would die with it,
    # failing the waiting workers into a restart that trains on until the abort lands.
    pause_at = static["pause_at"]
    gate = ray.get(runner.open_gate.remote()) if pause_at else None
    loop_config |= {"pause_at": pause_at, "gate": gate}
    training = runner.run.remote(
        dataclasses.replace(config, name=train_name), recipe, loop_config, relay, halt, static["wait_s"]
    )
    last = None
    try:
        while True:
            try:
                metrics, path = relay.get(timeout=1.0)
            except (Empty, local_queue.Empty):
                if ray.wait([training], timeout=0)[0] and relay.empty():
                    break
                continue
            report = (_reported(metrics), tune.Checkpoint(path) if path else None)
            if metrics["epoch"] < metrics["epochs"]:
                tune.report(report[0], checkpoint=report[1])
                if metrics["epoch"] in pause_at:
                    gate.put(True)
            else:
                last = report
        result, error = ray.get(training)
    except BaseException:
        halt.put(True)
        ray.wait([training], timeout=60)
        raise
    ray.kill(runner)
    summary = record_result(client, config, run_id, result, error)
    reached = int(summary.metrics.get("iteration", 0))
    tracking.set_tags(client, run_id, {tracking.SWEEP_STOPPED: "false", tracking.SWEEP_ITERATION: reached})
    if summary.status != "FINISHED":
        raise RuntimeError(f"trial {name} failed: {summary.error}")
    if last is not None and static["scheduler"] != "pbt":
        # PBT would exploit at the last epoch too, and restart the trial with nothing left to train;
        # its trials' last epochs are read from MLflow instead (``trial_rows``).
        tune.report(last[0], checkpoint=last[1])


@ray.remote(num_cpus=0, max_restarts=0)
class TrialTraining:
    """Runs a trial's Ray Train run to its end (``run``): ``trainer.fit`` with ``worker.train_worker`` on
    every rank and each report relayed to the trial; the error travels as its text. A word on
    ``halt``, or the trial gone (its queue with it), stops the run: the workers waiting at a
    decision epoch are told to stop there (``False`` on the gate) and end it themselves; a run
    that is not waiting (Tune stopped it elsewhere, or the sweep was interrupted) is interrupted as
    Ctrl-C would: Ray Train's handler, installed by ``fit`` in this actor's main thread, aborts the
    run, which ends its workers and releases its placement group. The actor then exits."""

    def open_gate(self) -> Queue:
        """The queue the trial's verdicts pass through to the waiting workers
        (``worker.await_verdict``), owned by this actor so that it outlives the trial's process."""
        return Queue(actor_options={"num_cpus": 0})

    def run(self, config: ExperimentConfig, recipe: Recipe, loop_config: dict, relay: Queue, halt: Queue, wait_s):
        finished, halted = threading.Event(), threading.Event()

        def watch():
            while not finished.is_set():
                try:
                    halt.get(timeout=1.0)
                except (Empty, local_queue.Empty):
                    continue
                except Exception:  # noqa: BLE001 - the trial is gone: stop as well
                    pass
                if finished.is_set():
                    return
                halted.set()
                if loop_config.get("gate") is not None:
                    loop_config["gate"].put(False)
                if not finished.wait(STOP_GRACE_S):
                    os.kill(os.getpid(), signal.SIGINT)
                return

        threading.Thread(target=watch, daemon=True).start()
        try:
            result, error = fit(
                config,
                loop_config["run_id"],
                loop_config["tracking_uri"],
                recipe,
                callbacks=[Relay(relay)],
                loop=(train_worker, loop_config),
                wait_s=wait_s,
            )
        except KeyboardInterrupt:  # the run aborted (RunTrainer's Ctrl-C handler), or interrupted before it
            ray.actor.exit_actor()
        finally:
            finished.set()
        if halted.is_set():  # detached: nobody else ends it
            ray.actor.exit_actor()
        return result, None if error is None else RuntimeError(str(error) or type(error).__name__)


def _reported(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---- the driver ----------------------------------------------------------------------------------


def tune_path(sweep: Sweep) -> str:
    return storage.joined(sweep.base.storage_path, TUNE_FOLDER)


def place(sweep: Sweep) -> Sweep:
    """Every trial's runs share the sweep's tracking URI and live under <storage>/<sweep>/."""
    base = dataclasses.replace(
        sweep.base,
        tracking_uri=sweep.base.resolved_tracking_uri(),
        storage_path=storage.joined(sweep.base.resolved_storage_path(), sweep.name),
    )
    return dataclasses.replace(sweep, base=base)


def scheduler_of(sweep: Sweep):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if sweep.scheduler == "asha":
        return ASHAScheduler(
            time_attr="epoch",
            max_t=sweep.epochs,
            grace_period=sweep.asha["grace_epochs"],
            reduction_factor=sweep.asha["reduction_factor"],
        )
    if sweep.scheduler == "pbt":
        low, high = next(d for d in sweep.space if d.key == PBT_MUTABLE).args
        return PopulationBasedTraining(
            time_attr="epoch",
            perturbation_interval=sweep.pbt["interval_epochs"],
            hyperparam_mutations={PBT_MUTABLE: tune.loguniform(low, high)},
            quantile_fraction=sweep.pbt["quantile"],
            resample_probability=sweep.pbt["resample"],
            synch=True,
        )
    return FIFOScheduler()


def searcher_of(sweep: Sweep, at_once: int):
    """The sampler, limited to ``at_once`` trials in flight (so Tune starts no more than fit)."""
    if sweep.searcher == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(sampler=optuna.samplers.TPESampler(seed=sweep.seed)), at_once)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=sweep.seed, max_concurrent=at_once)


def run_sweep(sweep: Sweep, *, wait_s: float = DEFAULT_WAIT_MINUTES * 60, echo=print, register: bool = True) -> dict:
    """Run (or continue) ``sweep``; returns the summary written by ``--json``."""
    started = time.time()
    sweep = place(sweep)
    base = sweep.base
    storage.check(base.storage_path, "--storage-path")
    check_data(base)
    found = tracking.lookup(base.tracking_uri, base.experiment, [sweep.name])[sweep.name]
    if found is not None and found.data.tags.get(tracking.SWEEP_HASH) != sweep.hash():
        raise ValueError(
            f"sweep {sweep.name!r} exists with other settings (MLflow run {found.info.run_id}); "
            "rerun under another --name"
        )
    cli.init_ray()
    demand = resources.run_demand(base, f"a trial of {sweep.name}")
    at_once = trials_at_once(
        [demand], sweep.max_concurrent, private=cli.private_ray(), wait_s=wait_s, echo=echo, who=sweep.name
    )
    at_once = min(at_once, sweep.samples)
    client = tracking.connect(base.tracking_uri)
    experiment_id = tracking.ensure_experiment(client, base.experiment)
    parent, created = tracking.get_or_create_run(
        client,
        experiment_id,
        sweep.name,
        run_name=sweep.name,
        tags={tracking.KIND: tracking.SWEEP, tracking.SWEEP_HASH: sweep.hash()},
    )
    parent_id = parent.info.run_id
    if created:
        tracking.log_params(client, parent_id, _parent_params(sweep))
    client.update_run(parent_id, status="RUNNING")
    path = tune_path(sweep)
    resumed = tune.Tuner.can_restore(path)
    echo(
        f"[{sweep.name}] {'continuing' if resumed else 'starting'}: {sweep.samples} trials, {sweep.scheduler} "
        f"scheduler, {sweep.searcher} search, minimising {sweep.metric}, {at_once} at a time | "
        f"MLflow parent run {parent_id} at {base.tracking_uri}"
    )
    quiet_tune()
    events = SweepEvents(sweep.name, base.tracking_uri, experiment_id, echo)
    trainable = tune.with_resources(run_trial, TRIAL_DRIVER)
    if resumed:
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        tuner._local_tuner.get_run_config().callbacks = [events]  # Tune restores a pickled copy
    else:
        static = {
            "name": sweep.name,
            "base": base.to_dict(),
            "keys": sweep.keys,
            "experiment_id": experiment_id,
            "parent_id": parent_id,
            "scheduler": sweep.scheduler,
            "pause_at": sweep.decision_epochs(),
            "wait_s": wait_s,
        }
        tuner = tune.Tuner(
            trainable,
            param_space={"sweep": static} | {d.key: d.domain() for d in sweep.space},
            tune_config=tune.TuneConfig(
                metric=sweep.metric,
                mode="min",
                num_samples=sweep.samples,
                max_concurrent_trials=at_once,
                scheduler=scheduler_of(sweep),
                search_alg=searcher_of(sweep, at_once),
            ),
            run_config=tune.RunConfig(
                name=TUNE_FOLDER,
                storage_path=base.storage_path,
                verbose=0,
                callbacks=[events],
                # PBT exploits a peer's latest checkpoint: keep a few, so none is deleted mid-copy
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=max(base.keep_checkpoints, 4 if sweep.scheduler == "pbt" else 1)
                ),
            ),
        )
    with resources.PendingWatch(echo, sweep.name):
        grid = tuner.fit()
    rows = trial_rows(client, sweep, grid, experiment_id)
    summary = finish_sweep(client, sweep, parent_id, rows, started, echo=echo, register=register)
    return summary


class SweepEvents(tune.Callback):
    """Prints each trial's start, epochs and end, and closes in MLflow the trials the scheduler
    stopped early (Tune ends their actor, and their Ray Train run with it)."""

    def __init__(self, name: str, tracking_uri: str, experiment_id: str, echo):
        self.name, self.tracking_uri, self.experiment_id, self.echo = name, tracking_uri, experiment_id, echo

    def on_trial_start(self, iteration, trials, trial, **info):
        self.echo(f"[{trial_label(self.name, trial.trial_id)}] started: {_values(trial.config)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" in result:
            self.echo(epoch_line(trial_label(self.name, trial.trial_id), result, None))

    def on_trial_complete(self, iteration, trials, trial, **info):
        label = trial_label(self.name, trial.trial_id)
        if close_if_stopped(self.tracking_uri, self.experiment_id, self.name, trial):
            reached = int((trial.last_result or {}).get("iteration", 0))
            self.echo(f"[{label}] stopped early by the scheduler at iteration {reached}")
        else:
            self.echo(f"[{label}] finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.echo(f"[{trial_label(self.name, trial.trial_id)}] FAILED (its error is on its MLflow run)")


def _values(config: dict) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in config.items() if k != "sweep")


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def close_if_stopped(tracking_uri: str, experiment_id: str, sweep_name: str, trial) -> bool:
    """Whether ``trial``'s run was left open by a scheduler's stop; if so, close it (``close_stopped``)."""
    client = tracking.MlflowClient(tracking_uri=tracking_uri)
    run = tracking.find_run(client, experiment_id, child_key(sweep_name, trial.trial_id))
    if run is None or run.info.status != "RUNNING":
        return False  # never started, or closed by the trial itself (trained to its end, or failed)
    close_stopped(client, run.info.run_id, trial.checkpoint, int((trial.last_result or {}).get("iteration", 0)))
    return True


def close_stopped(client, run_id: str, checkpoint, reached: int) -> None:
    """Close a trial's run that the scheduler stopped: FINISHED, tagged stopped with the iteration its
    last report reached, that report's checkpoint logged as its last and best (no model: only trials
    that trained to their end log one)."""
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            for label in tracking.CHECKPOINT_LABELS:
                client.log_artifact(run_id, f"{folder}/{tracking.CHECKPOINT_FILE}", tracking.checkpoint_folder(label))
    tags = {
        tracking.SWEEP_STOPPED: "true",
        tracking.SWEEP_ITERATION: reached,
        tracking.BEST_BY: tracking.BEST_IS_STOPPED,
    }
    tracking.set_tags(client, run_id, tags)
    tracking.finish(client, run_id, ok=True)


def trial_rows(client, sweep: Sweep, grid, experiment_id: str) -> list[dict]:
    """One row per trial: its run, config, how far it got, its metric and test errors."""
    rows = []
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id is None:
            continue  # never started: nothing trained, no run
        run = tracking.find_run(client, experiment_id, child_key(sweep.name, trial_id))
        history = result.metrics_dataframe
        trained = int(history[TRAINED].sum()) if history is not None and TRAINED in history else 0
        if run is not None and sweep.scheduler != "pbt":  # a stopped run trains on until it is ended
            trained = max(trained, int(run.data.metrics.get("iteration", 0)))
        metric = result.metrics.get(sweep.metric) if result.metrics else None
        status = run.info.status if run is not None else "NOT STARTED"
        stopped = run is not None and run.data.tags.get(tracking.SWEEP_STOPPED) == "true"
        ended = {}
        if status == "FINISHED" and not stopped:  # trained to its end: its last epoch, as MLflow has it
            ended = {k: v for k, v in run.data.metrics.items() if k in (sweep.metric, "epoch", "iteration")}
            if sweep.scheduler == "pbt":  # its last epoch is not reported to Tune
                trained += max(0, int(ended.get("iteration", 0)) - int(result.metrics.get("iteration", 0)))
            metric = ended.get(sweep.metric, metric)
        if run is not None and status == "RUNNING":  # the driver died before it closed the run
            if result.error is not None:
                tracking.finish(client, run.info.run_id, ok=False, error=str(result.error).splitlines()[-1][:500])
                status = "FAILED"
            else:
                close_stopped(client, run.info.run_id, result.checkpoint, int(result.metrics.get("iteration", 0)))
                status, stopped = "FINISHED", True
        rows.append(
            {
                "trial": trial_label(sweep.name, trial_id),
                "run_id": run.info.run_id if run is not None else "",
                **{key: result.config.get(key) for key in sweep.keys},
                "status": "STOPPED" if stopped else status,
                "epoch": int(ended.get("epoch", result.metrics.get("epoch", 0))),
                "iteration": int(ended.get("iteration", result.metrics.get("iteration", 0))),
                "trained_iterations": trained,
                sweep.metric: metric,
                "test_top1_error": result.metrics.get("test_top1_error") if result.metrics else None,
            }
        )
    return sorted(rows, key=lambda r: r["trial"])


def best_row(rows: list[dict], metric: str) -> dict | None:
    """The winner: the lowest ``metric`` among trials that trained to their end (a stopped trial's
    last value is from fewer epochs), else among all."""
    scored = [r for r in rows if r[metric] is not None and not math.isnan(r[metric])]
    finished = [r for r in scored if r["status"] == "FINISHED"]
    pool = finished or scored
    return min(pool, key=lambda r: r[metric]) if pool else None


def finish_sweep(client, sweep: Sweep, parent_id: str, rows: list[dict], started: float, *, echo, register) -> dict:
    spent = sum(r["trained_iterations"] for r in rows)
    full = sweep.full_budget()
    best = best_row(rows, sweep.metric)
    failed = [r["trial"] for r in rows if r["status"] == "FAILED"]
    stopped = [r["trial"] for r in rows if r["status"] == "STOPPED"]
    client.log_text(parent_id, _csv(rows), tracking.sweep_artifact(tracking.SWEEP_TRIALS_FILE))
    metrics = {
        "trials": len(rows),
        "trials_stopped": len(stopped),
        "trials_failed": len(failed),
        "iterations_spent": spent,
        "iterations_full_grid": full,
        "iterations_saved": full - spent,
        "wall_seconds": time.time() - started,
    }
    registered = None
    if best is not None:
        best_config = {key: best[key] for key in sweep.keys}
        client.log_dict(
            parent_id,
            {"trial": best["trial"], "run_id": best["run_id"], sweep.metric: best[sweep.metric], "config": best_config},
            tracking.sweep_artifact(tracking.SWEEP_BEST_FILE),
        )
        metrics[f"best_{sweep.metric}"] = best[sweep.metric]
        tracking.set_tags(client, parent_id, {tracking.SWEEP_BEST_TRIAL: best["trial"]})
        if register and best["status"] == "FINISHED":
            registered = register_winner(client, sweep.name, best["run_id"], sweep.metric, best[sweep.metric])
            tracking.set_tags(client, parent_id, {tracking.SWEEP_REGISTERED: f"{registered[0]}/{registered[1]}"})
    tracking.log_metrics(client, parent_id, metrics, step=0)
    tracking.finish(client, parent_id, ok=not failed, error=f"failed trials: {', '.join(failed)}" if failed else None)
    echo(format_rows(rows, sweep))
    if best is not None:
        echo(
            f"best: {best['trial']} {sweep.metric} {best[sweep.metric]:.2f}% with "
            + ", ".join(f"{k}={_short(best[k])}" for k in sweep.keys)
        )
    echo(
        f"iterations: {spent} trained of {full} for the full grid ({sweep.samples} x {sweep.iterations}): "
        f"{full - spent} saved ({(full - spent) / full:.0%}); {len(stopped)} trial(s) stopped early"
    )
    if registered:
        echo(f"registered: model {registered[0]} version {registered[1]} (alias {tracking.REGISTRY_ALIAS})")
    return {
        "name": sweep.name,
        "parent_run_id": parent_id,
        "tracking_uri": sweep.base.tracking_uri,
        "storage_path": sweep.base.storage_path,
        "best": best,
        "registered": {"name": registered[0], "version": registered[1]} if registered else None,
        "iterations_spent": spent,
        "iterations_full_grid": full,
        "failed": failed,
        "stopped": stopped,
        "trials": rows,
    }


def register_winner(client, name: str, run_id: str, metric: str, value: float) -> tuple[str, str]:
    """The winning run's model as a version of registered model ``name`` with the alias ``best``;
    a rerun reuses the version already made from that run."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException:
        pass  # registered already (a rerun, or an earlier sweep of the same name)
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if versions:
        version = versions[0]
    else:
        models = client.search_logged_models(
            experiment_ids=[client.get_run(run_id).info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )
        source = models[0].model_uri if models else tracking.runs_uri(run_id, tracking.MODEL_ARTIFACT)
        with fluent_tracking_uri(client.tracking_uri):  # the registry reads the logged model through it
            version = client.create_model_version(
                name, source=source, run_id=run_id, description=f"sweep winner: {metric} {value:.2f}"
            )
    client.set_registered_model_alias(name, tracking.REGISTRY_ALIAS, version.version)
    return name, str(version.version)


def format_rows(rows: list[dict], sweep: Sweep) -> str:
    columns = ["trial", *sweep.keys, "status", "epoch", "iteration", sweep.metric, "test_top1_error"]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def _parent_params(sweep: Sweep) -> dict:
    return {
        "samples": sweep.samples,
        "scheduler": sweep.scheduler,
        "searcher": sweep.searcher,
        "metric": sweep.metric,
        "seed": sweep.seed,
        "space": json.dumps({d.key: d.text() for d in sweep.space}),
        "iterations": sweep.iterations,
        "epochs": sweep.epochs,
        "base_model": sweep.base.model,
        "base_dataset": sweep.base.dataset,
        "base_config_hash": sweep.base.hash(),
    }
