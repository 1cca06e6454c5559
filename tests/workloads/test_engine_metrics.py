"""Top-k counts and ensemble averaging (workloads.metrics) against hand-computed values."""

import math

import pytest
import torch

from workloads.metrics import ensemble_probabilities, topk_correct

LOGITS = torch.tensor(
    [
        [0.1, 0.5, 0.2, 0.9, 0.0, 0.3],  # label 3 is the top score
        [0.8, 0.1, 0.7, 0.2, 0.6, 0.0],  # label 2 is second
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # label 0 is last (6th)
    ]
)
LABELS = torch.tensor([3, 2, 0])


def test_topk_correct_counts_by_hand():
    assert topk_correct(LOGITS, LABELS).tolist() == [1, 2]  # default ks=(1, 5)
    assert topk_correct(LOGITS, LABELS, ks=(2, 1, 6)).tolist() == [2, 1, 3]
    assert topk_correct(LOGITS, LABELS).dtype == torch.int64


def test_topk_beyond_the_number_of_classes_counts_everything():
    assert topk_correct(LOGITS[:, :4], torch.tensor([3, 2, 0]), ks=(1, 5)).tolist() == [1, 3]


def test_topk_rejects_bad_shapes_and_ks():
    with pytest.raises(ValueError, match="labels"):
        topk_correct(LOGITS, LABELS[:2])
    with pytest.raises(ValueError, match="ks"):
        topk_correct(LOGITS, LABELS, ks=(0,))


def test_weighted_average_of_probabilities_by_hand():
    a = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    b = torch.tensor([[0.1, 0.9], [0.0, 1.0]])
    mixed = ensemble_probabilities([a, b], weights=[3, 1], from_logits=False)
    assert torch.allclose(mixed, torch.tensor([[0.4, 0.6], [0.75, 0.25]]))


def test_logits_are_softmaxed_before_averaging():
    ln3 = math.log(3.0)
    a = torch.tensor([[0.0, ln3]])  # softmax [0.25, 0.75]
    b = torch.tensor([[ln3, 0.0]]) + 100.0  # softmax [0.75, 0.25]: a shift changes nothing
    assert torch.allclose(ensemble_probabilities([a, b]), torch.tensor([[0.5, 0.5]]))
    # softmax [1, 0] (to 1e-13): probabilities average to [0.625, 0.375], whereas averaging the
    # logits first would give softmax([15, ln3 / 2]), about [1, 0].
    c = torch.tensor([[30.0, 0.0]])
    assert torch.allclose(ensemble_probabilities([a, c]), torch.tensor([[0.625, 0.375]]))


def test_ensemble_rejects_bad_inputs():
    a = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="at least one"):
        ensemble_probabilities([])
    with pytest.raises(ValueError, match="one shape"):
        ensemble_probabilities([a, torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="2 weights for 1"):
        ensemble_probabilities([a], weights=[1, 1])
    with pytest.raises(ValueError, match="positive sum"):
        ensemble_probabilities([a, a], weights=[1, -1])
