"""Checkpoint state as a plain dict of tensors and primitives.

Everything in a checkpoint loads with `torch.load(weights_only=True)`: no pickled classes, so a
checkpoint from an untrusted place cannot run code, and it survives refactors of our classes.
RNG states of torch (CPU and CUDA), numpy and Python are stored so that resumed training continues
bit for bit like an uninterrupted run (given the same data order).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .wrapping import unwrap_model

FORMAT = "workloads.engine.checkpoint/1"
_KEYS = ("format", "model", "optimizer", "rng", "iteration", "epoch", "config_hash", "config", "metrics")


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, not ours, or refused as unsafe.

    ``reason`` is the short, one-line form (what is wrong, without the path or the loader's detail).
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message.splitlines()[0]


def config_hash(config: dict) -> str:
    """sha256 hex digest of `config` as JSON with sorted keys (tuples hash like lists)."""
    try:
        text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    except TypeError as e:
        raise ValueError(f"config must be JSON-serialisable for hashing: {e}") from e
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def make_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    iteration: int,
    epoch: int,
    config_hash: str,
    config: dict,
    metrics: dict,
) -> dict:
    """Everything needed to resume: weights (without DDP/compile prefixes), optimizer state,
    RNG states of this process, the next global `iteration`, `epoch`, and the run's config.

    `config` and `metrics` must hold only primitives (str, int, float, bool, None, lists, dicts);
    ValueError otherwise, since they would not load with weights_only=True.
    """
    _check_plain(config, "config")
    _check_plain(metrics, "metrics")
    return {
        "format": FORMAT,
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": _rng_state(),
        "iteration": int(iteration),
        "epoch": int(epoch),
        "config_hash": str(config_hash),
        "config": config,
        "metrics": metrics,
    }


def restore_checkpoint(
    state: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    expected_config_hash: str | None = None,
    restore_rng: bool = True,
) -> tuple[int, int]:
    """Load `state` (from `make_checkpoint`) into `model` and `optimizer`; returns
    (iteration, epoch) to continue from.

    With `expected_config_hash`, a checkpoint of a different config is refused (ValueError).
    `restore_rng` also restores this process's RNG states; on many ranks that gives every rank
    the saving rank's RNG, so reseed per rank afterwards if ranks must differ.
    """
    missing = [k for k in _KEYS if k not in state]
    if missing or state["format"] != FORMAT:
        raise CheckpointError(f"not a {FORMAT} checkpoint: missing keys {missing}, format {state.get('format')!r}")
    if expected_config_hash is not None and state["config_hash"] != expected_config_hash:
        raise ValueError(
            f"checkpoint was written by config {state['config_hash']}, this run's config is "
            f"{expected_config_hash}; refusing to resume a different config"
        )
    unwrap_model(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if restore_rng:
        _set_rng_state(state["rng"])
    return state["iteration"], state["epoch"]


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write `state` to `path` atomically: a reader sees the old file or the whole new one.

    Writes a temporary file in the same directory, fsyncs it, then os.replace()s it into place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with `torch.load(weights_only=True)`.

    FileNotFoundError if it does not exist; CheckpointError (naming the file) if it is corrupt or
    truncated, is not one of ours, or holds pickled objects other than tensors and primitives
    (refused: such a payload could run code, and it is never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refused checkpoint {path}: weights_only loading failed, so it holds objects other "
            f"than tensors and primitives (pickled code is never run) or is corrupt: {e}",
            reason="refused by weights_only loading (pickled objects, or corrupt)",
        ) from e
    except Exception as e:  # zip, EOF and storage errors all mean an unreadable file
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {e}", reason="corrupt or truncated") from e
    if not isinstance(state, dict) or any(k not in state for k in _KEYS):
        raise CheckpointError(
            f"{path} is not a training checkpoint (expected keys {_KEYS})", reason="not a training checkpoint"
        )
    return state


def _check_plain(value, where: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has a non-string key {key!r}")
            _check_plain(item, f"{where}.{key}")
    else:
        raise ValueError(
            f"{where} holds a {type(value).__name__}; only primitives, lists and dicts can go in a checkpoint"
        )


def _rng_state() -> dict:
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # numpy's and Python's Mersenne Twister words are < 2**32, so int64 holds them exactly.
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss_next": py_gauss},
    }


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] and torch.cuda.is_available():
        # A checkpoint from a machine with more GPUs restores only the devices present here.
        for device, state in enumerate(rng["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.cpu(), device)
    n = rng["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = rng["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))
