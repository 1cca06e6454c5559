"""Validation splits carved from a training split: the images model selection may look at.

The paper selects on held-out training images (CIFAR-10: a 45k/5k split of the 50k training
images) and reports test numbers of models chosen without them. ``validation_split`` carves that
held-out part deterministically and per class, so every run, seed and machine holds out the same
images and each class keeps its share.
"""

from __future__ import annotations

import torch

SPLIT_SEED = 0  # one carve for every run of a data set, whatever its training seed, so seeds compare


def validation_size(val_split: float, total: int) -> int:
    """Images held out of ``total`` by ``val_split``: a fraction in (0, 1), or a whole number of images."""
    if 0 < val_split < 1:
        size = round(val_split * total)
    elif val_split >= 1 and float(val_split).is_integer():
        size = int(val_split)
    else:
        raise ValueError(f"val_split {val_split:g} must be a fraction in (0, 1) or a whole number of images >= 1")
    if not 0 < size < total:
        raise ValueError(f"val_split {val_split:g} holds out {size} of {total} training images; leave 1..{total - 1}")
    return size


def validation_split(labels: torch.Tensor, val_split: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_indices, val_indices)`` of a split with ``labels`` (int64 [N]), both ascending.

    Each class gives its share of the held-out images (largest remainders settle the rounding), the
    images drawn by a generator seeded with ``SPLIT_SEED``: ``val_split=5000`` on CIFAR-10's 50k is
    500 images of every class, the paper's 45k/5k split.
    """
    size = validation_size(val_split, len(labels))
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * size / len(labels)
    shares = exact.floor().long()
    by_remainder = torch.argsort(exact - shares.double(), descending=True, stable=True)
    shares[by_remainder[: size - int(shares.sum())]] += 1
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    held = []
    for cls, share in zip(classes.tolist(), shares.tolist()):
        members = (labels == cls).nonzero().flatten()
        held.append(members[torch.randperm(len(members), generator=generator)[:share]])
    val = torch.cat(held).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val] = False
    return keep.nonzero().flatten(), val
