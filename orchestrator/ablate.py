"""python -m orchestrator.ablate: the paper's depth x shortcut x plain/residual matrix on Ray Tune.

Each cell of the matrix is a trial: a full Ray Train run (a Tune function trainable that builds
and fits a TorchTrainer), recorded as a child MLflow run under one parent run per ablation. With
no arguments it runs the `smoke` preset: plain and residual nets of 8 and 32 layers on a
Fashion-MNIST subset, about 10 minutes on a 2-core laptop, on a private local Ray and a local
MLflow (sqlite:///./runs/mlflow.db).

Rerunning the same command (same name and storage) resumes: finished trials are skipped,
unfinished ones resume from their latest checkpoint, and no MLflow run is duplicated.

Examples:
  python -m orchestrator.ablate                                   # the smoke matrix
  python -m orchestrator.ablate -p cifar10-table6 --data-root ~/data
  python -m orchestrator.ablate -p cifar10-table6 --axis depth=[20,56,110,1202]
  ray job submit --working-dir . -- python -m orchestrator.ablate -p smoke --set workers=2
"""

from __future__ import annotations

import dataclasses

from orchestrator import cli, resources
from orchestrator.config import parse_overrides
from orchestrator.matrix import Ablation, list_ablations, load_ablation, load_scaled, matrix_overrides

DEFAULT_PRESET = "smoke"


def build_parser():
    p = cli.parser("orchestrator.ablate", __doc__)
    p.add_argument(
        "-p",
        "--preset",
        default=DEFAULT_PRESET,
        help=f"an ablation from configs/ablate ({', '.join(list_ablations())}) or a .yaml path",
    )
    p.add_argument("--name", help="ablation name (default: the preset's); rerunning a name resumes it")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key in every trial (repeatable); recipe.FIELD=VALUE too",
    )
    p.add_argument(
        "--axis",
        action="append",
        default=[],
        metavar="KEY=[V1,V2]",
        help="replace one matrix axis, e.g. depth=[20,56] or seed=[0,1,2]",
    )
    p.add_argument("--data-root", help="where the data set lives (else its environment variable)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: what fits the cluster)")
    p.add_argument(
        "--pack",
        type=int,
        metavar="N",
        help="train up to N engine=fast runs together in one worker, each on its own CUDA stream "
        "(default: the preset's pack, else 1); e.g. --pack 10 for Table 6 on one GPU",
    )
    cli.add_length_args(p, "every trial")
    p.add_argument("--dry-run", action="store_true", help="list the trials and exit")
    cli.add_wait_arg(p)
    cli.add_tracking_args(p)
    return p


def ablation_from_args(args) -> Ablation:
    axes = parse_overrides(args.axis)
    ablation = load_scaled(
        lambda overrides: load_ablation(args.preset, overrides, name=args.name, axes=axes),
        matrix_overrides(args),
        args.iterations,
        args.epochs,
    )
    return ablation if args.pack is None else dataclasses.replace(ablation, pack=args.pack)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_writable(args.json)
    ablation = ablation_from_args(args)
    # Ray, Tune and MLflow load only now: --help and a mistyped flag answer at once.
    from orchestrator import packing
    from orchestrator.ablation import ablate

    if args.dry_run:
        configs = [t.config for t in ablation.trials]
        packing.check_packable(configs, ablation.pack)
        if ablation.pack == 1:
            print("\n".join(t.name for t in ablation.trials))
        else:
            for indices in packing.group(configs, ablation.pack):
                print(f"pack of {len(indices)}:\n" + "\n".join(f"  {ablation.trials[i].name}" for i in indices))
        return 0
    summary = ablate(
        ablation, max_concurrent=args.max_concurrent, wait_s=resources.wait_seconds(args.wait_for_resources)
    )
    if args.json:
        cli.write_json(args.json, summary)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    cli.run(main)
