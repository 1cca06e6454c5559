"""Fashion-MNIST (Xiao et al., 2017) from its idx files, parsed here without torchvision's downloader.

Layout (as the Debian package ``dataset-fashion-mnist`` installs it in /usr/share/datasets/fashion-mnist):
``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
``t10k-labels-idx1-ubyte.gz`` (the same names without ``.gz`` are accepted too).

idx format: big-endian int32 magic (2051 for ubyte images with 3 dims, 2049 for ubyte labels with
1 dim), one big-endian int32 per dim, then the bytes of the array in C order.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from .errors import require_dir, root_hint

ENV_VAR = "FASHION_MNIST_ROOT"
DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILE_PREFIX = {"train": "train", "test": "t10k"}
_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dims
_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dim


def _read_idx(path: Path, magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip raises these for a damaged or truncated .gz
        raise ValueError(f"cannot read idx file {path}: {e}") from e
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise ValueError(f"idx file {path}: magic number {found}, expected {magic}")
    if len(raw) < header:
        raise ValueError(f"idx file {path}: {len(raw)} bytes, shorter than its {header}-byte header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"idx file {path}: {len(raw)} bytes, expected {expected} for dims {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST: expected {name}.gz (or {name}) in {root}, found neither; "
        f"install the Debian package dataset-fashion-mnist or {root_hint(ENV_VAR)}"
    )


def load_fashion_mnist(root: str | Path | None = None, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split as ``(images uint8 [N,1,28,28], labels int64 [N])``.

    ``root`` defaults to ``$FASHION_MNIST_ROOT``, else /usr/share/datasets/fashion-mnist.
    ``split`` is "train" (60,000 images) or "test" (10,000).
    """
    if split not in _FILE_PREFIX:
        raise ValueError(f"Fashion-MNIST split {split!r}; valid: {sorted(_FILE_PREFIX)}")
    root = Path(root or os.environ.get(ENV_VAR) or DEFAULT_ROOT)
    require_dir(root, "Fashion-MNIST idx files (install the Debian package dataset-fashion-mnist)", ENV_VAR)
    prefix = _FILE_PREFIX[split]
    images_path = _find(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(root, f"{prefix}-labels-idx1-ubyte")
    images = _read_idx(images_path, _IMAGES_MAGIC)
    labels = _read_idx(labels_path, _LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(
            f"Fashion-MNIST: {images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if labels.size and labels.max() >= len(CLASSES):
        raise ValueError(f"Fashion-MNIST: {labels_path} has label {labels.max()}, valid 0..{len(CLASSES) - 1}")
    # np.frombuffer views read-only bytes; copy so callers own writable tensors.
    return (torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
