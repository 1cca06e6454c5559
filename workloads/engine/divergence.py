"""Non-finite loss detection that every rank agrees on.

Each rank records, on its device and without a host sync, the first iteration at which its loss
was NaN/inf. At a check point (the train loop's log steps and the end of each epoch) the ranks
exchange these records in one all_gather of 2 numbers per rank; every rank then sees the same
earliest bad iteration and raises `DivergenceError` at the same step, so none is left waiting in
a collective. Cost: one host sync plus one tiny collective per check point, which the loop already
pays there for logging; no extra per-step sync. The price is that up to `log_every` - 1 steps run
after the bad one; their weights are garbage either way, and resume must use the last checkpoint.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

# Stands for "no bad iteration yet"; above any real iteration and exact in float64.
_NONE = float(2**53)


class DivergenceError(RuntimeError):
    """The training loss became NaN or inf.

    `iteration`: 0-based global index of the first step with a non-finite loss on any rank;
    `loss`: that loss value; `rank`: the rank that saw it (None when not distributed).
    """

    def __init__(self, iteration: int, loss: float, rank: int | None = None):
        self.iteration = iteration
        self.loss = loss
        self.rank = rank
        where = f" on rank {rank}" if rank is not None else ""
        super().__init__(f"non-finite training loss {loss} at iteration {iteration}{where}")


class NonFiniteWatch:
    """Device-side record of the first non-finite loss; `check()` agrees on it across ranks."""

    def __init__(self, device: torch.device):
        # [first bad iteration, loss there]; float64 keeps iterations exact.
        self._first = torch.tensor([_NONE, 0.0], dtype=torch.float64, device=device)

    def observe(self, iteration: int, loss: torch.Tensor) -> None:
        """Record `loss` of step `iteration` if it is the first non-finite one (no sync)."""
        loss64 = loss.detach().to(torch.float64)
        is_new = ~torch.isfinite(loss64) & (self._first[0] == _NONE)
        candidate = torch.stack([torch.full_like(loss64, iteration), loss64])
        self._first = torch.where(is_new, candidate, self._first)

    def check(self) -> None:
        """Raise DivergenceError on every rank if any rank has recorded a non-finite loss.

        Collective when torch.distributed is initialised: all ranks must call it together.
        """
        if dist.is_available() and dist.is_initialized():
            gathered = [torch.empty_like(self._first) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, self._first)
            records = torch.stack(gathered).cpu()
            rank = int(records[:, 0].argmin())  # lowest rank among ties at the same iteration
            iteration, loss = records[rank].tolist()
        else:
            rank = None
            iteration, loss = self._first.cpu().tolist()
        if iteration != _NONE:
            raise DivergenceError(int(iteration), loss, rank)
