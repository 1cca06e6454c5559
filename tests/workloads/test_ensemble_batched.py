"""workloads.ensemble.batch_probabilities: a batch of ImageNet-size images of mixed sizes scored with
one forward pass per group of same-sized views gives what scoring them one image at a time gives
(``image_probabilities``, the reference), for every view and either mean."""

import pytest
import torch
from torch import nn

from workloads import ensemble as E
from workloads.data.views import center_view, multi_scale_views, ten_crop_views


class TinyConvNet(nn.Module):
    """Fully convolutional (any input size), position-sensitive enough that a wrong crop, mirror or
    mean changes its output: a strided conv, a ReLU, global average pooling and a linear layer."""

    def __init__(self, classes: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 7, stride=8)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean(dim=(2, 3)))


def mixed_images() -> list[torch.Tensor]:
    """Seven uint8 images in four stored sizes, landscape and portrait, in an interleaved order, as
    a val shard's rows come."""
    g = torch.Generator().manual_seed(0)
    sizes = [(75, 100), (100, 75), (75, 100), (60, 60), (75, 100), (100, 75), (90, 130)]
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]


MEANS = {
    "per-channel": torch.tensor([0.485, 0.456, 0.406]),
    "per-pixel": torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25,
}


@pytest.mark.parametrize("mean", MEANS, ids=list(MEANS))
@pytest.mark.parametrize("view", E.VIEWS)
def test_a_batch_scores_as_its_images_one_at_a_time(view, mean):
    model, images, mean = TinyConvNet().eval(), mixed_images(), MEANS[mean]
    one_at_a_time = E.image_probabilities(model, images, mean, view)
    # batch_size 2: several forward passes per group, so the chunking is exercised too.
    batched = E.batch_probabilities(model, images, mean, view, batch_size=2)
    assert batched.shape == one_at_a_time.shape == (len(images), 5)
    assert torch.allclose(batched, one_at_a_time, atol=1e-6)
    assert not torch.allclose(batched[0], batched[1])  # the views differ per image


@pytest.mark.parametrize("mean", MEANS, ids=list(MEANS))
def test_batch_views_are_the_single_image_views_image_major(mean):
    images, mean = mixed_images(), MEANS[mean]
    [(rows, views)] = E.batch_views(images, mean, "10crop")
    assert views.shape == (10 * len(images), 3, 224, 224)
    assert rows.tolist() == [i for i in range(len(images)) for _ in range(10)]
    for i, image in enumerate(images):
        assert torch.equal(views[10 * i : 10 * i + 10], ten_crop_views(image, mean))
    [(rows, views)] = E.batch_views(images, mean, "flip")
    for i, image in enumerate(images):
        center = center_view(image, mean)[0]
        assert torch.equal(views[2 * i], center) and torch.equal(views[2 * i + 1], center.flip(-1))
    groups = E.batch_views(images, mean, "multiscale")
    for i, image in enumerate(images):
        # image i's views at each scale, in scale order: the image and its mirror
        mine = [views[rows == i] for rows, views in groups if (rows == i).any()]
        assert len(mine) == 5
        for got, expected in zip(mine, multi_scale_views(image, mean)):
            assert torch.equal(got, expected)


def test_bad_views_and_means_are_refused():
    images = mixed_images()
    with pytest.raises(ValueError, match="unknown view 'five'"):
        E.batch_views(images, MEANS["per-channel"], "five")
    with pytest.raises(ValueError, match=r"mean \(3, 32, 32\) must be \[3\] or match the views"):
        E.batch_views(images, torch.zeros(3, 32, 32), "center")
    with pytest.raises(ValueError, match="at least one image"):
        E.batch_probabilities(TinyConvNet().eval(), [], MEANS["per-channel"], "center")
