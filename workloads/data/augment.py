"""The paper's ImageNet training augmentation, per image (for DataLoader workers).

Scale augmentation (shorter side uniform in [256, 480]), a random 224x224 crop, a horizontal flip
with probability 1/2, per-pixel mean subtraction and AlexNet's PCA colour ("lighting") noise.
Images are uint8 [3,H,W] tensors as ``decode_image_file`` gives them; outputs float32 [3,224,224]
in [0,1] units minus the mean.
"""

from __future__ import annotations

import torch

# AlexNet's PCA of ImageNet RGB pixels in [0,1] units (as fb.resnet.torch uses them):
# eigenvalues, and eigenvectors as columns.
PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


def resize_shorter(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize [..., H, W] so that min(H, W) == size, keeping the aspect ratio (bilinear, antialiased)."""
    from torchvision.transforms.v2 import functional as TF  # on first use: see workloads/data/__init__.py

    h, w = image.shape[-2:]
    if h <= w:
        new = (size, max(1, round(w * size / h)))
    else:
        new = (max(1, round(h * size / w)), size)
    return TF.resize(image, list(new), antialias=True)


def subtract_mean(image: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """uint8 [3,H,W] -> float32 in [0,1] minus ``mean``: [3] per channel or a [3,H,W] mean image."""
    x = image.float() / 255.0
    if mean.shape == (3,):
        return x - mean[:, None, None]
    if mean.shape != x.shape:
        raise ValueError(f"mean {tuple(mean.shape)} must be [3] or match the image {tuple(x.shape)}")
    return x - mean


def lighting_noise(x: torch.Tensor, std: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """AlexNet's PCA lighting: add ``eigvec @ (alpha * eigval)`` to every pixel, alpha ~ N(0, std^2)."""
    alpha = torch.randn(3, generator=generator) * std
    return x + (PCA_EIGVEC @ (alpha * PCA_EIGVAL))[:, None, None]


class ImageNetTrainTransform:
    """Callable uint8 [3,H,W] -> float32 [3,crop,crop] with the paper's ImageNet augmentation.

    ``mean``: [3] per-channel mean or a [3,crop,crop] per-pixel mean image, [0,1] units.
    ``generator``: None draws from torch's global RNG (which DataLoader seeds per worker).
    """

    def __init__(
        self,
        mean: torch.Tensor,
        *,
        scale: tuple[int, int] = (256, 480),
        crop: int = 224,
        lighting_std: float = 0.1,
        generator: torch.Generator | None = None,
    ):
        if not crop <= scale[0] <= scale[1]:
            raise ValueError(f"scale {scale} must satisfy crop ({crop}) <= low <= high")
        if mean.shape not in ((3,), (3, crop, crop)):
            raise ValueError(f"mean {tuple(mean.shape)} must be [3] or [3,{crop},{crop}]")
        self.mean, self.scale, self.crop = mean.float(), scale, crop
        self.lighting_std, self.generator = lighting_std, generator

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        g = self.generator
        shorter = int(torch.randint(self.scale[0], self.scale[1] + 1, (1,), generator=g))
        image = resize_shorter(image, shorter)
        h, w = image.shape[-2:]
        top = int(torch.randint(0, h - self.crop + 1, (1,), generator=g))
        left = int(torch.randint(0, w - self.crop + 1, (1,), generator=g))
        image = image[:, top : top + self.crop, left : left + self.crop]
        if torch.rand(1, generator=g) < 0.5:
            image = image.flip(-1)
        return lighting_noise(subtract_mean(image, self.mean), self.lighting_std, g)
