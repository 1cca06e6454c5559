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

from orchestrator import cli, resources
from orchestrator.config import ExperimentConfig, list_presets, load_config, parse_overrides, scaled_schedule

DEFAULT_PRESET = "smoke"


def build_parser():
    p = cli.parser("orchestrator.train", __doc__)
    p.add_argument(
        "-p",
        "--preset",
        default=DEFAULT_PRESET,
        help=f"a preset from configs/train ({', '.join(list_presets())}) or a .yaml path",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable); recipe fields as recipe.FIELD=VALUE",
    )
    p.add_argument("--name", help="run name; rerunning a name resumes it")
    p.add_argument("--model", help="e.g. cifar_resnet20, cifar_plain56, resnet50")
    p.add_argument("--dataset", help="fashion-mnist, cifar10, cifar10-jpeg or synthetic")
    p.add_argument("--data-root", help="where the data set lives (else its environment variable)")
    p.add_argument("--recipe", help="cifar, imagenet or smoke")
    p.add_argument("--workers", type=int, help="data-parallel workers")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (see gpus_per_worker)")
    cli.add_length_args(p)
    p.add_argument(
        "--force", action="store_true", help="start the run over when its name exists with a different config"
    )
    cli.add_wait_arg(p)
    cli.add_tracking_args(p)
    return p


def config_from_args(args) -> ExperimentConfig:
    flags = {
        "name": args.name,
        "model": args.model,
        "dataset": args.dataset,
        "data_root": args.data_root,
        "recipe": args.recipe,
        "workers": args.workers,
        "tracking_uri": args.tracking_uri,
        "storage_path": args.storage_path,
        "use_gpu": True if args.gpu else None,
    }
    overrides = {k: v for k, v in flags.items() if v is not None} | parse_overrides(args.overrides)
    config = load_config(args.preset, overrides)
    if args.iterations is not None or args.epochs is not None:
        config = load_config(
            args.preset,
            overrides | {"recipe_overrides": scaled_schedule(config, iterations=args.iterations, epochs=args.epochs)},
        )
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_writable(args.json)
    config = config_from_args(args)
    from orchestrator.training import train  # Ray and MLflow load only now: --help answers at once

    summary = train(config, force=args.force, wait_s=resources.wait_seconds(args.wait_for_resources))
    if args.json:
        cli.write_json(args.json, dataclasses.asdict(summary))
    if summary.warning:
        print(f"[{config.name}] warning: {summary.warning}", file=sys.stderr)
    if summary.status != "FINISHED":
        print(f"[{config.name}] FAILED: {summary.error}", file=sys.stderr)
        return 1
    m = summary.metrics
    print(
        f"[{config.name}] finished: test top-1 error {m.get('test_top1_error', float('nan')):.2f}%, "
        f"top-5 {m.get('test_top5_error', float('nan')):.2f}% (last epoch); best checkpoint by "
        f"{summary.best_by} | MLflow run {summary.run_id}"
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
