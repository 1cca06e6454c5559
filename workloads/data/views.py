"""Test-time views of one ImageNet image (uint8 [3,H,W]), as the paper evaluates.

- ``center_view``: shorter side 256, the central 224x224 (single-crop numbers).
- ``ten_crop_views``: shorter side 256, four corner and the central 224 crops, and their mirrors
  (Tables 2-3).
- ``multi_scale_views``: the whole image at shorter side 224, 256, 384, 480, 640 and its mirror,
  for the fully-convolutional form whose scores are averaged over scales (Table 4).

All return float32 in [0,1] units minus ``mean`` ([3] per channel, or a [3,224,224] mean image
where the view is 224x224; multi-scale views of other sizes use the mean image's channel means).
"""

from __future__ import annotations

import torch

from .augment import resize_shorter, subtract_mean

MULTI_SCALES = (224, 256, 384, 480, 640)


def center_view(image: torch.Tensor, mean: torch.Tensor, *, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """``[1,3,crop,crop]``: the central crop after resizing the shorter side to ``resize``."""
    from torchvision.transforms.v2 import functional as TF  # on first use: see workloads/data/__init__.py

    view = TF.center_crop(resize_shorter(image, resize), [crop, crop])
    return subtract_mean(view, mean)[None]


def ten_crop_views(image: torch.Tensor, mean: torch.Tensor, *, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """``[10,3,crop,crop]``: top-left, top-right, bottom-left, bottom-right, center, then the mirror of each.

    View 5+i is view i mirrored (torchvision's ten_crop orders its mirrored half differently).
    """
    from torchvision.transforms.v2 import functional as TF  # on first use: see workloads/data/__init__.py

    crops = [subtract_mean(v, mean) for v in TF.five_crop(resize_shorter(image, resize), [crop, crop])]
    return torch.stack(crops + [c.flip(-1) for c in crops])


def multi_scale_views(
    image: torch.Tensor, mean: torch.Tensor, scales: tuple[int, ...] = MULTI_SCALES
) -> list[torch.Tensor]:
    """One ``[2,3,H_s,W_s]`` tensor per scale s (shorter side s): the resized image and its mirror.

    Sizes differ between scales, so they cannot stack into one tensor; a fully-convolutional net
    scores each and the caller averages the class scores.
    """
    channel_mean = mean if mean.shape == (3,) else mean.mean(dim=(1, 2))
    views = []
    for scale in scales:
        x = subtract_mean(resize_shorter(image, scale), channel_mean)
        views.append(torch.stack([x, x.flip(-1)]))
    return views
