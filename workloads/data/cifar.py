"""CIFAR-10 (Krizhevsky, 2009) from the python-pickle batches, and the paper's 45k/5k split.

Layout: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``. Each batch is a
pickled dict with b"batch_label", b"data" (uint8 numpy array [10000, 3072]: 1024 red, then 1024
green, then 1024 blue values, row-major 32x32), b"labels" (list of ints 0..9) and b"filenames".
The official files were written by Python 2 (protocol 2, numpy 1.x); re-pickled copies written by
Python 3 / numpy 2 load too.

Pickle can run any code while loading, so the batches go through a restricted unpickler that only
rebuilds numpy arrays and plain containers and refuses every other global.
"""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .errors import require_dir, require_file, root_hint

ENV_VAR = "CIFAR10_ROOT"
FOLDER = "cifar-10-batches-py"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_ROW_BYTES = 3 * 32 * 32


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 pickles bytes at protocol <= 2 as _codecs.encode(text, "latin1"); allow only that form.
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    from numpy._core import multiarray, numeric  # numpy >= 2; numpy 1.x names map onto these

    return {
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,  # numpy 1.x pickles
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,  # numpy 2 pickles
        ("numpy._core.numeric", "_frombuffer"): numeric._frombuffer,  # numpy 2, protocol 5
        ("numpy.core.numeric", "_frombuffer"): numeric._frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays, dicts, lists, str, bytes and numbers, and nothing else.

    Any other global (``os.system``, ``builtins.eval``, a user class...) raises
    ``pickle.UnpicklingError`` naming it, before it can be called.
    """

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: CIFAR batches only hold numpy arrays, "
                f"lists, dicts, bytes and ints"
            ) from None


def _load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            # encoding="bytes" keeps Python 2 str keys and numpy buffers as bytes, as the originals need.
            batch = RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise ValueError(f"CIFAR-10 batch {path}: {e}") from e
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise ValueError(f"CIFAR-10 batch {path} is not a readable pickle: {e!r}") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"CIFAR-10 batch {path}: expected a dict with b'data' and b'labels', got {keys}")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW_BYTES:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise ValueError(f"CIFAR-10 batch {path}: b'data' is {dtype} {shape}, expected uint8 [N, {_ROW_BYTES}]")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"CIFAR-10 batch {path}: {labels.shape} labels for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise ValueError(f"CIFAR-10 batch {path}: labels span {labels.min()}..{labels.max()}, valid 0..9")
    return data, labels


def _batches_dir(root: str | Path | None) -> Path:
    root = root or os.environ.get(ENV_VAR)
    if not root:
        raise FileNotFoundError(f"CIFAR-10: no data root given; {root_hint(ENV_VAR)} (the directory holding {FOLDER}/)")
    root = Path(root)
    # Accept both the parent (as torchvision and the tarball lay it out) and the batches folder itself.
    return root / FOLDER if (root / FOLDER).is_dir() else root


def load_cifar10(root: str | Path | None = None, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split as ``(images uint8 [N,3,32,32], labels int64 [N])``.

    ``root`` is the directory holding ``cifar-10-batches-py/`` (or that folder itself); it defaults
    to ``$CIFAR10_ROOT``. ``split`` is "train" (data_batch_1..5, 50,000 images) or "test" (test_batch).
    """
    if split not in _BATCHES:
        raise ValueError(f"CIFAR-10 split {split!r}; valid: {sorted(_BATCHES)}")
    folder = require_dir(_batches_dir(root), f"CIFAR-10 python batches ({FOLDER})", ENV_VAR)
    parts = [_load_batch(require_file(folder / name, "CIFAR-10 batch", ENV_VAR)) for name in _BATCHES[split]]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    return (torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels.astype(np.int64)))
