"""A faster CIFAR training step that computes what ``train_epoch`` over a ``ResidentLoader`` computes.

Same batch (128), same iterations, same lr at every step (``lr_at``), same SGD(momentum, weight
decay), same images in the same order with the same crops and flips: only the way the work reaches
the device changes.

- The data set lives on the device as uint8. At the start of an epoch the whole epoch is gathered,
  normalised, padded, cropped and flipped there in a few large ops (the airbench approach), with
  the permutation and the crop offsets drawn exactly as ``ResidentLoader`` draws them (the same
  generators, seeds and order), so both paths see identical batches.
- No host sync inside an epoch: the lr of every step of the epoch goes to the device once, as a
  tensor, and the fused SGD kernel reads it from there; loss, error and the first non-finite step
  are accumulated on the device and read once at the end of the epoch.
- On CUDA the whole step (forward, backward, fused SGD) is captured once in a CUDA graph and
  replayed: a CIFAR net at batch 128 is launch-bound (hundreds of small kernels a step), and a
  replay launches them all with one call. The first ``warmup_steps`` steps of a run are real
  training steps run eagerly (on a side stream, as capture requires), then the graph takes over.
- ``compile=True`` additionally runs the model through ``torch.compile`` (fused BN/ReLU kernels);
  it costs compile time at the start, so it pays off only for long runs.

On the CPU there is no graph and no compile: the same step runs eagerly, which is what the tests use
to prove the arithmetic matches the plain loop.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.resident import crop_flip
from .divergence import DivergenceError
from .loop import EpochStats
from .optim import build_optimizer
from .recipes import Recipe
from .schedule import lr_at

_NO_BAD_STEP = float(2**53)  # "no non-finite loss yet"; above any real step index, exact in float64


class FastCifarTrainer:
    """Trains ``model`` on a device-resident uint8 data set with the paper's CIFAR augmentation.

    ``images`` uint8 [N,C,H,W] and ``labels`` [N] are moved to ``device``; ``mean`` is the
    [C,H,W] per-pixel mean in [0,1] units (None skips it); ``seed`` and ``pad`` mean what they mean
    for ``ResidentLoader`` (rank 0 of 1, ``drop_last``). ``recipe`` must count in iterations.
    ``cuda_graph`` (default: on for CUDA) captures the step; ``compile`` wraps the model in
    ``torch.compile``. The model should already be on ``device`` (``prepare_model``).
    After each ``train_epoch`` call, ``step_losses`` holds the loss of every step it took and
    ``step_wrongs`` its misclassified images.
    """

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        recipe: Recipe,
        *,
        device: torch.device | str,
        batch_size: int | None = None,
        mean: torch.Tensor | None = None,
        seed: int = 0,
        pad: int = 4,
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        cuda_graph: bool | None = None,
        compile: bool = False,
        warmup_steps: int = 3,
        chunk: int = 8192,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4 or labels.shape != (len(images),):
            raise ValueError(
                f"images must be uint8 [N,C,H,W] with labels [N], got {images.dtype} "
                f"{tuple(images.shape)} and {tuple(labels.shape)}"
            )
        self.device = torch.device(device)
        self.recipe = recipe
        self.batch_size = batch_size or recipe.batch_size
        if len(images) < self.batch_size:
            raise ValueError(f"{len(images)} images are less than one batch of {self.batch_size}")
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.mean = None if mean is None else mean.to(self.device, torch.float32)
        self.seed, self.pad, self.chunk = seed, pad, chunk
        self.autocast_dtype, self.channels_last = autocast_dtype, channels_last
        on_cuda = self.device.type == "cuda"
        self.cuda_graph = on_cuda if cuda_graph is None else cuda_graph
        if self.cuda_graph and not on_cuda:
            raise ValueError("cuda_graph=True needs a CUDA device")
        self.warmup_steps = max(1, warmup_steps)
        self.model = torch.compile(model) if compile else model
        self.optimizer = build_optimizer(model, recipe, fused=True)
        self.lr = torch.tensor(lr_at(recipe, 0), dtype=torch.float32, device=self.device)
        self.bind_lr()
        # Static buffers: a captured graph reads its inputs from, and writes its sums to, fixed addresses.
        c, h, w = images.shape[1:]
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.x = torch.zeros(self.batch_size, c, h, w, device=self.device).contiguous(memory_format=fmt)
        self.y = torch.zeros(self.batch_size, dtype=torch.int64, device=self.device)
        self.sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss*images, wrong, images
        self.first_bad = torch.full((2,), _NO_BAD_STEP, dtype=torch.float64, device=self.device)  # step, loss
        self.step_index = torch.zeros((), dtype=torch.float64, device=self.device)  # steps this epoch
        self.losses = torch.zeros(len(self), dtype=torch.float32, device=self.device)
        self.wrongs = torch.zeros(len(self), dtype=torch.float32, device=self.device)  # misclassified per step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.steps_taken = 0  # steps run by this trainer, eager or replayed
        self.step_losses: list[float] = []
        self.step_wrongs: list[float] = []

    def bind_lr(self) -> None:
        """Point every param group at the one lr tensor the fused kernel reads on the device. Call it
        again after ``optimizer.load_state_dict`` (a checkpoint replaces the groups' lr values)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def __len__(self) -> int:
        """Steps in one epoch (the last partial batch is dropped, as ``ResidentLoader`` does)."""
        return len(self.images) // self.batch_size

    # -- data ---------------------------------------------------------------------------------
    def epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indices [S,B], top [S,B], left [S,B], flip [S,B]) on the CPU, drawn as ``ResidentLoader``
        draws them for rank 0 of 1: one permutation seeded by seed + epoch, then per batch the
        offsets and flips from a generator seeded by (seed, epoch, 0)."""
        steps, b = len(self), self.batch_size
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(self.seed + epoch))
        indices = order[: steps * b].view(steps, b)
        state = np.random.SeedSequence([self.seed, epoch, 0]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        top = torch.empty(steps, b, dtype=torch.int64)
        left = torch.empty(steps, b, dtype=torch.int64)
        flip = torch.empty(steps, b, dtype=torch.bool)
        for i in range(steps):  # the same draw order as ResidentLoader.__iter__
            top[i] = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator)
            left[i] = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator)
            flip[i] = torch.rand(b, generator=generator) < 0.5
        return indices, top, left, flip

    def epoch_batches(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole epoch's augmented images float32 [S,B,C,H,W] and labels [S,B], on the device."""
        indices, top, left, flip = (t.to(self.device, non_blocking=True) for t in self.epoch_plan(epoch))
        flat = indices.reshape(-1)
        out = torch.empty((len(flat), *self.images.shape[1:]), device=self.device)
        for start in range(0, len(flat), self.chunk):  # bounded temporaries (padded copies) per chunk
            part = slice(start, start + self.chunk)
            x = self.images[flat[part]].float().div_(255.0)
            if self.mean is not None:
                x.sub_(self.mean)
            out[part] = crop_flip(
                F.pad(x, (self.pad,) * 4),
                top.reshape(-1)[part],
                left.reshape(-1)[part],
                flip.reshape(-1)[part],
                tuple(self.images.shape[-2:]),
            )
        return out.view(*indices.shape, *self.images.shape[1:]), self.labels[flat].view(indices.shape)

    # -- the step -----------------------------------------------------------------------------
    def _step(self) -> None:
        """Forward, backward and SGD on the static batch; sums and per-step loss stay on the device."""
        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype,
            enabled=self.autocast_dtype is not None,
            cache_enabled=False if self.cuda_graph else None,
        ):
            logits = self.model(self.x)
            loss = F.cross_entropy(logits, self.y)
        loss.backward()
        self.optimizer.step()
        loss = loss.detach().float()
        b = self.y.shape[0]
        wrong = (logits.detach().argmax(dim=1) != self.y).sum()
        self.sums.add_(torch.stack([loss.double() * b, wrong.double(), torch.full_like(self.sums[0], b)]))
        bad = ~torch.isfinite(loss) & (self.first_bad[0] == _NO_BAD_STEP)
        self.first_bad.copy_(torch.where(bad, torch.stack([self.step_index, loss.double()]), self.first_bad))
        self.losses.index_copy_(0, self.step_index.long().view(1), loss.view(1))
        self.wrongs.index_copy_(0, self.step_index.long().view(1), wrong.float().view(1))
        self.step_index.add_(1)

    def _eager_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._step()

    def _capture(self) -> None:
        """Capture one step into a CUDA graph (nothing runs during capture; replays run it)."""
        self.optimizer.zero_grad(set_to_none=True)  # backward in the graph allocates (not accumulates) grads
        graph = torch.cuda.CUDAGraph()
        saved = [t.clone() for t in (self.sums, self.first_bad, self.step_index)]
        # Our own capture stream, not torch's one shared default: cuBLAS keeps a workspace per
        # stream, and graphs captured on one stream share it, so trainers replayed at once on
        # several streams (PackedTrainers) would race on it (measured: losses off by 10% on an H200).
        with torch.cuda.graph(graph, stream=torch.cuda.Stream(self.device)):
            self._step()
        for t, value in zip((self.sums, self.first_bad, self.step_index), saved):
            t.copy_(value)  # capture ran no kernels, but keep the bookkeeping exact regardless
        self.graph = graph

    def _run_step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        elif self.cuda_graph and self.steps_taken >= self.warmup_steps:
            self._capture()
            self.graph.replay()
        elif self.cuda_graph:
            # Eager warm-up steps on a side stream (cuDNN autotuning, lazy state, momentum buffers).
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                self._eager_step()
            torch.cuda.current_stream(self.device).wait_stream(stream)
        else:
            self._eager_step()
        self.steps_taken += 1

    # -- an epoch: begin, steps, end (``train_epoch``, or interleaved with other trainers: ``packed``) --
    def begin_epoch(self, epoch: int, start_iteration: int, max_steps: int | None = None) -> int:
        """Augment the epoch and send its lrs to the device; returns the steps it will take: the
        whole epoch, or ``max_steps`` of it, or what is left of ``recipe.total_iterations``."""
        self._started = time.perf_counter()
        self.model.train()
        steps = max(
            0,
            min(
                len(self), self.recipe.total_iterations - start_iteration, len(self) if max_steps is None else max_steps
            ),
        )
        self._xs, self._ys = self.epoch_batches(epoch)
        self._lrs = torch.tensor(
            [lr_at(self.recipe, start_iteration + i) for i in range(steps)], dtype=torch.float32
        ).to(self.device, non_blocking=True)
        self._span = (start_iteration, steps)
        self.sums.zero_()
        self.first_bad.fill_(_NO_BAD_STEP)
        self.step_index.zero_()
        return steps

    def step(self, i: int) -> None:
        """Step ``i`` of the epoch begun (queued on the current stream; no host sync)."""
        self.x.copy_(self._xs[i])
        self.y.copy_(self._ys[i])
        self.lr.copy_(self._lrs[i])
        self._run_step()

    def end_epoch(self) -> EpochStats:
        """The epoch's one host sync. Raises ``DivergenceError`` if any step's loss was non-finite
        (the steps after it have run, as with ``log_every``)."""
        start_iteration, steps = self._span
        loss_sum, wrong, seen = self.sums.tolist()
        bad_step, bad_loss = self.first_bad.tolist()
        self.step_losses = self.losses[:steps].tolist()
        self.step_wrongs = self.wrongs[:steps].tolist()
        self._xs = self._ys = self._lrs = None  # the epoch's augmented copy: ~600 MB for CIFAR-10
        if bad_step != _NO_BAD_STEP:
            raise DivergenceError(start_iteration + int(bad_step), bad_loss)
        seconds = time.perf_counter() - self._started
        end = start_iteration + steps
        return EpochStats(
            iterations=steps,
            end_iteration=end,
            loss=loss_sum / seen if seen else math.nan,
            top1_error=100.0 * wrong / seen if seen else math.nan,
            images=int(seen),
            seconds=seconds,
            images_per_second=seen / seconds if seconds > 0 else 0.0,
            finished=end >= self.recipe.total_iterations,
        )

    def logged_steps(self, log_every: int) -> list[dict]:
        """What ``train_epoch``'s ``on_step`` would have been given over the epoch just ended: every
        ``log_every`` global steps, the mean loss and percent error since the last log (or the
        epoch's start) and the lr of the last step."""
        start, steps = self._span
        out, first = [], 0
        for i in range(steps):
            iteration = start + i + 1
            if iteration % log_every == 0:
                window = slice(first, i + 1)
                n = i + 1 - first
                out.append(
                    {
                        "iteration": iteration,
                        "loss": sum(self.step_losses[window]) / n,
                        "train_error": 100.0 * sum(self.step_wrongs[window]) / (n * self.batch_size),
                        "lr": lr_at(self.recipe, iteration - 1),
                    }
                )
                first = i + 1
        return out

    def train_epoch(self, epoch: int, start_iteration: int, max_steps: int | None = None) -> EpochStats:
        """One epoch (or ``max_steps`` of it, or until ``recipe.total_iterations``) from global step
        ``start_iteration``; one host sync at the end."""
        for i in range(self.begin_epoch(epoch, start_iteration, max_steps)):
            self.step(i)
        return self.end_epoch()
