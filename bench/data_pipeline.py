"""Benchmark (not a test) of the input pipelines, in images/s and images/s per CPU core.

1. ImageNet-style training path on synthetic JPEGs of ImageNet-like size (default 200 files of
   500x375, written with PIL into a temp folder): decode + the paper's augmentation
   (``ImageNetTrainTransform``: scale 256-480, 224 crop, flip, mean, PCA lighting) through
   - ours: Parquet shards (``workloads.data.write_shards``) -> ``imagenet_train_batch``, in one
     process, and through Ray Data (``orchestrator.shards.read_shards``) on W CPUs;
   - torchvision: ``datasets.ImageFolder`` + the same transform through a torch ``DataLoader``
     with 0 workers (one core) and with W workers.
   Each pair is measured in the same run; the ratio is ours / torchvision. Timed passes follow
   one warm-up pass (worker start-up, imports, page cache).
   - ours, decode on the device: the same shards -> ``device_train_batch`` (batched
     ``decode_jpeg`` + ``roi_align`` crops on the GPU; on the CPU with ``--device-decode cpu``), batch
     ``--device-batch``; the target is to feed 1.2x what one GPU trains ResNet-50 at (``--train-rate``).
2. CIFAR augmentation on the training device (``ResidentLoader``: pad 4, crop, flip, mean) on the
   CPU, and on CUDA when there is one.

Prints a table and writes JSON (default bench/results/data_pipeline.json, git-ignored).

Examples:
  python bench/data_pipeline.py                       # about 1-2 minutes on a 2-core machine
  python bench/data_pipeline.py --images 1000 --workers 8 --no-ray
  python bench/data_pipeline.py --images 1024 --workers 16 --no-ray --device-decode cuda   # a GPU node
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torchvision
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: import workloads/ and orchestrator/
from results_file import save_results  # noqa: E402

from workloads.data import (  # noqa: E402
    ImageNetTrainTransform,
    ResidentLoader,
    imagenet_train_batch,
    open_source,
    per_pixel_mean,
    write_shards,
)
from workloads.data.device_decode import device_train_batch  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImageNet channel means, [0,1] units
CLASSES = 4


def write_jpegs(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> float:
    """n JPEGs (quality 90) of ``size`` (W, H) in CLASSES class folders; returns the mean file size in KB.

    Smooth colour gradients plus pixel noise: the files come out near ImageNet's ~110 KB average,
    so the decoder does a realistic amount of entropy decoding.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    total = 0
    for i in range(n):
        base = rng.uniform(30, 220, 3) + np.stack(
            [xx * rng.uniform(-0.3, 0.3), yy * rng.uniform(-0.3, 0.3), (xx + yy) * rng.uniform(-0.2, 0.2)], -1
        )
        pixels = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        path = folder / f"class{i % CLASSES}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, format="JPEG", quality=90)
        total += path.stat().st_size
    return total / n / 1e3


def timed_passes(run_pass, passes: int) -> float:
    """images/s over ``passes`` timed passes, after one warm-up pass; ``run_pass`` returns its image count."""
    run_pass()
    start, images = time.perf_counter(), 0
    for _ in range(passes):
        images += run_pass()
    return images / (time.perf_counter() - start)


def shard_batches(shard_folder: Path, batch: int) -> list[dict]:
    """The shards' rows as decode-ready column dicts of ``batch`` rows, read once up front: the rows
    below measure decode + augment, as a data worker runs it over a shard in memory."""
    table = pa.concat_tables([pq.read_table(p) for p in sorted(shard_folder.glob("part-*.parquet"))]).combine_chunks()
    return [
        {
            name: np.array(part.column(name).to_pylist(), dtype=None if name == "label" else object)
            for name in ("key", "image", "label")
        }
        for part in table.to_batches(max_chunksize=batch)
    ]


def ours_in_process(shard_folder: Path, batch: int, passes: int) -> float:
    batches = shard_batches(shard_folder, batch)
    return timed_passes(lambda: sum(len(imagenet_train_batch(b, MEAN)["label"]) for b in batches), passes)


def ours_on_device(shard_folder: Path, batch: int, passes: int, device: str) -> float:
    batches = shard_batches(shard_folder, batch)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run_pass() -> int:
        count = sum(len(device_train_batch(b, MEAN, device)[1]) for b in batches)
        sync()  # kernels run asynchronously: wait before reading the clock
        return count

    return timed_passes(run_pass, passes)


def torchvision_loader(image_root: Path, batch: int, workers: int, passes: int) -> float:
    transform = torchvision.transforms.Compose(
        [torchvision.transforms.PILToTensor(), ImageNetTrainTransform(torch.from_numpy(MEAN))]
    )
    dataset = torchvision.datasets.ImageFolder(str(image_root), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    return timed_passes(lambda: sum(len(y) for _, y in loader), passes)


def ours_ray_data(out: Path, batch: int, workers: int, passes: int) -> float:
    import ray

    from orchestrator.shards import iter_torch, read_shards

    ray.init(
        address="local",
        num_cpus=workers,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level="ERROR",
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        dataset = read_shards(str(out), "train", augment="imagenet-train", mean=MEAN, batch_size=batch)
        return timed_passes(lambda: sum(len(y) for _, y in iter_torch(dataset, batch)), passes)
    finally:
        ray.shutdown()


def resident_cifar(device: str, n: int, batch: int, passes: int) -> float:
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,))
    loader = ResidentLoader(images, labels, batch, train=True, mean=per_pixel_mean(images), device=device)

    def run_pass() -> int:
        count = 0
        for x, _ in loader:
            count += len(x)
        if device == "cuda":
            torch.cuda.synchronize()  # kernels run asynchronously: wait before reading the clock
        return count

    return timed_passes(run_pass, passes)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200, help="synthetic JPEGs to generate (default 200)")
    p.add_argument("--size", default="500x375", help="JPEG width x height in pixels (default 500x375)")
    p.add_argument("--batch", type=int, default=32, help="images per batch in every pipeline (default 32)")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count(),
        help="CPU workers for Ray Data and the DataLoader (default: all cores)",
    )
    p.add_argument("--passes", type=int, default=2, help="timed passes after the warm-up (default 2)")
    p.add_argument("--cifar-images", type=int, default=10000, help="images in the ResidentLoader set (default 10000)")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray Data row (no Ray start-up)")
    p.add_argument(
        "--device-decode",
        choices=("none", "cpu", "cuda"),
        default="cuda" if torch.cuda.is_available() else "none",
        help="the on-device decode row's device (default: cuda if there is one, else none)",
    )
    p.add_argument("--device-batch", type=int, default=256, help="batch of the on-device decode row (default 256)")
    p.add_argument(
        "--train-rate",
        type=float,
        default=6633.0,
        help="img/s one GPU trains ResNet-50 at, for the feed target (default 6,633: torchvision, "
        "torch.compile, H200, DESIGN.md)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "data_pipeline.json",
        help="JSON results file (default bench/results/data_pipeline.json)",
    )
    args = p.parse_args(argv)
    try:
        args.size = tuple(int(v) for v in args.size.lower().split("x"))
        assert len(args.size) == 2 and min(args.size) > 0
    except (ValueError, AssertionError):
        p.error(f"--size {args.size!r}: expected WIDTHxHEIGHT in pixels, e.g. 500x375")
    if min(args.images, args.batch, args.workers, args.passes, args.cifar_images) < 1:
        p.error("--images, --batch, --workers, --passes and --cifar-images must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the in-process rows are one core each
    load_before = os.getloadavg()  # on a shared machine, other jobs' load explains noisy numbers
    rows = []  # (pipeline, images/s, cores)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        kb = write_jpegs(tmp / "jpegs", args.images, args.size)
        # Several shards per worker, so Ray Data has blocks to spread over W CPUs.
        shard_size = math.ceil(args.images / (4 * args.workers))
        write_shards(open_source("folder", "train", tmp / "jpegs"), str(tmp / "shards"), shard_size=shard_size)
        print(
            f"{args.images} JPEGs {args.size[0]}x{args.size[1]}, {kb:.0f} KB each on average; "
            f"{args.passes} timed passes after a warm-up; batch {args.batch}",
            flush=True,
        )
        ours_1 = ours_in_process(tmp / "shards" / "train", args.batch, args.passes)
        theirs_1 = torchvision_loader(tmp / "jpegs", args.batch, 0, args.passes)
        rows += [
            ("ImageNet train: shards + imagenet_train_batch, 1 process", ours_1, 1),
            ("ImageNet train: ImageFolder + DataLoader(num_workers=0)", theirs_1, 1),
        ]
        theirs_w = torchvision_loader(tmp / "jpegs", args.batch, args.workers, args.passes)
        if not args.no_ray:
            ours_w = ours_ray_data(tmp / "shards", args.batch, args.workers, args.passes)
            rows.append((f"ImageNet train: shards + Ray Data map_batches, {args.workers} CPUs", ours_w, args.workers))
        rows.append((f"ImageNet train: ImageFolder + DataLoader(num_workers={args.workers})", theirs_w, args.workers))
        if args.device_decode != "none":
            on_device = ours_on_device(tmp / "shards" / "train", args.device_batch, args.passes, args.device_decode)
            rows.append(
                (
                    f"ImageNet train: shards + device_train_batch on {args.device_decode}, batch {args.device_batch}",
                    on_device,
                    None,
                )
            )
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        rate = resident_cifar(device, args.cifar_images, 128, args.passes)
        cores = 1 if device == "cpu" else None  # a GPU's rate has no per-core figure
        rows.append((f"CIFAR ResidentLoader train batches (batch 128) on {device}", rate, cores))

    ratios = {"1 core": ours_1 / theirs_1}
    if not args.no_ray:
        ratios[f"{args.workers} CPUs"] = ours_w / theirs_w
    width = max(len(name) for name, _, _ in rows)
    print(f"\n{os.cpu_count()} CPUs, 1-minute load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'pipeline':<{width}}  {'images/s':>9}  {'per core':>9}")
    for name, rate, cores in rows:
        per_core = f"{rate / cores:9.0f}" if cores else f"{'-':>9}"
        print(f"{name:<{width}}  {rate:9.0f}  {per_core}")
    for label, ratio in ratios.items():
        print(f"ours / torchvision ImageFolder, {label}: {ratio:.2f}x")
    feed = None
    if args.device_decode != "none":
        feed = {
            "device": args.device_decode,
            "images_per_s": round(on_device, 1),
            "train_rate": args.train_rate,
            "ratio": round(on_device / args.train_rate, 3),
            "target_ratio": 1.2,
        }
        print(
            f"device decode feeds {on_device:,.0f} img/s = {feed['ratio']:.2f}x the ResNet-50 training rate "
            f"{args.train_rate:,.0f} img/s (target >= 1.2x: {'met' if feed['ratio'] >= 1.2 else 'NOT met'})"
        )

    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1min": [load_before[0], os.getloadavg()[0]],
            "platform": platform.platform(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "settings": {
            "images": args.images,
            "size": list(args.size),
            "jpeg_kb_mean": round(kb, 1),
            "batch": args.batch,
            "workers": args.workers,
            "passes": args.passes,
            "cifar_images": args.cifar_images,
            "device_batch": args.device_batch,
        },
        "rows": [
            {
                "pipeline": name,
                "images_per_s": round(rate, 1),
                "images_per_s_per_core": round(rate / cores, 1) if cores else None,
            }
            for name, rate, cores in rows
        ],
        "ratios_ours_over_torchvision": {k: round(v, 3) for k, v in ratios.items()},
        "device_decode_feed": feed,
    }
    save_results(args.out, results)


if __name__ == "__main__":
    main()
