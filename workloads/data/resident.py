"""A data set that lives on the training device as one uint8 tensor, augmented there in batches.

The airbench approach: CIFAR-10 is 150 MB as uint8, so it sits on the GPU and every batch is
gathered, cropped and flipped there with a few tensor ops instead of a CPU DataLoader.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def per_pixel_mean(images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """The mean image of uint8 ``[N,C,H,W]`` as float32 ``[C,H,W]`` in [0,1] units.

    Summed in float64 chunks of ``chunk`` images, so 50,000 CIFAR images never need a float copy.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"per_pixel_mean needs uint8 [N,C,H,W] with N >= 1, got {images.dtype} {tuple(images.shape)}")
    total = torch.zeros(images.shape[1:], dtype=torch.float64, device=images.device)
    for start in range(0, len(images), chunk):
        total += images[start : start + chunk].sum(0, dtype=torch.float64)
    return (total / (255.0 * len(images))).float()


def crop_flip(
    padded: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Window ``[top:top+h, left:left+w]`` of every image in ``padded`` [B,C,H',W'], mirrored where ``flip``.

    One gather for the whole batch: image b reads rows ``top[b] + i`` and columns ``left[b] + j``
    (or ``left[b] + w-1-j`` when flipped), so there is no per-image Python loop.
    """
    h, w = size
    b, c = padded.shape[:2]
    device = padded.device
    rows = top.to(device)[:, None] + torch.arange(h, device=device)  # [B,h]
    cols = torch.arange(w, device=device).expand(b, w)
    cols = torch.where(flip.to(device)[:, None], w - 1 - cols, cols) + left.to(device)[:, None]  # [B,w]
    return padded[
        torch.arange(b, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


class ResidentLoader:
    """Batches of one device-resident uint8 data set, with the paper's CIFAR augmentation.

    Every batch is scaled to [0,1] and has ``mean`` (a [C,H,W] per-pixel mean image, e.g. from
    ``per_pixel_mean`` of the training split, or [C,1,1] one value a channel; None skips it)
    subtracted. With ``train=True`` each image is then zero-padded by ``pad`` pixels a side and a
    random HxW window of it is taken, mirrored with probability 1/2. The padding is zero after mean
    subtraction, i.e. it shows the net "no signal", like the convolutions' own zero padding (as in
    fb.resnet.torch).

    Sharding: every epoch draws one permutation seeded by ``seed + epoch`` (the same on every rank)
    and rank r takes positions r, r+W, r+2W... For training the permutation is first cut to a
    multiple of ``world_size`` so all ranks run the same number of steps (at most W-1 images sit out,
    different ones each epoch). For evaluation the order is 0..N-1, nothing is dropped, and ranks may
    get one image more or less. Crops and flips draw from a generator seeded by (seed, epoch, rank),
    so a run is reproducible. Call ``set_epoch`` before each epoch, as with DistributedSampler.

    Yields ``(float32 [B,C,H,W], int64 [B])`` on ``device``; ``len()`` is batches per epoch on this rank.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        train: bool,
        mean: torch.Tensor | None = None,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        drop_last: bool | None = None,
        pad: int = 4,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N,C,H,W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (len(images),):
            raise ValueError(f"labels {tuple(labels.shape)} do not match {len(images)} images")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in 0..{world_size - 1} (world_size {world_size})")
        if batch_size < 1 or pad < 0:
            raise ValueError(f"batch_size {batch_size} must be >= 1 and pad {pad} >= 0")
        if mean is not None and mean.shape not in (images.shape[1:], (images.shape[1], 1, 1)):
            raise ValueError(
                f"mean {tuple(mean.shape)} must match one image {tuple(images.shape[1:])} or be one value a "
                f"channel {(images.shape[1], 1, 1)}"
            )
        self.device = torch.device(device)
        self.images = images.to(self.device)  # uint8: 4x smaller than float on the device
        self.labels = labels.to(self.device, torch.int64)
        self.mean = None if mean is None else mean.to(self.device, torch.float32)
        self.batch_size, self.train, self.pad = batch_size, train, pad
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.drop_last = train if drop_last is None else drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle and augmentation the next iteration uses."""
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.images)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return order[: n - n % self.world_size][self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self.images)
        n = n // self.world_size if self.train else len(range(self.rank, n, self.world_size))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _normalize(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.float().div_(255.0)
        return x.sub_(self.mean) if self.mean is not None else x

    def __iter__(self):
        indices = self._indices()
        # Seeded per (seed, epoch, rank): ranks augment differently, reruns identically.
        state = np.random.SeedSequence([self.seed, self.epoch, self.rank]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        for i in range(len(self)):
            index = indices[i * self.batch_size : (i + 1) * self.batch_size].to(self.device)
            x = self._normalize(self.images[index])
            if self.train:
                b, (h, w) = len(x), x.shape[-2:]
                # Offsets and flips are drawn on the CPU: a few hundred numbers, same on every device.
                top = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator)
                left = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator)
                flip = torch.rand(b, generator=generator) < 0.5
                x = crop_flip(F.pad(x, (self.pad,) * 4), top, left, flip, (h, w))
            yield x, self.labels[index]
