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

import dataclasses
import math
import re
import tempfile
from pathlib import Path

import torch
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from orchestrator import cli, resources, storage, tracking
from orchestrator.ablate import ablate, place_trials
from orchestrator.config import CONFIG_DIR, SHARDED_DATASETS, ExperimentConfig, parse_overrides, preset_path, read_yaml
from orchestrator.inference import Member, score_members, score_shards
from orchestrator.resources import DEFAULT_WAIT_MINUTES, Demand
from orchestrator.matrix import Ablation, expand
from orchestrator.data import IMAGENET_MEAN, IMAGENET_SIZE, load_split, sharded_test_split
from orchestrator.worker import CHECKPOINT_FILE
from workloads import ensemble as ensemble_math
from workloads.data import per_pixel_mean
from workloads.engine import config_hash, load_checkpoint

ENSEMBLE_PRESETS = CONFIG_DIR / "ensemble"
DEFAULT_PRESET = "smoke"
TOP_KEYS = ("name", "description", "base", "members", "view", "max_concurrent")
KIND = "orchestrator.kind"
PARQUET_ARTIFACT = "ensemble/probabilities.parquet"
VALIDATION_NOTE = ("no validation split: greedy selection picks on a seeded random half of the test "
                   "split ('val') and is reported on the other half ('holdout')")


# ---- presets and training ------------------------------------------------------------------------

def list_presets() -> list[str]:
    return sorted(p.stem for p in ENSEMBLE_PRESETS.glob("*.yaml"))


def load_ensemble(preset: str, overrides: dict | None = None, name: str | None = None) -> tuple[Ablation, str]:
    """An ensemble preset as an ``Ablation`` (one trial per member) and its test-time view."""
    spec = read_yaml(preset_path(preset, ENSEMBLE_PRESETS))
    unknown = sorted(set(spec) - set(TOP_KEYS))
    if unknown:
        raise ValueError(f"{preset}: unknown ensemble key(s) {', '.join(unknown)}; valid: {', '.join(TOP_KEYS)}")
    members = spec.get("members")
    if not isinstance(members, list) or not members:
        raise ValueError(f"{preset}: 'members' must be a non-empty list of member mappings")
    # Members are the ablation's `include` cells: no matrix, one trial each.
    ablation = expand({k: spec.get(k) for k in ("name", "base", "max_concurrent", "description")}
                      | {"include": members}, overrides or {}, name=name)
    if len(ablation.trials) != len(members):
        raise ValueError(f"{preset}: two members give the same run; give them different seeds")
    view = spec.get("view", "center")
    if view not in ensemble_math.VIEWS:
        raise ValueError(f"{preset}: unknown view {view!r}; valid: {', '.join(ensemble_math.VIEWS)}")
    return ablation, view


def train(ablation: Ablation, view: str, *, evaluate_after: bool = True, max_concurrent: int | None = None,
          wait_s: float = DEFAULT_WAIT_MINUTES * 60, echo=print) -> dict:
    """Train (or resume) every member as a child run of one ensemble parent, then evaluate them."""
    first = place_trials(ablation)[0].config
    taken = tracking.lookup(first.tracking_uri, first.experiment, [ablation.name])[ablation.name]
    if taken is not None and taken.data.tags.get(KIND) != "ensemble":
        raise ValueError(f"name {ablation.name!r} is taken by a {taken.data.tags.get(KIND, 'training')} run "
                         f"({taken.info.run_id}); pick another --name")
    summary = ablate(ablation, max_concurrent=max_concurrent, wait_s=wait_s, echo=echo, kind="ensemble")
    if evaluate_after and not summary["failed"]:
        client = tracking.connect(first.tracking_uri)
        runs = parent_members(client, client.get_run(summary["parent_run_id"]))
        summary["evaluation"] = evaluate(client, runs, view=view, use_gpu=first.use_gpu,
                                         storage_path=first.storage_path, parent=summary["parent_run_id"],
                                         wait_s=wait_s, echo=echo)
    return summary


# ---- choosing members in MLflow ------------------------------------------------------------------

def get_run(client, run_id: str):
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"unknown MLflow run id {run_id!r} at {client.tracking_uri}") from None


def find_parent(client, experiment: str, id_or_name: str):
    """An ensemble parent run by run id, else by name (its run key) in ``experiment``."""
    if re.fullmatch(r"[0-9a-f]{32}", id_or_name):
        return get_run(client, id_or_name)
    found = client.get_experiment_by_name(experiment)
    run = tracking.find_run(client, found.experiment_id, id_or_name) if found else None
    if run is None:
        raise ValueError(f"no ensemble parent run named {id_or_name!r} in experiment {experiment!r}")
    return run


def parent_members(client, parent) -> list:
    """The training runs under an ensemble (or ablation) parent, sorted by run name."""
    if parent.data.tags.get(KIND) not in ("ensemble", "ablation"):
        raise ValueError(f"run {parent.info.run_id} is not an ensemble parent run ({KIND} is "
                         f"{parent.data.tags.get(KIND)!r})")
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'", max_results=1000)
    if not children:
        raise ValueError(f"ensemble parent run {parent.info.run_id} has no member runs")
    return sorted(children, key=lambda r: r.info.run_name)


def best_runs(client, experiment: str, filter_string: str, best: int) -> list:
    """The ``best`` finished training runs of ``experiment`` matching ``filter_string``, lowest
    final test top-5 error first (then top-1)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"unknown MLflow experiment {experiment!r}")
    query = "attributes.status = 'FINISHED' and metrics.test_top5_error >= 0"
    try:
        runs = client.search_runs([found.experiment_id], f"{query} and {filter_string}" if filter_string else query,
                                  order_by=["metrics.test_top5_error ASC", "metrics.test_top1_error ASC"],
                                  max_results=best)
    except MlflowException as error:
        raise ValueError(f"bad --filter {filter_string!r}: {str(error).splitlines()[0]}") from None
    if len(runs) < best:
        raise ValueError(f"--best {best}: only {len(runs)} finished run(s) match in experiment {experiment!r}")
    return runs


def check_runs(runs: list) -> None:
    """Refuse duplicates, unfinished or failed runs, and members of different data sets."""
    ids = [r.info.run_id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"a run is listed twice: {', '.join(ids)}")
    for run in runs:
        if run.info.status != "FINISHED":
            raise ValueError(f"run {run_name(run)} ({run.info.run_id}) is {run.info.status}, not FINISHED; "
                             "only finished training runs can be ensemble members")
    datasets = {run_name(r): r.data.tags.get("dataset") for r in runs}
    if len(set(datasets.values())) > 1:
        raise ValueError(f"members were trained on different data sets: {datasets}")


def run_name(run) -> str:
    return run.data.tags.get(MLFLOW_RUN_NAME) or run.info.run_name or run.info.run_id


def download_checkpoint(client, run, label: str, folder: Path) -> dict:
    """The run's ``checkpoints/<label>/state.pt``, downloaded into ``folder`` and loaded."""
    artifact = f"checkpoints/{label}/{CHECKPOINT_FILE}"
    target = folder / run.info.run_id
    target.mkdir(parents=True)
    try:
        local = Path(client.download_artifacts(run.info.run_id, artifact, str(target))).resolve()
    except (MlflowException, OSError):
        raise ValueError(f"run {run_name(run)} ({run.info.run_id}) has no checkpoint {artifact}") from None
    if not local.is_relative_to(target.resolve()):  # an artifact store must not write elsewhere
        raise ValueError(f"run {run_name(run)}: artifact {artifact} resolved outside {target}")
    try:
        return load_checkpoint(local)
    except ValueError as error:
        raise ValueError(f"run {run_name(run)} ({run.info.run_id}): checkpoint {artifact} is unusable: "
                         f"{str(error).splitlines()[0]}") from None


def load_members(client, runs: list, label: str, folder: Path, data_root: str | None) -> list[Member]:
    """Every run's checkpoint as a ``Member``: the model, its config and its training mean."""
    names = [run_name(r) for r in runs]
    means: dict = {}
    members = []
    for run in runs:
        state = download_checkpoint(client, run, label, folder)
        config = ExperimentConfig(**state["config"])
        if data_root is not None:
            config = dataclasses.replace(config, data_root=data_root)
        name = run_name(run) if names.count(run_name(run)) == 1 else f"{run_name(run)}@{run.info.run_id[:8]}"
        key = (config.dataset, config.data_root, config.train_subset)
        if key not in means:  # the mean each member was trained with: ImageNet's per-channel one
            # (orchestrator.data), else its training subset's per-pixel mean image (as for Table 6)
            means[key] = (torch.tensor(IMAGENET_MEAN) if config.dataset in SHARDED_DATASETS
                          else per_pixel_mean(load_split(config, "train").images))
        members.append(Member(name, run.info.run_id, config, state["model"], means[key]))
    classes = {m.name: m.num_classes for m in members}
    if len(set(classes.values())) > 1:
        raise ValueError(f"members have different class counts: {classes}")
    datasets = {m.name: m.config.dataset for m in members}
    if len(set(datasets.values())) > 1:
        raise ValueError(f"members were trained on different data sets: {datasets}")
    return members


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


# ---- scoring and reporting -----------------------------------------------------------------------

def summarize(probabilities: dict, labels: torch.Tensor, validation: torch.Tensor,
              weights: list[float] | None) -> dict:
    """Every member's and the ensemble's errors on all images, and on the holdout half the plain
    average next to the members greedy selection picks on the validation half."""
    names = list(probabilities)
    weights = weights or [1.0] * len(names)
    members = [{"name": n, "weight": w, **ensemble_math.errors(probabilities[n], labels)} for n, w in zip(names, weights)]
    ensemble = ensemble_math.errors(ensemble_math.combine([probabilities[n] for n in names], weights), labels)
    holdout = ~validation
    steps = ensemble_math.greedy_selection({n: p[validation] for n, p in probabilities.items()}, labels[validation])
    picked = [s["member"] for s in steps]
    return {
        "images": len(labels), "members": members, "ensemble": ensemble,
        "mean_member": {k: sum(m[k] for m in members) / len(members) for k in ("top1_error", "top5_error")},
        "worst_member": {k: max(m[k] for m in members) for k in ("top1_error", "top5_error")},
        "greedy": {
            "validation": VALIDATION_NOTE, "val_images": int(validation.sum()), "holdout_images": int(holdout.sum()),
            "steps": steps, "members": picked,
            "holdout_average": ensemble_math.errors(ensemble_math.combine([p[holdout] for p in probabilities.values()], weights),
                                            labels[holdout]),
            "holdout_greedy": ensemble_math.errors(ensemble_math.combine([probabilities[n][holdout] for n in picked]),
                                           labels[holdout]),
        },
    }


def report_lines(summary: dict) -> list[str]:
    width = max(24, *(len(m["name"]) for m in summary["members"]))
    lines = [f"{'member':<{width}}  weight  top-1 err  top-5 err"]
    for m in summary["members"]:
        lines.append(f"{m['name']:<{width}}  {m['weight']:6.3g}  {m['top1_error']:8.2f}%  {m['top5_error']:8.2f}%")
    for label, key in (("mean of members", "mean_member"), ("ENSEMBLE (average)", "ensemble")):
        lines.append(f"{label:<{width}}  {'':6}  {summary[key]['top1_error']:8.2f}%  {summary[key]['top5_error']:8.2f}%")
    g = summary["greedy"]
    lines.append(f"greedy forward selection ({g['validation']}): picked {', '.join(g['members'])}; on the "
                 f"{g['holdout_images']} holdout images top-1/top-5 {g['holdout_greedy']['top1_error']:.2f}%/"
                 f"{g['holdout_greedy']['top5_error']:.2f}% vs the plain average's "
                 f"{g['holdout_average']['top1_error']:.2f}%/{g['holdout_average']['top5_error']:.2f}%")
    return lines


def metric_name(name: str) -> str:
    return re.sub(r"[^\w\-. /:]", "_", name)  # characters MLflow allows in a metric key


def member_tag(name: str) -> str:
    """The evaluation run's tag holding the run id whose errors ``member.<name>.*`` metrics hold."""
    return f"member.{metric_name(name)}.run_id"


def evaluate(client, runs: list, *, view: str = "center", weights: list[float] | None = None,
             checkpoint: str = "last", data_root: str | None = None, test_subset: int | None = None,
             use_gpu: bool = False, cpus: float = 1.0, shards: int | None = None, batch_size: int = 256,
             out: Path | None = None, storage_path: str = "runs", parent: str | None = None,
             wait_s: float = DEFAULT_WAIT_MINUTES * 60, echo=print) -> dict:
    """Score ``runs`` (finished MLflow training runs) on their test split and log the ensemble."""
    check_runs(runs)
    if weights is not None and len(weights) != len(runs):
        raise ValueError(f"--weights gives {len(weights)} weight(s) for {len(runs)} members")
    with tempfile.TemporaryDirectory(prefix="ensemble-") as folder:
        members = load_members(client, runs, checkpoint, Path(folder), data_root)
    subsets = {m.config.test_subset for m in members}
    if test_subset is None and len(subsets) > 1:
        raise ValueError(f"members were tested on different test subsets {sorted(subsets, key=str)}; "
                         "pass --test-subset N to evaluate all on the same images")
    test_config = dataclasses.replace(members[0].config, test_subset=test_subset or members[0].config.test_subset)
    sharded = test_config.dataset in SHARDED_DATASETS
    if sharded:
        if shards is not None:
            raise ValueError(f"--shards {shards}: {test_config.dataset} members are scored one task per val "
                             "shard file and member; leave --shards out")
        storage.check(test_config.data_root, "--data-root")
        test = sharded_test_split(test_config)
        image_size = IMAGENET_SIZE  # every view resizes ImageNet's images of many sizes first
    else:
        test = load_split(test_config, "test")
        image_size = min(test.images.shape[-2:])
    if test.num_classes != members[0].num_classes:
        raise ValueError(f"the {test_config.dataset} test split has {test.num_classes} classes, the members "
                         f"{members[0].num_classes}")
    ensemble_math.check_view(view, image_size)
    echo(f"[ensemble] scoring {len(members)} member(s) on {len(test.labels)} {test_config.dataset} test images, "
         f"view {view}, over Ray")
    cli.init_ray()
    task = {"CPU": cpus, "GPU": 1.0} if use_gpu else {"CPU": cpus}
    resources.ensure([Demand("an inference task", 1, task)], private=cli.private_ray(), wait_s=wait_s, echo=echo,
                     who="ensemble")
    if sharded:
        probabilities = score_shards(members, test, view, use_gpu=use_gpu, cpus=cpus)
    else:
        probabilities = score_members(members, test.images, view, use_gpu=use_gpu, cpus=cpus, shards=shards,
                                      batch_size=batch_size)
    validation = ensemble_math.holdout_split(len(test.labels))
    summary = summarize(probabilities, test.labels, validation, weights)

    key = config_hash({"runs": [m.run_id for m in members], "view": view, "weights": weights,
                                "checkpoint": checkpoint, "test_subset": test_config.test_subset})
    eval_name = f"ensemble-eval-{key[:10]}"
    metadata = {"members": [{"name": m.name, "run_id": m.run_id, "model": m.config.model} for m in members],
                "view": view, "checkpoint": checkpoint, "dataset": test_config.dataset,
                "test_subset": test_config.test_subset, "weights": weights, "validation": VALIDATION_NOTE}
    folder = Path(out) if out else _output_folder(storage_path, eval_name)
    parquet = ensemble_math.write_probabilities(folder / "probabilities.parquet", probabilities, test.labels,
                                        validation, metadata)
    run_id = log_evaluation(client, runs[0].info.experiment_id, eval_name, key, summary, metadata, parquet, parent)
    for line in report_lines(summary):
        echo(line)
    echo(f"[ensemble] probabilities {parquet} | MLflow run {run_id}")
    return report(summary, metadata) | {"parquet": str(parquet), "run_id": run_id, "tracking_uri": client.tracking_uri}


def report(summary: dict, metadata: dict) -> dict:
    """``summary`` with each member's run id and model, and the evaluation's settings."""
    about = {m["name"]: m for m in metadata["members"]}
    members = [about[m["name"]] | m for m in summary["members"]]
    return {**metadata, **summary, "members": members}


def _output_folder(storage_path: str, name: str) -> Path:
    if storage.is_remote(storage_path):  # remote storage: the file lives on in the MLflow run only
        return Path(tempfile.mkdtemp(prefix=f"{name}-"))
    return Path(storage_path).resolve() / "ensembles" / name


def log_evaluation(client, experiment_id: str, name: str, key: str, summary: dict, metadata: dict,
                   parquet: Path, parent: str | None) -> str:
    """The evaluation's MLflow run (one per member set, view and weights: a rerun reuses it)."""
    tags = {KIND: "ensemble-evaluation", "members": ",".join(m["name"] for m in metadata["members"])[:5000],
            "dataset": metadata["dataset"], "view": metadata["view"]}
    if parent:
        tags["orchestrator.ensemble_parent"] = parent
    run, _ = tracking.get_or_create_run(client, experiment_id, f"ensemble-eval/{key}", run_name=name, tags=tags)
    run_id = run.info.run_id
    # Which training run each member.<name>.* metric measured: compare maps it to the paper's cell.
    tracking.set_tags(client, run_id, {member_tag(m["name"]): m["run_id"] for m in metadata["members"]})
    tracking.log_params(client, run_id, {"view": metadata["view"], "checkpoint": metadata["checkpoint"],
                                         "weights": metadata["weights"], "test_subset": metadata["test_subset"],
                                         "member_run_ids": ",".join(m["run_id"] for m in metadata["members"])})
    g = summary["greedy"]
    metrics = {"members": len(summary["members"]), "images": summary["images"],
               "ensemble_top1_error": summary["ensemble"]["top1_error"],
               "ensemble_top5_error": summary["ensemble"]["top5_error"],
               "mean_member_top1_error": summary["mean_member"]["top1_error"],
               "mean_member_top5_error": summary["mean_member"]["top5_error"],
               "holdout_average_top1_error": g["holdout_average"]["top1_error"],
               "holdout_average_top5_error": g["holdout_average"]["top5_error"],
               "holdout_greedy_top1_error": g["holdout_greedy"]["top1_error"],
               "holdout_greedy_top5_error": g["holdout_greedy"]["top5_error"],
               "greedy_members": len(g["members"])}
    for m in summary["members"]:
        metrics |= {f"member.{metric_name(m['name'])}.top1_error": m["top1_error"],
                    f"member.{metric_name(m['name'])}.top5_error": m["top5_error"]}
    tracking.log_metrics(client, run_id, metrics, step=0)
    client.log_artifact(run_id, str(parquet), "ensemble")
    with tempfile.TemporaryDirectory() as folder:
        cli.write_json(Path(folder) / "summary.json", report(summary, metadata))
        client.log_artifact(run_id, str(Path(folder) / "summary.json"), "ensemble")
    tracking.finish(client, run_id, ok=True)
    return run_id


def combine(client, source: str, members: list[str] | None, weights: list[float] | None, echo=print) -> dict:
    """Recombine ``members`` (names or run ids; default all) from a stored probability table."""
    with tempfile.TemporaryDirectory(prefix="ensemble-") as folder:
        path = Path(source)
        if not path.is_file():
            run = get_run(client, source)
            try:
                path = Path(client.download_artifacts(run.info.run_id, PARQUET_ARTIFACT, folder))
            except (MlflowException, OSError):
                raise ValueError(f"run {source} has no {PARQUET_ARTIFACT}; is it an ensemble evaluation run?") from None
        probabilities, labels, validation, metadata = ensemble_math.read_probabilities(path)
    by_id = {m["run_id"]: m["name"] for m in metadata["members"]}
    names = [by_id.get(m, m) for m in members] if members else list(probabilities)
    unknown = [m for m in names if m not in probabilities]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"--members {','.join(members or [])}: unknown or repeated {unknown or names}; "
                         f"valid: {', '.join(probabilities)}")
    if weights is not None and len(weights) != len(names):
        raise ValueError(f"--weights gives {len(weights)} weight(s) for {len(names)} members")
    summary = summarize({n: probabilities[n] for n in names}, labels, validation, weights)
    for line in report_lines(summary):
        echo(line)
    return report(summary, metadata) | {"source": source}


# ---- command line --------------------------------------------------------------------------------

def build_parser():
    p = cli.parser("orchestrator.ensemble", __doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a preset's members as one ensemble parent run, then evaluate")
    t.add_argument("-p", "--preset", default=DEFAULT_PRESET,
                   help=f"an ensemble from configs/ensemble ({', '.join(list_presets())}) or a .yaml path")
    t.add_argument("--name", help="ensemble name (default: the preset's); rerunning a name resumes it")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every member (repeatable); recipe.FIELD=VALUE too")
    t.add_argument("--data-root", help="where the data set lives (else its environment variable)")
    t.add_argument("--max-concurrent", type=int, help="members trained at once (default: what fits)")
    t.add_argument("--no-evaluate", action="store_true", help="train only")
    t.add_argument("--dry-run", action="store_true", help="list the members and exit")
    cli.add_wait_arg(t)
    cli.add_tracking_args(t)

    e = sub.add_parser("evaluate", help="score members chosen in MLflow and report the ensemble")
    pick = e.add_mutually_exclusive_group(required=True)
    pick.add_argument("--runs", help="comma-separated MLflow run ids of finished training runs")
    pick.add_argument("--parent", metavar="ID_OR_NAME", help="an ensemble parent run: its member runs")
    pick.add_argument("--best", type=int, metavar="N", help="the N finished runs with the lowest test top-5 error")
    e.add_argument("--experiment", default=ExperimentConfig.experiment, help="for --parent NAME and --best")
    e.add_argument("--filter", default="", help="an MLflow search filter for --best, e.g. \"tags.dataset = 'cifar10'\"")
    add_scoring_args(e)
    cli.add_wait_arg(e)
    cli.add_tracking_args(e)

    c = sub.add_parser("combine", help="recombine members from stored per-image probabilities")
    c.add_argument("--from", dest="source", required=True, metavar="PARQUET_OR_RUN_ID",
                   help="a probabilities.parquet file, or the ensemble evaluation run id that holds one")
    c.add_argument("--members", help="comma-separated member names or run ids (default: all)")
    c.add_argument("--weights", help="one weight per member, comma-separated (default: equal)")
    cli.add_tracking_args(c)
    return p


def add_scoring_args(e) -> None:
    e.add_argument("--view", default="center", choices=ensemble_math.VIEWS,
                   help="test-time views per member, averaged (see docs/ENSEMBLE.md)")
    e.add_argument("--weights", help="one weight per member in the listed order, comma-separated (default: equal)")
    e.add_argument("--checkpoint", default="last", choices=("last", "best"),
                   help="which checkpoint of each run (best was chosen on the test set: optimistic)")
    e.add_argument("--data-root", help="where the test data lives here (default: the members' config); for "
                   "ImageNet the --out of orchestrator.prepare, holding val/")
    e.add_argument("--test-subset", type=int, help="test images scored, a fixed random subset (default: the "
                   "members' test_subset)")
    e.add_argument("--gpu", action="store_true", help="one GPU per inference task")
    e.add_argument("--cpus", type=float, default=1.0, help="CPU cores per inference task")
    e.add_argument("--shards", type=int, help="tasks per member of an in-memory data set (default: one per GPU or "
                   "per --cpus cores); ImageNet members take one task per val shard file")
    e.add_argument("--batch-size", type=int, default=256, help="images per forward pass (small images; an "
                   "ImageNet-size image's views make one pass of their own)")
    e.add_argument("--out", type=Path, help="folder for probabilities.parquet (default: <storage>/ensembles/NAME)")


def check_scoring_args(args) -> None:
    """Refuse counts below 1 (and CPUs <= 0) before any run is read."""
    for flag, value in (("--test-subset", args.test_subset), ("--shards", args.shards),
                        ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if not args.cpus > 0:
        raise ValueError(f"--cpus must be > 0, got {args.cpus}")


def _client(args):
    storage = args.storage_path or ExperimentConfig.storage_path
    uri = ExperimentConfig(storage_path=storage, tracking_uri=args.tracking_uri).resolved_tracking_uri()
    return tracking.connect(uri), storage


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_writable(args.json)
    if args.command == "train":
        overrides = parse_overrides(args.overrides)
        for key, flag in (("data_root", args.data_root), ("tracking_uri", args.tracking_uri),
                          ("storage_path", args.storage_path)):
            if flag is not None:
                overrides[key] = flag
        ablation, view = load_ensemble(args.preset, overrides, name=args.name)
        if args.dry_run:
            for trial in ablation.trials:
                print(trial.name)
            return 0
        summary = train(ablation, view, evaluate_after=not args.no_evaluate, max_concurrent=args.max_concurrent,
                        wait_s=resources.wait_seconds(args.wait_for_resources))
        failed = bool(summary["failed"])
    elif args.command == "evaluate":
        check_scoring_args(args)
        client, storage = _client(args)
        if args.runs:
            runs = [get_run(client, r.strip()) for r in args.runs.split(",") if r.strip()]
        elif args.parent:
            parent = find_parent(client, args.experiment, args.parent)
            runs = parent_members(client, parent)
        else:
            if args.best < 1:
                raise ValueError(f"--best must be >= 1, got {args.best}")
            runs = best_runs(client, args.experiment, args.filter, args.best)
        summary = evaluate(client, runs, view=args.view, weights=parse_weights(args.weights, len(runs)),
                           checkpoint=args.checkpoint, data_root=args.data_root, test_subset=args.test_subset,
                           use_gpu=args.gpu, cpus=args.cpus, shards=args.shards, batch_size=args.batch_size,
                           out=args.out, storage_path=storage, parent=args.parent and parent.info.run_id,
                           wait_s=resources.wait_seconds(args.wait_for_resources))
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
