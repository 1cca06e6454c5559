"""Several CIFAR runs trained at once on one GPU, their steps interleaved on separate CUDA streams.

A CIFAR net at batch 128 fills a small part of an H100/H200: its kernels are small (16-64 channels
of 32x32 or less), so one run leaves most SMs idle even with its step in a CUDA graph. Separate
processes do not fix that (their kernels time-slice rather than overlap without MPS: measured
slower than one at a time). Here each run keeps its own ``FastCifarTrainer`` (its own model,
optimizer, data order and CUDA graph) and its own stream; step i of every run is queued on that
run's stream before step i+1 of any, so kernels of different runs execute concurrently. Each run
computes exactly what it would alone: the streams share no tensors.
"""

from __future__ import annotations

import contextlib

import torch

from .fast_cifar import FastCifarTrainer
from .loop import EpochStats


class PackedTrainers:
    """``trainers`` stepped together; on the CPU (tests) the same interleaving runs without streams."""

    def __init__(self, trainers: list[FastCifarTrainer]):
        if not trainers:
            raise ValueError("PackedTrainers needs at least one trainer")
        devices = {t.device for t in trainers}
        if len(devices) != 1:
            raise ValueError(f"packed trainers must share one device, got {sorted(map(str, devices))}")
        self.trainers = trainers
        self.device = trainers[0].device
        on_cuda = self.device.type == "cuda"
        self.streams = [torch.cuda.Stream(self.device) if on_cuda else None for _ in trainers]

    def _on(self, stream):
        return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

    def train_epoch(self, epoch: int, start_iterations: list[int], max_steps: int | None = None) -> list[EpochStats]:
        """One epoch of every trainer from its own global step; one host sync per trainer at the end.
        Raises the first trainer's ``DivergenceError`` after every trainer's epoch has been closed."""
        results = self.train_epoch_each(epoch, start_iterations, max_steps)
        failure = next((r for r in results if isinstance(r, Exception)), None)
        if failure is not None:
            raise failure
        return results

    def train_epoch_each(
        self, epoch: int, start_iterations: list[int], max_steps: int | None = None
    ) -> list[EpochStats | Exception]:
        """As ``train_epoch``, but each trainer's outcome on its own: its ``EpochStats``, or the
        exception (a ``DivergenceError``) its epoch ended with, so one diverged run can be dropped
        while the others go on."""
        if len(start_iterations) != len(self.trainers):
            raise ValueError(f"{len(start_iterations)} start iterations for {len(self.trainers)} trainers")
        steps = [t.begin_epoch(epoch, s, max_steps) for t, s in zip(self.trainers, start_iterations)]
        main = torch.cuda.current_stream(self.device) if self.streams[0] is not None else None
        for stream in self.streams:
            if stream is not None:
                stream.wait_stream(main)  # the epoch's augmented batches were made on the main stream
        for i in range(max(steps)):
            for trainer, stream, n in zip(self.trainers, self.streams, steps):
                if i < n:
                    with self._on(stream):
                        trainer.step(i)
        for stream in self.streams:
            if stream is not None:
                main.wait_stream(stream)  # before end_epoch reads the sums and frees the batches
        results = []
        for trainer in self.trainers:
            try:
                results.append(trainer.end_epoch())
            except Exception as error:  # noqa: BLE001 - close every trainer's epoch first
                results.append(error)
        return results
