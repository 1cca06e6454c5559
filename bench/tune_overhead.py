"""Ray Tune + MLflow overhead of an ablation, CLI start-up, and MLflow's logging cost per epoch (CPU).

1. Ablation overhead: ``orchestrator.ablation.ablate`` on the ``smoke`` preset as ``python -m
   orchestrator.ablate`` runs it (4 trials of one worker, 300 iterations, 2 at a time on 2 cores;
   ``--tiny``: the tests' tiny overrides instead, tests/orchestrator/conftest.py ``TINY``: 512
   training images, depths 8 and 14, ``--iterations`` per trial, default 8 = 2 epochs), on a
   private local Ray and MLflow on sqlite in a temporary folder. Baseline: the sum of the trials'
   training times, read back from the MLflow runs (an epoch's training seconds = its images / its
   logged ``images_per_second``). Ratio = ablation wall time / that sum; target <= 1.15. Trials
   that run side by side overlap, so the stricter ratio is also given: wall time / (that sum /
   trials at once), i.e. against a perfectly packed schedule of the same training. Also reported:
   each trial's active span (first training step to its last epoch's log, so evaluation and
   checkpoints included), the union of those spans (wall time when at least one trial was
   training) and the rest (start-up, scheduling, teardown): the overhead in seconds.
2. Start-up: wall time of every command's ``--help``, ``--version`` and a mistyped flag, as a
   ratio to ``python -c "import torch"`` measured in the same loop (goal <= 1.3: Ray, Tune and
   MLflow load only once the arguments are good), median of ``--startup-runs``.
3. MLflow logging cost: one ``log_batch`` of an epoch's metrics (11 epoch metrics + 3 per log
   step), on the ablation's own sqlite store, median of 20; compared with the step time of the
   trials here and with the DESIGN.md GPU anchor (CIFAR ResNet-20 at 13.0k img/s, batch 128,
   390 steps/epoch). Amortised over an epoch's steps; target < 1% of step time.

Examples:
  python bench/tune_overhead.py                     # the smoke ablation: ~10 min on a 2-core machine
  python bench/tune_overhead.py --tiny              # 4 tiny trials: ~3 min, the overhead in seconds
  python bench/tune_overhead.py --tiny --iterations 40
  python bench/tune_overhead.py --skip-ablation     # start-up and logging cost only (~1 min)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from results_file import save_results  # noqa: E402

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "tune_overhead.json"
TARGET_RATIO = 1.15
TARGET_LOG_FRACTION = 0.01
# tests/orchestrator/conftest.py TINY, without recipe.total / milestones (set from --iterations).
TINY = ["train_subset=512", "test_subset=256", "log_every=2"]
BATCH = 128  # the smoke recipe's batch
GPU_ANCHOR = {"images_per_s": 13000, "batch": 128, "steps_per_epoch": 390, "log_every": 50}


COMMANDS = ("train", "ablate", "ensemble", "compare", "prepare")
STARTUP_GOAL = 1.3  # a command's --help, --version or argument error over `import torch`, at most


def startup_times(runs: int) -> dict:
    """Median wall time of every command's --help, --version and a mistyped flag (exit 2), each over
    ``python -c "import torch"`` measured in the same loop (interleaved, so load drifts hit both)."""
    commands = {"python -c 'import torch' (baseline)": [sys.executable, "-c", "import torch"]}
    for name in COMMANDS:
        for args in (["--help"], ["--version"], ["--no-such-flag"]):
            commands[f"python -m orchestrator.{name} {args[0]}"] = [sys.executable, "-m", f"orchestrator.{name}", *args]
    times = {label: [] for label in commands}
    for _ in range(runs):
        for label, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[label].append(time.perf_counter() - start)
    baseline = statistics.median(times["python -c 'import torch' (baseline)"])
    out = {}
    for label, values in times.items():
        median = statistics.median(values)
        out[label] = {
            "median_seconds": round(median, 2),
            "runs": [round(t, 2) for t in values],
            "over_import_torch": round(median / baseline, 2),
        }
        print(f"  {label}: {median:.2f} s ({median / baseline:.2f}x import torch)", flush=True)
    return out


def run_ablation(folder: Path, tiny: bool, iterations: int, log_every: int) -> dict:
    import ray

    from orchestrator import tracking
    from orchestrator.ablation import ablate
    from orchestrator.config import parse_overrides
    from orchestrator.matrix import load_ablation

    overrides, axes = {}, {}
    if tiny:
        milestones = f"recipe.milestones=[{max(1, iterations * 3 // 4)}]"
        overrides = parse_overrides(TINY + [f"recipe.total={iterations}", milestones, f"log_every={log_every}"])
        axes = {"depth": "[8, 14]"}
    overrides |= {"storage_path": str(folder / "runs"), "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"}
    ablation = load_ablation("smoke", overrides, name="tune-overhead", axes=axes)
    started = time.time()
    summary = ablate(ablation, echo=lambda line: print("  " + line, flush=True))
    wall = time.time() - started
    ray.shutdown()
    if summary["failed"]:
        raise SystemExit(f"trials failed: {summary['failed']}")
    client = tracking.MlflowClient(tracking_uri=summary["tracking_uri"])
    trials, spans = [], []
    for row in summary["trials"]:
        config = next(t.config for t in ablation.trials if t.name == row["trial"])
        images_per_epoch = config.train_subset // BATCH * BATCH
        speeds = sorted(client.get_metric_history(row["run_id"], "images_per_second"), key=lambda m: m.step)
        epochs = sorted(client.get_metric_history(row["run_id"], "epoch"), key=lambda m: m.step)
        train = [images_per_epoch / m.value for m in speeds]
        begin = epochs[0].timestamp / 1000 - train[0]  # first step of the trial
        end = epochs[-1].timestamp / 1000  # its last epoch's metrics reached MLflow
        spans.append((begin, end))
        trials.append(
            {
                "trial": row["trial"],
                "run_id": row["run_id"],
                "epochs": len(train),
                "train_seconds": round(sum(train), 2),
                "active_span_seconds": round(end - begin, 2),
                "images_per_second": [round(m.value, 1) for m in speeds],
                "step_ms": round(1000 * sum(train) / (len(train) * images_per_epoch // BATCH), 1),
            }
        )
    union, last_end = 0.0, None
    for begin, end in sorted(spans):
        if last_end is None or begin > last_end:
            union += end - begin
        elif end > last_end:
            union += end - last_end
        last_end = end if last_end is None else max(last_end, end)
    train_sum = sum(t["train_seconds"] for t in trials)
    # Model: wall = N + u * S (N: non-training time, u: union of training spans per training second).
    # With N and u fixed, longer trials meet the target once S >= N / (TARGET_RATIO - u).
    u = union / train_sum
    break_even = (wall - union) / (TARGET_RATIO - u) if u < TARGET_RATIO else None
    at_once = summary["trials_at_once"]
    return {
        "preset": "smoke (tiny overrides)" if tiny else "smoke",
        "iterations_per_trial": config.recipe_overrides["total"],
        "trials": trials,
        "trials_at_once": at_once,
        "wall_seconds": round(wall, 1),
        "sum_train_seconds": round(train_sum, 1),
        "ratio_wall_over_sum_train": round(wall / train_sum, 3),
        "ratio_wall_over_packed_train": round(wall / (train_sum / at_once), 3),
        "sum_active_span_seconds": round(sum(e - b for b, e in spans), 1),
        "training_union_seconds": round(union, 1),
        "non_training_seconds": round(wall - union, 1),
        "break_even_sum_train_seconds": round(break_even, 1) if break_even else None,
        "tracking_uri": summary["tracking_uri"],
        "steps_per_epoch": config.train_subset // BATCH,
    }


def logging_cost(tracking_uri: str, repeats: int = 20) -> dict:
    """Median seconds of one log_batch of an epoch's metrics (GPU-epoch-sized: 390 steps, log_every 50)."""
    from orchestrator import tracking

    client = tracking.MlflowClient(tracking_uri=tracking_uri)
    experiment = tracking.ensure_experiment(client, "bench-logging-cost")
    run_id = client.create_run(experiment).info.run_id
    log_steps = GPU_ANCHOR["steps_per_epoch"] // GPU_ANCHOR["log_every"]
    names = [
        "epoch",
        "iteration",
        "epochs",
        "total_iterations",
        "train_loss",
        "train_error",
        "test_loss",
        "test_top1_error",
        "test_top5_error",
        "images_per_second",
        "image_size",
    ]
    times = []
    for epoch in range(repeats):
        step0 = epoch * GPU_ANCHOR["steps_per_epoch"]
        batch = [
            tracking.Metric(k, 0.5, tracking.now_ms(), step0 + (s + 1) * GPU_ANCHOR["log_every"])
            for s in range(log_steps)
            for k in ("train_loss_step", "train_error_step", "lr")
        ]
        batch += [tracking.Metric(k, 1.0, tracking.now_ms(), step0 + GPU_ANCHOR["steps_per_epoch"]) for k in names]
        start = time.perf_counter()
        client.log_batch(run_id, metrics=batch)
        times.append(time.perf_counter() - start)
    client.set_terminated(run_id)
    return {
        "metrics_per_batch": len(batch),
        "median_seconds": statistics.median(times),
        "max_seconds": max(times),
        "repeats": repeats,
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python bench/tune_overhead.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--tiny", action="store_true", help="4 tiny trials (the tests' overrides) instead of the smoke ablation"
    )
    p.add_argument(
        "--iterations", type=int, default=8, help="with --tiny: recipe.total per trial (default 8 = 2 epochs)"
    )
    p.add_argument("--log-every", type=int, default=2, help="steps between step-metric logs (default 2, as TINY)")
    p.add_argument("--startup-runs", type=int, default=3, help="runs of each start-up command (default 3)")
    p.add_argument("--skip-ablation", action="store_true", help="only start-up and logging cost")
    p.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON results (default {DEFAULT_OUTPUT.relative_to(ROOT)})"
    )
    args = p.parse_args(argv)
    if args.iterations < 2 or args.startup_runs < 1 or args.log_every < 1:
        p.error("--iterations must be >= 2, --startup-runs and --log-every >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    load_before = os.getloadavg()[0]
    print(f"start-up ({args.startup_runs} runs each, median):", flush=True)
    startup = startup_times(args.startup_runs)
    ablation = None
    with tempfile.TemporaryDirectory(prefix="tune-overhead-") as folder:
        folder = Path(folder)
        cwd = os.getcwd()
        os.chdir(folder)  # MLflow puts a sqlite experiment's artifacts under ./mlruns of its creator
        try:
            if not args.skip_ablation:
                print(
                    "ablation: smoke preset"
                    + (
                        f", tiny overrides, 4 trials of {args.iterations} iterations"
                        if args.tiny
                        else ", as python -m orchestrator.ablate runs it"
                    ),
                    flush=True,
                )
                ablation = run_ablation(folder, args.tiny, args.iterations, args.log_every)
                uri = ablation["tracking_uri"]
            else:
                uri = f"sqlite:///{folder / 'mlflow.db'}"
            print("MLflow log_batch of one epoch's metrics...", flush=True)
            cost = logging_cost(uri)
        finally:
            os.chdir(cwd)

    log_ms = 1000 * cost["median_seconds"]
    gpu_step_ms = 1000 * GPU_ANCHOR["batch"] / GPU_ANCHOR["images_per_s"]
    cost["gpu_anchor_step_ms"] = round(gpu_step_ms, 2)
    cost["fraction_of_gpu_step_time_amortised"] = log_ms / GPU_ANCHOR["steps_per_epoch"] / gpu_step_ms
    cost["fraction_of_gpu_epoch"] = cost["fraction_of_gpu_step_time_amortised"]  # the same number
    cost["one_log_batch_over_one_gpu_step"] = log_ms / gpu_step_ms
    rows = []
    if ablation:
        cpu_step_ms = statistics.median(t["step_ms"] for t in ablation["trials"])
        cost["cpu_trial_step_ms"] = cpu_step_ms
        cost["fraction_of_cpu_step_time_amortised"] = log_ms / ablation["steps_per_epoch"] / cpu_step_ms
        ratio = ablation["ratio_wall_over_sum_train"]
        rows += [
            ("ablation wall time (4 trials)", f"{ablation['wall_seconds']:.1f} s", ""),
            ("sum of trials' training time", f"{ablation['sum_train_seconds']:.1f} s", "from MLflow epoch metrics"),
            (
                "ratio wall / sum of training",
                f"{ratio:.2f}x",
                f"target <= {TARGET_RATIO} ({'met' if ratio <= TARGET_RATIO else 'NOT met'})",
            ),
            (
                f"ratio wall / (sum / {ablation['trials_at_once']} at once)",
                f"{ablation['ratio_wall_over_packed_train']:.2f}x",
                "against a perfectly packed schedule",
            ),
            ("sum of trials' active spans", f"{ablation['sum_active_span_seconds']:.1f} s", "incl. eval, checkpoints"),
            ("wall time with >= 1 trial training", f"{ablation['training_union_seconds']:.1f} s", ""),
            (
                "wall time with none training",
                f"{ablation['non_training_seconds']:.1f} s",
                "Ray/Tune/worker start-up, MLflow, teardown",
            ),
            (
                "sum of training that meets the target",
                f"{ablation['break_even_sum_train_seconds'] or float('nan'):.0f} s",
                "estimate: same fixed overhead, longer trials",
            ),
        ]
        for t in ablation["trials"]:
            rows.append(
                (
                    f"  {t['trial']}",
                    f"{t['train_seconds']:.1f} s",
                    f"span {t['active_span_seconds']:.1f} s, {t['step_ms']:.0f} ms/step",
                )
            )
    for label, value in startup.items():
        ratio = value["over_import_torch"]
        rows.append(
            (
                f"start-up: {label}",
                f"{value['median_seconds']:.2f} s",
                ""
                if "baseline" in label
                else f"{ratio:.2f}x import torch; goal <= {STARTUP_GOAL} "
                f"({'met' if ratio <= STARTUP_GOAL else 'NOT met'})",
            )
        )
    frac = cost["fraction_of_gpu_step_time_amortised"]
    rows += [
        (f"MLflow log_batch, {cost['metrics_per_batch']} metrics", f"{log_ms:.1f} ms", "median, sqlite"),
        (
            "  / GPU step time (anchor), per step",
            f"{100 * frac:.3f} %",
            f"{GPU_ANCHOR['steps_per_epoch']} steps of {gpu_step_ms:.1f} ms; target < 1% "
            f"({'met' if frac < TARGET_LOG_FRACTION else 'NOT met'})",
        ),
        ("  one log_batch / one GPU step", f"{cost['one_log_batch_over_one_gpu_step']:.2f}x", "paid once per epoch"),
    ]
    if ablation:
        rows.append(
            (
                "  / CPU trial step time, per step",
                f"{100 * cost['fraction_of_cpu_step_time_amortised']:.3f} %",
                f"{ablation['steps_per_epoch']} steps of {cost['cpu_trial_step_ms']:.0f} ms",
            )
        )
    rows.append(
        (
            "load average (1 min) before / after",
            f"{load_before:.1f} / {os.getloadavg()[0]:.1f}",
            f"{os.cpu_count()} cores",
        )
    )
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")

    import mlflow
    import ray

    result = {
        "ablation": ablation,
        "startup": startup,
        "logging": cost,
        "targets": {
            "ratio_wall_over_sum_train": TARGET_RATIO,
            "log_fraction_of_step": TARGET_LOG_FRACTION,
            "startup_over_import_torch": STARTUP_GOAL,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1min": [load_before, os.getloadavg()[0]],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ray": ray.__version__,
            "mlflow": mlflow.__version__,
        },
    }
    save_results(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
