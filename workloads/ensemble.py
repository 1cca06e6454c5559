"""Ensembles in plain PyTorch: test-time views per member, combination of members, greedy forward
selection, and the per-image probability table (Parquet) they are recombined from.

A member's class probabilities for an image are the mean of its softmax over that image's views;
the ensemble's are the (weighted) mean of its members' probabilities, as in the paper's ILSVRC 2015
entry. Everything here runs in one process on a CPU or a GPU (no Ray, no MLflow).

Views (``VIEWS``), by image size:
- small images (shorter side <= ``SMALL_IMAGE_MAX`` px: CIFAR 32x32, Fashion-MNIST 28x28) are
  scored whole, as they were trained: ``center`` is the image itself (the paper's CIFAR test
  view), ``flip`` is the image and its mirror. ``10crop`` and ``multiscale`` are refused there.
- ImageNet-size images: ``center`` is the central 224 crop of the 256-resized image, ``flip`` it
  and its mirror, ``10crop`` the paper's ten 224 crops (Tables 2-3), ``multiscale`` the whole image
  at shorter side 224..640 and its mirror (the fully-convolutional form of Table 4).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from .metrics import ensemble_probabilities, topk_correct

VIEWS = ("center", "flip", "10crop", "multiscale")
SMALL_IMAGE_MAX = 64  # px: images up to this size are scored whole, as trained
METADATA_KEY = b"ensemble"  # Parquet schema metadata: JSON describing the members
FIXED_COLUMNS = ("image", "label", "split")
VALIDATION, HOLDOUT = "val", "holdout"


def check_view(view: str, image_size: int) -> None:
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; valid: {', '.join(VIEWS)}")
    if image_size <= SMALL_IMAGE_MAX and view in ("10crop", "multiscale"):
        raise ValueError(
            f"view {view!r} needs ImageNet-size images; these are {image_size}x{image_size} px: use center or flip"
        )


def small_views(images: torch.Tensor, mean: torch.Tensor, view: str) -> list[torch.Tensor]:
    """uint8 ``[B,C,H,W]`` -> one float ``[B,C,H,W]`` per view: [0,1] units minus the per-pixel
    ``mean`` [C,H,W], exactly as training normalises (the mirror is taken after the mean, as there)."""
    x = images.float().div_(255.0).sub_(mean)
    return [x] if view == "center" else [x, x.flip(-1)]


def large_views(image: torch.Tensor, mean: torch.Tensor, view: str) -> list[torch.Tensor]:
    """uint8 ``[3,H,W]`` -> groups of same-sized views ``[V,3,h,w]`` (multi-scale gives one per scale)."""
    # Here, not at the top: the views need torchvision, which `ensemble --help` should not load.
    from .data.views import center_view, multi_scale_views, ten_crop_views

    if view == "10crop":
        return [ten_crop_views(image, mean)]
    if view == "multiscale":
        return multi_scale_views(image, mean)
    center = center_view(image, mean)
    return [center] if view == "center" else [torch.cat([center, center.flip(-1)])]


@torch.inference_mode()
def view_probabilities(
    model: nn.Module,
    images: torch.Tensor,
    mean: torch.Tensor,
    view: str,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """One member's class probabilities, float32 ``[N, classes]`` on the CPU: for each image the
    mean of the softmax over its views. ``images`` is uint8 ``[N,C,H,W]``; ``model`` is put in eval mode."""
    check_view(view, min(images.shape[-2:]))
    if min(images.shape[-2:]) > SMALL_IMAGE_MAX:
        return image_probabilities(model, images, mean, view, device=device)
    device = torch.device(device)
    model = model.to(device).eval()
    mean = mean.to(device)
    out = []
    for start in range(0, len(images), batch_size):
        views = small_views(images[start : start + batch_size].to(device), mean, view)
        out.append(torch.stack([model(v).float().softmax(1) for v in views]).mean(0).cpu())
    return torch.cat(out)


@torch.inference_mode()
def image_probabilities(
    model: nn.Module,
    images: Iterable[torch.Tensor],
    mean: torch.Tensor,
    view: str,
    *,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """One member's class probabilities, float32 ``[N, classes]`` on the CPU, from the ImageNet-size
    ``view`` of each uint8 ``[3,H,W]`` image, whatever its stored size (every view resizes it
    first, as ImageNet's val images come in many sizes): per image the mean of the softmax over
    its views. ``images`` may be a generator (a shard decoded a batch at a time)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; valid: {', '.join(VIEWS)}")
    device = torch.device(device)
    model = model.to(device).eval()
    mean = mean.to(device)
    out = []
    for image in images:  # views differ per image size: one image's views form a batch
        groups = large_views(image.to(device), mean, view)
        probs = torch.cat([model(g).float().softmax(1) for g in groups])
        out.append(probs.mean(0, keepdim=True).cpu())
    return torch.cat(out)


def combine(probabilities: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """The ensemble's probabilities ``[N, classes]``: the members' weighted mean (weights >= 0,
    normalised to sum 1; default equal)."""
    return ensemble_probabilities(list(probabilities), weights, from_logits=False)


def errors(probabilities: torch.Tensor, labels: torch.Tensor) -> dict:
    """Top-1 and top-5 error in percent (0-100) of ``probabilities`` [N, classes] against ``labels``."""
    correct1, correct5 = topk_correct(probabilities, labels, ks=(1, 5)).tolist()
    n = len(labels)
    return {"top1_error": 100.0 * (n - correct1) / n, "top5_error": 100.0 * (n - correct5) / n}


def holdout_split(n: int, seed: int = 0) -> torch.Tensor:
    """bool ``[n]``: True for a seeded random half of the images (the "validation" half that greedy
    selection looks at), False for the other half (held out to report the selection on)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[: n // 2]] = True
    return mask


def greedy_selection(probabilities: Mapping[str, torch.Tensor], labels: torch.Tensor) -> list[dict]:
    """Greedy forward selection (Caruana et al. 2004, without replacement, equal weights).

    Start from the best single member; keep adding the member whose addition lowers the ensemble's
    (top-5 error, top-1 error) the most, compared in that order; stop when no addition lowers it.
    So an added member never raises the top-5 error. Returns one step per chosen member:
    ``{"member", "top1_error", "top5_error"}`` of the ensemble so far, on these images.
    """
    chosen: list[str] = []
    steps: list[dict] = []
    best = (float("inf"), float("inf"))
    while len(chosen) < len(probabilities):
        candidates = []
        for order, name in enumerate(probabilities):
            if name in chosen:
                continue
            e = errors(combine([probabilities[n] for n in (*chosen, name)]), labels)
            candidates.append(((e["top5_error"], e["top1_error"]), order, name, e))
        key, _, name, e = min(candidates)
        if key >= best:
            break
        chosen.append(name)
        best = key
        steps.append({"member": name, **e})
    return steps


def write_probabilities(
    path: str | Path,
    probabilities: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    validation: torch.Tensor,
    metadata: dict,
) -> Path:
    """One row per image: ``image`` (index in the evaluated split), ``label``, ``split`` ("val" or
    "holdout", see ``holdout_split``), and per member a column of its class probabilities (a
    fixed-size list of float32). ``metadata`` (JSON) is stored in the schema."""
    names = list(probabilities)
    clash = set(names) & set(FIXED_COLUMNS)
    if clash:
        raise ValueError(f"member name(s) {sorted(clash)} clash with the columns {FIXED_COLUMNS}")
    classes = next(iter(probabilities.values())).shape[1]
    columns = {
        "image": pa.array(range(len(labels)), pa.int64()),
        "label": pa.array(labels.tolist(), pa.int64()),
        "split": pa.array([VALIDATION if v else HOLDOUT for v in validation.tolist()], pa.string()),
    }
    for name in names:
        flat = pa.array(probabilities[name].float().reshape(-1).numpy(), pa.float32())
        columns[name] = pa.FixedSizeListArray.from_arrays(flat, classes)
    table = pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_probabilities(path: str | Path) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, dict]:
    """``(probabilities by member, labels, validation mask, metadata)`` from ``write_probabilities``'s file."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise ValueError(f"{path} is not a readable Parquet file: {error}") from None
    missing = [c for c in FIXED_COLUMNS if c not in table.column_names]
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if missing or raw is None:
        raise ValueError(f"{path} is not an ensemble probability table (missing {missing or 'its metadata'})")
    labels = torch.tensor(table.column("label").to_pylist(), dtype=torch.int64)
    validation = torch.tensor([s == VALIDATION for s in table.column("split").to_pylist()])
    probabilities = {}
    for name in table.column_names:
        if name in FIXED_COLUMNS:
            continue
        column = table.column(name).combine_chunks()
        values = torch.from_numpy(column.flatten().to_numpy(zero_copy_only=False).copy())
        probabilities[name] = values.reshape(len(labels), column.type.list_size)
    return probabilities, labels, validation, json.loads(raw)
