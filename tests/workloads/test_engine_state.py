"""Checkpoint state: bit-identical resume, atomic save, and refusal of bad files."""

import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from workloads.engine import (
    CheckpointError,
    build_optimizer,
    compile_model,
    config_hash,
    get_recipe,
    load_checkpoint,
    make_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    train_epoch,
    unwrap_model,
)

CONFIG = {"model": "tiny", "recipe": {"lr": 0.1, "milestones": [5]}, "seed": 0}


def _net():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


class _ShuffledFlips:
    """4 batches per epoch drawn with the GLOBAL torch RNG (order and flips), so a resumed run
    only matches if the checkpoint restored that RNG."""

    def __init__(self):
        g = torch.Generator().manual_seed(123)
        self.images = torch.randn(32, 1, 6, 6, generator=g)
        self.labels = torch.randint(0, 3, (32,), generator=g)

    def __iter__(self):
        order = torch.randperm(32)
        for i in range(4):
            idx = order[i * 8 : (i + 1) * 8]
            flip = torch.rand(8) < 0.5
            x = torch.where(flip[:, None, None, None], self.images[idx].flip(-1), self.images[idx])
            yield x, self.labels[idx]


def _train(model, optimizer, recipe, start, loader):
    return train_epoch(model, loader, optimizer, recipe, start_iteration=start, device="cpu")


def test_resume_continues_bit_identically(tmp_path):
    # 8 steps, lr /10 at step 5: the resumed half crosses the milestone.
    recipe = get_recipe("smoke", total=8, milestones=(5,), batch_size=8)
    loader = _ShuffledFlips()

    torch.manual_seed(0)
    straight = _net()
    opt = build_optimizer(straight, recipe)
    _train(straight, opt, recipe, 0, loader)
    assert _train(straight, opt, recipe, 4, loader).end_iteration == 8

    torch.manual_seed(0)
    first = _net()
    opt = build_optimizer(first, recipe)
    stats = _train(first, opt, recipe, 0, loader)
    state = make_checkpoint(
        first,
        opt,
        iteration=stats.end_iteration,
        epoch=1,
        config_hash=config_hash(CONFIG),
        config=CONFIG,
        metrics={"train_loss": stats.loss},
    )
    path = save_checkpoint(state, tmp_path / "ckpt" / "last.pt")
    # Anything drawn after the save must not leak into the resumed run.
    torch.rand(100), random.random(), np.random.rand()

    torch.manual_seed(99)  # a different init, overwritten by the restore
    resumed = _net()
    opt = build_optimizer(resumed, recipe)
    loaded = load_checkpoint(path)
    assert torch.load(path, weights_only=True)["iteration"] == 4
    iteration, epoch = restore_checkpoint(loaded, resumed, opt, expected_config_hash=config_hash(CONFIG))
    assert (iteration, epoch) == (4, 1)
    assert loaded["config"] == CONFIG and loaded["metrics"]["train_loss"] == stats.loss
    _train(resumed, opt, recipe, iteration, loader)

    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # weights, BN running stats and step counter


def test_rng_states_of_python_and_numpy_are_restored():
    net = _net()
    opt = build_optimizer(net, get_recipe("smoke"))
    state = make_checkpoint(net, opt, iteration=0, epoch=0, config_hash="h", config={}, metrics={})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    restore_checkpoint(state, net, opt)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_config_hash_is_stable_and_order_free():
    h = config_hash(CONFIG)
    assert len(h) == 64 and h == config_hash(dict(reversed(list(CONFIG.items()))))
    assert h != config_hash({**CONFIG, "seed": 1})
    with pytest.raises(ValueError, match="JSON"):
        config_hash({"x": object()})


def test_resume_with_another_config_is_refused():
    net = _net()
    opt = build_optimizer(net, get_recipe("smoke"))
    state = make_checkpoint(net, opt, iteration=3, epoch=0, config_hash=config_hash(CONFIG), config=CONFIG, metrics={})
    with pytest.raises(ValueError, match="different config"):
        restore_checkpoint(state, net, opt, expected_config_hash=config_hash({"seed": 1}))


def test_only_primitives_go_into_config_and_metrics():
    net = _net()
    opt = build_optimizer(net, get_recipe("smoke"))
    with pytest.raises(ValueError, match=r"metrics.acc holds a Tensor"):
        make_checkpoint(net, opt, iteration=0, epoch=0, config_hash="h", config={}, metrics={"acc": torch.tensor(1.0)})


def _saved(tmp_path):
    net = _net()
    state = make_checkpoint(
        net, build_optimizer(net, get_recipe("smoke")), iteration=0, epoch=0, config_hash="h", config={}, metrics={}
    )
    return state, save_checkpoint(state, tmp_path / "ckpt.pt")


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    state, path = _saved(tmp_path)
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint({**state, "bad": lambda: None}, path)  # torch.save fails midway
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.pt"]


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_raises_checkpoint_error(tmp_path, damage):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else os.urandom(len(data)))
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        load_checkpoint(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling would call os.mkdir(marker)
        return os.mkdir, (self.marker,)


def test_pickled_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _RunsCode(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refused checkpoint .*evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_foreign_file_is_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_of_a_compiled_model_has_plain_names():
    net = _net()
    compiled = compile_model(net)  # compiles lazily, on the first call: cheap here
    assert unwrap_model(compiled) is net
    state = make_checkpoint(
        compiled,
        build_optimizer(compiled, get_recipe("smoke")),
        iteration=0,
        epoch=0,
        config_hash="h",
        config={},
        metrics={},
    )
    assert list(state["model"]) == list(net.state_dict())
