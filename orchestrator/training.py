"""Train one run end to end: check it, find or create its MLflow run, fit it on Ray Train (resuming
from its checkpoint) and close its record. ``python -m orchestrator.train`` runs it."""

from __future__ import annotations

import ray

from orchestrator import cli, resources, storage, tracking
from orchestrator.build import run_recipe
from orchestrator.config import ExperimentConfig
from orchestrator.progress import RunWatcher, epoch_line
from orchestrator.resources import DEFAULT_WAIT_MINUTES
from orchestrator.trainer import RunSummary, check_data, discard_run_storage, fit, record_result, summary_of


def train(
    config: ExperimentConfig, *, force: bool = False, wait_s: float = DEFAULT_WAIT_MINUTES * 60, echo=print
) -> RunSummary:
    """Train ``config`` to the end (or resume it); returns the run's summary. Nothing is written to
    MLflow before Ray is known to hold the run's workers (``resources.ensure``)."""
    storage.check(config.storage_path, "--storage-path")
    check_data(config)
    recipe = run_recipe(config)  # once, here: logged on the run and handed to its workers as is
    uri = config.resolved_tracking_uri()
    run = tracking.lookup(uri, config.experiment, [config.name])[config.name]
    retire = run is not None and run.data.tags.get(tracking.CONFIG_HASH) != config.hash()
    if retire and not force:
        raise ValueError(
            f"run {config.name!r} exists with another config (MLflow run "
            f"{run.info.run_id}); pick another --name, or --force to start it over"
        )
    if run is not None and not retire and run.info.status == "FINISHED":
        echo(f"[{config.name}] already finished (MLflow run {run.info.run_id}); nothing to do")
        return summary_of(tracking.connect(uri), run, config)

    own_ray = not ray.is_initialized() and cli.private_ray()  # ours to restart if a Ray process dies
    cli.init_ray()
    resources.ensure(
        [resources.run_demand(config, f"run {config.name}")],
        private=cli.private_ray(),
        wait_s=wait_s,
        echo=echo,
        who=config.name,
    )
    client = tracking.connect(uri)
    experiment_id = tracking.ensure_experiment(client, config.experiment)
    if retire:
        tracking.retire_run(client, run)
        discard_run_storage(config)
    run, created = tracking.get_or_create_run(
        client, experiment_id, config.name, run_name=config.name, tags=tracking.training_tags(config)
    )
    run_id = run.info.run_id
    if created:
        tracking.log_params(client, run_id, tracking.training_params(config, recipe))
    else:
        tracking.reopen(client, run_id)
    echo(
        f"[{config.name}] {'starting' if created else 'resuming'} MLflow run {run_id} "
        f"({config.model} on {config.dataset}, {config.workers} worker(s))"
    )

    def progress(label, metrics, eta):
        echo(epoch_line(label, metrics, eta))

    try:
        with (
            RunWatcher(uri, {config.name: run_id}, progress, on_event=echo),
            resources.PendingWatch(echo, config.name) as watch,
        ):
            restart = (lambda: watch.while_paused(cli.restart_ray)) if own_ray else None
            result, error = fit(config, run_id, uri, recipe, echo=echo, wait_s=wait_s, restart_ray=restart)
    except KeyboardInterrupt:  # Ctrl-C: the run is aborted (RunTrainer)
        echo(f"[{config.name}] interrupted: its workers are stopped, its checkpoints kept; MLflow run {run_id} KILLED")
        try:
            client.set_terminated(run_id, "KILLED")
        except Exception as failure:  # noqa: BLE001 - the tracking server is unreachable: a rerun reopens it all the same
            echo(f"[{config.name}] could not mark MLflow run {run_id} KILLED: {type(failure).__name__}")
        raise
    return record_result(client, config, run_id, result, error)
