"""The train loop and evaluation: exact bookkeeping on fixed logits, and a short real training
of a CIFAR ResNet-8 on a Fashion-MNIST subset."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.workloads.engine_fixtures import FixedLogits
from workloads.data import ResidentLoader, load_fashion_mnist, per_pixel_mean
from workloads.engine import (
    DivergenceError,
    build_optimizer,
    evaluate,
    get_recipe,
    lr_at,
    prepare_model,
    train_epoch,
)
from workloads.models import build_model


def _logit_batches(n_batches=5, batch=6, classes=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, classes, generator=g), torch.randint(0, classes, (batch,), generator=g))
        for _ in range(n_batches)
    ]


def test_loss_and_error_bookkeeping_is_exact():
    batches = _logit_batches()
    logits = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    model = FixedLogits()
    recipe = get_recipe("smoke", total=100, milestones=(3,), batch_size=6)
    logs = []
    stats = train_epoch(
        model,
        batches,
        build_optimizer(model, recipe),
        recipe,
        start_iteration=1,
        device="cpu",
        on_step=logs.append,
        log_every=2,
    )
    assert (stats.iterations, stats.end_iteration, stats.images) == (5, 6, 30)
    assert not stats.finished
    assert stats.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert stats.top1_error == pytest.approx(100 * (logits.argmax(1) != labels).float().mean().item())
    # Steps 1..5 ran (batches 0..4); logs when 2, 4 and 6 steps are done: windows of 1, 2, 2.
    assert [log["iteration"] for log in logs] == [2, 4, 6]
    assert [log["lr"] for log in logs] == [0.1, 0.01, 0.01]
    assert logs[1]["loss"] == pytest.approx(F.cross_entropy(logits[6:18], labels[6:18]).item(), rel=1e-6)


def test_training_stops_at_total_iterations_mid_epoch():
    batches = _logit_batches(n_batches=5)
    model = FixedLogits()
    recipe = get_recipe("smoke", total=7, milestones=(3,), batch_size=6)
    opt = build_optimizer(model, recipe)
    first = train_epoch(model, batches, opt, recipe, start_iteration=0, device="cpu")
    second = train_epoch(model, batches, opt, recipe, start_iteration=first.end_iteration, device="cpu")
    assert (first.iterations, second.iterations, second.end_iteration) == (5, 2, 7)
    assert second.finished and second.images == 12

    class _MustNotIterate:
        def __iter__(self):
            raise AssertionError("a finished run must not touch the loader")

    done = train_epoch(model, _MustNotIterate(), opt, recipe, start_iteration=7, device="cpu")
    assert done.iterations == 0 and done.finished and math.isnan(done.loss)


def test_set_epoch_is_called_when_the_loader_has_it():
    class _Loader(list):
        epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

    loader = _Loader(_logit_batches(n_batches=1))
    model = FixedLogits()
    recipe = get_recipe("smoke")
    train_epoch(model, loader, build_optimizer(model, recipe), recipe, start_iteration=0, device="cpu", epoch=3)
    assert loader.epochs == [3]


def test_nan_loss_raises_divergence_error_at_its_iteration():
    batches = _logit_batches()
    batches[2][0][1, 0] = float("nan")  # step 2 (0-based) gets a NaN logit
    model = FixedLogits()
    recipe = get_recipe("smoke")
    with pytest.raises(DivergenceError) as caught:  # caught by the end-of-epoch check
        train_epoch(
            model, batches, build_optimizer(model, recipe), recipe, start_iteration=10, device="cpu", log_every=100
        )
    assert caught.value.iteration == 12 and math.isnan(caught.value.loss)
    assert caught.value.rank is None


def test_evaluate_is_exact_on_known_logits():
    batches = _logit_batches(n_batches=3, batch=5)
    logits = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    model = FixedLogits().train()
    result = evaluate(model, batches, "cpu")
    top = logits.topk(5, dim=1).indices
    assert result["count"] == 15
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert result["top1_error"] == pytest.approx(100 * (top[:, 0] != labels).float().mean().item())
    assert result["top5_error"] == pytest.approx(100 * (~(top == labels[:, None]).any(1)).float().mean().item())
    assert model.training  # mode restored


def test_bf16_autocast_and_channels_last_run():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    net = prepare_model(net, "cpu", channels_last=True)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    recipe = get_recipe("smoke", batch_size=4)
    batches = [(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))] * 2
    stats = train_epoch(
        net,
        batches,
        build_optimizer(net, recipe),
        recipe,
        start_iteration=0,
        device="cpu",
        autocast_dtype=torch.bfloat16,
        channels_last=True,
    )
    assert stats.iterations == 2 and math.isfinite(stats.loss)
    assert math.isfinite(evaluate(net, batches, "cpu", torch.bfloat16, channels_last=True)["loss"])


def test_short_fashion_mnist_training_beats_chance_by_far():
    """cifar_resnet8 (1 input channel, 28x28) on 4,000 training images, 200 steps of 32.

    Measured on the 2-core dev machine: test error 27-30% over seeds 0-2 (chance: 90%), train
    error over the last epoch about 29%, 8-50 s depending on the machine's load.
    """
    torch.manual_seed(0)
    images, labels = load_fashion_mnist(split="train")
    test_images, test_labels = load_fashion_mnist(split="test")
    images, labels = images[:4000], labels[:4000]
    mean = per_pixel_mean(images)
    # pad=0: flips only; random crops would slow learning in so few steps.
    train = ResidentLoader(images, labels, 32, train=True, mean=mean, pad=0, seed=0)
    test = ResidentLoader(test_images[:1000], test_labels[:1000], 500, train=False, mean=mean)
    recipe = get_recipe("smoke", batch_size=32, lr=0.05, total=200, milestones=(100, 150))
    model = build_model("cifar_resnet8", in_channels=1, num_classes=10)
    optimizer = build_optimizer(model, recipe)

    logs, epochs, iteration = [], [], 0
    while iteration < recipe.total_iterations:
        stats = train_epoch(
            model,
            train,
            optimizer,
            recipe,
            start_iteration=iteration,
            device="cpu",
            epoch=len(epochs),
            on_step=logs.append,
            log_every=50,
        )
        epochs.append(stats)
        iteration = stats.end_iteration
    result = evaluate(model, test, "cpu")

    assert [s.iterations for s in epochs] == [125, 75]  # 125 batches per epoch; stops mid-epoch
    assert [log["iteration"] for log in logs] == [50, 100, 150, 200]
    assert [log["lr"] for log in logs] == [lr_at(recipe, i - 1) for i in (50, 100, 150, 200)]
    assert logs[-1]["loss"] < logs[0]["loss"]
    assert result["count"] == 1000
    assert result["top1_error"] < 35.0, result
    assert result["top5_error"] <= result["top1_error"]
