"""Random images for throughput benchmarks only: nothing in them can be learned."""

from __future__ import annotations

import torch


def synthetic(
    n: int, shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 [n, *shape] uniform noise, int64 [n] uniform labels)``, the same for the same seed."""
    if n < 1 or num_classes < 1 or len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"synthetic: need n >= 1, num_classes >= 1 and shape (C, H, W); "
            f"got n={n}, num_classes={num_classes}, shape={shape}"
        )
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, num_classes, (n,), dtype=torch.int64, generator=generator)
    return images, labels
