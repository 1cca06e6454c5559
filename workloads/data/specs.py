"""What each training data set is, without loading it: ``dataset_spec(name)``.

Config validation, the orchestrator's data plumbing, evaluation and ensembles read these fields
instead of testing names. Adding a data set is one entry here plus its reader:

- in memory: a loader in ``registry._LOADERS`` (``load_dataset`` returns uint8 tensors);
- sharded: Parquet shards written by ``python -m orchestrator.prepare`` (a source for it in
  ``shards.open_source``), read through Ray Data; the classes come from the shards' manifests.

docs/ARCHITECTURE.md ("How to extend") walks through both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .cifar import ENV_VAR as CIFAR10_ENV_VAR
from .fashion_mnist import ENV_VAR as FASHION_MNIST_ENV_VAR
from .registry import CIFAR10_JPEG_ENV_VAR

MEMORY, SHARDED = "memory", "sharded"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    storage: str  # MEMORY: every worker holds the split on its device; SHARDED: Ray Data streams Parquet shards
    channels: int
    image_size: int  # pixels: the images' side (in memory), or the training crop and evaluation view (sharded)
    classes: int  # the usual class count; a sharded set's own manifests have the last word
    # Per-channel mean in [0, 1] units, subtracted from every image; None: the training split's
    # per-pixel mean image (Sec. 4.2, CIFAR), computed by whoever loads the split.
    mean: tuple[float, ...] | None
    # The training augmentation: "crop-flip" (pad 4, random 32x32 crop, flip: Sec. 4.2, on the
    # device) or a ``read_shards`` augment ("imagenet-train": scale + aspect + colour, Sec. 3.4).
    train_augment: str
    eval_view: str  # the view evaluation scores each epoch: "full" (the whole image) or "center" (a crop)
    env_var: str | None  # where the data lives when no data_root is given (sharded: none, data_root is the shards)
    # Our split -> the folder a sharded set's data_root keeps it in (ImageNet's test split is val).
    splits: dict = field(default_factory=lambda: {"train": "train", "test": "test"})
    # Sharded: subtract the training split's per-pixel mean image ([3,224,224], written by prepare
    # beside the train manifest; Sec. 3.4) instead of ``mean`` whenever the shards have one.
    # ``mean`` stays the fallback (shards prepared without it) and the per-channel option.
    pixel_mean: bool = False

    @property
    def sharded(self) -> bool:
        return self.storage == SHARDED

    def shape(self) -> tuple[int, int, int]:
        """(channels, classes, image_size) as the spec states them."""
        return self.channels, self.classes, self.image_size


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's per-channel mean, [0, 1] units

_SPECS = {
    spec.name: spec
    for spec in (
        DatasetSpec("fashion-mnist", MEMORY, 1, 28, 10, None, "crop-flip", "full", FASHION_MNIST_ENV_VAR),
        DatasetSpec("cifar10", MEMORY, 3, 32, 10, None, "crop-flip", "full", CIFAR10_ENV_VAR),
        DatasetSpec("cifar10-jpeg", MEMORY, 3, 32, 10, None, "crop-flip", "full", CIFAR10_JPEG_ENV_VAR),
        DatasetSpec("synthetic", MEMORY, 3, 32, 10, None, "crop-flip", "full", None),
        DatasetSpec(
            "imagenet",
            SHARDED,
            3,
            224,
            1000,
            IMAGENET_MEAN,
            "imagenet-train",
            "center",
            None,
            splits={"train": "train", "test": "val"},
            pixel_mean=True,
        ),
    )
}


def list_dataset_specs(storage: str | None = None) -> list[str]:
    """Every training data set's name (or those of one ``storage`` kind), sorted."""
    return sorted(name for name, spec in _SPECS.items() if storage in (None, spec.storage))


def dataset_spec(name: str) -> DatasetSpec:
    if name not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(list_dataset_specs())}")
    return _SPECS[name]
