"""The CUDA-only paths, checked on a GPU: packed runs on streams, device decode, a fast run resumed.

Skipped without CUDA (this project's CI has none). The GPU machine has no pytest, so the file also
runs as a script there (``python tests/workloads/test_cuda_paths.py``, from bench/gpu_checks.sh),
printing one line per check and exiting non-zero on a failure.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # as a script, from a bare checkout

from workloads.data import per_pixel_mean, synthetic  # noqa: E402
from workloads.data.device_decode import device_train_batch  # noqa: E402
from workloads.engine import get_recipe, make_checkpoint, restore_checkpoint  # noqa: E402
from workloads.engine.fast_cifar import FastCifarTrainer  # noqa: E402
from workloads.engine.packed import PackedTrainers  # noqa: E402
from workloads.models import build_model  # noqa: E402

try:
    import pytest

    cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
except ImportError:  # the GPU machine runs this file as a script

    def cuda_only(test):
        return test


# Batch 128: 3 epochs of 16 steps. A small lr keeps training out of its chaotic regime: on a GPU the
# same step can round differently from run to run (cuBLAS picks workspaces per stream), and at lr 0.1
# a 1e-7 difference grows to 1% in 20 steps; at lr 0.002 it stays at rounding level.
RECIPE = get_recipe("cifar", lr=0.002, total=48, milestones=(24, 36))


def trainer(name: str, images, labels, mean, seed: int, init_seed: int | None = None) -> FastCifarTrainer:
    torch.manual_seed(seed if init_seed is None else init_seed)
    model = build_model(name).cuda()
    return FastCifarTrainer(model, images, labels, RECIPE, device="cuda", mean=mean, seed=seed)


def deterministic() -> None:
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


@cuda_only
def test_packed_runs_on_streams_compute_what_each_computes_alone():
    deterministic()
    images, labels = synthetic(2048, (3, 32, 32), 10, seed=1)
    mean = per_pixel_mean(images)
    nets = [("cifar_resnet20", 0), ("cifar_plain20", 1), ("cifar_resnet8", 2)]
    alone = []
    for name, seed in nets:
        t, losses, start = trainer(name, images, labels, mean, seed), [], 0
        for epoch in range(3):
            start = t.train_epoch(epoch, start).end_iteration
            losses += t.step_losses
        alone.append(losses)
    packed = PackedTrainers([trainer(name, images, labels, mean, seed) for name, seed in nets])
    together, starts = [[] for _ in nets], [0] * len(nets)
    for epoch in range(3):
        stats = packed.train_epoch(epoch, starts)
        starts = [s.end_iteration for s in stats]
        for losses, t in zip(together, packed.trainers):
            losses += t.step_losses
    assert all(t.graph is not None for t in packed.trainers)  # the steps really were graph replays
    for a, b in zip(alone, together):
        assert len(a) == len(b) == 48
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@cuda_only
def test_fast_run_resumed_from_a_checkpoint_continues_as_uninterrupted():
    deterministic()
    images, labels = synthetic(2048, (3, 32, 32), 10, seed=2)
    mean = per_pixel_mean(images)
    whole, start, losses = trainer("cifar_resnet20", images, labels, mean, 0), 0, []
    for epoch in range(3):
        start = whole.train_epoch(epoch, start).end_iteration
        losses += whole.step_losses

    first = trainer("cifar_resnet20", images, labels, mean, 0)
    resumed_losses, start = [], 0
    for epoch in range(2):
        start = first.train_epoch(epoch, start).end_iteration
        resumed_losses += first.step_losses
    state = make_checkpoint(
        first.model, first.optimizer, iteration=start, epoch=2, config_hash="h", config={}, metrics={}
    )
    buffer = io.BytesIO()
    torch.save(state, buffer)
    second = trainer("cifar_resnet20", images, labels, mean, 0, init_seed=5)  # other weights: all must be restored
    restore_checkpoint(
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=True, map_location="cuda"),
        second.model,
        second.optimizer,
        restore_rng=False,
    )
    second.bind_lr()  # as orchestrator/worker.py does after restoring
    second.train_epoch(2, start)
    resumed_losses += second.step_losses
    np.testing.assert_allclose(resumed_losses, losses, rtol=1e-4, atol=1e-6)
    assert second.lr.data_ptr() == second.optimizer.param_groups[0]["lr"].data_ptr()


@cuda_only
def test_device_decode_on_cuda_matches_the_cpu():
    from PIL import Image

    rng = np.random.default_rng(0)
    blobs = []
    for h, w in ((375, 500), (500, 333), (256, 256)):
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = np.stack([128 + 100 * np.sin(xx / 37 + yy / 53 + p) for p in rng.uniform(0, 6, 3)], -1)
        out = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out, format="JPEG", quality=95)
        blobs.append(out.getvalue())
    batch = {
        "image": np.array(blobs, dtype=object),
        "label": np.arange(3),
        "key": np.array(["a", "b", "c"], dtype=object),
    }
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    on_gpu, labels = device_train_batch(batch, mean, "cuda", seed=4)
    on_cpu, _ = device_train_batch(batch, mean, "cpu", seed=4)
    assert on_gpu.device.type == "cuda" and labels.tolist() == [0, 1, 2]
    error = (on_gpu.cpu() - on_cpu).abs()
    assert error.mean() < 0.01, error.mean()  # nvJPEG and libjpeg round a little differently


if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("SKIP every check: no CUDA device")
        sys.exit(0)
    failed = 0
    for name, test in list(globals().items()):
        if name.startswith("test_") and callable(test):
            try:
                test()
                print(f"PASS {name}", flush=True)
            except Exception as error:  # noqa: BLE001 - report every check
                failed += 1
                print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
    sys.exit(1 if failed else 0)
