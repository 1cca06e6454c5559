"""The fast CIFAR trainer computes what the plain loop computes: same batches, same losses, same weights."""

import math

import pytest
import torch

from workloads.data import ResidentLoader, per_pixel_mean, synthetic
from workloads.engine import DivergenceError, build_optimizer, get_recipe, train_epoch
from workloads.engine.fast_cifar import FastCifarTrainer
from workloads.engine.packed import PackedTrainers
from workloads.models import build_model

BATCH = 16
# Milestones inside the run, so the lr schedule (read from a device tensor by the fused kernel)
# is exercised across a change too.
RECIPE = get_recipe(
    "cifar", batch_size=BATCH, total=10, milestones=(4, 7), warmup=True, warmup_iterations=2, warmup_lr=0.02
)


def data(n=96, seed=0):
    images, labels = synthetic(n, (3, 32, 32), 10, seed=seed)
    return images, labels, per_pixel_mean(images)


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return build_model("cifar_resnet8")


def test_epoch_batches_match_resident_loader():
    images, labels, mean = data()
    trainer = FastCifarTrainer(fresh_model(), images, labels, RECIPE, device="cpu", mean=mean, seed=3)
    loader = ResidentLoader(images, labels, BATCH, train=True, mean=mean, seed=3)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        xs, ys = trainer.epoch_batches(epoch)
        batches = list(loader)
        assert len(batches) == len(trainer) == len(xs)
        for (x, y), fx, fy in zip(batches, xs, ys):
            torch.testing.assert_close(fx, x, rtol=0, atol=0)
            assert torch.equal(fy, y)


def plain_run(images, labels, mean, epochs):
    model = fresh_model()
    loader = ResidentLoader(images, labels, BATCH, train=True, mean=mean, seed=0)
    optimizer = build_optimizer(model, RECIPE)
    losses, iteration = [], 0
    for epoch in range(epochs):
        stats = train_epoch(
            model,
            loader,
            optimizer,
            RECIPE,
            start_iteration=iteration,
            device="cpu",
            epoch=epoch,
            log_every=1,
            on_step=lambda m: losses.append(m["loss"]),
        )
        iteration = stats.end_iteration
    return model, losses, stats


def test_same_loss_trajectory_and_weights_as_train_epoch():
    images, labels, mean = data()
    plain_model, plain_losses, plain_stats = plain_run(images, labels, mean, epochs=2)

    model = fresh_model()
    trainer = FastCifarTrainer(model, images, labels, RECIPE, device="cpu", mean=mean, seed=0)
    fast_losses, iteration = [], 0
    for epoch in range(2):
        stats = trainer.train_epoch(epoch, iteration)
        fast_losses += trainer.step_losses
        iteration = stats.end_iteration

    assert len(plain_losses) == len(fast_losses) == RECIPE.total_iterations == iteration
    assert stats.finished and plain_stats.finished
    # Fused vs foreach SGD and a float32 lr tensor: rounding differences only.
    assert fast_losses == pytest.approx(plain_losses, rel=1e-4, abs=1e-5)
    assert stats.loss == pytest.approx(plain_stats.loss, rel=1e-4)
    assert stats.top1_error == pytest.approx(plain_stats.top1_error, abs=1e-9)
    for (name, a), b in zip(model.state_dict().items(), plain_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=name)


def test_lr_follows_the_schedule_and_max_steps():
    images, labels, mean = data()
    trainer = FastCifarTrainer(fresh_model(), images, labels, RECIPE, device="cpu", mean=mean)
    stats = trainer.train_epoch(0, 0, max_steps=3)
    assert stats.iterations == 3 and stats.end_iteration == 3 and not stats.finished
    assert len(trainer.step_losses) == 3
    assert trainer.lr.item() == pytest.approx(0.1)  # the lr of step 2 (warm-up covered steps 0 and 1)


def test_non_finite_loss_raises_divergence_error():
    images, labels, mean = data()
    model = fresh_model()
    trainer = FastCifarTrainer(model, images, labels, RECIPE, device="cpu", mean=mean)
    with torch.no_grad():
        model.fc.bias.fill_(math.nan)
    with pytest.raises(DivergenceError) as caught:
        trainer.train_epoch(0, 0)
    assert caught.value.iteration == 0


def test_rejects_bad_inputs():
    images, labels, _ = data(n=8)
    with pytest.raises(ValueError, match="less than one batch"):
        FastCifarTrainer(fresh_model(), images, labels, RECIPE, device="cpu")
    with pytest.raises(ValueError, match="uint8"):
        FastCifarTrainer(fresh_model(), images.float(), labels, RECIPE, device="cpu")
    with pytest.raises(ValueError, match="CUDA"):
        FastCifarTrainer(fresh_model(), *data()[:2], RECIPE, device="cpu", cuda_graph=True)


def test_packed_epochs_equal_separate_epochs_exactly():
    images, labels, mean = data()

    def pair():
        out = []
        for name, seed in (("cifar_resnet8", 0), ("cifar_plain8", 1)):
            torch.manual_seed(seed)
            out.append(FastCifarTrainer(build_model(name), images, labels, RECIPE, device="cpu", mean=mean, seed=seed))
        return out

    separate, together = pair(), PackedTrainers(pair())
    for epoch in range(2):  # 6 steps, then the last 4 of the recipe's 10
        one = [t.train_epoch(epoch, epoch * len(t)) for t in separate]
        both = together.train_epoch(epoch, [epoch * len(t) for t in together.trainers])
        for a, b in zip(one, both):
            assert (a.loss, a.top1_error, a.end_iteration) == (b.loss, b.top1_error, b.end_iteration)
    for a, b in zip(separate, together.trainers):
        for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.equal(x, y), name


def test_packed_divergence_closes_every_epoch_then_raises():
    images, labels, mean = data()
    trainers = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        trainers.append(FastCifarTrainer(fresh_model(seed), images, labels, RECIPE, device="cpu", mean=mean))
    with torch.no_grad():
        trainers[1].model.fc.bias.fill_(math.nan)
    with pytest.raises(DivergenceError):
        PackedTrainers(trainers).train_epoch(0, [0, 0])
    assert len(trainers[0].step_losses) == len(trainers[0]) and all(map(math.isfinite, trainers[0].step_losses))
    with pytest.raises(ValueError, match="start iterations"):
        PackedTrainers(trainers).train_epoch(0, [0])


def test_packed_each_gives_every_trainers_own_outcome_so_the_others_go_on():
    images, labels, mean = data()
    trainers = [
        FastCifarTrainer(fresh_model(seed), images, labels, RECIPE, device="cpu", mean=mean) for seed in (0, 1, 2)
    ]
    with torch.no_grad():
        trainers[1].model.fc.bias.fill_(math.nan)
    first = PackedTrainers(trainers).train_epoch_each(0, [0, 0, 0])
    assert isinstance(first[1], DivergenceError)
    assert [r.end_iteration for r in (first[0], first[2])] == [len(trainers[0])] * 2
    # The two healthy ones carry on packed, from where each stands.
    rest = PackedTrainers([trainers[0], trainers[2]]).train_epoch_each(1, [first[0].end_iteration] * 2)
    assert [r.end_iteration for r in rest] == [RECIPE.total_iterations] * 2
    assert all(math.isfinite(r.loss) for r in rest)


def test_logged_steps_are_what_train_epochs_on_step_gives():
    images, labels, mean = data()
    model = fresh_model()
    loader = ResidentLoader(images, labels, BATCH, train=True, mean=mean, seed=0)
    optimizer = build_optimizer(model, RECIPE)
    plain, iteration = [], 0
    for epoch in range(2):  # epochs of 6 steps, 10 in all: logs at 4 and 8 (the window restarts each epoch)
        iteration = train_epoch(
            model,
            loader,
            optimizer,
            RECIPE,
            start_iteration=iteration,
            device="cpu",
            epoch=epoch,
            log_every=4,
            on_step=plain.append,
        ).end_iteration

    trainer = FastCifarTrainer(fresh_model(), images, labels, RECIPE, device="cpu", mean=mean, seed=0)
    fast, iteration = [], 0
    for epoch in range(2):
        iteration = trainer.train_epoch(epoch, iteration).end_iteration
        fast += trainer.logged_steps(4)

    assert [m["iteration"] for m in fast] == [m["iteration"] for m in plain] == [4, 8]
    for f, p in zip(fast, plain):
        assert f["lr"] == pytest.approx(p["lr"], rel=1e-6)
        assert f["loss"] == pytest.approx(p["loss"], rel=1e-4)
        assert f["train_error"] == pytest.approx(p["train_error"], abs=100 / (4 * BATCH) + 1e-9)  # one image
