"""python -m orchestrator.compare: a report comparing training runs with the paper, from MLflow only.

Selects training runs from any tracking URI (a sqlite file or an `mlflow server`) by experiment,
by parent run (an ablation or an ensemble: its child runs) and/or by an MLflow filter string, and
writes one folder:

  report.html    self-contained: a summary (does training error rise with depth for plain nets and
                 fall for residual nets, as in the paper; measured minus the paper's numbers), then
                 the figures (base64 PNG) and the full tables
  screenshot.png that page as headless Chromium shows it 1280 px wide (where `chromium` is installed)
  runs.*         one row per run: final training error, test top-1/top-5 error
  parity.*       one row per cell (model x shortcut x data set x recipe x test view): the measured
                 test error, mean ± std over seeds, beside the paper's number (Tables 2, 3, 4, 6) and
                 the difference; the training loop's view, and each member of the ensemble
                 evaluations of these runs with the evaluation's view (10-crop, multi-scale...);
                 then one row per evaluated ensemble, beside Table 5
  curves.*       Figs. 1/4/6: training error (thin, dashed) and test error (bold) against iterations,
                 plain nets and residual nets side by side; the points are the runs' logged metrics
  fig7.*         Fig. 7: the std of each 3x3 layer's response (after BN, before the addition and
                 the ReLU), computed from each run's last checkpoint on a batch of test images
(* = .csv and .parquet, plus .png for figures). The same files are logged as artifacts of a
"report" MLflow run (tag orchestrator.kind=report) in the runs' experiment; rerunning the same
selection reuses that run. The folder is written whole or not at all.

Examples:
  python -m orchestrator.compare --parent smoke                 # the smoke ablation's trials
  python -m orchestrator.compare --parent 9e3b6969... --out reports/smoke --json smoke.json
  python -m orchestrator.compare --experiment resnet-orchestrator \\
      --filter "params.dataset = 'cifar10' and attributes.status = 'FINISHED'"
  python -m orchestrator.compare --tracking-uri http://mlflow:5000 --parent cifar10-table6 \\
      --data-root ~/data/cifar10            # where this machine keeps the runs' test images
  python -m orchestrator.compare --parent smoke --no-fig7       # curves and tables only
"""

from __future__ import annotations

from pathlib import Path

from orchestrator import cli
from orchestrator.config import ExperimentConfig
from workloads.analysis.responses import FIG7_IMAGES


def build_parser():
    p = cli.parser("orchestrator.compare", __doc__)
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./runs/mlflow.db)"
    )
    p.add_argument(
        "--experiment", help=f"experiment name or id (default: the parent's, else {ExperimentConfig.experiment!r})"
    )
    p.add_argument(
        "--parent",
        metavar="RUN_ID_OR_NAME",
        help="compare the child runs of this run (an ablation or an ensemble), by run id or run name",
    )
    p.add_argument(
        "--filter",
        dest="filter_string",
        metavar="FILTER",
        help="an MLflow search filter, e.g. \"params.seed = '0'\" (ANDed with --parent)",
    )
    p.add_argument(
        "--out", type=Path, help="report folder, replaced whole (default: reports/<parent or experiment name>)"
    )
    p.add_argument("--json", metavar="PATH", type=Path, help="write a machine-readable summary to PATH")
    p.add_argument(
        "--no-fig7",
        dest="fig7",
        action="store_false",
        help="skip Fig. 7 (needs each run's checkpoint and its test images)",
    )
    p.add_argument(
        "--fig7-images", type=int, default=FIG7_IMAGES, help=f"test images per Fig. 7 analysis (default {FIG7_IMAGES})"
    )
    p.add_argument(
        "--data-root", help="where this machine keeps the runs' data set (default: each run's own data_root)"
    )
    return p


def resolve_tracking_uri(uri: str | None) -> str:
    """``uri``, else $MLFLOW_TRACKING_URI, else ./runs/mlflow.db; a sqlite file must exist (reading
    a report must not create an empty database)."""
    from orchestrator.tracking import default_tracking_uri

    uri = default_tracking_uri(uri, ExperimentConfig.storage_path)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise FileNotFoundError(
            f"no MLflow database at {uri.removeprefix('sqlite:///')} (tracking URI {uri}); pass --tracking-uri"
        )
    return uri


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_writable(args.json)
    if args.fig7_images < 1:
        raise ValueError(f"--fig7-images must be >= 1, got {args.fig7_images}")
    # MLflow and the analyses load only now: --help and a mistyped flag answer at once.
    from orchestrator import tracking
    from orchestrator.comparison import check_out, compare, select_runs

    if args.out is not None:
        check_out(args.out)
    uri = resolve_tracking_uri(args.tracking_uri)
    client = tracking.connect(uri)
    selection = select_runs(client, experiment=args.experiment, parent=args.parent, filter_string=args.filter_string)
    label = selection["parent"].info.run_name if selection["parent"] else selection["experiment"].name
    summary = compare(
        client,
        uri,
        selection,
        args.out or Path("reports") / label,
        fig7=args.fig7,
        fig7_images=args.fig7_images,
        data_root=args.data_root,
    )
    if args.json:
        cli.write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    cli.run(main)
