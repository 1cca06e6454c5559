"""The engine under torch.distributed: 2 CPU processes (gloo), the model in DDP.

One spawn runs every scenario (process start-up dominates the cost): divergence agreed by all
ranks, the schedule and logged numbers identical on every rank, evaluation over disjoint shards,
and checkpoints without the DDP prefix. A process-group timeout plus a join timeout turn any hang
into a failure.
"""

import json
import math
import multiprocessing
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tests.workloads.engine_fixtures import FixedLogits
from workloads.engine import (
    DivergenceError,
    broadcast_buffers,
    build_optimizer,
    evaluate,
    get_recipe,
    lr_at,
    make_checkpoint,
    train_epoch,
)

WORLD_SIZE = 2
NAN_STEP = 3  # 0-based global step whose batch is NaN on rank 1 only


def _net():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


class _Batches:
    """6 random batches of 4 per rank; counts how many the loop pulled."""

    def __init__(self, rank, nan_step=None):
        g = torch.Generator().manual_seed(rank)
        self.batches = [
            (torch.randn(4, 1, 6, 6, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(6)
        ]
        if nan_step is not None:
            self.batches[nan_step][0][0, 0, 0, 0] = float("nan")
        self.pulled = 0

    def __iter__(self):
        for batch in self.batches:
            self.pulled += 1
            yield batch


def _all_logits():
    g = torch.Generator().manual_seed(7)
    return torch.randn(11, 6, generator=g), torch.randint(0, 6, (11,), generator=g)


def _diverge(rank, log_every):
    torch.manual_seed(0)
    model = DistributedDataParallel(_net())
    recipe = get_recipe("smoke", batch_size=8)
    loader = _Batches(rank, nan_step=NAN_STEP if rank == 1 else None)
    try:
        train_epoch(
            model, loader, build_optimizer(model, recipe), recipe, start_iteration=0, device="cpu", log_every=log_every
        )
    except DivergenceError as e:
        return {"iteration": e.iteration, "rank": e.rank, "loss_is_nan": math.isnan(e.loss), "pulled": loader.pulled}
    return {"pulled": loader.pulled}


def _worker(rank, init_file, out_dir):
    result = {}
    try:
        torch.set_num_threads(1)  # 2 processes on a 2-core machine
        dist.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=30)
        )

        # Schedule and logs: 2 epochs of 3 steps, /10 at steps 2 and 4 (global iterations).
        torch.manual_seed(0)  # same init on both ranks, as DDP expects
        model = DistributedDataParallel(_net())
        recipe = get_recipe("smoke", batch_size=8, total=6, milestones=(2, 4))
        optimizer = build_optimizer(model, recipe)
        logs, start = [], 0
        for epoch in range(2):
            loader = _Batches(rank).batches[3 * epoch : 3 * epoch + 3]
            stats = train_epoch(
                model, loader, optimizer, recipe, start_iteration=start, device="cpu", on_step=logs.append, log_every=1
            )
            start = stats.end_iteration
        result["logs"] = logs
        result["epoch_stats"] = [stats.loss, stats.top1_error, stats.images]
        state = make_checkpoint(model, optimizer, iteration=start, epoch=2, config_hash="h", config={}, metrics={})
        result["state_keys"] = list(state["model"])
        # Parameters only: BN running stats are per rank until DDP's next broadcast.
        result["weights_sum"] = sum(p.double().sum().item() for p in model.parameters())
        running = lambda: sum(b.double().sum().item() for b in model.module.buffers() if b.is_floating_point())  # noqa: E731
        result["buffers_before"] = running()
        broadcast_buffers(model)
        result["buffers_after"] = running()

        # Evaluation over disjoint shards of unequal size (6 and 5 samples, uneven batches).
        logits, labels = _all_logits()
        bounds = [(0, 4), (4, 6)] if rank == 0 else [(6, 7), (7, 11)]
        shard = [(logits[a:b], labels[a:b]) for a, b in bounds]
        result["eval"] = evaluate(DistributedDataParallel(FixedLogits()), shard, "cpu")
        # A DDP net with BN buffers and 3 vs 1 batches must not hang in a per-batch collective.
        images = [b[0] for b in _Batches(rank).batches[: 3 if rank == 0 else 1]]
        result["eval_net_count"] = evaluate(model, [(x, torch.zeros(4, dtype=torch.long)) for x in images], "cpu")[
            "count"
        ]

        result["diverge_at_log_step"] = _diverge(rank, log_every=2)
        result["diverge_at_epoch_end"] = _diverge(rank, log_every=100)
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - any failure goes to the parent test, which reports it
        result["error"] = traceback.format_exc()
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(result, f)


def test_engine_under_ddp_with_two_gloo_ranks(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, tmp_path / "pg-init", tmp_path)) for r in range(WORLD_SIZE)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    hung = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not hung, f"ranks {hung} hung"
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE))
    assert "error" not in r0, r0["error"]
    assert "error" not in r1, r1["error"]

    # Both ranks saw the NaN of rank 1 at step 3, and stopped after the same number of steps.
    for key, pulled in (("diverge_at_log_step", 4), ("diverge_at_epoch_end", 6)):
        expected = {"iteration": NAN_STEP, "rank": 1, "loss_is_nan": True, "pulled": pulled}
        assert r0[key] == expected, key
        assert r1[key] == expected, key

    # The lr follows the global iteration (the same as one process); the logged loss and error
    # are over both ranks, hence identical.
    recipe = get_recipe("smoke", batch_size=8, total=6, milestones=(2, 4))
    assert [log["lr"] for log in r0["logs"]] == [lr_at(recipe, i) for i in range(6)]
    assert r0["logs"] == r1["logs"] and r0["epoch_stats"] == r1["epoch_stats"]
    assert r0["epoch_stats"][2] == 3 * 4 * WORLD_SIZE  # images of the second epoch, all ranks

    assert not any(k.startswith("module.") for k in r0["state_keys"])
    assert r0["weights_sum"] == r1["weights_sum"]  # DDP kept the replicas equal
    # ...but not the BN running statistics, until rank 0's are broadcast.
    assert r0["buffers_before"] != r1["buffers_before"]
    assert r1["buffers_after"] == r0["buffers_after"] == r0["buffers_before"]

    logits, labels = _all_logits()
    top = logits.topk(5, dim=1).indices
    full = {
        "loss": F.cross_entropy(logits, labels).item(),
        "top1_error": 100 * (top[:, 0] != labels).double().mean().item(),
        "top5_error": 100 * (~(top == labels[:, None]).any(1)).double().mean().item(),
    }
    for r in (r0, r1):
        assert r["eval"]["count"] == 11
        for key, value in full.items():
            assert math.isclose(r["eval"][key], value, rel_tol=1e-6), key
        assert r["eval_net_count"] == 4 * 4  # 3 batches on rank 0 + 1 on rank 1
