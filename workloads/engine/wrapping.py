"""Putting a model on its device, compiling it, and getting the plain module back out."""

from __future__ import annotations

import torch
from torch import nn


def prepare_model(model: nn.Module, device: torch.device | str, *, channels_last: bool = False):
    """Move `model` to `device`, in channels_last memory format if asked.

    Call it before building the optimizer and before wrapping in DistributedDataParallel, so the
    parameters have their final device and layout. channels_last pays off on CUDA with bf16
    autocast (tensor-core convolutions); it also runs, slower, on CPU.
    """
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def compile_model(model: nn.Module, **compile_kwargs) -> nn.Module:
    """`torch.compile(model, **compile_kwargs)`; the state_dict of the result is read through
    `unwrap_model`, so checkpoints stay free of the `_orig_mod.` prefix."""
    return torch.compile(model, **compile_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside any DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            # torch.compile's OptimizedModule; duck-typed to avoid importing torch._dynamo.
            model = model._orig_mod
        else:
            return model


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s buffers (BatchNorm running statistics).

    DDP syncs buffers from rank 0 only at the start of each training forward, so after the last
    step every rank holds the statistics of its own last batch. Evaluating with them would score
    a slightly different model on each shard than the one rank 0 checkpoints.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for buffer in unwrap_model(model).buffers():
        dist.broadcast(buffer, src)
