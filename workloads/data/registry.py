"""``load_dataset(name, split)``: the small data sets that fit in memory, as one uint8 tensor each."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import cifar, fashion_mnist
from .errors import root_hint
from .folders import ImageFolderSource, load_image_tree
from .synthetic import synthetic

CIFAR10_JPEG_ENV_VAR = "CIFAR10_JPEG_ROOT"


@dataclass(frozen=True)
class InMemoryDataset:
    """One split held as tensors: ``images`` uint8 [N,C,H,W] (0..255), ``labels`` int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> InMemoryDataset:
        """The images at ``indices`` (e.g. one half of ``train_val_split``)."""
        return InMemoryDataset(self.images[indices], self.labels[indices], self.classes)


def _check_split(name: str, split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"{name} split {split!r}; valid: ['test', 'train']")


def _fashion_mnist(split: str, root, pad_to: int | None = None) -> InMemoryDataset:
    images, labels = fashion_mnist.load_fashion_mnist(root, split)
    if pad_to is not None:
        border = pad_to - images.shape[-1]
        if border < 0 or border % 2:
            raise ValueError(f"fashion-mnist pad_to={pad_to}: must be 28 + an even number of pixels, e.g. 32")
        # Zero border on 28x28, so the CIFAR nets' 32x32 geometry (32/16/8 maps) applies unchanged.
        images = F.pad(images, (border // 2,) * 4)
    return InMemoryDataset(images, labels, fashion_mnist.CLASSES)


def _cifar10(split: str, root) -> InMemoryDataset:
    images, labels = cifar.load_cifar10(root, split)
    return InMemoryDataset(images, labels, cifar.CLASSES)


def _cifar10_jpeg_files(split: str, root, max_per_class: int | None = None) -> ImageFolderSource:
    _check_split("cifar10-jpeg", split)
    root = root or os.environ.get(CIFAR10_JPEG_ENV_VAR)
    if not root:
        raise FileNotFoundError(
            f"cifar10-jpeg: no data root given; {root_hint(CIFAR10_JPEG_ENV_VAR)} "
            f"(the extracted cifar10-jpeg/ directory holding train/ and test/)"
        )
    return ImageFolderSource(Path(root) / split, max_per_class=max_per_class, env_var=CIFAR10_JPEG_ENV_VAR)


def _cifar10_jpeg(split: str, root, max_per_class: int | None = None) -> InMemoryDataset:
    source = _cifar10_jpeg_files(split, root, max_per_class)
    images, labels = load_image_tree(source)
    return InMemoryDataset(images, labels, source.classes)


def _synthetic(
    split: str, root, n: int = 1024, shape=(3, 32, 32), num_classes: int = 10, seed: int = 0
) -> InMemoryDataset:
    _check_split("synthetic", split)
    # The test split gets another seed so it never equals the train split.
    images, labels = synthetic(n, tuple(shape), num_classes, seed + (split == "test"))
    return InMemoryDataset(images, labels, tuple(str(i) for i in range(num_classes)))


_LOADERS = {
    "fashion-mnist": _fashion_mnist,
    "cifar10": _cifar10,
    "cifar10-jpeg": _cifar10_jpeg,
    "synthetic": _synthetic,
}


def split_size(name: str, split: str = "train", root: str | Path | None = None, **kw) -> int:
    """Images in split "train" or "test" of a named in-memory data set, as ``len(load_dataset(...))``;
    cifar10-jpeg's are counted from its file list, without decoding 50,000 JPEGs (10-26 s a core)."""
    if name == "cifar10-jpeg":
        return len(_cifar10_jpeg_files(split, root, **kw))
    return len(load_dataset(name, split, root, **kw))


def list_datasets() -> list[str]:
    """Names ``load_dataset`` accepts."""
    return sorted(_LOADERS)


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, **kw) -> InMemoryDataset:
    """Load split "train" or "test" of a named in-memory data set.

    - "fashion-mnist": idx files; root defaults to $FASHION_MNIST_ROOT, then
      /usr/share/datasets/fashion-mnist. ``pad_to=32`` zero-pads the 28x28 images to 32x32.
      Grayscale: nets get ``in_channels=1``.
    - "cifar10": python-pickle batches; root (or $CIFAR10_ROOT) holds cifar-10-batches-py/.
    - "cifar10-jpeg": class folders root/{train,test}/<class>/*.jpg; root or $CIFAR10_JPEG_ROOT.
      ``max_per_class=k`` keeps the first k files of each class.
    - "synthetic": uniform noise for benchmarks; ``n``, ``shape``, ``num_classes``, ``seed``.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown data set {name!r}; valid: {list_datasets()}")
    return _LOADERS[name](split, root, **kw)
