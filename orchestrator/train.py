"""python -m orchestrator.train: train one model, data-parallel on Ray Train, tracked in MLflow.

A run is named (``--name``, default the preset's). Rerunning the same command with the same name
and storage resumes it from its latest checkpoint; a finished run is reported, not retrained; a
different config under the same name is refused unless ``--force`` (which starts it over).

Examples:
  python -m orchestrator.train                                  # the smoke preset, 2 CPU workers
  python -m orchestrator.train --model cifar_plain20 --iterations 800 --name plain20
  python -m orchestrator.train -p cifar10 --data-root ~/data --gpu --set workers=2
"""

from __future__ import annotations

import dataclasses
import sys

import ray

from orchestrator import cli, resources, storage, tracking
from orchestrator.config import ExperimentConfig, list_presets, load_config, parse_overrides, scaled_schedule
from orchestrator.progress import RunWatcher, epoch_line
from orchestrator.resources import DEFAULT_WAIT_MINUTES
from orchestrator.trainer import (RunSummary, check_data, discard_run_storage, fit, record_result,
                                  summary_of)

DEFAULT_PRESET = "smoke"


def build_parser():
    p = cli.parser("orchestrator.train", __doc__)
    p.add_argument("-p", "--preset", default=DEFAULT_PRESET,
                   help=f"a preset from configs/train ({', '.join(list_presets())}) or a .yaml path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable); recipe fields as recipe.FIELD=VALUE")
    p.add_argument("--name", help="run name; rerunning a name resumes it")
    p.add_argument("--model", help="e.g. cifar_resnet20, cifar_plain56, resnet50")
    p.add_argument("--dataset", help="fashion-mnist, cifar10, cifar10-jpeg or synthetic")
    p.add_argument("--data-root", help="where the data set lives (else its environment variable)")
    p.add_argument("--recipe", help="cifar, imagenet or smoke")
    p.add_argument("--workers", type=int, help="data-parallel workers")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (see gpus_per_worker)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=int, help="train this many iterations (milestones scale along)")
    length.add_argument("--epochs", type=int, help="train this many epochs, for epoch-based recipes")
    p.add_argument("--force", action="store_true",
                   help="start the run over when its name exists with a different config")
    cli.add_wait_arg(p)
    cli.add_tracking_args(p)
    return p


def config_from_args(args) -> ExperimentConfig:
    flags = {"name": args.name, "model": args.model, "dataset": args.dataset,
             "data_root": args.data_root, "recipe": args.recipe, "workers": args.workers,
             "tracking_uri": args.tracking_uri, "storage_path": args.storage_path,
             "use_gpu": True if args.gpu else None}
    overrides = {k: v for k, v in flags.items() if v is not None} | parse_overrides(args.overrides)
    config = load_config(args.preset, overrides)
    if args.iterations is not None or args.epochs is not None:
        config = load_config(args.preset, overrides | {"recipe_overrides": scaled_schedule(
            config, iterations=args.iterations, epochs=args.epochs)})
    return config


def train(config: ExperimentConfig, *, force: bool = False, wait_s: float = DEFAULT_WAIT_MINUTES * 60,
          echo=print) -> RunSummary:
    """Train ``config`` to the end (or resume it); returns the run's summary. Nothing is written to
    MLflow before Ray is known to hold the run's workers (``resources.ensure``)."""
    storage.check(config.storage_path, "--storage-path")
    check_data(config)
    uri = config.resolved_tracking_uri()
    run = tracking.lookup(uri, config.experiment, [config.name])[config.name]
    retire = run is not None and run.data.tags.get(tracking.CONFIG_HASH) != config.hash()
    if retire and not force:
        raise ValueError(f"run {config.name!r} exists with another config (MLflow run "
                         f"{run.info.run_id}); pick another --name, or --force to start it over")
    if run is not None and not retire and run.info.status == "FINISHED":
        echo(f"[{config.name}] already finished (MLflow run {run.info.run_id}); nothing to do")
        return summary_of(tracking.connect(uri), run, config)

    own_ray = not ray.is_initialized() and cli.private_ray()  # ours to restart if a Ray process dies
    cli.init_ray()
    resources.ensure([resources.run_demand(config, f"run {config.name}")], private=cli.private_ray(),
                     wait_s=wait_s, echo=echo, who=config.name)
    client = tracking.connect(uri)
    experiment_id = tracking.ensure_experiment(client, config.experiment)
    if retire:
        tracking.retire_run(client, run)
        discard_run_storage(config)
    run, created = tracking.get_or_create_run(
        client, experiment_id, config.name, run_name=config.name, tags=run_tags(config))
    run_id = run.info.run_id
    if created:
        tracking.log_params(client, run_id, config.to_dict())
    else:
        tracking.reopen(client, run_id)
    echo(f"[{config.name}] {'starting' if created else 'resuming'} MLflow run {run_id} "
         f"({config.model} on {config.dataset}, {config.workers} worker(s))")
    with RunWatcher(uri, {config.name: run_id},
                    lambda label, m, eta: echo(epoch_line(label, m, eta))), \
            resources.PendingWatch(echo, config.name):
        result, error = fit(config, run_id, uri, echo=echo, wait_s=wait_s,
                            restart_ray=cli.restart_ray if own_ray else None)
    return record_result(client, config, run_id, result, error)


def run_tags(config: ExperimentConfig) -> dict:
    from workloads.models import parse_model_name

    spec = parse_model_name(config.model)
    return {tracking.CONFIG_HASH: config.hash(), "model": config.model, "depth": spec.depth,
            "residual": spec.residual, "shortcut": config.shortcut or spec.default_shortcut,
            "dataset": config.dataset, "recipe": config.recipe, "git_commit": tracking.git_commit()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_writable(args.json)
    config = config_from_args(args)
    summary = train(config, force=args.force, wait_s=resources.wait_seconds(args.wait_for_resources))
    if args.json:
        cli.write_json(args.json, dataclasses.asdict(summary))
    if summary.warning:
        print(f"[{config.name}] warning: {summary.warning}", file=sys.stderr)
    if summary.status != "FINISHED":
        print(f"[{config.name}] FAILED: {summary.error}", file=sys.stderr)
        return 1
    m = summary.metrics
    print(f"[{config.name}] finished: test top-1 error {m.get('test_top1_error', float('nan')):.2f}%, "
          f"top-5 {m.get('test_top5_error', float('nan')):.2f}% | MLflow run {summary.run_id}")
    return 0


if __name__ == "__main__":
    cli.run(main)
