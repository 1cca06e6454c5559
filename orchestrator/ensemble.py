"""python -m orchestrator.ensemble: train an ensemble's members, evaluate ensembles from MLflow, and
recombine stored per-image probabilities.

  train     runs a preset's members (configs/ensemble) through the ablation's Ray Tune machinery,
            each a child MLflow run of one ensemble parent run (tag orchestrator.kind=ensemble),
            then evaluates them. Rerunning the same command resumes, as for ablations.
  evaluate  picks finished training runs from MLflow (--runs, --parent or --best N), scores each on
            the test split over Ray (ImageNet: the val Parquet shards, one task per shard file and
            member; its test-time views averaged first), averages the members'
            softmax probabilities (optionally --weights) and reports top-1 / top-5 error of every
            member and of the ensemble, next to greedy forward selection. Per-image probabilities
            go to a Parquet file, logged with the metrics to an MLflow run (kind ensemble-evaluation).
  combine   recombines any subset of members from that Parquet file (or the run holding it),
            without running inference again.

Examples:
  python -m orchestrator.ensemble train                           # the smoke preset
  python -m orchestrator.ensemble train -p cifar10 --data-root ~/data
  python -m orchestrator.ensemble evaluate --parent ensemble-smoke --view flip
  python -m orchestrator.ensemble evaluate --runs ID1,ID2,ID3 --weights 2,1,1
  python -m orchestrator.ensemble evaluate --filter "tags.dataset = 'cifar10'" --best 5
  python -m orchestrator.ensemble evaluate --parent ensemble-ilsvrc2015 --view multiscale --data-root SHARDS --gpu
  python -m orchestrator.ensemble combine --from runs/ensembles/NAME/probabilities.parquet --members a,b
"""

from __future__ import annotations

import math
from pathlib import Path

from orchestrator import cli, resources
from orchestrator.config import ENSEMBLE_PRESETS, ExperimentConfig, list_presets
from orchestrator.matrix import load_scaled, matrix_overrides
from workloads import ensemble as ensemble_math

DEFAULT_PRESET = "smoke"


def parse_weights(text: str | None, count: int) -> list[float] | None:
    """``"2,1,1"`` -> [2.0, 1.0, 1.0]: one finite weight >= 0 per member, with a positive sum."""
    if text is None:
        return None
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise ValueError(f"--weights {text!r} must be comma-separated numbers") from None
    if len(weights) != count:
        raise ValueError(f"--weights gives {len(weights)} weight(s) for {count} members")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"--weights {text!r}: each must be a finite number >= 0, with a positive sum")
    return weights


def build_parser():
    p = cli.parser("orchestrator.ensemble", __doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a preset's members as one ensemble parent run, then evaluate")
    t.add_argument(
        "-p",
        "--preset",
        default=DEFAULT_PRESET,
        help=f"an ensemble from configs/ensemble ({', '.join(list_presets(ENSEMBLE_PRESETS))}) or a .yaml path",
    )
    t.add_argument("--name", help="ensemble name (default: the preset's); rerunning a name resumes it")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key in every member (repeatable); recipe.FIELD=VALUE too",
    )
    t.add_argument("--data-root", help="where the data set lives (else its environment variable)")
    t.add_argument("--max-concurrent", type=int, help="members trained at once (default: what fits)")
    cli.add_length_args(t, "every member")
    t.add_argument("--no-evaluate", action="store_true", help="train only")
    t.add_argument("--dry-run", action="store_true", help="list the members and exit")
    cli.add_wait_arg(t)
    cli.add_tracking_args(t)

    e = sub.add_parser("evaluate", help="score members chosen in MLflow and report the ensemble")
    pick = e.add_mutually_exclusive_group(required=True)
    pick.add_argument("--runs", help="comma-separated MLflow run ids of finished training runs")
    pick.add_argument("--parent", metavar="ID_OR_NAME", help="an ensemble parent run: its member runs")
    pick.add_argument(
        "--best", type=int, metavar="N", help="the N finished runs with the lowest validation top-5 error (val_split)"
    )
    e.add_argument("--experiment", default=ExperimentConfig.experiment, help="for --parent NAME and --best")
    e.add_argument("--filter", default="", help="an MLflow search filter for --best, e.g. \"tags.dataset = 'cifar10'\"")
    add_scoring_args(e)
    cli.add_wait_arg(e)
    cli.add_tracking_args(e)

    c = sub.add_parser("combine", help="recombine members from stored per-image probabilities")
    c.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="PARQUET_OR_RUN_ID",
        help="a probabilities.parquet file, or the ensemble evaluation run id that holds one",
    )
    c.add_argument("--members", help="comma-separated member names or run ids (default: all)")
    c.add_argument("--weights", help="one weight per member, comma-separated (default: equal)")
    cli.add_tracking_args(c)
    return p


def add_scoring_args(e) -> None:
    e.add_argument(
        "--view",
        default="center",
        choices=ensemble_math.VIEWS,
        help="test-time views per member, averaged (see docs/ENSEMBLE.md)",
    )
    e.add_argument("--weights", help="one weight per member in the listed order, comma-separated (default: equal)")
    e.add_argument(
        "--checkpoint",
        default="last",
        choices=("last", "best"),
        help="which checkpoint of each run (best was chosen on the test set: optimistic)",
    )
    e.add_argument(
        "--data-root",
        help="where the test data lives here (default: the members' config); for "
        "ImageNet the --out of orchestrator.prepare, holding val/",
    )
    e.add_argument(
        "--test-subset", type=int, help="test images scored, a fixed random subset (default: the members' test_subset)"
    )
    e.add_argument("--gpu", action="store_true", help="one GPU per inference task")
    e.add_argument("--cpus", type=float, default=1.0, help="CPU cores per inference task")
    e.add_argument(
        "--shards",
        type=int,
        help="tasks per member of an in-memory data set (default: one per GPU or "
        "per --cpus cores); ImageNet members take one task per val shard file",
    )
    e.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="images per forward pass (small images); ImageNet: 224x224 views per forward pass (fewer of the larger "
        "multi-scale views)",
    )
    e.add_argument("--out", type=Path, help="folder for probabilities.parquet (default: <storage>/ensembles/NAME)")


def check_scoring_args(args) -> None:
    """Refuse counts below 1 (and CPUs <= 0) before any run is read."""
    for flag, value in (
        ("--test-subset", args.test_subset),
        ("--shards", args.shards),
        ("--batch-size", args.batch_size),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if not args.cpus > 0:
        raise ValueError(f"--cpus must be > 0, got {args.cpus}")


def _client(args):
    from orchestrator import tracking

    storage = args.storage_path or ExperimentConfig.storage_path
    return tracking.connect(tracking.default_tracking_uri(args.tracking_uri, storage)), storage


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_writable(args.json)
    # Ray, Tune and MLflow load only now: --help and a mistyped flag answer at once.
    from orchestrator import tracking
    from orchestrator.ensemble_eval import combine, evaluate
    from orchestrator.ensemble_train import load_ensemble, train
    from orchestrator.members import best_runs, parent_members

    if args.command == "train":
        overrides = matrix_overrides(args)
        ablation, view = load_scaled(
            lambda o: load_ensemble(args.preset, o, name=args.name),
            overrides,
            args.iterations,
            args.epochs,
            trials=lambda loaded: loaded[0].trials,
        )
        if args.dry_run:
            for trial in ablation.trials:
                print(trial.name)
            return 0
        summary = train(
            ablation,
            view,
            evaluate_after=not args.no_evaluate,
            max_concurrent=args.max_concurrent,
            wait_s=resources.wait_seconds(args.wait_for_resources),
        )
        failed = bool(summary["failed"])
    elif args.command == "evaluate":
        check_scoring_args(args)
        client, storage = _client(args)
        if args.runs:
            runs = [tracking.get_run(client, r.strip()) for r in args.runs.split(",") if r.strip()]
        elif args.parent:
            parent = tracking.find_parent(client, args.parent, args.experiment)
            runs = parent_members(client, parent)
        else:
            if args.best < 1:
                raise ValueError(f"--best must be >= 1, got {args.best}")
            runs = best_runs(client, args.experiment, args.filter, args.best)
        summary = evaluate(
            client,
            runs,
            view=args.view,
            weights=parse_weights(args.weights, len(runs)),
            checkpoint=args.checkpoint,
            data_root=args.data_root,
            test_subset=args.test_subset,
            use_gpu=args.gpu,
            cpus=args.cpus,
            shards=args.shards,
            batch_size=args.batch_size,
            out=args.out,
            storage_path=storage,
            parent=args.parent and parent.info.run_id,
            wait_s=resources.wait_seconds(args.wait_for_resources),
        )
        failed = False
    else:
        client, _ = _client(args)
        members = [m.strip() for m in args.members.split(",")] if args.members else None
        count = len(members) if members else None
        weights = parse_weights(args.weights, count) if count else _weights_for_all(args.weights)
        summary = combine(client, args.source, members, weights)
        failed = False
    if args.json:
        cli.write_json(args.json, summary)
    return 1 if failed else 0


def _weights_for_all(text: str | None) -> list[float] | None:
    """``--weights`` without ``--members``: their count is checked against the table's members."""
    return None if text is None else parse_weights(text, len(text.split(",")))


if __name__ == "__main__":
    cli.run(main)
