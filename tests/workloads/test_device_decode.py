"""The on-device ImageNet path: batched JPEG decode + roi_align augmentation (run here on the CPU)."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import decode_jpeg
from torchvision.transforms.v2 import functional as TF

from workloads.data import PCA_EIGVAL, PCA_EIGVEC, CorruptImageError
from workloads.data.device_decode import crop_batch, crop_boxes, decode_jpegs, device_train_batch, draw_crops

SIZES = [(375, 500), (500, 333), (300, 300), (256, 400)]  # (H, W)


def jpeg(h, w, kind="smooth", seed=0) -> bytes:
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == "smooth":  # low-frequency pattern: any two good resamplers agree closely on it
        rng = np.random.default_rng(seed)
        phases = rng.uniform(0, 2 * math.pi, 3)
        pixels = np.stack([128 + 100 * np.sin(xx / 37 + yy / 53 + p) for p in phases], -1)
    else:
        pixels = np.broadcast_to(np.array(kind, dtype=np.float64), (h, w, 3))
    out = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out, format="JPEG", quality=95)
    return out.getvalue()


def batch_of(blobs, labels=None):
    return {
        "image": np.array(blobs, dtype=object),
        "label": np.array(labels or list(range(len(blobs)))),
        "key": np.array([f"img{i}" for i in range(len(blobs))], dtype=object),
    }


def test_crops_follow_the_train_transform_distribution():
    sizes = torch.tensor([[375, 500]] * 4000)
    resized, corners, flips = draw_crops(sizes, torch.Generator().manual_seed(0))
    assert resized[:, 0].min() == 256 and resized[:, 0].max() == 480  # the shorter side, uniform in [256, 480]
    assert (corners >= 0).all() and (corners + 224 <= resized).all()
    boxes = crop_boxes(sizes, resized, corners)
    side = boxes[:, 2] - boxes[:, 0]
    assert torch.allclose(side, boxes[:, 3] - boxes[:, 1], rtol=0.01)  # square, up to rounding of the resize
    # A 224 window of an image whose shorter side (375) was resized to s in [256, 480].
    assert side.min() >= 224 * 375 / 480 - 0.5 and side.max() <= 224 * 375 / 256 + 0.5
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 500 + 1e-6).all() and (boxes[:, 3] <= 375 + 1e-6).all()
    assert 0.45 < flips.float().mean() < 0.55


def test_each_output_is_the_resized_crop_of_its_image_or_its_mirror():
    blobs = [jpeg(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]
    x, labels = device_train_batch(batch_of(blobs), np.zeros(3, np.float32), "cpu", seed=7, lighting_std=0.0)
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and labels.tolist() == [0, 1, 2, 3]

    # The reference is what ImageNetTrainTransform does with the same draws (same seed, same order):
    # an antialiased resize of the whole image, then the 224 window.
    images = [decode_jpeg(torch.frombuffer(bytearray(b), dtype=torch.uint8)) for b in blobs]
    resized, corners, flips = draw_crops(
        torch.tensor([tuple(i.shape[-2:]) for i in images]), torch.Generator().manual_seed(7)
    )
    for i, image in enumerate(images):
        (rh, rw), (top, left) = resized[i].tolist(), corners[i].tolist()
        ref = TF.resize(image, [rh, rw], antialias=True)[:, top : top + 224, left : left + 224].float() / 255
        ref = ref.flip(-1) if flips[i] else ref
        error = (x[i] - ref).abs()
        assert error.mean() < 0.003 and error.max() < 0.02, (i, error.mean(), error.max())  # measured 0.0012, 0.005
        # The mirror is much further away: the flip was applied as drawn.
        assert (x[i] - ref.flip(-1)).abs().mean() > 5 * error.mean()


@pytest.mark.parametrize("shorter", [256, 480])  # downscaled 1.17x / upscaled 1.6x
def test_a_crop_at_the_bottom_right_edge_of_the_smaller_image_in_a_batch(shorter):
    small, large = (
        decode_jpeg(torch.frombuffer(bytearray(jpeg(h, w, seed=s)), dtype=torch.uint8))
        for (h, w), s in (((300, 400), 1), ((500, 500), 2))
    )
    sizes = torch.tensor([[300, 400], [500, 500]])
    resized = torch.tensor([[shorter, round(400 * shorter / 300)], [shorter, shorter]])
    corners = resized - 224  # both windows against the bottom-right corner
    x = crop_batch([small, large], crop_boxes(sizes, resized, corners))
    for out, image, (rh, rw) in zip(x, (small, large), resized.tolist()):
        ref = TF.resize(image, [rh, rw], antialias=True)[:, -224:, -224:].float()
        error = (out - ref).abs() / 255
        # The last row and column included: the larger image's zero padding never leaks in.
        assert error.mean() < 0.003 and error[:, -1, :].max() < 0.03 and error[:, :, -1].max() < 0.03


def test_constant_image_gives_colour_minus_mean_plus_one_lighting_shift_per_image():
    colours = [(200, 40, 90), (10, 250, 128)]
    blobs = [jpeg(300, 400, kind=c) for c in colours]
    mean = np.array([0.5, 0.4, 0.3], np.float32)
    x, _ = device_train_batch(batch_of(blobs), mean, "cpu", seed=3, lighting_std=0.0)
    for out, colour in zip(x, colours):
        expected = torch.tensor(colour, dtype=torch.float32) / 255 - torch.from_numpy(mean)
        torch.testing.assert_close(out.mean(dim=(1, 2)), expected, atol=3 / 255, rtol=0)  # JPEG rounding

    lit, _ = device_train_batch(batch_of(blobs), mean, "cpu", seed=3, lighting_std=0.1)
    shift = (lit - x).mean(dim=(2, 3))  # [N,3]: one colour shift per image, along the PCA axes
    torch.testing.assert_close(lit - x, shift[:, :, None, None].expand_as(x), atol=1e-5, rtol=0)
    alphas = torch.linalg.solve(PCA_EIGVEC, shift.T).T / PCA_EIGVAL  # back to alpha ~ N(0, 0.1^2)
    assert (alphas.abs() < 0.5).all() and not torch.allclose(shift[0], shift[1])


def test_seeded_batches_repeat_and_unseeded_ones_differ():
    batch = batch_of([jpeg(h, w, seed=i) for i, (h, w) in enumerate(SIZES)])
    a, _ = device_train_batch(batch, np.zeros(3, np.float32), "cpu", seed=1)
    b, _ = device_train_batch(batch, np.zeros(3, np.float32), "cpu", seed=1)
    c, _ = device_train_batch(batch, np.zeros(3, np.float32), "cpu")
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_a_row_that_is_not_a_jpeg_is_named():
    batch = batch_of([jpeg(64, 64), b"not a jpeg at all", jpeg(64, 64)])
    with pytest.raises(CorruptImageError, match="img1"):
        decode_jpegs(batch, "cpu")


def test_imagenets_odd_rows_decode_a_png_by_pil_and_a_cmyk_jpeg_to_rgb():
    """ImageNet's train split holds a PNG named .JPEG and CMYK JPEGs; prepare keeps both (PIL reads
    them), so the device path must read them too."""
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    png, cmyk = io.BytesIO(), io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    Image.fromarray(pixels).convert("CMYK").save(cmyk, format="JPEG", quality=95)
    images = decode_jpegs(batch_of([jpeg(64, 80), png.getvalue(), cmyk.getvalue()]), "cpu")
    assert [tuple(image.shape) for image in images] == [(3, 64, 80), (3, 30, 40), (3, 30, 40)]
    assert torch.equal(images[1], torch.from_numpy(pixels).permute(2, 0, 1))
    via_pil = torch.from_numpy(np.asarray(Image.open(cmyk).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(images[2], via_pil)  # libjpeg's CMYK conversion is PIL's (measured: identical)
