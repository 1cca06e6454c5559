"""An ablation on Ray Tune: each trial a Ray Train run (or a pack of runs), each run a child MLflow run
of the ablation's parent run, then the results table. ``python -m orchestrator.ablate`` and
``ensemble train`` run it; rerunning the same ablation resumes it.

A trial whose paper table was measured with another test view than the training loop's (ImageNet
Tables 2/3: 10-crop) has its last checkpoint scored with that view when it has trained, by its
trial function (Ray tasks, one per val shard file: ``inference.score_shards``), logged on its run
as ``test_<view>_top1_error`` / ``test_<view>_top5_error``. After the matrix the driver scores the
finished trials still without it (``score_table_views``), so a rerun completes them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path

from mlflow.exceptions import MlflowException
from ray import tune
from ray.exceptions import RayError
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator import cli, packing, resources, storage, tracking
from orchestrator.build import run_recipe
from orchestrator.config import ExperimentConfig
from orchestrator.data import sharded_test_split
from orchestrator.inference import score_shards
from orchestrator.matrix import Ablation, Trial
from orchestrator.members import load_members
from orchestrator.parity import TABLE_VIEWS
from orchestrator.progress import RunWatcher, epoch_line
from orchestrator.resources import DEFAULT_WAIT_MINUTES, Demand
from orchestrator.results import degradation_findings, format_table, results_table, save_table
from orchestrator.tracking.schema import TRAINING_VIEW, view_metric
from orchestrator.trainer import check_data, fit, record_result
from workloads import ensemble as ensemble_math
from workloads.analysis.paper import paper_result
from workloads.data import dataset_spec
from workloads.engine import Recipe
from workloads.models import parse_model_name

# Trial functions (and so the Ray Train controllers they start, which Ray attaches to their node)
# run on the head node, which Ray marks with this resource: a worker node that dies then takes only
# Train workers with it, which Ray Train restarts elsewhere, instead of the trial itself and the
# placement groups it held. They hold no CPU: a trial function only waits on its TorchTrainer, and
# the head of a cluster built as Ray advises (cluster/: `--num-cpus=0`) has none to give. Ray pins
# its own Train state actor to the head the same way.
HEAD_NODE = "node:__internal_head__"
TRIAL_DRIVER = {"CPU": 0, HEAD_NODE: 0.001}


def place_trials(ablation: Ablation) -> list[Trial]:
    """Every trial's runs share the ablation's tracking URI and live under <storage>/<ablation>/."""
    placed = []
    for trial in ablation.trials:
        config = trial.config
        config = dataclasses.replace(
            config,
            tracking_uri=config.resolved_tracking_uri(),
            storage_path=storage.joined(config.storage_path, ablation.name),
        )
        placed.append(dataclasses.replace(trial, config=config))
    return placed


def run_trial(trial_config: dict) -> None:
    """Tune's function trainable: one trial = one Ray Train run, closed in MLflow at the end."""
    spec, wait_s = trial_config["spec"], trial_config["wait_s"]
    if "members" in spec:
        return run_pack(spec, wait_s)
    config = ExperimentConfig(**spec["config"])
    client = tracking.MlflowClient(tracking_uri=config.tracking_uri)
    tracking.reopen(client, spec["run_id"])  # a rerun of a failed trial starts with a clean record
    # No restart_ray: the trial runs inside the ablation's Ray; a failed trial is rerun on resume.
    recipe = Recipe(**spec["recipe"])  # resolved by the driver, which logged it on the run
    result, error = fit(
        config, spec["run_id"], config.tracking_uri, recipe, callbacks=[TuneReportCallback()], wait_s=wait_s
    )
    summary = record_result(client, config, spec["run_id"], result, error)
    if summary.status != "FINISHED":
        raise RuntimeError(f"trial {config.name} failed: {summary.error}")
    if spec.get("view"):
        # The view the trial's paper table needs, scored now, while other trials still train. A
        # failure here leaves the trained run as it is: the driver's pass after the matrix
        # (score_table_views) scores it again and prints the error, or reruns do.
        try:
            score_view(client, config, [client.get_run(spec["run_id"])], spec["view"])
        except (ValueError, RuntimeError, OSError, RayError, MlflowException):
            pass


def run_pack(spec: dict, wait_s: float) -> None:
    """A packed trial: one Ray Train run training every member (``orchestrator/packing.py``), then
    each member's MLflow run closed from its part of the result."""
    configs = [ExperimentConfig(**member["config"]) for member in spec["members"]]
    client = tracking.MlflowClient(tracking_uri=configs[0].tracking_uri)
    for member in spec["members"]:
        tracking.reopen(client, member["run_id"])
    loop = (packing.train_pack_worker, {"members": spec["members"], "tracking_uri": configs[0].tracking_uri})
    result, error = fit(
        dataclasses.replace(configs[0], name=spec["name"]),
        None,
        configs[0].tracking_uri,
        None,  # each member's recipe travels in its spec
        callbacks=[TuneReportCallback()],
        loop=loop,
        wait_s=wait_s,
    )
    failed = []
    for config, member in zip(configs, spec["members"]):
        summary = record_result(client, config, member["run_id"], packing.member_result(result, config.name), error)
        if summary.status != "FINISHED":
            failed.append(f"{config.name}: {summary.error}")
    if failed:
        raise RuntimeError(f"packed trial {spec['name']} failed: {'; '.join(failed)}")


def trial_specs(
    ablation: Ablation, trials: list[Trial], children: dict, recipes: dict, pending: list[Trial]
) -> list[dict]:
    """Tune's grid: one spec per pending trial, or with ``ablation.pack`` > 1 one per pack of them.
    ``recipes``: each trial's ``run_recipe``, resolved once by the driver.
    Packs are cut from the whole matrix in order, so a rerun puts the same pending runs together
    again (and resumes their Ray Train run, named by its members)."""

    def run_spec(trial):
        return {
            "name": trial.name,
            "config": trial.config.to_dict(),
            "recipe": recipes[trial.name].to_dict(),
            "run_id": children[trial.name].info.run_id,
        }

    if ablation.pack == 1:
        return [run_spec(t) for t in pending]
    waiting = {t.name for t in pending}
    specs = []
    for indices in packing.group([t.config for t in trials], ablation.pack):
        members = [run_spec(trials[i]) for i in indices if trials[i].name in waiting]
        if members:
            specs.append({"name": packing.pack_name(ablation.name, [m["name"] for m in members]), "members": members})
    return specs


def quiet_tune() -> None:
    """Tune's own tables and trial tracebacks off: the driver prints progress and the results
    table, and each failed trial's error is on its MLflow run and in the table."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    for name in ("ray.tune", "ray.air", "ray.train"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def trials_at_once(
    demands: list[Demand], requested: int | None, *, private: bool, wait_s: float, echo, who: str
) -> int:
    """How many trials run at once: ``requested``, else as many as the nodes hold side by side (on an
    autoscaling cluster, as many as its largest size holds: trials beyond the current nodes wait for
    their worker groups, and those waiting placement groups are what the autoscaler scales up for).

    Tune itself would start every trial at once, since each asks for only a sliver of the head;
    their TorchTrainers would then queue for workers. A demand no node holds is refused or waited
    for first (``resources.ensure``)."""
    resources.ensure(demands, private=private, wait_s=wait_s, echo=echo, who=who)
    if requested:
        return requested
    nodes = resources.node_capacities()
    ceiling = None if private else resources.autoscaler_ceiling()
    if ceiling is not None:
        nodes = [ceiling]  # its node types' sum: an upper bound, the placement groups do the rest
    return max(1, min(resources.copies_that_fit(d, nodes) for d in demands))


def ablate(
    ablation: Ablation,
    *,
    max_concurrent: int | None = None,
    wait_s: float = DEFAULT_WAIT_MINUTES * 60,
    echo=print,
    kind: str = tracking.ABLATION,
) -> dict:
    """Run (or resume) every trial of ``ablation``; returns the summary written by ``--json``.
    ``kind`` tags the parent run (``tracking.KIND``), e.g. ``tracking.ENSEMBLE`` for ``ensemble train``.
    Nothing is written to MLflow before Ray is known to hold a trial (``trials_at_once``)."""
    started = time.time()
    requested = max_concurrent if max_concurrent is not None else ablation.max_concurrent
    if requested is not None and requested < 1:
        raise ValueError(
            f"max_concurrent must be >= 1 trial at a time, got {requested} (leave it out to fit the cluster)"
        )
    trials = place_trials(ablation)
    packing.check_packable([t.config for t in trials], ablation.pack)
    first = trials[0].config
    storage.check(first.storage_path, "--storage-path")
    shapes = {
        t.config.dataset: check_data(t.config)
        for t in {(t.config.dataset, t.config.data_root): t for t in trials}.values()
    }
    recipes = {t.name: run_recipe(t.config) for t in trials}
    found = tracking.lookup(first.tracking_uri, first.experiment, [child_key(ablation, t) for t in trials])
    earlier = {t.name: found[child_key(ablation, t)] for t in trials}  # child runs of an earlier attempt
    for trial in trials:
        check_child(earlier[trial.name], ablation, trial)
    pending = [t for t in trials if earlier[t.name] is None or earlier[t.name].info.status != "FINISHED"]
    workers_at_once = 0
    if pending:
        cli.init_ray()
        demands = {
            (d.count, tuple(sorted(d.bundle.items()))): d
            for d in (resources.run_demand(t.config, f"trial {t.name}") for t in pending)
        }
        workers_at_once = trials_at_once(
            list(demands.values()), requested, private=cli.private_ray(), wait_s=wait_s, echo=echo, who=ablation.name
        )
    client = tracking.connect(first.tracking_uri)
    experiment_id = tracking.ensure_experiment(client, first.experiment)
    parent, _ = tracking.get_or_create_run(
        client, experiment_id, ablation.name, run_name=ablation.name, tags={tracking.KIND: kind}
    )
    parent_id = parent.info.run_id
    children = {
        trial.name: child_run(client, experiment_id, parent_id, ablation, trial, recipes[trial.name])
        for trial in trials
    }
    echo(
        f"[{ablation.name}] {len(trials)} trials: {len(trials) - len(pending)} finished, "
        f"{len(pending)} to run | MLflow parent run {parent_id} at {first.tracking_uri}"
    )
    if pending:
        client.update_run(parent_id, status="RUNNING")
        specs = trial_specs(ablation, trials, children, recipes, pending)
        if kind == tracking.ABLATION:  # ensemble members are scored by ensemble evaluate instead
            views = {t.name: table_view(t.config) for t in pending if dataset_spec(t.config.dataset).sharded}
            for spec in specs:
                spec["view"] = views.get(spec["name"])
        workers_at_once = min(workers_at_once, len(specs))  # a pack is one trial
        if ablation.pack > 1:
            echo(f"[{ablation.name}] {len(pending)} runs packed into {len(specs)} trial(s) of up to {ablation.pack}")
        echo(f"[{ablation.name}] running {workers_at_once} trial(s) at a time")
        quiet_tune()
        tuner = tune.Tuner(
            tune.with_resources(run_trial, TRIAL_DRIVER),
            param_space={"spec": tune.grid_search(specs), "wait_s": wait_s},
            tune_config=tune.TuneConfig(max_concurrent_trials=workers_at_once),
            run_config=tune.RunConfig(
                name=f"{ablation.name}-tune", storage_path=first.storage_path, verbose=0, callbacks=[TrialEvents(echo)]
            ),
        )
        watch = {t.name: children[t.name].info.run_id for t in pending}
        with (
            RunWatcher(first.tracking_uri, watch, lambda label, m, eta: echo(epoch_line(label, m, eta)), on_event=echo),
            resources.PendingWatch(echo, ablation.name),
        ):
            tuner.fit()

    if kind == tracking.ABLATION:
        score_table_views(client, trials, children, wait_s=wait_s, echo=echo)
    rows = results_table(client, trials, children, shapes)
    paths = save_table(rows, results_folder(first.storage_path, ablation.name))
    for path in paths.values():
        client.log_artifact(parent_id, str(path), tracking.RESULTS_FOLDER)
    failed = [row["trial"] for row in rows if row["status"] != "FINISHED"]
    tracking.log_metrics(
        client,
        parent_id,
        {"trials": len(rows), "trials_failed": len(failed), "wall_seconds": time.time() - started},
        step=0,
    )
    tracking.finish(client, parent_id, ok=not failed, error=f"failed trials: {', '.join(failed)}" if failed else None)
    echo(format_table(rows))
    for row in rows:
        if row["status"] != "FINISHED":
            echo(f"[{row['trial']}] {row['status']}: {row['error'] or 'no error recorded'}")
    for line in degradation_findings(rows):
        echo(line)
    return {
        "name": ablation.name,
        "parent_run_id": parent_id,
        "tracking_uri": first.tracking_uri,
        "storage_path": first.storage_path,
        "results": {k: str(v) for k, v in paths.items()},
        "trials_at_once": workers_at_once,
        "failed": failed,
        "trials": rows,
    }


def table_view(config: ExperimentConfig) -> str | None:
    """The view the paper's table for this trial was measured with, where it is not the training
    loop's own (ImageNet nets of Tables 2/3: ``10crop``); None where the loop's view is the table's
    (CIFAR-10, Table 6) or the paper has no number (Fashion-MNIST, nets outside its tables)."""
    spec = parse_model_name(config.model)
    shortcut = (config.shortcut or spec.default_shortcut) if spec.residual else None
    paper = paper_result(config.dataset, config.model, shortcut)
    view = TABLE_VIEWS.get(paper.table) if paper else None
    return None if view == TRAINING_VIEW else view


def score_table_views(client, trials: list[Trial], children: dict, *, wait_s: float, echo) -> None:
    """The driver's pass after the matrix: every finished trial that still lacks its table's view
    (``table_view``; scored in its trial as a rule, see ``run_trial``, but not by an earlier version
    or when that failed) is scored now, and its errors logged and printed."""
    groups: dict[tuple, list] = {}
    for trial in trials:
        view = table_view(trial.config)
        if view is None or not dataset_spec(trial.config.dataset).sharded:
            continue  # the tables with other views are ImageNet's, whose data are shards
        run = client.get_run(children[trial.name].info.run_id)
        if run.info.status == "FINISHED" and view_metric(view, "top1_error") not in run.data.metrics:
            config = trial.config
            key = (view, config.data_root, config.test_subset, config.use_gpu, config.cpus_per_worker)
            groups.setdefault(key, []).append((trial, run))
    for (view, _, _, use_gpu, cpus), group in groups.items():
        echo(f"[ablate] scoring {', '.join(t.name for t, _ in group)} with view {view} on the val shards")
        cli.init_ray()
        task = {"CPU": cpus, "GPU": 1.0} if use_gpu else {"CPU": cpus}
        resources.ensure(
            [Demand("a scoring task", 1, task)], private=cli.private_ray(), wait_s=wait_s, echo=echo, who="ablate"
        )
        found = score_view(client, group[0][0].config, [run for _, run in group], view)
        for (trial, _), errors in zip(group, found):
            echo(
                f"[{trial.name}] {view}: top-1 {errors['top1_error']:.2f}%, top-5 {errors['top5_error']:.2f}% "
                f"on {errors['images']} val images"
            )


def score_view(client, config: ExperimentConfig, runs: list, view: str) -> list[dict]:
    """Score the last checkpoints of ``runs`` (finished training runs on ``config``'s data) with
    ``view`` over its val shards (``test_subset`` applied), as Ray tasks with ``config``'s
    ``use_gpu`` and ``cpus_per_worker`` (``inference.score_shards``, a batch of rows at a time on
    the task's device); log ``test_<view>_top1_error``, ``test_<view>_top5_error`` and
    ``test_<view>_images`` on each run. Returns each run's errors and image count."""
    split = sharded_test_split(config)
    with tempfile.TemporaryDirectory(prefix="ablate-views-") as folder:
        members = load_members(client, runs, "last", Path(folder), None)
    probabilities = score_shards(members, split, view, use_gpu=config.use_gpu, cpus=config.cpus_per_worker)
    found = []
    for run, member in zip(runs, members):
        errors = ensemble_math.errors(probabilities[member.name], split.labels) | {"images": len(split.labels)}
        tracking.log_metrics(client, run.info.run_id, {view_metric(view, k): v for k, v in errors.items()}, step=0)
        found.append(errors)
    return found


def child_key(ablation: Ablation, trial: Trial) -> str:
    return f"{ablation.name}/{trial.name}"


def check_child(run, ablation: Ablation, trial: Trial) -> None:
    """Refuse a trial whose child run (from an earlier attempt) holds another config."""
    if run is not None and run.data.tags.get(tracking.CONFIG_HASH) != trial.config.hash():
        raise ValueError(
            f"trial {trial.name} of ablation {ablation.name!r} exists with another config "
            f"(MLflow run {run.info.run_id}); rerun under another --name"
        )


def child_run(client, experiment_id: str, parent_id: str, ablation: Ablation, trial: Trial, recipe: Recipe):
    """The trial's child run, created once (``check_child`` checked an existing one's config), with
    its config and resolved ``recipe`` as params."""
    run, created = tracking.get_or_create_run(
        client,
        experiment_id,
        child_key(ablation, trial),
        run_name=trial.name,
        tags=tracking.training_tags(trial.config) | {tracking.ABLATION_NAME: ablation.name},
        parent_run_id=parent_id,
    )
    if created:
        tracking.log_params(client, run.info.run_id, tracking.training_params(trial.config, recipe))
    return run


def results_folder(storage_path: str, name: str) -> Path:
    """Where the results table goes: the ablation's storage folder, or, for remote storage
    (s3://...), a local temporary folder: the table's lasting copy is the MLflow artifact."""
    if storage.is_remote(storage_path):
        return Path(tempfile.mkdtemp(prefix=f"{name}-results-"))
    return Path(storage_path)


class TrialEvents(tune.Callback):
    """Prints each trial's start, end and failure."""

    def __init__(self, echo):
        self.echo = echo

    def on_trial_start(self, iteration, trials, trial, **info):
        self.echo(f"[{_name(trial)}] started")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.echo(f"[{_name(trial)}] finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.echo(f"[{_name(trial)}] FAILED (its error is on its MLflow run)")


def _name(trial) -> str:
    return trial.config["spec"]["name"]
