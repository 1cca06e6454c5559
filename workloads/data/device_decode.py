"""The paper's ImageNet training augmentation with the JPEG decode on the training device.

Fed from CPU cores, a GPU starves: PIL decode + scale augmentation of a 500x375 JPEG runs at
~350 images/s per core (DESIGN.md), so a 16-core node makes ~5.6k images/s, below what one H200
trains ResNet-50 at with torch.compile (6.6k). Here a batch of shard rows is decoded at once by
``torchvision.io.decode_jpeg`` on the device (nvJPEG on CUDA; libjpeg on the CPU, which the tests
use), and the augmentation is done for the whole batch in a few ops:

- each image's crop is drawn as ``ImageNetTrainTransform`` draws it (shorter side s uniform in
  [256, 480], a random 224x224 window of the resized image, a flip with probability 1/2) and turned
  into a box in the *original* image's pixels (the window divided by the resize factor);
- ``torchvision.ops.roi_align`` resamples every box of the batch to 224x224 in one kernel,
  averaging ceil(box / 224)^2 bilinear samples per output pixel (an area filter, close to an
  antialiased resize at any scale);
- flips, mean subtraction and PCA lighting are batched tensor ops.

The result follows the same distribution as ``ImageNetTrainTransform``; its pixels differ from
resize-then-crop by resampling error only (tested).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .augment import PCA_EIGVAL, PCA_EIGVEC
from .decode import decode_image_bytes
from .errors import CorruptImageError

JPEG_START = b"\xff\xd8"  # the SOI marker every JPEG file begins with


def decode_jpegs(batch: dict, device: torch.device | str) -> list[torch.Tensor]:
    """Every row's image as RGB ``uint8 [3,H,W]`` on ``device``; a row that does not decode raises
    ``CorruptImageError`` naming its key.

    The JPEGs are decoded together by ``decode_jpeg``. A row in another format goes through PIL
    (``decode_image_bytes``) and is moved over: ImageNet's train split holds a PNG named .JPEG,
    which ``prepare`` keeps because PIL reads it, and ``decode_jpeg`` refuses.
    """
    from torchvision.io import ImageReadMode, decode_jpeg  # on first use: see workloads/data/__init__.py

    keys = batch.get("key")
    names = [str(keys[i]) if keys is not None else f"row {i}" for i in range(len(batch["image"]))]
    jpegs = [i for i, blob in enumerate(batch["image"]) if bytes(blob[:2]) == JPEG_START]
    data = [torch.frombuffer(bytearray(batch["image"][i]), dtype=torch.uint8) for i in jpegs]
    try:
        decoded = dict(zip(jpegs, decode_jpeg(data, mode=ImageReadMode.RGB, device=device))) if data else {}
    except RuntimeError:
        for i, one in zip(jpegs, data):  # find the culprit, so the message names it
            try:
                decode_jpeg(one, mode=ImageReadMode.RGB, device=device)
            except RuntimeError as e:
                raise CorruptImageError(names[i], f"not a decodable JPEG ({str(e).splitlines()[0]})") from e
        raise
    return [
        decoded[i] if i in decoded else decode_image_bytes(bytes(blob), names[i]).to(device)
        for i, blob in enumerate(batch["image"])
    ]


def draw_crops(
    sizes: torch.Tensor, generator: torch.Generator | None, *, scale: tuple[int, int] = (256, 480), crop: int = 224
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For images of ``sizes`` [N,2] (H, W), what ``ImageNetTrainTransform`` draws: the resized size
    [N,2] (shorter side uniform in ``scale``), the crop's top-left corner in it [N,2], and flips [N]."""
    n = len(sizes)
    shorter = torch.randint(scale[0], scale[1] + 1, (n,), generator=generator).double()
    h, w = sizes[:, 0].double(), sizes[:, 1].double()
    factor = shorter / torch.minimum(h, w)
    resized = torch.stack(
        [torch.where(h <= w, shorter, torch.round(h * factor)), torch.where(h <= w, torch.round(w * factor), shorter)],
        dim=1,
    )
    corners = torch.floor(torch.rand(n, 2, generator=generator, dtype=torch.float64) * (resized - crop + 1))
    flips = torch.rand(n, generator=generator) < 0.5
    return resized.long(), corners.long(), flips


def crop_boxes(sizes: torch.Tensor, resized: torch.Tensor, corners: torch.Tensor, crop: int = 224) -> torch.Tensor:
    """The crop windows as boxes [N,4] (x1, y1, x2, y2) in the original images' pixels."""
    per_pixel = sizes.double() / resized.double()  # original pixels per resized pixel, (y, x)
    top_left = corners.double() * per_pixel
    bottom_right = (corners.double() + crop) * per_pixel
    return torch.stack([top_left[:, 1], top_left[:, 0], bottom_right[:, 1], bottom_right[:, 0]], dim=1)


def crop_batch(images: list[torch.Tensor], boxes: torch.Tensor, crop: int = 224) -> torch.Tensor:
    """Every image's box resampled to ``crop`` x ``crop``: float32 [N,3,crop,crop] in 0-255 units.

    The images go into one [N,3,Hmax,Wmax] tensor for a single ``roi_align``; each is padded by
    repeating its last row and column, because bilinear samples in a box's last half-pixel reach one
    pixel past the image (as ``roi_align`` does at the top and left edges by clamping). Memory:
    N x 3 x Hmax x Wmax float32, ~0.6 GB for 256 images of at most 500x500.
    """
    from torchvision.ops import roi_align  # on first use: see workloads/data/__init__.py

    h_max, w_max = (max(image.shape[d] for image in images) for d in (-2, -1))
    padded = torch.empty(len(images), 3, h_max, w_max, device=images[0].device)
    for i, image in enumerate(images):
        h, w = image.shape[-2:]
        padded[i] = F.pad(image.float()[None], (0, w_max - w, 0, h_max - h), mode="replicate")[0]
    rois = torch.cat([torch.arange(len(images), dtype=torch.float64)[:, None], boxes.double()], dim=1)
    # sampling_ratio=0: ceil(box / crop) samples per output pixel and axis, an area filter at any scale.
    return roi_align(
        padded, rois.float().to(padded.device), output_size=crop, spatial_scale=1.0, sampling_ratio=0, aligned=True
    )


def device_train_batch(
    batch: dict,
    mean: np.ndarray | torch.Tensor,
    device: torch.device | str,
    *,
    seed: int | None = None,
    scale: tuple[int, int] = (256, 480),
    crop: int = 224,
    lighting_std: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """JPEG shard rows -> (float32 [N,3,crop,crop], int64 [N]) on ``device``, augmented as the paper does.

    ``mean``: [3] or [3,crop,crop], [0,1] units. ``seed``: None draws fresh randomness each call
    (training); an int makes the batch's crops, flips and lighting a function of it.
    """
    device = torch.device(device)
    images = decode_jpegs(batch, device)
    generator = torch.Generator().manual_seed(
        seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
    )
    sizes = torch.tensor([tuple(image.shape[-2:]) for image in images])
    resized, corners, flips = draw_crops(sizes, generator, scale=scale, crop=crop)
    x = crop_batch(images, crop_boxes(sizes, resized, corners, crop), crop)
    flips = flips.to(device)
    x = torch.where(flips[:, None, None, None], x.flip(-1), x).div_(255.0)
    mean = torch.as_tensor(np.array(mean, dtype=np.float32)).to(device)
    x = x - (mean[None, :, None, None] if mean.shape == (3,) else mean[None])
    alpha = torch.randn(len(images), 3, generator=generator) * lighting_std
    shift = (alpha * PCA_EIGVAL) @ PCA_EIGVEC.T  # [N,3]: eigvec @ (alpha * eigval) per image
    x = x + shift.to(device)[:, :, None, None]
    # np.array copies: Ray Data hands batches over as read-only arrays, which torch warns about.
    labels = torch.from_numpy(np.array(batch["label"], dtype=np.int64)).to(device)
    return x, labels
