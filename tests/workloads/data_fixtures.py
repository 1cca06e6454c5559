"""Builders of small data fixtures in the exact on-disk formats the data layer reads."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
from numpy._core.multiarray import _reconstruct
from PIL import Image


class Py2Pickler(pickle._Pickler):
    """Writes pickles the way the official CIFAR-10 batches were written (Python 2 cPickle,
    protocol 2, numpy 1.x): bytes as BINSTRING opcodes and ``numpy.core.multiarray._reconstruct``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        if obj is _reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def cifar_batch(images: np.ndarray, labels: np.ndarray, name: str) -> dict:
    """A batch dict like the originals: images uint8 [N,3,32,32] flattened to rows of 3072."""
    return {
        b"batch_label": name.encode(),
        b"labels": [int(v) for v in labels],
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"img_{name}_{i}.png".encode() for i in range(len(images))],
    }


def write_cifar10(root: Path, per_batch: int = 40, seed: int = 0, py2: bool = True) -> dict:
    """Write root/cifar-10-batches-py with 5 train batches and a test batch of ``per_batch`` images.

    Returns {"train": (images, labels), "test": (images, labels)} as the loader must give them back.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    expected = {}
    dump = py2_pickle if py2 else pickle.dumps
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        all_images, all_labels = [], []
        for name in names:
            images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
            labels = rng.integers(0, 10, per_batch)
            (folder / name).write_bytes(dump(cifar_batch(images, labels, name)))
            all_images.append(images)
            all_labels.append(labels)
        expected[split] = (np.concatenate(all_images), np.concatenate(all_labels))
    meta = {
        b"label_names": [
            c.encode()
            for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
        ]
    }
    (folder / "batches.meta").write_bytes(dump(meta))
    return expected


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">i", magic) + b"".join(struct.pack(">i", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(root: Path, n_train: int = 30, n_test: int = 20, seed: int = 0) -> dict:
    """Write the four idx .gz files; returns {"train": (images [N,28,28], labels), "test": ...}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    expected = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 2051)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 2049)))
        expected[split] = (images, labels)
    return expected


def write_png_tree(
    root: Path, classes: list[str], per_class: int, size: int = 8, seed: int = 0, suffix: str = ".png"
) -> tuple[np.ndarray, np.ndarray]:
    """root/<class>/NNNN<suffix> as lossless PNGs; returns (images [N,3,H,W], labels) in
    (sorted class, file name) order."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, name in enumerate(sorted(classes)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:04d}{suffix}", format="PNG")
            images.append(pixels.transpose(2, 0, 1))
            labels.append(label)
    return np.stack(images), np.array(labels)


def smooth_rgb(size: tuple[int, int] = (40, 30), seed: int = 0) -> np.ndarray:
    """A smooth RGB image [H,W,3] (gradients compress well, so JPEG errors stay small)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(40, 200, 3)
    return np.clip(base + np.stack([xx * 2.0, yy * 2.0, (xx + yy) * 1.0], -1), 0, 255).astype(np.uint8)


def write_odd_files(folder: Path) -> dict[str, Path]:
    """ImageNet's odd cases: a CMYK JPEG, a PNG named .JPEG, a truncated JPEG, a zero-byte file."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.JPEG" for name in ("cmyk", "png", "truncated", "empty")}
    Image.fromarray(smooth_rgb(seed=1)).convert("CMYK").save(paths["cmyk"], format="JPEG", quality=95)
    Image.fromarray(smooth_rgb(seed=2)).save(paths["png"], format="PNG")
    buffer = io.BytesIO()
    Image.fromarray(smooth_rgb((64, 64), seed=3)).save(buffer, format="JPEG", quality=95)
    paths["truncated"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    paths["empty"].write_bytes(b"")
    return paths
