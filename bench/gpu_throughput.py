"""Training-step throughput (images/s) of our ResNets vs reference implementations of the same nets.

Pairs, each measured in the same process on the same device with the same settings:
- ImageNet nets: ``build_model("resnetN", shortcut="B", stride_placement="torchvision")`` vs
  ``torchvision.models.resnetN()`` (the same architecture, v1.5), N in 18/34/50/101/152;
- the paper's v1 ResNet-50 (``stride_placement="paper"``) vs our v1.5 ResNet-50;
- CIFAR nets: ``build_model("cifar_resnetN")`` (option A) vs ``ReferenceCifarResNet`` below, a
  minimal independent option-A implementation (torchvision has no CIFAR ResNet: n/a there).

One step = forward + cross-entropy + backward + SGD(momentum 0.9, weight decay 1e-4). Data is
synthetic and lives on the device. On CUDA: bf16 autocast, channels_last, cuDNN autotuning,
batch 256 (128 for CIFAR), modes "eager" and "compile" (``torch.compile``, default mode).
Warm-up steps are excluded; the clock is read after ``torch.cuda.synchronize()``. Each pair is
measured in ``--rounds`` alternating rounds (ours, reference, ours, ...) and the best round of each
is kept. On CPU, ``--quick`` runs a tiny fp32 check (ResNet-18 at 64x64 and CIFAR ResNet-20,
batch 8, a few steps) that proves the script works; its numbers mean nothing for a GPU.

The DESIGN.md anchors (torchvision on one H200, torch 2.11) are printed next to the results.

Examples:
  python bench/gpu_throughput.py --quick                       # CPU, about a minute
  python bench/gpu_throughput.py                               # GPU: every pair eager, ResNet-50 compiled
  python bench/gpu_throughput.py --models resnet50,cifar_resnet20 --compile resnet50,cifar_resnet20
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from results_file import save_results  # noqa: E402

from workloads.models import build_model  # noqa: E402

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "gpu_throughput.json"
IMAGENET = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
CIFAR = ("cifar_resnet20", "cifar_resnet56", "cifar_resnet110")
# DESIGN.md "Measured anchors": torchvision / paper-style CIFAR nets on one H200, torch 2.11,
# bf16 autocast, channels_last, synthetic data, SGD; batch 256 (CIFAR 128). img/s.
ANCHORS = {
    ("resnet18", "eager"): 13212,
    ("resnet34", "eager"): 8960,
    ("resnet50", "eager"): 4708,
    ("resnet50", "compile"): 6633,
    ("resnet101", "eager"): 3112,
    ("resnet152", "eager"): 2235,
    ("cifar_resnet20", "eager"): 13000,
    ("cifar_resnet56", "eager"): 5400,
    ("cifar_resnet110", "eager"): 2600,
}


class _RefBlock(nn.Module):
    """Two 3x3 convs; option-A shortcut (stride-2 subsample + zero channels), written independently."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        out = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        short = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra:
            short = F.pad(short, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return F.relu(out + short)


class ReferenceCifarResNet(nn.Module):
    """The paper's CIFAR ResNet-(6n+2), option A: a 3x3 conv of 16, three stages of n blocks (16, 32, 64)."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for i, width in enumerate((16, 32, 64)):
            for j in range(n):
                blocks.append(_RefBlock(cin, width, 2 if i and not j else 1))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def pairs(models: list[str]) -> list[tuple[str, str, callable, str, callable]]:
    """(model, ours label, ours builder, reference label, reference builder) per requested model."""
    out = []
    for name in models:
        if name in IMAGENET:
            out.append(
                (
                    name,
                    "ours v1.5",
                    lambda n=name: build_model(n, shortcut="B", stride_placement="torchvision"),
                    "torchvision",
                    lambda n=name: getattr(torchvision.models, n)(),
                )
            )
        elif name == "resnet50-v1":
            out.append(
                (
                    name,
                    "ours v1 (paper)",
                    lambda: build_model("resnet50", shortcut="B", stride_placement="paper"),
                    "ours v1.5",
                    lambda: build_model("resnet50", shortcut="B", stride_placement="torchvision"),
                )
            )
        elif name.startswith("cifar_resnet"):
            depth = int(name.removeprefix("cifar_resnet"))
            out.append(
                (
                    name,
                    "ours (option A)",
                    lambda n=name: build_model(n),
                    "reference option A (torchvision: n/a)",
                    lambda d=depth: ReferenceCifarResNet(d),
                )
            )
        else:
            raise SystemExit(f"unknown model {name!r}; valid: {', '.join(IMAGENET + ('resnet50-v1',) + CIFAR)}")
    return out


class Bench:
    """One model ready to step: model, optimizer, a synthetic device batch and the step function."""

    def __init__(self, model: nn.Module, batch: int, size: int, classes: int, device: torch.device, compiled: bool):
        on_cuda = device.type == "cuda"
        fmt = torch.channels_last if on_cuda else torch.contiguous_format
        self.model = model.to(device, memory_format=fmt)
        self.step_model = torch.compile(self.model) if compiled else self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        generator = torch.Generator(device=device).manual_seed(0)
        self.x = torch.randn(batch, 3, size, size, device=device, generator=generator).contiguous(memory_format=fmt)
        self.y = torch.randint(0, classes, (batch,), device=device, generator=generator)
        self.device, self.batch = device, batch
        self.autocast = torch.bfloat16 if on_cuda else None

    def step(self) -> None:
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            loss = F.cross_entropy(self.step_model(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, steps: int) -> float:
        """images/s over ``steps`` steps (the caller has warmed up)."""
        self.sync()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.sync()
        return steps * self.batch / (time.perf_counter() - start)


def measure_pair(pair, mode: str, args, device) -> dict:
    name, ours_label, ours_build, ref_label, ref_build = pair
    cifar = name.startswith("cifar")
    batch = args.cifar_batch if cifar else args.batch
    size = 32 if cifar else args.size
    classes = 10 if cifar else 1000
    torch.manual_seed(0)
    started = time.perf_counter()
    benches = [
        Bench(ours_build(), batch, size, classes, device, mode == "compile"),
        Bench(ref_build(), batch, size, classes, device, mode == "compile"),
    ]
    for bench in benches:  # warm-up: compilation, cuDNN autotuning, allocator
        for _ in range(args.warmup):
            bench.step()
        bench.sync()
    setup = time.perf_counter() - started
    rates = [[], []]
    for _ in range(args.rounds):  # alternate, so drift hits both alike
        for i, bench in enumerate(benches):
            rates[i].append(bench.run(args.steps))
    ours, ref = max(rates[0]), max(rates[1])
    del benches
    if device.type == "cuda":
        torch.cuda.empty_cache()
    anchor = ANCHORS.get((name, mode)) if device.type == "cuda" and not args.quick else None
    return {
        "model": name,
        "mode": mode,
        "batch": batch,
        "image_size": size,
        "ours": ours_label,
        "reference": ref_label,
        "ours_images_per_s": round(ours, 1),
        "reference_images_per_s": round(ref, 1),
        "ratio_ours_over_reference": round(ours / ref, 4),
        "rounds_images_per_s": {"ours": [round(r, 1) for r in rates[0]], "reference": [round(r, 1) for r in rates[1]]},
        "setup_seconds": round(setup, 1),
        "anchor_h200_images_per_s": anchor,
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python bench/gpu_throughput.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny CPU-sized check: resnet18 at 64x64 and cifar_resnet20, batch 8, eager, 3 steps",
    )
    p.add_argument(
        "--models",
        default=",".join(IMAGENET + ("resnet50-v1",) + CIFAR),
        help="comma-separated: resnet18..152, resnet50-v1 (paper v1 vs v1.5), cifar_resnet20/56/110",
    )
    p.add_argument(
        "--compile",
        default="resnet50",
        help="models also measured under torch.compile (comma-separated; 'none' for none; default resnet50)",
    )
    p.add_argument("--batch", type=int, default=256, help="ImageNet-net batch (default 256)")
    p.add_argument("--cifar-batch", type=int, default=128, help="CIFAR-net batch (default 128)")
    p.add_argument("--size", type=int, default=224, help="ImageNet-net image size (default 224)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per model first (default 10)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per round (default 30)")
    p.add_argument("--rounds", type=int, default=2, help="alternating timed rounds; best kept (default 2)")
    p.add_argument("--cpu", action="store_true", help="use the CPU even if CUDA is there")
    p.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON results (default {DEFAULT_OUTPUT.relative_to(ROOT)})"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.compile = "resnet18,cifar_resnet20", "none"
        args.batch = args.cifar_batch = 8
        args.size, args.warmup, args.steps, args.rounds = 64, 2, 3, 1
    if min(args.batch, args.cifar_batch, args.size, args.steps, args.rounds) < 1 or args.warmup < 0:
        p.error("--batch, --cifar-batch, --size, --steps, --rounds must be >= 1 and --warmup >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # autotune conv algorithms during warm-up
    elif not args.quick:
        print("no CUDA device: these are CPU numbers (use --quick for a short correctness run)", flush=True)
    models = [m for m in args.models.split(",") if m]
    compiled = set() if args.compile == "none" else {m for m in args.compile.split(",") if m}
    load_before = os.getloadavg()[0]
    print(
        f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
        f"{'bf16 autocast + channels_last' if device.type == 'cuda' else 'fp32'}; batch {args.batch} "
        f"(CIFAR {args.cifar_batch}), {args.warmup} warm-up + {args.rounds}x{args.steps} timed steps",
        flush=True,
    )
    rows = []
    for pair in pairs(models):
        for mode in ["eager"] + (["compile"] if pair[0] in compiled else []):
            row = measure_pair(pair, mode, args, device)
            rows.append(row)
            print(
                f"  {row['model']:<16} {mode:<8} {row['ours']}: {row['ours_images_per_s']:,.0f} img/s, "
                f"{row['reference']}: {row['reference_images_per_s']:,.0f} img/s "
                f"(ratio {row['ratio_ours_over_reference']:.3f}, setup {row['setup_seconds']} s)",
                flush=True,
            )

    print(f"\n{'model':<16} {'mode':<8} {'ours':>9} {'reference':>10} {'ours/ref':>8} {'anchor':>8}  reference is")
    for r in rows:
        anchor = f"{r['anchor_h200_images_per_s']:,}" if r["anchor_h200_images_per_s"] else "-"
        print(
            f"{r['model']:<16} {r['mode']:<8} {r['ours_images_per_s']:>9,.0f} {r['reference_images_per_s']:>10,.0f} "
            f"{r['ratio_ours_over_reference']:>8.3f} {anchor:>8}  {r['reference']}"
        )
    print(
        "anchor: DESIGN.md, torchvision (CIFAR: paper-style option-A nets) on one H200, torch 2.11, img/s"
        + ("" if device.type == "cuda" and not args.quick else " (not comparable with this device)")
    )
    results = {
        "machine": {
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "cpus": os.cpu_count(),
            "load_average_1min": [load_before, os.getloadavg()[0]],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "rows": rows,
    }
    save_results(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
