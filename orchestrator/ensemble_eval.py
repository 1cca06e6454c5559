"""Scoring an ensemble: members' test-split probabilities over Ray, their average (optionally weighted)
and greedy forward selection, the report, the MLflow evaluation run, and recombining stored
probabilities without inference."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch
from mlflow.exceptions import MlflowException

from orchestrator import cli, resources, storage, tracking
from orchestrator.data import load_split, sharded_test_split
from orchestrator.inference import score_members, score_shards
from orchestrator.members import check_runs, load_members
from orchestrator.resources import DEFAULT_WAIT_MINUTES, Demand
from workloads import ensemble as ensemble_math
from workloads.data import dataset_spec
from workloads.engine import config_hash


def shared_validation(members: list, sharded: bool) -> tuple[float | None, str]:
    """``(val_split, what greedy selection picks on)``: the validation split every member held out of
    its training images, or None and why there is none to pick on (greedy selection is then skipped:
    picking on the reported split would report a selection on the images it was made on)."""
    if sharded:
        return None, "skipped: sharded data sets have no validation split (their val/ folder is the reported split)"
    splits = {m.config.val_split for m in members}
    if splits == {None}:
        return None, "skipped: the members held out no validation split (val_split null)"
    if len(splits) > 1:
        shown = ", ".join(f"{m.name}: {m.config.val_split}" for m in members)
        return None, f"skipped: the members held out different validation splits ({shown}), so none is unseen by all"
    (val_split,) = splits
    return val_split, f"on the members' validation split (val_split {val_split:g}), reported on the test split"


def summarize(
    probabilities: dict, labels: torch.Tensor, validation: torch.Tensor, weights: list[float] | None, selection: str
) -> dict:
    """Every member's and the ensemble's errors on the test rows (``validation`` False), and greedy
    forward selection: picked on the validation rows, its members' average scored on the test rows.
    ``selection`` says what it picks on, or why it was skipped (no validation rows)."""
    names = list(probabilities)
    weights = weights or [1.0] * len(names)
    test = ~validation
    on_test = {n: p[test] for n, p in probabilities.items()}
    members = [
        {"name": n, "weight": w, **ensemble_math.errors(on_test[n], labels[test])} for n, w in zip(names, weights)
    ]
    ensemble = ensemble_math.errors(ensemble_math.combine([on_test[n] for n in names], weights), labels[test])
    greedy: dict = {"selection": selection, "val_images": int(validation.sum())}
    if validation.any():
        steps = ensemble_math.greedy_selection({n: p[validation] for n, p in probabilities.items()}, labels[validation])
        picked = [s["member"] for s in steps]
        greedy |= {
            "steps": steps,
            "members": picked,
            "test": ensemble_math.errors(ensemble_math.combine([on_test[n] for n in picked]), labels[test]),
        }
    return {
        "images": int(test.sum()),
        "members": members,
        "ensemble": ensemble,
        "mean_member": {k: sum(m[k] for m in members) / len(members) for k in ("top1_error", "top5_error")},
        "worst_member": {k: max(m[k] for m in members) for k in ("top1_error", "top5_error")},
        "greedy": greedy,
    }


def report_lines(summary: dict) -> list[str]:
    width = max(24, *(len(m["name"]) for m in summary["members"]))
    lines = [f"{'member':<{width}}  weight  top-1 err  top-5 err"]
    for m in summary["members"]:
        lines.append(f"{m['name']:<{width}}  {m['weight']:6.3g}  {m['top1_error']:8.2f}%  {m['top5_error']:8.2f}%")
    for label, key in (("mean of members", "mean_member"), ("ENSEMBLE (average)", "ensemble")):
        lines.append(
            f"{label:<{width}}  {'':6}  {summary[key]['top1_error']:8.2f}%  {summary[key]['top5_error']:8.2f}%"
        )
    g = summary["greedy"]
    if "members" not in g:
        lines.append(f"greedy forward selection {g['selection']}")
        return lines
    lines.append(
        f"greedy forward selection {g['selection']}: picked {', '.join(g['members'])} on "
        f"{g['val_images']} validation images; on the {summary['images']} test images top-1/top-5 "
        f"{g['test']['top1_error']:.2f}%/{g['test']['top5_error']:.2f}% vs the average's "
        f"{summary['ensemble']['top1_error']:.2f}%/{summary['ensemble']['top5_error']:.2f}%"
    )
    return lines


def evaluate(
    client,
    runs: list,
    *,
    view: str = "center",
    weights: list[float] | None = None,
    checkpoint: str = "last",
    data_root: str | None = None,
    test_subset: int | None = None,
    use_gpu: bool = False,
    cpus: float = 1.0,
    shards: int | None = None,
    batch_size: int = 256,
    out: Path | None = None,
    storage_path: str = "runs",
    parent: str | None = None,
    wait_s: float = DEFAULT_WAIT_MINUTES * 60,
    echo=print,
) -> dict:
    """Score ``runs`` (finished MLflow training runs) on their test split and log the ensemble."""
    check_runs(runs)
    if weights is not None and len(weights) != len(runs):
        raise ValueError(f"--weights gives {len(weights)} weight(s) for {len(runs)} members")
    # The members' training mean and the validation images come from one read of the training
    # split (cifar10-jpeg: 50,000 JPEGs, 10-26 s a core to decode).
    reads: dict = {}
    with tempfile.TemporaryDirectory(prefix="ensemble-") as folder:
        members = load_members(client, runs, checkpoint, Path(folder), data_root, reads)
    subsets = {m.config.test_subset for m in members}
    if test_subset is None and len(subsets) > 1:
        raise ValueError(
            f"members were tested on different test subsets {sorted(subsets, key=str)}; "
            "pass --test-subset N to evaluate all on the same images"
        )
    test_config = dataclasses.replace(members[0].config, test_subset=test_subset or members[0].config.test_subset)
    spec = dataset_spec(test_config.dataset)
    if spec.sharded:
        if shards is not None:
            raise ValueError(
                f"--shards {shards}: {test_config.dataset} members are scored one task per val "
                "shard file and member; leave --shards out"
            )
        storage.check(test_config.data_root, "--data-root")
        test = sharded_test_split(test_config)
        image_size = spec.image_size  # every view resizes the images, of many sizes, first
    else:
        test = load_split(test_config, "test")
        image_size = min(test.images.shape[-2:])
    if test.num_classes != members[0].num_classes:
        raise ValueError(
            f"the {test_config.dataset} test split has {test.num_classes} classes, the members {members[0].num_classes}"
        )
    ensemble_math.check_view(view, image_size)
    val_split, selection = shared_validation(members, spec.sharded)
    labels, validation = test.labels, torch.zeros(len(test.labels), dtype=torch.bool)
    images = None if spec.sharded else test.images
    if val_split is not None:  # scored in the same pass, after the test images
        val = load_split(dataclasses.replace(test_config, val_split=val_split), "val", reads)
        images, labels = torch.cat([test.images, val.images]), torch.cat([test.labels, val.labels])
        validation = torch.cat([validation, torch.ones(len(val.labels), dtype=torch.bool)])
    reads.clear()  # the whole training split's images: not kept while scoring
    echo(
        f"[ensemble] scoring {len(members)} member(s) on {len(test.labels)} {test_config.dataset} test images"
        f"{f' and {int(validation.sum())} validation images' if validation.any() else ''}, view {view}, over Ray"
    )
    cli.init_ray()
    task = {"CPU": cpus, "GPU": 1.0} if use_gpu else {"CPU": cpus}
    resources.ensure(
        [Demand("an inference task", 1, task)], private=cli.private_ray(), wait_s=wait_s, echo=echo, who="ensemble"
    )
    if spec.sharded:
        probabilities = score_shards(members, test, view, use_gpu=use_gpu, cpus=cpus, batch_size=batch_size)
    else:
        probabilities = score_members(
            members, images, view, use_gpu=use_gpu, cpus=cpus, shards=shards, batch_size=batch_size
        )
    summary = summarize(probabilities, labels, validation, weights, selection)

    key = config_hash(
        {
            "runs": [m.run_id for m in members],
            "view": view,
            "weights": weights,
            "checkpoint": checkpoint,
            "test_subset": test_config.test_subset,
        }
    )
    eval_name = f"ensemble-eval-{key[:10]}"
    metadata = {
        "members": [{"name": m.name, "run_id": m.run_id, "model": m.config.model} for m in members],
        "view": view,
        "checkpoint": checkpoint,
        "dataset": test_config.dataset,
        "test_subset": test_config.test_subset,
        "weights": weights,
        "greedy_selection": selection,
    }
    folder = Path(out) if out else _output_folder(storage_path, eval_name)
    parquet = ensemble_math.write_probabilities(
        folder / tracking.PROBABILITIES_FILE, probabilities, labels, validation, metadata
    )
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


def log_evaluation(
    client, experiment_id: str, name: str, key: str, summary: dict, metadata: dict, parquet: Path, parent: str | None
) -> str:
    """The evaluation's MLflow run (one per member set, view and weights: a rerun reuses it)."""
    tags = {
        tracking.KIND: tracking.EVALUATION,
        tracking.MEMBERS: ",".join(m["name"] for m in metadata["members"])[: tracking.MEMBERS_LIMIT],
        tracking.DATASET: metadata["dataset"],
        tracking.VIEW: metadata["view"],
    }
    if parent:
        tags[tracking.ENSEMBLE_PARENT] = parent
    run, _ = tracking.get_or_create_run(client, experiment_id, f"ensemble-eval/{key}", run_name=name, tags=tags)
    run_id = run.info.run_id
    # Which training run each member.<name>.* metric measured: compare maps it to the paper's cell.
    tracking.set_tags(client, run_id, {tracking.member_tag(m["name"]): m["run_id"] for m in metadata["members"]})
    tracking.log_params(
        client,
        run_id,
        {
            "view": metadata["view"],
            "checkpoint": metadata["checkpoint"],
            "weights": metadata["weights"],
            "test_subset": metadata["test_subset"],
            "member_run_ids": ",".join(m["run_id"] for m in metadata["members"]),
            "greedy_selection": metadata["greedy_selection"],
        },
    )
    g = summary["greedy"]
    metrics = {
        "members": len(summary["members"]),
        "images": summary["images"],
        "val_images": g["val_images"],
        "ensemble_top1_error": summary["ensemble"]["top1_error"],
        "ensemble_top5_error": summary["ensemble"]["top5_error"],
        "mean_member_top1_error": summary["mean_member"]["top1_error"],
        "mean_member_top5_error": summary["mean_member"]["top5_error"],
    }
    if "members" in g:  # picked on validation images, scored on the test images
        metrics |= {
            "greedy_top1_error": g["test"]["top1_error"],
            "greedy_top5_error": g["test"]["top5_error"],
            "greedy_members": len(g["members"]),
        }
    for m in summary["members"]:
        metrics |= {tracking.member_metric(m["name"], k): m[k] for k in ("top1_error", "top5_error")}
    tracking.log_metrics(client, run_id, metrics, step=0)
    client.log_artifact(run_id, str(parquet), tracking.ENSEMBLE_FOLDER)
    with tempfile.TemporaryDirectory() as folder:
        cli.write_json(Path(folder) / tracking.SUMMARY_FILE, report(summary, metadata))
        client.log_artifact(run_id, str(Path(folder) / tracking.SUMMARY_FILE), tracking.ENSEMBLE_FOLDER)
    tracking.finish(client, run_id, ok=True)
    return run_id


def combine(client, source: str, members: list[str] | None, weights: list[float] | None, echo=print) -> dict:
    """Recombine ``members`` (names or run ids; default all) from a stored probability table."""
    with tempfile.TemporaryDirectory(prefix="ensemble-") as folder:
        path = Path(source)
        if not path.is_file():
            run = tracking.get_run(client, source)
            try:
                path = Path(client.download_artifacts(run.info.run_id, tracking.PROBABILITIES_ARTIFACT, folder))
            except (MlflowException, OSError):
                raise ValueError(
                    f"run {source} has no {tracking.PROBABILITIES_ARTIFACT}; is it an ensemble evaluation run?"
                ) from None
        probabilities, labels, validation, metadata = ensemble_math.read_probabilities(path)
    by_id = {m["run_id"]: m["name"] for m in metadata["members"]}
    names = [by_id.get(m, m) for m in members] if members else list(probabilities)
    unknown = [m for m in names if m not in probabilities]
    if unknown or len(set(names)) != len(names):
        raise ValueError(
            f"--members {','.join(members or [])}: unknown or repeated {unknown or names}; "
            f"valid: {', '.join(probabilities)}"
        )
    if weights is not None and len(weights) != len(names):
        raise ValueError(f"--weights gives {len(weights)} weight(s) for {len(names)} members")
    selection = metadata.get("greedy_selection") or (  # tables written before the field: say what they hold
        "on the table's val rows" if validation.any() else "skipped: the table has no val rows"
    )
    summary = summarize({n: probabilities[n] for n in names}, labels, validation, weights, selection)
    for line in report_lines(summary):
        echo(line)
    return report(summary, metadata) | {"source": source}
