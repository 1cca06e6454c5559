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
  ``batch_probabilities`` scores a batch of them at once (the views of the whole batch, one forward
  pass per group of same-sized views, on whatever device the images are); ``image_probabilities``
  is the same one image at a time, kept as the reference the batched path is tested against.
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
VALIDATION, TEST = "val", "test"  # the split column: selection rows, reported rows


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


VIEW_PIXELS = 224 * 224  # the pixels of one 224x224 view: batches of larger views hold fewer of them
# Views per ImageNet-size image (multi-scale: five scales and their mirrors, most larger than 224).
VIEWS_PER_IMAGE = {"center": 1, "flip": 2, "10crop": 10, "multiscale": 2 * 5}


def normalise(images: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N,3,h,w]`` -> float32 in [0,1] units minus ``mean``: [3] per channel, or a [3,h,w]
    mean image (as ``workloads.data.augment.subtract_mean`` does for one image)."""
    x = images.float() / 255.0
    if mean.shape == (3,):
        return x - mean[:, None, None]
    if mean.shape != x.shape[1:]:
        raise ValueError(f"mean {tuple(mean.shape)} must be [3] or match the views {tuple(x.shape[1:])}")
    return x - mean


def batch_views(
    images: Sequence[torch.Tensor], mean: torch.Tensor, view: str
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ImageNet-size ``view`` of every uint8 ``[3,H,W]`` image of a batch, built for the whole
    batch: groups ``(rows, views)`` of same-sized views, ``views`` float32 ``[R,3,h,w]`` and ``rows``
    int64 ``[R]`` the index in ``images`` each view belongs to. The pixels equal ``large_views``'s
    one image at a time: images of one stored size are resized together (the same kernel per image),
    and the 224 crops are cut from them; mean subtraction comes before the mirror, as there.

    ``center``, ``flip`` and ``10crop`` give one group (their views are all 224x224, image-major:
    image i's views are rows V*i..V*i+V-1). ``multiscale`` gives one group per (scale, resized size),
    the images' views at that scale and their mirrors, minus the mean's channel means (as
    ``workloads.data.views.multi_scale_views``)."""
    # Here, not at the top: torchvision, which `ensemble --help` should not load.
    from torchvision.transforms.v2 import functional as TF

    from .data.augment import resize_shorter
    from .data.views import MULTI_SCALES

    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; valid: {', '.join(VIEWS)}")
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        by_size.setdefault(tuple(image.shape[-2:]), []).append(i)
    if view == "multiscale":
        channel_mean = mean if mean.shape == (3,) else mean.mean(dim=(1, 2))
        groups = []
        for scale in MULTI_SCALES:
            for indices in by_size.values():
                x = normalise(resize_shorter(torch.stack([images[i] for i in indices]), scale), channel_mean)
                rows = torch.tensor(indices, device=x.device)
                groups.append((torch.cat([rows, rows]), torch.cat([x, x.flip(-1)])))
        return groups
    per_image = {"center": 1, "flip": 2, "10crop": 10}[view]
    out = None
    for indices in by_size.values():
        resized = resize_shorter(torch.stack([images[i] for i in indices]), 256)
        crops = TF.five_crop(resized, [224, 224]) if view == "10crop" else [TF.center_crop(resized, [224, 224])]
        x = torch.stack([normalise(c, mean) for c in crops], dim=1)  # [G, crops, 3, 224, 224]
        x = x if view == "center" else torch.cat([x, x.flip(-1)], dim=1)
        if out is None:
            out = x.new_empty(len(images), per_image, *x.shape[2:])
        out[torch.tensor(indices, device=x.device)] = x
    rows = torch.arange(len(images), device=out.device).repeat_interleave(per_image)
    return [(rows, out.flatten(0, 1))]


@torch.inference_mode()
def batch_probabilities(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    mean: torch.Tensor,
    view: str,
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """One member's class probabilities, float32 ``[N, classes]`` on the images' device, for a batch
    of uint8 ``[3,H,W]`` images of any sizes: the views of the whole batch (``batch_views``), each
    group of same-sized views scored in forward passes of at most ``batch_size`` 224x224 views'
    worth of pixels, then per image the mean of the softmax over its views. Equal, within float
    rounding, to ``image_probabilities`` one image at a time. ``model`` must be in eval mode on the
    images' device (the caller moves it once, not per batch)."""
    if not images:
        raise ValueError("batch_probabilities needs at least one image")
    mean = mean.to(images[0].device, torch.float32)
    sums = counts = None
    for rows, views in batch_views(images, mean, view):
        step = max(1, batch_size * VIEW_PIXELS // (views.shape[-2] * views.shape[-1]))
        for start in range(0, len(views), step):
            probs = model(views[start : start + step]).float().softmax(1)
            if sums is None:
                sums = probs.new_zeros(len(images), probs.shape[1])
                counts = probs.new_zeros(len(images))
            sums.index_add_(0, rows[start : start + step], probs)
            counts.index_add_(0, rows[start : start + step], torch.ones_like(probs[:, 0]))
    return sums / counts[:, None]


def combine(probabilities: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """The ensemble's probabilities ``[N, classes]``: the members' weighted mean (weights >= 0,
    normalised to sum 1; default equal)."""
    return ensemble_probabilities(list(probabilities), weights, from_logits=False)


def errors(probabilities: torch.Tensor, labels: torch.Tensor) -> dict:
    """Top-1 and top-5 error in percent (0-100) of ``probabilities`` [N, classes] against ``labels``."""
    correct1, correct5 = topk_correct(probabilities, labels, ks=(1, 5)).tolist()
    n = len(labels)
    return {"top1_error": 100.0 * (n - correct1) / n, "top5_error": 100.0 * (n - correct5) / n}


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
    """One row per image: ``image`` (its index in its split), ``label``, ``split`` ("val" where
    ``validation`` is True: the members' held-out training images, which greedy selection picks on;
    else "test": the reported split), and per member a column of its class probabilities (a
    fixed-size list of float32). ``metadata`` (JSON) is stored in the schema."""
    names = list(probabilities)
    clash = set(names) & set(FIXED_COLUMNS)
    if clash:
        raise ValueError(f"member name(s) {sorted(clash)} clash with the columns {FIXED_COLUMNS}")
    classes = next(iter(probabilities.values())).shape[1]
    columns = {
        "image": pa.array(_index_in_split(validation).tolist(), pa.int64()),
        "label": pa.array(labels.tolist(), pa.int64()),
        "split": pa.array([VALIDATION if v else TEST for v in validation.tolist()], pa.string()),
    }
    for name in names:
        flat = pa.array(probabilities[name].float().reshape(-1).numpy(), pa.float32())
        columns[name] = pa.FixedSizeListArray.from_arrays(flat, classes)
    table = pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _index_in_split(validation: torch.Tensor) -> torch.Tensor:
    """Each row's index among the rows of its own split (val or test), in row order."""
    val = validation.long()
    return torch.where(validation, val.cumsum(0) - 1, (1 - val).cumsum(0) - 1)


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
