"""Ray Train's overhead on a training step: ``orchestrator.train`` with 1 worker vs the bare loop.

Both paths train the same model on the same data with the same recipe: the bare path calls
``workloads.engine.train_epoch`` over a ``ResidentLoader`` in this process; the Ray path runs
``orchestrator.train.train(config)`` (a private local Ray, 1 Ray Train worker given all the CPU
threads the bare loop uses, MLflow on sqlite in a temporary folder) and its steady-state step time
is read back from the run's MLflow metrics (``images_per_second`` of every epoch after the first).
The bare loop is measured before and after the Ray run (same process, same data) to expose drift
on a shared machine; the ratio of the best steady epochs is reported too, as it is less sensitive
to other load. Start-up (Ray, worker group, data) is reported separately, not in the ratio.

Target: ray step time / bare step time <= 1.05.

Examples:
  python bench/ray_overhead.py                          # CIFAR ResNet-20, 2,048 images, 5 epochs (~2-3 min on 2 cores)
  python bench/ray_overhead.py --model cifar_resnet8 --epochs 4 --train-subset 1024
  python bench/ray_overhead.py --gpu --train-subset 20000   # one GPU for both paths (bf16, channels_last)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from results_file import save_results  # noqa: E402
from orchestrator.config import ExperimentConfig, load_config, scaled_schedule  # noqa: E402
from orchestrator.data import load_split  # noqa: E402
from orchestrator.worker import build_run_model, resolved_recipe  # noqa: E402
from workloads.data import ResidentLoader, per_pixel_mean  # noqa: E402
from workloads.engine import build_optimizer, get_recipe, prepare_model, train_epoch  # noqa: E402

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "ray_overhead.json"
TARGET_RATIO = 1.05


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python bench/ray_overhead.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cifar_resnet20", help="model name (default: cifar_resnet20)")
    p.add_argument("--dataset", default="fashion-mnist", help="data set (default: fashion-mnist)")
    p.add_argument("--data-root", help="where the data set lives (else its default)")
    p.add_argument("--train-subset", type=int, default=2048, help="training images (default: 2048)")
    p.add_argument("--test-subset", type=int, default=500, help="test images the Ray run evaluates (default: 500)")
    p.add_argument("--epochs", type=int, default=5,
                   help="epochs per path; the first is warm-up, the rest are steady state (default: 5)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="CPU threads of the bare loop = CPUs given to the Ray worker (default: all cores)")
    p.add_argument("--gpu", action="store_true", help="train on one GPU in both paths")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON results (default: {DEFAULT_OUTPUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the first epoch is warm-up)")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def make_config(args, storage: Path) -> ExperimentConfig:
    batches = args.train_subset // get_recipe("smoke").batch_size
    if batches < 1:
        raise SystemExit(f"--train-subset {args.train_subset} is less than one batch")
    values = {"name": "ray-overhead", "model": args.model, "dataset": args.dataset, "data_root": args.data_root,
              "train_subset": args.train_subset, "test_subset": args.test_subset, "recipe": "smoke",
              "workers": 1, "cpus_per_worker": float(args.threads), "use_gpu": args.gpu,
              "storage_path": str(storage), "tracking_uri": f"sqlite:///{storage / 'mlflow.db'}",
              "experiment": "bench-ray-overhead"}
    config = load_config("smoke", values)
    return dataclasses.replace(config, recipe_overrides=scaled_schedule(config, iterations=batches * args.epochs))


def bare_loop(config: ExperimentConfig, threads: int) -> list[float]:
    """images/s of each epoch of the worker's loop, without Ray (rank 0 of 1, this process)."""
    torch.set_num_threads(threads)
    device = torch.device("cuda" if config.use_gpu else "cpu")
    on_gpu = device.type == "cuda"
    torch.manual_seed(config.seed)
    train_data = load_split(config, "train")
    recipe = get_recipe(config.recipe, **config.recipe_overrides)
    loader = ResidentLoader(train_data.images, train_data.labels, recipe.per_worker_batch(1), train=True,
                            mean=per_pixel_mean(train_data.images), device=device, seed=config.seed)
    recipe = resolved_recipe(config, len(loader))
    model = prepare_model(build_run_model(config, train_data.in_channels, train_data.num_classes), device,
                          channels_last=on_gpu)
    optimizer = build_optimizer(model, recipe)
    speeds, iteration, epoch = [], 0, 0
    while iteration < recipe.total_iterations:
        stats = train_epoch(model, loader, optimizer, recipe, start_iteration=iteration, device=device, epoch=epoch,
                            autocast_dtype=torch.bfloat16 if on_gpu else None, channels_last=on_gpu,
                            log_every=config.log_every)
        iteration, epoch = stats.end_iteration, epoch + 1
        speeds.append(stats.images_per_second)
    return speeds


def ray_run(config: ExperimentConfig) -> dict:
    """Train through ``orchestrator.train`` and read its per-epoch speeds and timings back from MLflow."""
    import ray

    from orchestrator import cli, tracking
    from orchestrator.train import train

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
    images_per_epoch = config.train_subset // get_recipe(config.recipe).batch_size * get_recipe(config.recipe).batch_size
    first_epoch_logged = epochs[0].timestamp / 1000
    first_epoch_seconds = images_per_epoch / speeds[0].value
    return {"images_per_second": [m.value for m in speeds], "run_id": summary.run_id,
            "ray_init_seconds": ray_ready - started,
            # From train() to the first training step: MLflow run, worker group, data, model.
            "run_start_seconds": first_epoch_logged - first_epoch_seconds - ray_ready,
            # From the last epoch to train()'s return: checkpoint and model upload to MLflow.
            "finish_seconds": ended - epochs[-1].timestamp / 1000,
            "wall_seconds": ended - started}


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
            print(f"{config.model} on {args.train_subset} {config.dataset} images, batch {batch}, "
                  f"{args.epochs} epochs per path, {args.threads} thread(s), {'GPU' if args.gpu else 'CPU'}", flush=True)
            print("bare loop (before)...", flush=True)
            bare_before = bare_loop(config, args.threads)
            print("orchestrator.train, 1 worker...", flush=True)
            ray = ray_run(config)
            print("bare loop (after)...", flush=True)
            bare_after = bare_loop(config, args.threads)
        finally:
            os.chdir(cwd)

    bare_ips = statistics.fmean([steady(bare_before), steady(bare_after)])
    ray_ips = steady(ray["images_per_second"])
    bare_ms, ray_ms = 1000 * batch / bare_ips, 1000 * batch / ray_ips
    ratio = ray_ms / bare_ms
    # Best steady epoch of each path: less sensitive to other load on a shared machine.
    best_ratio = max(bare_before[1:] + bare_after[1:]) / max(ray["images_per_second"][1:])
    result = {
        "model": config.model, "dataset": config.dataset, "train_subset": args.train_subset, "batch": batch,
        "epochs": args.epochs, "threads": args.threads, "device": "cuda" if args.gpu else "cpu",
        "bare_images_per_second": {"before": bare_before, "after": bare_after},
        "ray_images_per_second": ray["images_per_second"],
        "bare_step_ms": bare_ms, "ray_step_ms": ray_ms, "step_time_ratio": ratio,
        "best_epoch_step_time_ratio": best_ratio,
        "target_ratio": TARGET_RATIO, "meets_target": ratio <= TARGET_RATIO,
        "ray_init_seconds": ray["ray_init_seconds"], "run_start_seconds": ray["run_start_seconds"],
        "finish_seconds": ray["finish_seconds"], "ray_wall_seconds": ray["wall_seconds"],
        "machine": {"cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0], "python": platform.python_version(),
                    "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if args.gpu else None},
    }
    import ray as ray_module

    result["machine"]["ray"] = ray_module.__version__

    rows = [("bare loop, steady state", f"{bare_ips:,.0f} img/s", f"{bare_ms:.1f} ms/step"),
            ("  before / after Ray", f"{steady(bare_before):,.0f} / {steady(bare_after):,.0f} img/s", ""),
            ("orchestrator.train, steady state", f"{ray_ips:,.0f} img/s", f"{ray_ms:.1f} ms/step"),
            ("step-time ratio (ray / bare)", f"{ratio:.3f}", f"target <= {TARGET_RATIO} "
                                                              f"({'met' if ratio <= TARGET_RATIO else 'NOT met'})"),
            ("  best steady epoch of each", f"{best_ratio:.3f}", "robust to other load"),
            ("start-up: ray.init", f"{ray['ray_init_seconds']:.1f} s", ""),
            ("start-up: train() to first step", f"{ray['run_start_seconds']:.1f} s", "run, workers, data, model"),
            ("finish: last epoch to return", f"{ray['finish_seconds']:.1f} s", "checkpoint + model to MLflow"),
            ("Ray path wall time", f"{ray['wall_seconds']:.1f} s", ""),
            ("load average (1 min) at the end", f"{result['machine']['load_average_1m']:.1f}",
             f"{os.cpu_count()} cores")]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")
    save_results(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
