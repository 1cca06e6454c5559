"""The paper's CIFAR schedule (64k iterations of batch 128): measured rates, extrapolated run times.

For each model, two ways to run the same training step (batch 128, same recipe and lr schedule,
same augmentation), measured in the same process on the same synthetic CIFAR-sized data set
(50,000 uint8 images of 3x32x32 on the device):
- naive: ``workloads.engine.train_epoch`` over a ``ResidentLoader`` (what ``orchestrator.train``
  runs today: eager, per-batch augmentation, a host sync every ``log_every`` steps);
- fast: ``workloads.engine.fast_cifar.FastCifarTrainer`` (the epoch augmented on the device in a
  few large ops, lr read from the device by fused SGD, one host sync per epoch, the whole step
  captured in a CUDA graph on CUDA; ``--fast-compile`` adds a torch.compile'd variant).
MEASURED: iterations/s over ``--steps`` timed steps after ``--warmup`` untimed ones (the fast
trainer's warm-up includes its graph capture; the timed window includes its per-epoch
augmentation and its end-of-window sync). EXTRAPOLATED: 64,000 / (iterations/s), the paper's
full run, training steps only (no evaluation, no start-up).

Targets (one H200): ResNet-110's paper schedule in <= 10 min; the whole Table 6 matrix (ResNet and
plain 20/32/44/56/110, 10 runs) in <= 30 min by packing runs on one GPU. ``--matrix`` measures the
fast rate of all 10 nets one at a time; ``--pack N[,M...]`` also trains them N at a time in one
process, each run on its own CUDA stream (``workloads.engine.packed.PackedTrainers``: the kernels
of different runs overlap), and estimates the matrix's wall time from the packed rates. (Packing
separate processes was measured slower than one at a time: without MPS their kernels time-slice.)
It also times one test pass of every net (``--test-images``, the eager ``evaluate`` that each run of
``ablate --pack`` does every epoch) and adds it, x 165 epochs, to the packed estimates.

``--real-data PATH`` (the extracted cifar10-jpeg/ folder with train/ and test/) also trains
ResNet-20 for ``--real-epochs`` (20) epochs with the fast trainer on real CIFAR-10 (the paper's
recipe with the milestones scaled to 50% / 75% of the run) and reports test error and wall time;
the baseline to beat on an H200: 16.3% test error in 70 s.

Examples:
  python bench/cifar_schedule.py --quick                        # CPU correctness run, ~1-2 min
  python bench/cifar_schedule.py                                # GPU: ResNet-20/56/110, naive vs fast
  python bench/cifar_schedule.py --matrix --pack 5,10 --models ''
  python bench/cifar_schedule.py --models cifar_resnet20 --real-data data/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from results_file import save_results  # noqa: E402

from workloads.data import ResidentLoader, load_dataset, per_pixel_mean, synthetic  # noqa: E402
from workloads.engine import build_optimizer, evaluate, get_recipe, prepare_model, train_epoch  # noqa: E402
from workloads.engine.fast_cifar import FastCifarTrainer  # noqa: E402
from workloads.engine.packed import PackedTrainers  # noqa: E402
from workloads.engine.recipes import recipe_for_depth  # noqa: E402
from workloads.models import build_model, parse_model_name  # noqa: E402

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "cifar_schedule.json"
PAPER_ITERATIONS = 64_000
TABLE6 = [f"cifar_{kind}{d}" for d in (20, 32, 44, 56, 110) for kind in ("resnet", "plain")]
CIFAR_TRAIN_IMAGES = 50_000  # an epoch of the paper's recipe: 390 steps of 128
TARGET_R110_S = 600  # ResNet-110's paper schedule on one H200
TARGET_MATRIX_S = 1800  # the Table 6 matrix on one H200
REAL_BASELINE = {"test_error": 16.3, "seconds": 70}  # ResNet-20, 20 epochs, one H200


def setup(device: torch.device):
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cudnn.benchmark = True
    return (torch.bfloat16 if on_cuda else None), on_cuda


def make_recipe(name: str, total: int | None = None):
    recipe = get_recipe("cifar")
    if total is not None:  # the paper's milestones at 50% and 75% of a shorter run
        recipe = dataclasses.replace(recipe, total=total, milestones=(total // 2, total * 3 // 4))
    return recipe_for_depth(recipe, parse_model_name(name).depth)


def naive_rate(name: str, images, labels, mean, device, warmup: int, steps: int) -> float:
    autocast, on_cuda = setup(device)
    torch.manual_seed(0)
    recipe = make_recipe(name)
    model = prepare_model(build_model(name), device, channels_last=on_cuda)
    optimizer = build_optimizer(model, recipe)
    loader = ResidentLoader(images, labels, recipe.batch_size, train=True, mean=mean, device=device)

    def forever():
        for epoch in itertools.count():
            loader.set_epoch(epoch)
            yield from loader

    batches = forever()
    kw = dict(device=device, autocast_dtype=autocast, channels_last=on_cuda, log_every=50)
    train_epoch(model, itertools.islice(batches, warmup), optimizer, recipe, start_iteration=0, **kw)
    stats = train_epoch(model, itertools.islice(batches, steps), optimizer, recipe, start_iteration=warmup, **kw)
    return stats.iterations / stats.seconds  # train_epoch ends with a host sync: the clock is honest


def fast_trainer(
    name: str, images, labels, mean, device, compile: bool, recipe=None, graph: bool | None = None
) -> FastCifarTrainer:
    autocast, on_cuda = setup(device)
    torch.manual_seed(0)
    recipe = recipe or make_recipe(name)
    model = prepare_model(build_model(name, num_classes=10), device, channels_last=on_cuda)
    return FastCifarTrainer(
        model,
        images,
        labels,
        recipe,
        device=device,
        mean=mean,
        autocast_dtype=autocast,
        channels_last=on_cuda,
        compile=compile,
        cuda_graph=graph,
    )


def fast_rate(
    name: str, images, labels, mean, device, warmup: int, steps: int, compile: bool = False, graph: bool | None = None
) -> float:
    trainer = fast_trainer(name, images, labels, mean, device, compile, graph=graph)
    trainer.train_epoch(0, 0, max_steps=warmup)  # eager steps, graph capture, compile
    epoch, done, seconds = 1, 0, 0.0
    while done < steps:  # windows longer than an epoch run several (each with its own augmentation)
        stats = trainer.train_epoch(epoch, warmup + done, max_steps=steps - done)
        done, seconds, epoch = done + stats.iterations, seconds + stats.seconds, epoch + 1
    return done / seconds


def packed_rate(group: list[str], images, labels, mean, device, warmup: int, steps: int) -> float:
    """Rounds/s of ``group`` trained together (``PackedTrainers``): each net takes one step a round."""
    packed = PackedTrainers([fast_trainer(name, images, labels, mean, device, False) for name in group])
    packed.train_epoch(0, [0] * len(group), max_steps=warmup)  # eager steps and each net's graph capture
    epoch, done, seconds = 1, 0, 0.0
    while done < steps:
        stats = packed.train_epoch(epoch, [warmup + done] * len(group), max_steps=steps - done)
        done, seconds, epoch = done + stats[0].iterations, seconds + max(s.seconds for s in stats), epoch + 1
    return done / seconds


def eval_seconds(name: str, images, labels, mean, device) -> float:
    """Seconds of one test pass of ``name`` over ``images``, as each packed run of ``ablate --pack``
    does every epoch (``workloads.engine.evaluate``, eager, batch 256); the second of two passes."""
    autocast, on_cuda = setup(device)
    model = prepare_model(build_model(name, num_classes=10), device, channels_last=on_cuda)
    loader = ResidentLoader(images, labels, 256, train=False, mean=mean, device=device)
    evaluate(model, loader, device, autocast)  # warm-up (cuDNN autotuning)
    started = time.perf_counter()
    evaluate(model, loader, device, autocast)  # ends with a host sync: the clock is honest
    return time.perf_counter() - started


def real_data_run(args, device) -> dict:
    """ResNet-20 (the first of --models) on real CIFAR-10 JPEGs, fast trainer, test error at the end."""
    autocast, on_cuda = setup(device)
    started = time.perf_counter()
    kw = {"max_per_class": args.real_max_per_class} if args.real_max_per_class else {}
    train = load_dataset("cifar10-jpeg", "train", root=args.real_data, **kw)
    test = load_dataset("cifar10-jpeg", "test", root=args.real_data, **kw)
    load_seconds = time.perf_counter() - started
    mean = per_pixel_mean(train.images)
    name = "cifar_resnet20"
    steps_per_epoch = len(train) // 128
    recipe = make_recipe(name, total=args.real_epochs * steps_per_epoch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    trainer = fast_trainer(name, train.images, train.labels, mean, device, False, recipe)
    iteration, losses = 0, []
    for epoch in range(args.real_epochs):
        stats = trainer.train_epoch(epoch, iteration)
        iteration = stats.end_iteration
        losses.append(round(stats.loss, 4))
    train_seconds = time.perf_counter() - started
    test_loader = ResidentLoader(test.images, test.labels, 1000, train=False, mean=mean, device=device)
    result = evaluate(trainer.model, test_loader, device, autocast, channels_last=on_cuda)
    total = time.perf_counter() - started
    return {
        "model": name,
        "epochs": args.real_epochs,
        "iterations": iteration,
        "train_images": len(train),
        "test_images": len(test),
        "recipe": recipe.to_dict(),
        "train_loss_per_epoch": losses,
        "test_top1_error": round(result["top1_error"], 2),
        "test_loss": round(result["loss"], 4),
        "train_seconds": round(train_seconds, 1),
        "wall_seconds_train_and_test": round(total, 1),
        "data_load_seconds_not_counted": round(load_seconds, 1),
        "baseline_h200": REAL_BASELINE,
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python bench/cifar_schedule.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CPU correctness run: cifar_resnet8/20, 1,024 images, 2 warm-up + 4 timed steps",
    )
    p.add_argument(
        "--models",
        help="nets measured naive vs fast, comma-separated; '' for none "
        "(default cifar_resnet20,cifar_resnet56,cifar_resnet110)",
    )
    p.add_argument("--images", type=int, default=50_000, help="synthetic training images (default 50,000)")
    p.add_argument(
        "--test-images",
        type=int,
        default=10_000,
        help="with --matrix: synthetic test images of the per-epoch test pass (default 10,000)",
    )
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (default 20)")
    p.add_argument("--steps", type=int, default=390, help="timed steps (default 390 = one CIFAR epoch)")
    p.add_argument("--fast-compile", action="store_true", help="also measure fast + torch.compile")
    p.add_argument("--no-naive", action="store_true", help="skip the naive rows")
    p.add_argument("--matrix", action="store_true", help="fast rates of all 10 Table 6 nets, and the matrix estimate")
    p.add_argument(
        "--pack",
        default="",
        help="with --matrix: also train N nets at once on CUDA streams in one "
        "process; a comma-separated list measures several N (e.g. 5,10)",
    )
    p.add_argument("--real-data", type=Path, help="cifar10-jpeg folder: also train ResNet-20 on real CIFAR-10")
    p.add_argument("--real-epochs", type=int, default=20, help="epochs of the real-data run (default 20)")
    p.add_argument("--real-max-per-class", type=int, help="keep only k images per class (for quick checks)")
    p.add_argument("--cpu", action="store_true", help="use the CPU even if CUDA is there")
    p.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON results (default {DEFAULT_OUTPUT.relative_to(ROOT)})"
    )
    args = p.parse_args(argv)
    if args.models is None:
        args.models = "cifar_resnet8,cifar_resnet20" if args.quick else "cifar_resnet20,cifar_resnet56,cifar_resnet110"
    if args.quick:
        args.cpu = True
        args.images, args.warmup, args.steps, args.test_images = 1024, 2, 4, 512
    try:
        args.pack = [int(n) for n in args.pack.split(",") if n.strip()]
    except ValueError:
        p.error(f"--pack {args.pack!r}: expected comma-separated integers, e.g. 5,10")
    if min([args.images // 128, args.steps, args.real_epochs, *args.pack]) < 1 or args.warmup < 1:
        p.error("--images must hold one batch of 128; --steps, --warmup, --pack, --real-epochs must be >= 1")
    return args


def fmt_time(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu":
        torch.set_num_threads(min(2, os.cpu_count()))
    load_before = os.getloadavg()[0]
    images, labels = synthetic(args.images, (3, 32, 32), 10)
    mean = per_pixel_mean(images)
    where = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(
        f"device {where}, torch {torch.__version__}; batch 128, {args.images:,} synthetic images, "
        f"{args.warmup} warm-up + {args.steps} timed steps per row",
        flush=True,
    )
    rows = []

    def add(name, mode, rate):
        rows.append(
            {
                "model": name,
                "mode": mode,
                "iterations_per_s": round(rate, 2),
                "images_per_s": round(rate * 128),
                "paper_schedule_seconds_extrapolated": round(PAPER_ITERATIONS / rate, 1),
            }
        )
        print(
            f"  {name:<16} {mode:<13} {rate:8.2f} it/s  {rate * 128:9,.0f} img/s  "
            f"64k iterations ~ {fmt_time(PAPER_ITERATIONS / rate)}",
            flush=True,
        )

    for name in [m for m in args.models.split(",") if m]:
        if not args.no_naive:
            add(name, "naive", naive_rate(name, images, labels, mean, device, args.warmup, args.steps))
        try:
            add(name, "fast", fast_rate(name, images, labels, mean, device, args.warmup, args.steps))
        except Exception as error:  # noqa: BLE001 - an unattended GPU run keeps going without the graph
            print(
                f"  {name} fast: FAILED ({type(error).__name__}: {error}); retrying without the CUDA graph", flush=True
            )
            add(
                name,
                "fast-no-graph",
                fast_rate(name, images, labels, mean, device, args.warmup, args.steps, graph=False),
            )
        if args.fast_compile:
            try:
                add(name, "fast+compile", fast_rate(name, images, labels, mean, device, args.warmup, args.steps, True))
            except Exception as error:  # noqa: BLE001 - report it, keep the rest of the run
                print(f"  {name} fast+compile: FAILED ({type(error).__name__}: {str(error)[:500]})", flush=True)

    matrix = None
    if args.matrix:
        nets = TABLE6 if not args.quick else ["cifar_resnet8", "cifar_plain8"]  # --quick: a 2-net stand-in
        solo = {r["model"]: r["iterations_per_s"] for r in rows if r["mode"] == "fast"}
        for name in nets:
            if name not in solo:
                add(name, "fast", fast_rate(name, images, labels, mean, device, args.warmup, args.steps))
                solo[name] = rows[-1]["iterations_per_s"]
        sequential = sum(PAPER_ITERATIONS / solo[n] for n in nets)
        matrix = {"nets": nets, "sequential_seconds_extrapolated": round(sequential, 1)}
        # Costliest first, dealt into groups of N; a group lasts as long as 64k rounds take (every net
        # of a group takes one step a round, and all have the same 64k iterations).
        order = sorted(nets, key=lambda n: -PAPER_ITERATIONS / solo[n])
        matrix["packed"] = []
        for n in args.pack:
            groups = [order[i : i + n] for i in range(0, len(order), n)]
            rates = [packed_rate(g, images, labels, mean, device, args.warmup, args.steps) for g in groups]
            total = sum(PAPER_ITERATIONS / r for r in rates)
            for group, rate in zip(groups, rates):
                print(f"  packed {len(group)}: {', '.join(group)}: {rate:.1f} rounds/s", flush=True)
            matrix["packed"].append(
                {
                    "n": n,
                    "groups": groups,
                    "rounds_per_s": [round(r, 2) for r in rates],
                    "seconds_extrapolated": round(total, 1),
                }
            )
        # What `ablate --pack` adds per epoch: every run's test pass, one after another.
        test_images, test_labels = synthetic(args.test_images, (3, 32, 32), 10, seed=1)
        per_epoch = sum(eval_seconds(n, test_images, test_labels, mean, device) for n in nets)
        epochs = -(-PAPER_ITERATIONS // (CIFAR_TRAIN_IMAGES // 128))  # the worker's ceil(64000 / 390)
        matrix["eval"] = {
            "test_images": args.test_images,
            "seconds_per_epoch_all_nets": round(per_epoch, 3),
            "epochs": epochs,
            "seconds_extrapolated": round(per_epoch * epochs, 1),
        }
        print(
            f"  test pass of all {len(nets)} nets on {args.test_images:,} images: {per_epoch:.2f} s per epoch, "
            f"x {epochs} epochs = {fmt_time(per_epoch * epochs)}",
            flush=True,
        )

    real = real_data_run(args, device) if args.real_data else None

    print(
        f"\n{'model':<16} {'mode':<13} {'it/s':>8} {'img/s':>9} {'64k iterations':>15}   (rates MEASURED, "
        f"run times EXTRAPOLATED)"
    )
    for r in rows:
        print(
            f"{r['model']:<16} {r['mode']:<13} {r['iterations_per_s']:>8.2f} {r['images_per_s']:>9,} "
            f"{fmt_time(r['paper_schedule_seconds_extrapolated']):>15}"
        )
    speedups = {}
    for name in {r["model"] for r in rows}:
        by_mode = {r["mode"]: r["iterations_per_s"] for r in rows if r["model"] == name}
        fast = by_mode.get("fast", by_mode.get("fast-no-graph"))
        if "naive" in by_mode and fast:
            speedups[name] = round(fast / by_mode["naive"], 3)
            print(f"fast / naive, {name}: {speedups[name]:.2f}x")
    r110 = min(
        (r for r in rows if r["model"] == "cifar_resnet110" and r["mode"].startswith("fast")),
        key=lambda r: r["paper_schedule_seconds_extrapolated"],
        default=None,
    )
    if r110 and device.type == "cuda":
        s = r110["paper_schedule_seconds_extrapolated"]
        print(
            f"ResNet-110, paper schedule, {r110['mode']}: {fmt_time(s)} (target <= {TARGET_R110_S // 60} min on "
            f"an H200: {'met' if s <= TARGET_R110_S else 'NOT met'})"
        )
    if matrix:
        sequential = fmt_time(matrix["sequential_seconds_extrapolated"])
        line = f"Table 6 matrix ({len(matrix['nets'])} nets), one at a time: {sequential}"
        for packed in matrix["packed"]:
            line += f"; {packed['n']} at a time on streams: {fmt_time(packed['seconds_extrapolated'])}"
        print(line + f" (target <= {TARGET_MATRIX_S // 60} min on an H200; extrapolated, training steps only)")
        for packed in matrix["packed"]:
            print(
                f"  with every run's test pass each epoch (ablate --pack {packed['n']}): "
                f"{fmt_time(packed['seconds_extrapolated'] + matrix['eval']['seconds_extrapolated'])}"
            )
    if real:
        print(
            f"real CIFAR-10, {real['model']}, {real['epochs']} epochs ({real['iterations']} iterations): "
            f"test error {real['test_top1_error']:.2f}% in {real['wall_seconds_train_and_test']:.1f} s "
            f"(train {real['train_seconds']:.1f} s; data load {real['data_load_seconds_not_counted']:.1f} s not "
            f"counted); baseline on an H200: {REAL_BASELINE['test_error']}% in {REAL_BASELINE['seconds']} s"
        )
    print(f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; {os.cpu_count()} CPUs")

    results = {
        "machine": {
            "device": where,
            "cpus": os.cpu_count(),
            "load_average_1min": [load_before, os.getloadavg()[0]],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "output"},
        "measured": "iterations_per_s over the timed steps",
        "extrapolated": "seconds = 64000 / iterations_per_s",
        "rows": rows,
        "fast_over_naive": speedups,
        "matrix": matrix,
        "real_data": real,
        "targets": {
            "resnet110_paper_schedule_seconds": TARGET_R110_S,
            "table6_matrix_seconds": TARGET_MATRIX_S,
            "real_data_baseline_h200": REAL_BASELINE,
        },
    }
    save_results(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
