"""Classification metrics: top-k correct counts and ensemble averaging of probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """Number of samples whose label is among the k highest scores, for each k in `ks`.

    `logits` is [N, C] (any scores: logits or probabilities), `labels` is [N] int. Returns an int64
    tensor [len(ks)] on the logits' device (no host sync). A k larger than C counts every sample
    as correct, as top-C always contains the label. Ties are broken by `torch.topk`.
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of integers >= 1, got {ks!r}")
    num_classes = logits.shape[1]
    max_k = min(max(ks), num_classes)
    top = logits.topk(max_k, dim=1).indices  # [N, max_k], best first
    hits = top == labels.unsqueeze(1)  # at most one True per row
    # Cumulative hits along k: row i is correct at k iff the label sits in its first k columns.
    correct_within = hits.cumsum(dim=1).sum(dim=0)  # [max_k]
    return torch.stack([correct_within[min(k, num_classes) - 1] for k in ks]).to(torch.int64)


def ensemble_probabilities(
    outputs: Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    *,
    from_logits: bool = True,
) -> torch.Tensor:
    """Weighted mean of the members' class probabilities, [N, C].

    `outputs` holds one [N, C] tensor per model: logits (softmax is applied) or, with
    `from_logits=False`, probabilities. `weights` (default: equal) must be >= 0 with a positive
    sum; they are normalised to sum to 1. Averaging probabilities, not logits, is how the paper's
    ensembles combine models.
    """
    if not outputs:
        raise ValueError("ensemble_probabilities needs at least one member")
    shape = outputs[0].shape
    if len(shape) != 2 or any(o.shape != shape for o in outputs):
        raise ValueError(f"every member must be [N, C] of one shape, got {[tuple(o.shape) for o in outputs]}")
    if weights is None:
        weights = [1.0] * len(outputs)
    if len(weights) != len(outputs):
        raise ValueError(f"got {len(weights)} weights for {len(outputs)} members")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    total = float(sum(weights))
    probs = [o.float().softmax(dim=1) if from_logits else o.float() for o in outputs]
    return sum((w / total) * p for w, p in zip(weights, probs))
