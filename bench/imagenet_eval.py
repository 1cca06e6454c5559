"""Benchmark (not a test) of scoring ImageNet-size val images with the paper's test views, in images/s.

On synthetic JPEGs of ImageNet val's usual sizes (500x375 and 375x500, written with PIL in memory),
one member, one view at a time:
- per image (the baseline, what a scoring task did before): PIL decode of each row, then
  ``workloads.ensemble.image_probabilities`` one image at a time (one forward pass per image);
- batched (what ``orchestrator.inference`` does now): a batch of rows decoded together on the
  device (``decode_jpegs``: nvJPEG on CUDA, libjpeg on the CPU), the batch's views built there
  and scored in batched forward passes (``batch_probabilities``, ``--batch-size`` 224-views per
  pass, batch_size // views-per-image rows at once).
Both are measured in the same run after one warm-up batch each; the ratio is batched / per image.
The two paths' probabilities are compared too (max absolute difference).

Prints a table and writes JSON (default bench/results/imagenet_eval.json, git-ignored).

Examples:
  python bench/imagenet_eval.py --quick                          # CPU correctness run (seconds)
  python bench/imagenet_eval.py --model resnet50 --images 512 --views center,10crop,multiscale   # a GPU
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: import workloads/
from results_file import save_results  # noqa: E402

from workloads.data.decode import decode_image_bytes  # noqa: E402
from workloads.data.device_decode import decode_jpegs  # noqa: E402
from workloads.ensemble import VIEWS, VIEWS_PER_IMAGE, batch_probabilities, image_probabilities  # noqa: E402
from workloads.models import build_model  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406])  # ImageNet channel means, [0,1] units


def jpegs(n: int, seed: int = 0) -> list[bytes]:
    """``n`` JPEGs (quality 90) of smooth random content, 500x375 and 375x500 alternately."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = (375, 500) if i % 2 == 0 else (500, 375)
        coarse = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def per_image(model, blobs: list[bytes], view: str, device: torch.device) -> torch.Tensor:
    return image_probabilities(model, (decode_image_bytes(b) for b in blobs), MEAN, view, device=device)


def batched(model, blobs: list[bytes], view: str, device: torch.device, batch_size: int) -> torch.Tensor:
    rows = max(1, batch_size // VIEWS_PER_IMAGE[view])
    out = []
    with torch.inference_mode():
        for start in range(0, len(blobs), rows):
            images = decode_jpegs({"image": blobs[start : start + rows]}, device)
            out.append(batch_probabilities(model, images, MEAN, view, batch_size=batch_size).cpu())
    return torch.cat(out)


def timed(fn, device) -> tuple[float, torch.Tensor]:
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--views", default="center,10crop", help=f"comma-separated, of {', '.join(VIEWS)}")
    p.add_argument("--images", type=int, default=256, help="images scored per path and view")
    p.add_argument("--batch-size", type=int, default=256, help="224x224 views per forward pass (batched path)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="resnet18, 8 images, center and 10crop (a CPU check)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "imagenet_eval.json")
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.images, args.views = "resnet18", 8, "center,10crop"
    views = args.views.split(",")
    unknown = [v for v in views if v not in VIEWS]
    if unknown or args.images < 1 or args.batch_size < 1:
        p.error(f"--views {unknown} unknown (valid: {', '.join(VIEWS)}), or --images/--batch-size below 1")
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=1000).to(device).eval()
    blobs = jpegs(args.images)
    rows = []
    card = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"{args.model} on {device} ({card}), {len(blobs)} images of 500x375 / 375x500")
    print(f"{'view':<11} {'per image img/s':>16} {'batched img/s':>14} {'ratio':>6} {'max |diff|':>11}")
    for view in views:
        warm = blobs[: max(1, min(len(blobs), args.batch_size // VIEWS_PER_IMAGE[view]))]
        per_image(model, warm[:2], view, device)
        batched(model, warm, view, device, args.batch_size)
        slow, reference = timed(lambda: per_image(model, blobs, view, device), device)
        fast, scored = timed(lambda: batched(model, blobs, view, device, args.batch_size), device)
        diff = (scored - reference).abs().max().item()
        row = {
            "view": view,
            "per_image_img_s": len(blobs) / slow,
            "batched_img_s": len(blobs) / fast,
            "ratio": slow / fast,
            "max_abs_diff": diff,
        }
        rows.append(row)
        print(
            f"{view:<11} {row['per_image_img_s']:>16.1f} {row['batched_img_s']:>14.1f} "
            f"{row['ratio']:>6.2f} {diff:>11.2e}"
        )
    save_results(
        args.out,
        {
            "model": args.model,
            "device": str(device),
            "images": len(blobs),
            "batch_size": args.batch_size,
            "card": card,
            "torch": torch.__version__,
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
