"""What bench/gpu_orchestrated.sh measures around the product's CLIs, in the same call.

The shell script runs ``python -m orchestrator.train / ablate / prepare`` (Ray Train, Ray Tune,
MLflow on sqlite) and this helper for the rest:

- ``bare-cifar``: the baselines of the CIFAR parts, on the same CIFAR-10 JPEGs: ResNet-20's
  ``FastCifarTrainer`` rate (no Ray, no MLflow; ``bench/cifar_schedule.py``'s measurement) and one
  test pass, and the ablation's nets trained together by ``PackedTrainers`` (rounds/s) with each
  net's test pass;
- ``imagenet-tree``: synthetic ImageNet-like JPEGs (``bench/data_pipeline.py``'s) in ILSVRC's
  ``train/<class>/`` and ``val/<class>/`` layout, for ``orchestrator.prepare``;
- ``fashion-tree``: Fashion-MNIST written as a class-folder JPEG tree, for ``--quick`` on a machine
  without the CIFAR-10 JPEG tarball (the CIFAR parts then read it through the same loader);
- ``synthetic-rate``: the ImageNet net's training step on synthetic tensors on the device (as the
  imagenet preset builds it: paper strides, shortcut B), eager or ``torch.compile``'d
  (``bench/gpu_throughput.py``'s step);
- ``report``: reads each CLI's MLflow database and wall-clock timing, prints the table of measured
  figures against the baselines above and the goals, saves ``results.json`` and copies the databases.

How the report reads a run: Ray Train's rank 0 logs each epoch's metrics (``epoch`` at step =
global iteration, ``images_per_second`` of the epoch's training) and every ``log_every`` steps a
step metric, each stamped with the wall clock when logged. A run's first step started at
(epoch 1 logged) - (epoch 1's images / its images_per_second); start-up is launch to that, the
training span is that to the last epoch logged (evaluation, checkpoints and MLflow included),
the finish is the last epoch logged to the CLI's exit (the last checkpoint and the model to MLflow).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import cifar_schedule  # noqa: E402
import data_pipeline  # noqa: E402
import gpu_throughput  # noqa: E402
from results_file import save_results  # noqa: E402

from workloads.analysis.paper import CIFAR10_TABLE6  # noqa: E402
from workloads.data import load_dataset, per_pixel_mean  # noqa: E402
from workloads.engine import get_recipe  # noqa: E402
from workloads.models import build_model  # noqa: E402

PAPER_ITERATIONS = cifar_schedule.PAPER_ITERATIONS  # 64k iterations of batch 128
GOALS = {"cifar_train_over_bare": 1.05, "table6_matrix_minutes": 25.0, "imagenet_over_compiled": 0.9}
QUICK_NETS = ("cifar_plain8", "cifar_resnet8")  # what --quick's ablation trains (--axis depth=[8])
DATABASES = {"cifar_train": "mlflow_cifar_train.db", "ablate": "mlflow_ablate.db", "imagenet": "mlflow_imagenet.db"}


def device_for(quick: bool) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and not quick else "cpu")


# --- bare-cifar --------------------------------------------------------------------------------


def bare_cifar(args) -> None:
    device = device_for(args.quick)
    started = time.perf_counter()
    train = load_dataset("cifar10-jpeg", "train", root=args.data)
    test = load_dataset("cifar10-jpeg", "test", root=args.data)
    load_seconds = time.perf_counter() - started
    mean = per_pixel_mean(train.images)
    steps_per_epoch = len(train) // 128
    nets = list(QUICK_NETS if args.quick else cifar_schedule.TABLE6)
    # Quick: a few CPU steps. GPU: 2 epochs of ResNet-20 after 20 warm-up steps (graph capture in the
    # warm-up), and the nets packed as bench/gpu_checks.sh's cifar_matrix measures them.
    warmup, steps, pack_warmup, pack_steps = (2, 4, 2, 3) if args.quick else (20, 2 * steps_per_epoch, 10, 200)
    print(
        f"{len(train):,} training and {len(test):,} test images from {args.data} ({load_seconds:.1f} s), "
        f"device {device}",
        flush=True,
    )
    rate = cifar_schedule.fast_rate("cifar_resnet20", train.images, train.labels, mean, device, warmup, steps)
    test_pass = cifar_schedule.eval_seconds("cifar_resnet20", test.images, test.labels, mean, device)
    print(
        f"ResNet-20 fast: {rate:.1f} it/s ({warmup} warm-up + {steps} timed steps); one test pass {test_pass:.3f} s",
        flush=True,
    )
    packed = cifar_schedule.packed_rate(nets, train.images, train.labels, mean, device, pack_warmup, pack_steps)
    test_passes = {name: cifar_schedule.eval_seconds(name, test.images, test.labels, mean, device) for name in nets}
    print(
        f"{len(nets)} nets packed: {packed:.2f} rounds/s ({pack_warmup} warm-up + {pack_steps} timed rounds); "
        f"their test passes {sum(test_passes.values()):.3f} s in all",
        flush=True,
    )
    save_results(
        args.output,
        {
            "machine": machine(device),
            "data": str(args.data),
            "train_images": len(train),
            "test_images": len(test),
            "steps_per_epoch": steps_per_epoch,
            "data_load_seconds": round(load_seconds, 1),
            "resnet20": {
                "iterations_per_s": rate,
                "warmup_steps": warmup,
                "timed_steps": steps,
                "test_pass_seconds": test_pass,
            },
            "packed": {
                "nets": nets,
                "rounds_per_s": packed,
                "warmup_rounds": pack_warmup,
                "timed_rounds": pack_steps,
                "test_pass_seconds": test_passes,
            },
        },
    )


# --- imagenet-tree and fashion-tree --------------------------------------------------------------


def _jpeg_chunk(job: tuple) -> None:
    """Write one chunk of ``data_pipeline.write_jpegs`` images, then move them into the split's class
    folders under names unique across chunks."""
    split_dir, chunk, count, size = job
    with tempfile.TemporaryDirectory(dir=split_dir) as scratch:
        data_pipeline.write_jpegs(Path(scratch), count, size, seed=chunk)
        for path in Path(scratch).glob("*/*.jpg"):
            target = split_dir / path.parent.name / f"{chunk:04d}_{path.stem}.JPEG"
            target.parent.mkdir(exist_ok=True)
            path.rename(target)


def imagenet_tree(args) -> None:
    started = time.perf_counter()
    per_chunk = 64  # images a pool task writes: small enough to spread 4k images over 16 cores
    jobs = []
    for split, count in (("train", args.train), ("val", args.val)):
        (args.out / split).mkdir(parents=True, exist_ok=True)
        jobs += [
            (args.out / split, len(jobs) + i, min(per_chunk, count - start), args.size)
            for i, start in enumerate(range(0, count, per_chunk))
        ]
    with multiprocessing.Pool(os.cpu_count()) as pool:
        pool.map(_jpeg_chunk, jobs)
    files = list(args.out.glob("*/*/*.JPEG"))
    kb = sum(f.stat().st_size for f in files) / len(files) / 1e3
    print(
        f"{len(files)} JPEGs of {args.size[0]}x{args.size[1]} ({kb:.0f} KB on average) in "
        f"{args.out}/{{train,val}}/<class>/ in {time.perf_counter() - started:.1f} s",
        flush=True,
    )


def fashion_tree(args) -> None:
    from PIL import Image

    for split, count in (("train", args.train), ("test", args.test)):
        data = load_dataset("fashion-mnist", split)
        for i in range(min(count, len(data))):
            folder = args.out / split / data.classes[int(data.labels[i])].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(data.images[i, 0].numpy()).convert("RGB").save(folder / f"{i:05d}.jpg", quality=95)
    print(f"Fashion-MNIST written as JPEGs to {args.out}/{{train,test}}/<class>/ (no CIFAR-10 tarball)", flush=True)


# --- synthetic-rate ----------------------------------------------------------------------------


def synthetic_rate(args) -> None:
    device = device_for(args.quick)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as bench/gpu_throughput.py: autotuned in the warm-up
    torch.manual_seed(0)
    started = time.perf_counter()
    classes = data_pipeline.CLASSES  # as many as imagenet-tree's folders: the same net as the orchestrated run
    bench = gpu_throughput.Bench(
        build_model(args.model, num_classes=classes), args.batch, 224, classes, device, compiled=args.mode == "compile"
    )
    for _ in range(args.warmup):
        bench.step()
    bench.sync()
    setup = time.perf_counter() - started
    rounds = [bench.run(args.steps) for _ in range(args.rounds)]
    print(
        f"{args.model} {args.mode}, synthetic tensors on {device}, batch {args.batch}: {max(rounds):,.1f} img/s "
        f"(best of {args.rounds} x {args.steps} steps; setup and warm-up {setup:.1f} s)",
        flush=True,
    )
    results = json.loads(args.output.read_text()) if args.output.exists() else {"machine": machine(device)}
    results[args.mode] = {
        "model": args.model,
        "images_per_s": max(rounds),
        "rounds_images_per_s": rounds,
        "batch": args.batch,
        "classes": classes,
        "warmup_steps": args.warmup,
        "setup_seconds": round(setup, 1),
    }
    save_results(args.output, results)


# --- report ------------------------------------------------------------------------------------


def machine(device: torch.device) -> dict:
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


class Run:
    """One run's epochs and logged steps, read back from its MLflow database."""

    def __init__(self, client, run):
        self.run = run
        params = run.data.params
        overrides = {
            k.removeprefix("recipe_overrides."): yaml.safe_load(v)
            for k, v in params.items()
            if k.startswith("recipe_overrides.")
        }
        # An ablation's parent run has no recipe: it trains nothing.
        self.batch = get_recipe(params["recipe"], **overrides).batch_size if "recipe" in params else None
        self.name = run.info.run_name

        def history(key):
            return sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)

        self.epochs = history("epoch")  # step: global iteration at the epoch's end
        self.speeds = [m.value for m in history("images_per_second")]
        self.steps = history("train_loss_step")
        self.metrics = run.data.metrics

    @property
    def iterations(self) -> int:
        return self.epochs[-1].step if self.epochs else 0

    def first_step_started(self) -> float:
        """Wall-clock seconds when the first step began (epoch 1 logged, less its training time)."""
        first = self.epochs[0]
        return first.timestamp / 1000 - first.step * self.batch / self.speeds[0]

    def last_epoch_logged(self) -> float:
        return self.epochs[-1].timestamp / 1000

    def rate_between_epochs(self) -> float | None:
        """Iterations/s from the first epoch logged to the last (all that happens between: training,
        evaluation, checkpoints, MLflow); None before two epochs."""
        if len(self.epochs) < 2:
            return None
        first, last = self.epochs[0], self.epochs[-1]
        return (last.step - first.step) / ((last.timestamp - first.timestamp) / 1000)

    def in_epoch_images_per_s(self) -> float | None:
        """Images/s between logged steps of the same epoch, from the second epoch on: the steady rate,
        without each epoch's pipeline start, evaluation and checkpoint."""
        ends = [m.step for m in self.epochs]
        iterations = seconds = 0.0
        for a, b in zip(self.steps, self.steps[1:]):
            epoch_a = sum(a.step > end for end in ends)  # 0-based epoch of the step
            if epoch_a >= 1 and epoch_a == sum(b.step > end for end in ends) and b.timestamp > a.timestamp:
                iterations += b.step - a.step
                seconds += (b.timestamp - a.timestamp) / 1000
        return iterations * self.batch / seconds if seconds else None


def runs_in(database: Path) -> list:
    from mlflow.tracking import MlflowClient

    if not database.exists():  # the part did not run (MLflow would create an empty database here)
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{database}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return [Run(client, r) for r in client.search_runs(experiments)] if experiments else []


def not_measured(runs: list, missing: str) -> dict:
    """A part with no figure: why, from its database (a failed run's error) or else ``missing``."""
    from orchestrator.tracking import ERROR

    failed = [r for r in runs if r.run.info.status == "FAILED"]
    if failed:
        return {"status": f"{failed[0].name} FAILED: {failed[0].run.data.tags.get(ERROR, 'no error recorded')}"}
    return {"status": missing}


def timing(work: Path, part: str) -> dict | None:
    """The shell's record of a CLI's launch: wall-clock start and end (s), exit status, slice."""
    return read_json(work / f"{part}.timing.json")


def report_cifar_train(work: Path, bare: dict | None) -> dict:
    stamp, runs = timing(work, "cifar_train"), runs_in(work / "cifar_train" / "mlflow.db")
    if not stamp or not runs or not runs[0].epochs:
        return not_measured(runs, "not run or no epoch logged")
    run = runs[0]
    start = run.first_step_started()
    span = run.last_epoch_logged() - start
    out = {
        "status": run.run.info.status,
        "exit": stamp["exit"],
        "iterations": run.iterations,
        "epochs": len(run.epochs),
        "paper_iterations": PAPER_ITERATIONS,
        "startup_seconds": start - stamp["start"],
        "train_seconds": span,
        "finish_seconds": stamp["end"] - run.last_epoch_logged(),
        "wall_seconds": stamp["end"] - stamp["start"],
        "train_seconds_for_64k_extrapolated": span * PAPER_ITERATIONS / run.iterations,
        "test_top1_error": run.metrics.get("test_top1_error"),
        "table6_top1_error": CIFAR10_TABLE6[20],
    }
    if bare:
        bare_seconds = run.iterations / bare["resnet20"]["iterations_per_s"]  # the same iterations, bare
        evals = len(run.epochs) * bare["resnet20"]["test_pass_seconds"]
        out |= {
            "bare_train_seconds": bare_seconds,
            "bare_with_test_passes_seconds": bare_seconds + evals,
            "ratio_over_bare": span / bare_seconds,
            "ratio_over_bare_with_test_passes": span / (bare_seconds + evals),
        }
    return out


def report_ablate(work: Path, bare: dict | None) -> dict:
    stamp, runs = timing(work, "ablate"), runs_in(work / "ablate" / "mlflow.db")
    from orchestrator.tracking import PARENT_RUN_ID

    members = [r for r in runs if PARENT_RUN_ID in r.run.data.tags and r.epochs]
    rates = [r.rate_between_epochs() for r in members]
    if not stamp or not members or None in rates:
        return not_measured(runs, "not run, or fewer than 2 epochs logged in the slice")
    rate = statistics.median(rates)
    start = min(r.first_step_started() for r in members)
    out = {
        "members": len(members),
        "exit": stamp["exit"],
        "slice_seconds": stamp["slice_s"],
        "epochs_logged": min(len(r.epochs) for r in members),
        "rounds_per_s": rate,
        "rounds_per_s_per_member": {r.name: v for r, v in zip(members, rates)},
        "startup_seconds": start - stamp["start"],
        "matrix_minutes_extrapolated": (start - stamp["start"] + PAPER_ITERATIONS / rate) / 60,
    }
    if bare:
        packed = bare["packed"]
        # One epoch of the bare pack with every net's test pass after it, as each member does.
        epoch_seconds = bare["steps_per_epoch"] / packed["rounds_per_s"] + sum(packed["test_pass_seconds"].values())
        out |= {
            "bare_rounds_per_s": packed["rounds_per_s"],
            "bare_nets": packed["nets"],
            "bare_with_test_passes_rounds_per_s": bare["steps_per_epoch"] / epoch_seconds,
            "ratio_over_bare": rate / packed["rounds_per_s"],
            "ratio_over_bare_with_test_passes": rate * epoch_seconds / bare["steps_per_epoch"],
        }
    return out


def report_imagenet(work: Path, synthetic: dict | None) -> dict:
    stamp, runs = timing(work, "imagenet"), runs_in(work / "imagenet" / "mlflow.db")
    run = runs[0] if runs else None
    steady = run.in_epoch_images_per_s() if run else None
    if not stamp or steady is None:
        return not_measured(runs, "not run, or no two logged steps in one epoch after the first")
    out = {
        "model": run.run.data.params["model"],
        "status": run.run.info.status,
        "exit": stamp["exit"],
        "epochs": len(run.epochs),
        "batch": run.batch,
        "in_epoch_images_per_s": steady,
        "epoch_images_per_s": run.speeds,
        "startup_seconds": run.first_step_started() - stamp["start"],
        "wall_seconds": stamp["end"] - stamp["start"],
    }
    for mode in ("eager", "compile"):
        if synthetic and synthetic.get(mode, {}).get("model") == out["model"]:
            out[f"synthetic_{mode}_images_per_s"] = synthetic[mode]["images_per_s"]
            out[f"ratio_over_{mode}"] = steady / synthetic[mode]["images_per_s"]
    return out


def fmt(value, spec: str = ".1f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def verdicts(results: dict) -> dict:
    """Each goal: "met", "NOT met", or "not measured"."""
    measured = {
        "cifar_train_over_bare": (results["cifar_train"].get("ratio_over_bare"), True),
        "table6_matrix_minutes": (results["ablate"].get("matrix_minutes_extrapolated"), True),
        "imagenet_over_compiled": (results["imagenet"].get("ratio_over_compile"), False),
    }
    out = {}
    for key, (value, at_most) in measured.items():
        met = None if value is None else (value <= GOALS[key] if at_most else value >= GOALS[key])
        out[key] = "not measured" if met is None else "met" if met else "NOT met"
    return out


def print_table(results: dict) -> None:
    c, a, r, v = results["cifar_train"], results["ablate"], results["imagenet"], results["verdicts"]

    def pair(label, part, measured, baseline, baseline_key, ratio_key, spec, unit, goal=""):
        """A row: what ``part[measured]`` is, its baseline ``part[baseline_key]`` and their ratio."""
        return (
            label,
            fmt(part.get(measured), spec, unit) if measured else "",
            f"{baseline}{fmt(part.get(baseline_key), spec, unit)}",
            fmt(part.get(ratio_key), ".3f"),
            goal,
        )

    rows = [("what", "measured", "baseline, same call", "ratio", "goal")]
    if "train_seconds" in c:
        rows += [
            pair(
                f"ResNet-20, orchestrator.train, {c['iterations']:,} iterations: training span",
                c,
                "train_seconds",
                "bare fast trainer ",
                "bare_train_seconds",
                "ratio_over_bare",
                ".1f",
                " s",
                f"<= {GOALS['cifar_train_over_bare']}: {v['cifar_train_over_bare']}",
            ),
            pair(
                "  the same, baseline with a test pass an epoch",
                c,
                None,
                "",
                "bare_with_test_passes_seconds",
                "ratio_over_bare_with_test_passes",
                ".1f",
                " s",
            ),
            (
                "  start-up (launch to first step) / finish (last epoch to exit)",
                f"{fmt(c['startup_seconds'], unit=' s')} / {fmt(c['finish_seconds'], unit=' s')}",
                "",
                "",
                "reported apart",
            ),
            (
                "  test top-1 error (lossy JPEG copy)",
                fmt(c["test_top1_error"], ".2f", "%"),
                f"Table 6: {c['table6_top1_error']}%",
                "",
                "recorded",
            ),
        ]
    else:
        rows.append(("ResNet-20 through orchestrator.train", c["status"], "", "", ""))
    if "rounds_per_s" in a:
        rows += [
            pair(
                f"ablate cifar10-table6, {a['members']} packed, eval + checkpoints + MLflow",
                a,
                "rounds_per_s",
                "PackedTrainers ",
                "bare_rounds_per_s",
                "ratio_over_bare",
                ".2f",
                " rounds/s",
            ),
            pair(
                "  baseline with every net's test pass an epoch",
                a,
                None,
                "",
                "bare_with_test_passes_rounds_per_s",
                "ratio_over_bare_with_test_passes",
                ".2f",
                " rounds/s",
            ),
            (
                "  whole matrix, extrapolated (start-up + 64k rounds)",
                fmt(a["matrix_minutes_extrapolated"], ".1f", " min"),
                "",
                "",
                f"<= {GOALS['table6_matrix_minutes']:.0f} min: {v['table6_matrix_minutes']}",
            ),
        ]
    else:
        rows.append(("ablate cifar10-table6", a["status"], "", "", ""))
    if "in_epoch_images_per_s" in r:
        rows += [
            pair(
                f"{r['model']}, orchestrator.train, decode=device, steady",
                r,
                "in_epoch_images_per_s",
                "compiled, synthetic ",
                "synthetic_compile_images_per_s",
                "ratio_over_compile",
                ",.0f",
                " img/s",
                f">= {GOALS['imagenet_over_compiled']}: {v['imagenet_over_compiled']}",
            ),
            pair(
                "  the same against the eager step",
                r,
                None,
                "eager, synthetic ",
                "synthetic_eager_images_per_s",
                "ratio_over_eager",
                ",.0f",
                " img/s",
            ),
        ]
    else:
        rows.append(("ImageNet net through orchestrator.train", r["status"], "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def report(args) -> None:
    import mlflow
    import ray

    bare = read_json(args.out / "bare_cifar.json")
    results = {
        "machine": machine(device_for(args.quick))
        | {
            "ray": ray.__version__,
            "mlflow": mlflow.__version__,
            "commit": args.commit,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "quick": args.quick,
        "goals": GOALS,
        "cifar_train": report_cifar_train(args.work, bare),
        "ablate": report_ablate(args.work, bare),
        "imagenet": report_imagenet(args.work, read_json(args.out / "imagenet_synthetic.json")),
    }
    results["verdicts"] = verdicts(results)
    print()
    print_table(results)
    if args.quick:
        print("(--quick: tiny CPU runs; the numbers say the path works, not how fast it is)")
    for part, name in DATABASES.items():
        if (args.work / part / "mlflow.db").exists():
            shutil.copyfile(args.work / part / "mlflow.db", args.out / name)
    save_results(args.out / "results.json", results)


# --- command line ------------------------------------------------------------------------------


def size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python bench/gpu_orchestrated.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("bare-cifar", help="the CIFAR parts' bare-engine baselines")
    s.add_argument("--data", type=Path, required=True, help="a cifar10-jpeg folder holding train/ and test/")
    s.add_argument("--output", type=Path, required=True)
    s.add_argument("--quick", action="store_true", help="CPU, a few steps, the depth-8 nets")
    s = sub.add_parser("imagenet-tree", help="synthetic JPEGs in ILSVRC's class-folder layout")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--train", type=int, required=True, help="training images")
    s.add_argument("--val", type=int, required=True, help="validation images")
    s.add_argument("--size", type=size, default=(500, 375), help="WIDTHxHEIGHT in pixels (default 500x375)")
    s = sub.add_parser("fashion-tree", help="Fashion-MNIST as a class-folder JPEG tree")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--train", type=int, required=True, help="training images")
    s.add_argument("--test", type=int, required=True, help="test images")
    s = sub.add_parser("synthetic-rate", help="the ImageNet net's training step on synthetic tensors")
    s.add_argument("--model", default="resnet50")
    s.add_argument("--mode", choices=("eager", "compile"), required=True)
    s.add_argument("--batch", type=int, default=256)
    s.add_argument("--warmup", type=int, default=10)
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--rounds", type=int, default=2, help="timed rounds; the best is kept")
    s.add_argument("--output", type=Path, required=True, help="JSON file; each mode is added to it")
    s.add_argument("--quick", action="store_true", help="on the CPU even if there is a GPU")
    s = sub.add_parser("report", help="the table of every part, results.json and the MLflow databases")
    s.add_argument("--work", type=Path, required=True, help="the script's work folder (storage of each CLI)")
    s.add_argument(
        "--out", type=Path, required=True, help="$OUT: bare_cifar.json, imagenet_synthetic.json are read here"
    )
    s.add_argument("--commit", default="?")
    s.add_argument("--quick", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    {
        "bare-cifar": bare_cifar,
        "imagenet-tree": imagenet_tree,
        "fashion-tree": fashion_tree,
        "synthetic-rate": synthetic_rate,
        "report": report,
    }[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
