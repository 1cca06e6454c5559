"""Recipes, the iteration-based lr schedule, and the optimizer built from a recipe."""

import dataclasses

import pytest
import torch
from torch import nn

from workloads.engine import build_optimizer, get_recipe, list_recipes, lr_at, plateau_decays, recipe_for_depth


def test_registry_lists_the_paper_recipes():
    assert list_recipes() == ["cifar", "imagenet", "smoke"]


def test_cifar_recipe_is_the_papers():
    r = get_recipe("cifar")
    assert (r.batch_size, r.lr, r.momentum, r.weight_decay) == (128, 0.1, 0.9, 1e-4)
    assert r.milestones == (32_000, 48_000) and r.total_iterations == 64_000
    assert not r.warmup


@pytest.mark.parametrize(
    "iteration, lr",
    [(0, 0.1), (399, 0.1), (31_999, 0.1), (32_000, 0.01), (47_999, 0.01), (48_000, 0.001), (63_999, 0.001)],
)
def test_cifar_lr_at_the_milestones(iteration, lr):
    assert lr_at(get_recipe("cifar"), iteration) == lr  # exact: 0.1 / 10**k


def test_warmup_only_for_110_layers_and_deeper():
    base = get_recipe("cifar")
    deep = recipe_for_depth(base, 110)
    assert deep.warmup
    assert [lr_at(deep, i) for i in (0, 399, 400, 32_000)] == [0.01, 0.01, 0.1, 0.01]
    assert lr_at(recipe_for_depth(base, 1202), 0) == 0.01
    for depth in (20, 56, 104):
        assert recipe_for_depth(base, depth) == base
        assert lr_at(recipe_for_depth(base, depth), 0) == 0.1
    # The paper warmed up CIFAR nets only: a 152-layer ImageNet net keeps its recipe.
    imagenet = get_recipe("imagenet")
    assert recipe_for_depth(imagenet, 152) == imagenet


def test_imagenet_recipe_resolves_epochs_to_iterations():
    r = get_recipe("imagenet")
    assert (r.batch_size, r.lr, r.momentum, r.weight_decay) == (256, 0.1, 0.9, 1e-4)
    with pytest.raises(ValueError, match="resolve"):
        r.total_iterations
    with pytest.raises(ValueError, match="resolve"):
        lr_at(r, 0)
    per_epoch = 1_281_167 // 256  # 5004 full batches of ImageNet-1k train
    it = r.resolve(per_epoch)
    assert it.milestones == (30 * per_epoch, 60 * per_epoch)
    assert it.total_iterations == 90 * per_epoch
    assert [lr_at(it, 30 * per_epoch - 1), lr_at(it, 30 * per_epoch), lr_at(it, 60 * per_epoch)] == [0.1, 0.01, 0.001]
    assert it.resolve(7) == it  # already in iterations


def test_smoke_recipe_decays_at_half_and_three_quarters():
    r = get_recipe("smoke")
    assert r.milestones == (r.total_iterations // 2, r.total_iterations * 3 // 4)


@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
def test_schedule_does_not_depend_on_world_size(world_size):
    r = get_recipe("cifar")
    # The same global iterations and lr whatever the split of the batch over workers.
    assert r.per_worker_batch(world_size) * world_size == 128
    probes = [0, 31_999, 32_000, 48_000, 63_999]
    assert [lr_at(r, i) for i in probes] == [0.1, 0.1, 0.01, 0.001, 0.001]


def test_batch_must_split_over_workers():
    with pytest.raises(ValueError, match="not divisible by world_size 3"):
        get_recipe("cifar").per_worker_batch(3)


def test_unknown_names_list_the_valid_choices():
    with pytest.raises(ValueError, match="cifar, imagenet, smoke"):
        get_recipe("cifar10")
    with pytest.raises(ValueError, match="valid fields: .*batch_size.*momentum"):
        get_recipe("cifar", batchsize=64)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(lr=-0.1), "lr"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(milestones=(48_000, 32_000)), "strictly increasing"),
        (dict(milestones=(32_000, 64_000)), "below total"),
        (dict(momentum=1.0), "momentum"),
        (dict(batch_size=0), "batch_size"),
        (dict(weight_decay=float("nan")), "weight_decay"),
        (dict(unit="step"), "unit"),
        (dict(warmup=True, warmup_iterations=0), "warmup"),
        (dict(schedule="cosine"), "schedule must be one of"),
        (dict(plateau_patience=0), "plateau_patience"),
        (dict(plateau_min_delta=-1.0), "plateau_min_delta"),
    ],
)
def test_bad_values_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_recipe("cifar", **overrides)


def test_overrides_make_a_new_frozen_recipe():
    r = get_recipe("smoke", total=100, milestones=[50, 75])  # a list, as from YAML
    assert r.milestones == (50, 75) and r.total_iterations == 100
    assert get_recipe("smoke").total_iterations == 400  # the registry's copy is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.lr = 1.0
    assert r.to_dict()["milestones"] == [50, 75]


def _net_with_bn():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def test_optimizer_is_sgd_with_decay_on_every_weight():
    net = _net_with_bn()
    opt = build_optimizer(net, get_recipe("cifar"))
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.9, 1e-4)
    assert len(group["params"]) == len(list(net.parameters()))
    assert build_optimizer(net, recipe_for_depth(get_recipe("cifar"), 110)).param_groups[0]["lr"] == 0.01


def test_no_decay_bn_exempts_batchnorm_parameters():
    net = _net_with_bn()
    opt = build_optimizer(net, get_recipe("cifar", no_decay_bn=True))
    decayed, exempt = opt.param_groups
    assert decayed["weight_decay"] == 1e-4 and exempt["weight_decay"] == 0.0
    assert {id(p) for p in exempt["params"]} == {id(p) for p in net[1].parameters()}
    assert len(decayed["params"]) == 4  # conv and linear weights and biases


# ---- the plateau rule ------------------------------------------------------------------------------


def test_plateau_divides_after_patience_stale_evaluations_and_starts_counting_again():
    # (iteration at the epoch's end, val top-1 error %): improves, then stalls twice, then again.
    history = [(10, 50.0), (20, 40.0), (30, 40.5), (40, 40.2), (50, 30.0), (60, 30.0), (70, 31.0)]
    assert plateau_decays(history, patience=2, min_delta=0.0, total=100) == (40, 70)
    # One stale evaluation is a plateau with patience 1; the best restarts after each division.
    assert plateau_decays(history, patience=1, min_delta=0.0, total=100) == (30, 60, 70)
    # An improvement smaller than min_delta points does not count as one.
    assert plateau_decays([(10, 50.0), (20, 49.9), (30, 49.8)], patience=2, min_delta=0.5, total=100) == (30,)


def test_plateau_drops_divisions_at_the_end_and_is_a_function_of_the_history_alone():
    history = [(10, 50.0), (20, 50.0), (30, 50.0)]
    assert plateau_decays(history, patience=1, min_delta=0.0, total=30) == (20,)  # none at total
    # What a resumed run recomputes from the history in its checkpoint: the same divisions.
    assert plateau_decays(history[:2], patience=1, min_delta=0.0, total=30) == (20,)
    recipe = get_recipe("smoke", schedule="plateau", milestones=(20,), total=30)
    assert lr_at(recipe, 19) == pytest.approx(0.1) and lr_at(recipe, 20) == pytest.approx(0.01)
