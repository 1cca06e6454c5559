"""The device-resident CIFAR loader, ImageNet training augmentation and test-time views."""

import pytest
import torch
import torch.nn.functional as F

import workloads.data.augment as augment
from workloads.data import (
    MULTI_SCALES,
    PCA_EIGVAL,
    PCA_EIGVEC,
    ImageNetTrainTransform,
    ResidentLoader,
    center_view,
    crop_flip,
    lighting_noise,
    multi_scale_views,
    per_pixel_mean,
    resize_shorter,
    ten_crop_views,
)


def _images(n=64, c=3, size=8, seed=0):
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


# ---- per-pixel mean and the batched crop ------------------------------------------------------


def test_per_pixel_mean_matches_float_mean_in_unit_range():
    images = _images(n=50)
    mean = per_pixel_mean(images, chunk=7)  # chunk boundaries must not matter
    assert mean.shape == (3, 8, 8) and mean.dtype == torch.float32
    torch.testing.assert_close(mean, images.double().mean(0).float() / 255)


def test_crop_flip_equals_per_image_reference():
    padded = torch.randn(6, 2, 12, 10)
    top, left = torch.tensor([0, 4, 2, 4, 1, 0]), torch.tensor([2, 0, 1, 2, 0, 2])
    flip = torch.tensor([False, True, False, True, True, False])
    out = crop_flip(padded, top, left, flip, (8, 8))
    for b in range(6):
        window = padded[b, :, top[b] : top[b] + 8, left[b] : left[b] + 8]
        assert out[b].equal(window.flip(-1) if flip[b] else window)


# ---- ResidentLoader ---------------------------------------------------------------------------


def test_train_batches_are_shifted_windows_of_the_zero_padded_mean_subtracted_image():
    images = _images(n=40)
    mean = per_pixel_mean(images)
    # Labels = image index, so each output can be traced back to its source image.
    loader = ResidentLoader(images, torch.arange(40), 16, train=True, mean=mean, seed=3)
    offsets, flips = set(), []
    for x, y in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 8, 8) and y.dtype == torch.int64
        for out, index in zip(x, y):
            padded = F.pad(images[index].float() / 255 - mean, (4, 4, 4, 4))
            matches = [
                (dy, dx, f)
                for dy in range(9)
                for dx in range(9)
                for f in (False, True)
                if torch.equal(
                    out, padded[:, dy : dy + 8, dx : dx + 8].flip(-1) if f else padded[:, dy : dy + 8, dx : dx + 8]
                )
            ]
            assert matches, f"output for image {index} is no window of its padded image"
            offsets.add(matches[0][:2])
            flips.append(matches[0][2])
    assert len(loader) == 2 and len(flips) == 32  # drop_last in training: 40 // 16 batches
    assert len(offsets) > 15  # offsets vary over the 81 possible shifts


def test_flip_happens_about_half_the_time():
    # pad=0 isolates the flip; a horizontally asymmetric image tells flipped from not.
    images = torch.arange(8, dtype=torch.uint8).repeat(2000, 1, 8, 1)
    loader = ResidentLoader(images, torch.zeros(2000, dtype=torch.int64), 500, train=True, pad=0)
    flipped = torch.cat([x[:, 0, 0, 0] > x[:, 0, 0, -1] for x, _ in loader]).float().mean()
    assert 0.45 < flipped < 0.55


def test_eval_batches_are_scaled_and_mean_subtracted_in_order():
    images = _images(n=10)
    mean = per_pixel_mean(images)
    batches = _epoch(ResidentLoader(images, torch.arange(10), 4, train=False, mean=mean))
    assert [len(y) for _, y in batches] == [4, 4, 2]  # eval keeps the last partial batch
    x = torch.cat([b[0] for b in batches])
    torch.testing.assert_close(x, images.float() / 255 - mean)
    assert x.mean().abs() < 1e-6  # mean image removed
    no_mean = torch.cat([b[0] for b in ResidentLoader(images, torch.arange(10), 4, train=False)])
    torch.testing.assert_close(no_mean, images.float() / 255)


@pytest.mark.parametrize("train", [True, False])
def test_rank_shards_are_disjoint_and_cover_the_epoch(train):
    n, world = 100, 3
    images = _images(n=n)
    seen = []
    for rank in range(world):
        loader = ResidentLoader(images, torch.arange(n), 8, train=train, rank=rank, world_size=world, seed=7)
        loader.set_epoch(2)
        labels = torch.cat([y for _, y in loader])
        assert len(list(loader)) == len(loader)
        seen.append(set(labels.tolist()))
        assert len(seen[-1]) == len(labels)
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1 :])
    if train:
        # Equal steps per rank (drop_last): 33 images per rank, 4 batches of 8; only 100 % 3 sit out.
        assert [len(s) for s in seen] == [32, 32, 32]
        full = [
            set(
                torch.cat(
                    [
                        y
                        for _, y in ResidentLoader(
                            images, torch.arange(n), 33, train=True, rank=r, world_size=world, seed=7
                        )
                    ]
                ).tolist()
            )
            for r in range(world)
        ]
        assert len(set().union(*full)) == 99
    else:
        assert set().union(*seen) == set(range(n))


def test_same_seed_and_epoch_repeat_exactly_other_epochs_and_seeds_differ():
    images = _images(n=48)

    def run(seed, epoch, rank=0):
        loader = ResidentLoader(images, torch.arange(48), 16, train=True, seed=seed, rank=rank, world_size=2)
        loader.set_epoch(epoch)
        return torch.cat([x for x, _ in loader]), torch.cat([y for _, y in loader])

    x1, y1 = run(0, 1)
    x2, y2 = run(0, 1)
    assert x1.equal(x2) and y1.equal(y2)
    assert not run(0, 2)[1].equal(y1)
    assert not run(1, 1)[1].equal(y1)


def test_resident_loader_rejects_bad_arguments():
    images = _images(n=4)
    with pytest.raises(ValueError, match="uint8"):
        ResidentLoader(images.float(), torch.arange(4), 2, train=True)
    with pytest.raises(ValueError, match="rank 2 must be in 0..1"):
        ResidentLoader(images, torch.arange(4), 2, train=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"mean \(3, 4, 4\)"):
        ResidentLoader(images, torch.arange(4), 2, train=True, mean=torch.zeros(3, 4, 4))


# ---- ImageNet training transform --------------------------------------------------------------


def test_resize_shorter_keeps_aspect_ratio():
    assert resize_shorter(torch.zeros(3, 300, 400, dtype=torch.uint8), 256).shape == (3, 256, 341)
    assert resize_shorter(torch.zeros(3, 500, 250, dtype=torch.uint8), 480).shape == (3, 960, 480)


def test_train_transform_is_a_crop_of_the_image_or_its_mirror_minus_the_mean():
    image = torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor([0.5, 0.4, 0.3])
    transform = ImageNetTrainTransform(
        mean, scale=(256, 256), lighting_std=0.0, generator=torch.Generator().manual_seed(1)
    )
    flips = []
    for _ in range(6):
        out = transform(image)
        assert out.shape == (3, 224, 224) and out.dtype == torch.float32
        restored = ((out + mean[:, None, None]) * 255).round().to(torch.uint8)
        found = []
        for f in (False, True):
            source = image.flip(-1) if f else image
            # Candidate offsets: where the crop's corner pixel occurs (random pixels: few), then full check.
            corner = (source[:, :33, :33] == restored[:, 0, 0][:, None, None]).all(0).nonzero().tolist()
            found += [
                (top, left, f)
                for top, left in corner
                if torch.equal(restored, source[:, top : top + 224, left : left + 224])
            ]
        assert found, "output is not a 224 crop of the image or of its mirror"
        flips.append(found[0][2])
    assert len(set(flips)) == 2


def test_train_transform_samples_shorter_side_in_256_480(monkeypatch):
    sizes = []
    original = augment.resize_shorter
    monkeypatch.setattr(augment, "resize_shorter", lambda image, size: sizes.append(size) or original(image, size))
    transform = ImageNetTrainTransform(torch.zeros(3), generator=torch.Generator().manual_seed(0))
    image = torch.zeros(3, 30, 40, dtype=torch.uint8)  # small input: upscaling is what the recipe does too
    for _ in range(100):
        assert transform(image).shape == (3, 224, 224)
    assert min(sizes) >= 256 and max(sizes) <= 480 and min(sizes) < 280 and max(sizes) > 456


def test_lighting_noise_is_a_per_image_colour_shift_along_the_pca_axes():
    transform = ImageNetTrainTransform(torch.zeros(3), scale=(256, 256), generator=torch.Generator().manual_seed(0))
    delta = transform(torch.full((3, 256, 256), 128, dtype=torch.uint8)) - 128 / 255
    assert delta.abs().max() > 1e-4  # the transform adds lighting noise by default (std 0.1)...
    # ...the same on every pixel
    torch.testing.assert_close(delta, delta[:, :1, :1].expand_as(delta), rtol=0, atol=1e-6)
    generator = torch.Generator().manual_seed(1)
    shifts = torch.stack([lighting_noise(torch.zeros(3, 1, 1), 0.1, generator)[:, 0, 0] for _ in range(4000)])
    # In eigenvector coordinates the shift is alpha * eigval with alpha ~ N(0, 0.1^2), independent per axis.
    coords = shifts @ PCA_EIGVEC
    torch.testing.assert_close(coords.std(0), 0.1 * PCA_EIGVAL, rtol=0.05, atol=0)
    assert coords.mean(0).abs().max() < 0.1 * PCA_EIGVAL[0] * 0.1


def test_train_transform_checks_mean_shape():
    with pytest.raises(ValueError, match=r"mean \(3, 32, 32\)"):
        ImageNetTrainTransform(torch.zeros(3, 32, 32))


# ---- test-time views --------------------------------------------------------------------------


def _photo(h=256, w=320):
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))


def test_center_view_is_the_central_224_after_resizing_to_256():
    image, mean = _photo(), torch.tensor([0.1, 0.2, 0.3])
    view = center_view(image, mean)
    assert view.shape == (1, 3, 224, 224)
    expected = image[:, 16:240, 48:272].float() / 255 - mean[:, None, None]
    torch.testing.assert_close(view[0], expected)
    mean_image = torch.rand(3, 224, 224)
    torch.testing.assert_close(center_view(image, mean_image)[0], image[:, 16:240, 48:272].float() / 255 - mean_image)


def test_ten_crop_views_are_corners_center_and_their_mirrors():
    image, mean = _photo(), torch.zeros(3)
    views = ten_crop_views(image, mean)
    assert views.shape == (10, 3, 224, 224)
    x = image.float() / 255
    crops = [x[:, :224, :224], x[:, :224, -224:], x[:, -224:, :224], x[:, -224:, -224:], x[:, 16:240, 48:272]]
    for i, crop in enumerate(crops):
        torch.testing.assert_close(views[i], crop)
        torch.testing.assert_close(views[5 + i], crop.flip(-1))


def test_multi_scale_views_cover_the_papers_scales_with_mirrors():
    image = _photo(300, 400)
    mean_image = torch.rand(3, 224, 224)
    views = multi_scale_views(image, mean_image)
    assert MULTI_SCALES == (224, 256, 384, 480, 640)
    assert [tuple(v.shape) for v in views] == [(2, 3, s, round(400 * s / 300)) for s in MULTI_SCALES]
    for v in views:
        torch.testing.assert_close(v[1], v[0].flip(-1))
    expected = resize_shorter(image, 224).float() / 255 - mean_image.mean(dim=(1, 2))[:, None, None]
    torch.testing.assert_close(views[0][0], expected)
