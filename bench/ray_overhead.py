"""Ray Train's overhead on a training step: ``orchestrator.train`` vs the same loop under torchrun DDP.

Both paths train the same model on the same data with the same recipe, W data-parallel workers
(default 2) on gloo, each given the same CPU threads. The baseline is ``bench/ddp_loop.py`` under
``torchrun --standalone``: the worker's own data, model, optimizer, ``train_epoch`` and
``evaluate``, wrapped in ``DistributedDataParallel``, without Ray or MLflow. The Ray path runs
``orchestrator.training.train(config)`` (a private local Ray, W Ray Train workers, checkpoints, MLflow
on sqlite in a temporary folder) and reads its per-epoch speeds back from the run's MLflow metrics.
Steady state = every epoch after the first. The baseline runs before and after the Ray run to
expose drift on a shared machine; the ratio of the best steady epochs is reported too, as it is
less sensitive to other load. Start-up (Ray, worker group, data) is reported separately.

Target: ray step time / DDP step time <= 1.05.

Examples:
  python bench/ray_overhead.py    # CIFAR ResNet-20, 2,048 images, 2 workers, 8 epochs (~3 min on 2 cores)
  python bench/ray_overhead.py --model cifar_resnet8 --epochs 4 --train-subset 1024
  python bench/ray_overhead.py --gpu --workers 1 --train-subset 20000   # one GPU per worker (bf16, channels_last), nccl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from results_file import save_results  # noqa: E402

from orchestrator.config import ExperimentConfig, load_config, scaled_schedule  # noqa: E402
from workloads.engine import get_recipe  # noqa: E402

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "ray_overhead.json"
TARGET_RATIO = 1.05


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python bench/ray_overhead.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="cifar_resnet20", help="model name (default: cifar_resnet20)")
    p.add_argument("--dataset", default="fashion-mnist", help="data set (default: fashion-mnist)")
    p.add_argument("--data-root", help="where the data set lives (else its default)")
    p.add_argument("--train-subset", type=int, default=2048, help="training images (default: 2048)")
    p.add_argument("--test-subset", type=int, default=500, help="test images evaluated per epoch (default: 500)")
    p.add_argument(
        "--epochs",
        type=int,
        default=8,
        help="epochs per path; the first is warm-up, the rest are steady state (default: 8)",
    )
    p.add_argument("--workers", type=int, default=2, help="data-parallel workers in both paths (default: 2)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per worker = cpus_per_worker of the Ray run (default: cores / workers)",
    )
    p.add_argument("--gpu", action="store_true", help="one GPU per worker in both paths (nccl)")
    p.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"JSON results (default: {DEFAULT_OUTPUT.relative_to(ROOT)})",
    )
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the first epoch is warm-up)")
    if args.workers < 1:
        p.error("--workers must be >= 1")
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def make_config(args, storage: Path) -> ExperimentConfig:
    batch = get_recipe("smoke").batch_size
    batches = args.train_subset // batch
    if batches < 1:
        raise SystemExit(f"--train-subset {args.train_subset} is less than one batch of {batch}")
    values = {
        "name": "ray-overhead",
        "model": args.model,
        "dataset": args.dataset,
        "data_root": args.data_root,
        "train_subset": args.train_subset,
        "test_subset": args.test_subset,
        "recipe": "smoke",
        "workers": args.workers,
        "cpus_per_worker": float(args.threads),
        "use_gpu": args.gpu,
        "storage_path": str(storage),
        "tracking_uri": f"sqlite:///{storage / 'mlflow.db'}",
        "experiment": "bench-ray-overhead",
    }
    config = load_config("smoke", values)
    return dataclasses.replace(config, recipe_overrides=scaled_schedule(config, iterations=batches * args.epochs))


def ddp_loop(config: ExperimentConfig, threads: int, folder: Path) -> list[float]:
    """images/s of each epoch of the worker's loop under torchrun DDP (no Ray, no MLflow)."""
    config_json, output_json = folder / "ddp-config.json", folder / "ddp-speeds.json"
    config_json.write_text(json.dumps(config.to_dict()))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={config.workers}",
        str(ROOT / "bench" / "ddp_loop.py"),
        str(config_json),
        str(output_json),
    ]
    subprocess.run(command, check=True, env=os.environ | {"OMP_NUM_THREADS": str(threads)})
    return json.loads(output_json.read_text())["images_per_second"]


def ray_run(config: ExperimentConfig) -> dict:
    """Train through ``orchestrator.train`` and read its per-epoch speeds and timings back from MLflow."""
    import ray

    from orchestrator import cli, tracking
    from orchestrator.training import train

    started = time.time()
    cli.init_ray()
    ray_ready = time.time()
    summary = train(config, echo=lambda line: print("  " + line, flush=True))
    ended = time.time()
    ray.shutdown()
    if summary.status != "FINISHED":
        raise SystemExit(f"the Ray run failed: {summary.error}")
    client = tracking.MlflowClient(tracking_uri=config.resolved_tracking_uri())
    speeds = sorted(client.get_metric_history(summary.run_id, "images_per_second"), key=lambda m: m.step)
    epochs = sorted(client.get_metric_history(summary.run_id, "epoch"), key=lambda m: m.step)
    images_per_epoch = (
        config.train_subset // get_recipe(config.recipe).batch_size * get_recipe(config.recipe).batch_size
    )
    first_epoch_logged = epochs[0].timestamp / 1000
    first_epoch_seconds = images_per_epoch / speeds[0].value
    return {
        "images_per_second": [m.value for m in speeds],
        "run_id": summary.run_id,
        "ray_init_seconds": ray_ready - started,
        # From train() to the first training step: MLflow run, worker group, data, model.
        "run_start_seconds": first_epoch_logged - first_epoch_seconds - ray_ready,
        # From the last epoch to train()'s return: checkpoint and model upload to MLflow.
        "finish_seconds": ended - epochs[-1].timestamp / 1000,
        "wall_seconds": ended - started,
    }


def steady(speeds: list[float]) -> float:
    return statistics.fmean(speeds[1:])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device here")
    with tempfile.TemporaryDirectory(prefix="ray-overhead-") as folder:
        folder = Path(folder)
        # MLflow puts a sqlite experiment's artifacts under ./mlruns of its creator: keep them here.
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            config = make_config(args, folder / "runs")
            batch = get_recipe(config.recipe).batch_size
            print(
                f"{config.model} on {args.train_subset} {config.dataset} images, batch {batch}, "
                f"{args.workers} worker(s) x {args.threads} thread(s), {args.epochs} epochs per path, "
                f"{'GPU' if args.gpu else 'CPU'}",
                flush=True,
            )
            print("torchrun DDP (before)...", flush=True)
            ddp_before = ddp_loop(config, args.threads, folder)
            print(f"orchestrator.train, {args.workers} worker(s)...", flush=True)
            ray = ray_run(config)
            print("torchrun DDP (after)...", flush=True)
            ddp_after = ddp_loop(config, args.threads, folder)
        finally:
            os.chdir(cwd)

    ddp_ips = statistics.fmean([steady(ddp_before), steady(ddp_after)])
    ray_ips = steady(ray["images_per_second"])
    ddp_ms, ray_ms = 1000 * batch / ddp_ips, 1000 * batch / ray_ips
    ratio = ray_ms / ddp_ms
    # Best steady epoch of each path: less sensitive to other load on a shared machine.
    best_ratio = max(ddp_before[1:] + ddp_after[1:]) / max(ray["images_per_second"][1:])
    import ray as ray_module

    result = {
        "model": config.model,
        "dataset": config.dataset,
        "train_subset": args.train_subset,
        "batch": batch,
        "epochs": args.epochs,
        "workers": args.workers,
        "threads_per_worker": args.threads,
        "device": "cuda" if args.gpu else "cpu",
        "ddp_images_per_second": {"before": ddp_before, "after": ddp_after},
        "ray_images_per_second": ray["images_per_second"],
        "ddp_step_ms": ddp_ms,
        "ray_step_ms": ray_ms,
        "step_time_ratio": ratio,
        "best_epoch_step_time_ratio": best_ratio,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "ray_init_seconds": ray["ray_init_seconds"],
        "run_start_seconds": ray["run_start_seconds"],
        "finish_seconds": ray["finish_seconds"],
        "ray_wall_seconds": ray["wall_seconds"],
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ray": ray_module.__version__,
            "gpu": torch.cuda.get_device_name() if args.gpu else None,
        },
    }

    rows = [
        ("torchrun DDP, steady state", f"{ddp_ips:,.0f} img/s", f"{ddp_ms:.1f} ms/step"),
        ("  before / after Ray", f"{steady(ddp_before):,.0f} / {steady(ddp_after):,.0f} img/s", ""),
        ("orchestrator.train, steady state", f"{ray_ips:,.0f} img/s", f"{ray_ms:.1f} ms/step"),
        (
            "step-time ratio (ray / ddp)",
            f"{ratio:.3f}",
            f"target <= {TARGET_RATIO} ({'met' if ratio <= TARGET_RATIO else 'NOT met'})",
        ),
        ("  best steady epoch of each", f"{best_ratio:.3f}", "robust to other load"),
        ("start-up: ray.init", f"{ray['ray_init_seconds']:.1f} s", ""),
        ("start-up: train() to first step", f"{ray['run_start_seconds']:.1f} s", "run, workers, data, model"),
        ("finish: last epoch to return", f"{ray['finish_seconds']:.1f} s", "checkpoint + model to MLflow"),
        ("Ray path wall time", f"{ray['wall_seconds']:.1f} s", ""),
        ("load average (1 min) at the end", f"{result['machine']['load_average_1m']:.1f}", f"{os.cpu_count()} cores"),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")
    save_results(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
