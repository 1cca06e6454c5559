"""workloads.ensemble: view averaging, weighted combination, greedy selection and the Parquet
table, against values computed by hand."""

import math

import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from workloads import ensemble as E


class FirstPixels(nn.Module):
    """Logits = the first two pixels of channel 0, row 0: easy to work out by hand."""

    def forward(self, x):
        return x[:, 0, 0, :2]


class LeftMass(nn.Module):
    """Logits = [mean of channel 0, 0]."""

    def forward(self, x):
        return torch.stack([x[:, 0].mean(dim=(1, 2)), torch.zeros(len(x))], dim=1)


def softmax2(a, b):
    return [math.exp(a) / (math.exp(a) + math.exp(b)), math.exp(b) / (math.exp(a) + math.exp(b))]


def test_small_image_center_is_the_image_and_flip_averages_it_with_its_mirror():
    images = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)  # [1,1,1,2]: pixels 0 and 1 after /255
    mean = torch.tensor([[[0.0, 0.5]]])  # [C,H,W]: subtracted before the mirror, as in training
    center = E.view_probabilities(FirstPixels(), images, mean, "center")
    assert center[0].tolist() == pytest.approx(softmax2(0.0, 0.5))
    flip = E.view_probabilities(FirstPixels(), images, mean, "flip")
    mirrored = softmax2(0.5, 0.0)
    assert flip[0].tolist() == pytest.approx([(c + m) / 2 for c, m in zip(softmax2(0.0, 0.5), mirrored)])
    assert flip[0].tolist() == pytest.approx([0.5, 0.5])


def test_ten_crop_averages_the_softmax_of_all_ten_crops():
    # 256x256, left 128 columns white: a 224 crop's white fraction is 128/224 (left corners),
    # 96/224 (right corners), 112/224 (center); mirrors have the same fraction.
    image = torch.zeros(3, 256, 256, dtype=torch.uint8)
    image[:, :, :128] = 255
    probs = E.view_probabilities(LeftMass(), image[None], torch.zeros(3), "10crop")
    fractions = [128 / 224, 96 / 224, 128 / 224, 96 / 224, 112 / 224] * 2
    expected = sum(softmax2(f, 0.0)[0] for f in fractions) / 10
    assert probs[0, 0].item() == pytest.approx(expected, abs=1e-6)
    assert probs.sum().item() == pytest.approx(1.0)


def test_ten_crop_and_multiscale_are_refused_for_small_images():
    with pytest.raises(ValueError, match="needs ImageNet-size images; these are 32x32"):
        E.view_probabilities(LeftMass(), torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(3, 32, 32), "10crop")
    with pytest.raises(ValueError, match="unknown view 'five'"):
        E.check_view("five", 224)


def test_weighted_combination_and_errors_by_hand():
    a = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    b = torch.tensor([[0.0, 0.8, 0.2], [0.1, 0.1, 0.8]])
    ensemble = E.combine([a, b], [3, 1])  # weights normalised to 0.75 / 0.25
    assert ensemble.flatten().tolist() == pytest.approx([0.45, 0.425, 0.125, 0.175, 0.4, 0.425])
    labels = torch.tensor([0, 1])
    # Row 0: class 0 wins (0.45) -> right; row 1: class 2 wins (0.425 > 0.4) -> wrong.
    assert E.errors(ensemble, labels) == {"top1_error": 50.0, "top5_error": 0.0}
    assert E.errors(E.combine([a, b]), labels)["top1_error"] == 100.0  # equal: [.3,.55,.15], [.15,.3,.55]
    with pytest.raises(ValueError, match="weights must be >= 0"):
        E.combine([a, b], [1, -1])


def test_greedy_selection_adds_only_members_that_lower_the_error():
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    eye = torch.eye(6)
    good = eye.clone()
    good[5] = torch.tensor([0, 0, 0, 0, 1.0, 0])  # wrong on image 5
    helper = eye.clone() * 0.9 + 0.1 * torch.ones(6, 6) / 6
    helper[4] = torch.tensor([0.0, 0, 0, 0, 0, 1])  # wrong on image 4, right on image 5
    bad = torch.roll(eye, 1, dims=1)  # wrong everywhere
    steps = E.greedy_selection({"bad": bad, "good": good, "helper": helper}, labels)
    assert [s["member"] for s in steps][0] in ("good", "helper")
    assert "bad" not in [s["member"] for s in steps]
    keys = [(s["top5_error"], s["top1_error"]) for s in steps]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # every step strictly lowers the error


def test_each_row_is_numbered_within_its_split(tmp_path):
    probs = {"m": torch.full((5, 2), 0.5)}
    validation = torch.tensor([False, False, True, False, True])
    path = E.write_probabilities(tmp_path / "p.parquet", probs, torch.zeros(5, dtype=torch.int64), validation, {})
    table = pq.read_table(path)
    assert table.column("split").to_pylist() == ["test", "test", "val", "test", "val"]
    assert table.column("image").to_pylist() == [0, 1, 0, 2, 1]


def test_probability_table_round_trips(tmp_path):
    probs = {"m1": torch.tensor([[0.25, 0.75], [1.0, 0.0]]), "m2": torch.tensor([[0.5, 0.5], [0.1, 0.9]])}
    labels, validation = torch.tensor([1, 0]), torch.tensor([True, False])
    path = E.write_probabilities(tmp_path / "p.parquet", probs, labels, validation, {"view": "center"})
    back, back_labels, back_val, meta = E.read_probabilities(path)
    assert list(back) == ["m1", "m2"] and torch.allclose(back["m2"], probs["m2"])
    assert torch.equal(back_labels, labels) and torch.equal(back_val, validation) and meta == {"view": "center"}
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        E.read_probabilities(tmp_path / "missing.parquet")
