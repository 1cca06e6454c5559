"""Training recipes: the paper's optimisation settings as named, frozen dataclasses.

Every schedule counts iterations of the GLOBAL mini-batch (one optimizer step of all workers
together). The world size only splits the batch (`per_worker_batch`); it never changes which lr
is used at which global iteration, so a run on 1 or 8 workers follows the same curve.

The ImageNet recipe is written in epochs (as fb.resnet.torch did: /10 at epochs 30 and 60, stop at
90) and turned into iterations by `Recipe.resolve(iterations_per_epoch)` once the data set size and
batch are known. The paper's own ImageNet rule, "divide by 10 when the error plateaus", is
`schedule="plateau"`: the run divides the lr when its validation error stops improving
(`plateau_decays`), and `milestones` are then the iterations where that happened so far.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

_UNITS = ("iteration", "epoch")
SCHEDULES = ("milestones", "plateau")


@dataclass(frozen=True)
class Recipe:
    """One optimisation recipe. Build it with `get_recipe`; all fields are validated on creation.

    Units: `batch_size` is images per optimizer step summed over all workers; `milestones` and
    `total` are counted in `unit` ("iteration" of the global batch, or "epoch");
    `warmup_iterations` is always in iterations.
    """

    name: str
    batch_size: int  # images per optimizer step, all workers together
    lr: float  # base learning rate, before warm-up and milestones
    momentum: float
    weight_decay: float  # L2 on every weight (the paper), see `no_decay_bn`
    milestones: tuple[int, ...]  # lr is divided by `lr_decay_factor` at each of these
    total: int  # training stops after this many `unit`s
    unit: str = "iteration"
    lr_decay_factor: float = 10.0  # lr / factor**k after the k-th milestone
    nesterov: bool = False
    no_decay_bn: bool = False  # True: BatchNorm weights and biases get no weight decay
    # Warm-up: a constant `warmup_lr` for the first `warmup_iterations` iterations, when `warmup`
    # is on. The paper used it for CIFAR ResNet-110 only; `recipe_for_depth` turns it on for nets
    # of `warmup_min_depth` layers or more (None: never for this recipe).
    warmup: bool = False
    warmup_iterations: int = 0
    warmup_lr: float = 0.0
    warmup_min_depth: int | None = None
    # "milestones": divide at the fixed `milestones`. "plateau": divide when the validation top-1
    # error has not improved by more than `plateau_min_delta` (percentage points) for
    # `plateau_patience` evaluations (epochs) in a row; needs a validation split.
    schedule: str = "milestones"
    plateau_patience: int = 3
    plateau_min_delta: float = 0.0
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # Lists from YAML/CLI overrides become tuples so the recipe stays hashable and frozen.
        object.__setattr__(self, "milestones", tuple(self.milestones))
        _check(self.unit in _UNITS, f"unit must be one of {_UNITS}, got {self.unit!r}")
        _check(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _check_int(self.plateau_patience, "plateau_patience", minimum=1)
        _check_int(self.batch_size, "batch_size", minimum=1)
        _check_int(self.total, "total", minimum=1)
        _check_int(self.warmup_iterations, "warmup_iterations", minimum=0)
        for name in ("lr", "weight_decay", "warmup_lr", "plateau_min_delta"):
            value = getattr(self, name)
            _check(
                isinstance(value, (int, float)) and math.isfinite(value) and value >= 0,
                f"{name} must be a finite number >= 0, got {value!r}",
            )
        _check(self.lr > 0, f"lr must be > 0, got {self.lr!r}")
        _check(
            isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1,
            f"momentum must be in [0, 1), got {self.momentum!r}",
        )
        _check(
            isinstance(self.lr_decay_factor, (int, float)) and self.lr_decay_factor >= 1,
            f"lr_decay_factor must be >= 1, got {self.lr_decay_factor!r}",
        )
        for m in self.milestones:
            _check_int(m, "each milestone", minimum=1)
        _check(
            all(a < b for a, b in zip(self.milestones, self.milestones[1:])),
            f"milestones must be strictly increasing, got {self.milestones}",
        )
        _check(
            not self.milestones or self.milestones[-1] < self.total,
            f"milestones must be below total={self.total}, got {self.milestones}",
        )
        if self.warmup:
            _check(
                self.warmup_iterations > 0 and self.warmup_lr > 0,
                "warmup=True needs warmup_iterations > 0 and warmup_lr > 0, got "
                f"{self.warmup_iterations} and {self.warmup_lr}",
            )
        if self.warmup_min_depth is not None:
            _check_int(self.warmup_min_depth, "warmup_min_depth", minimum=1)

    @property
    def total_iterations(self) -> int:
        """Optimizer steps of the whole run (global batch). Needs an iteration-based recipe."""
        self._require_iterations("total_iterations")
        return self.total

    def per_worker_batch(self, world_size: int) -> int:
        """Images per step on each worker; ValueError unless `batch_size` splits evenly."""
        _check_int(world_size, "world_size", minimum=1)
        _check(
            self.batch_size % world_size == 0,
            f"batch_size {self.batch_size} of recipe {self.name!r} is not divisible by world_size {world_size}",
        )
        return self.batch_size // world_size

    def resolve(self, iterations_per_epoch: int) -> Recipe:
        """The same recipe with milestones and total in iterations (a no-op if already so)."""
        _check_int(iterations_per_epoch, "iterations_per_epoch", minimum=1)
        if self.unit == "iteration":
            return self
        return dataclasses.replace(
            self,
            unit="iteration",
            milestones=tuple(m * iterations_per_epoch for m in self.milestones),
            total=self.total * iterations_per_epoch,
        )

    def to_dict(self) -> dict:
        """Plain dict of the fields, for logging with a run and for `config_hash`."""
        return dataclasses.asdict(self) | {"milestones": list(self.milestones)}

    def schedule_fields(self) -> dict:
        """The fields that decide the optimisation (all but the name and description): what a
        run's hash covers and what it logs as ``recipe.*`` params."""
        return {k: v for k, v in self.to_dict().items() if k not in ("name", "description")}

    def _require_iterations(self, what: str) -> None:
        _check(
            self.unit == "iteration",
            f"recipe {self.name!r} counts in {self.unit}s; call .resolve(iterations_per_epoch) "
            f"before asking for {what}",
        )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_int(value, name: str, *, minimum: int) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{name} must be an integer >= {minimum}, got {value!r}",
    )


_RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="cifar",
            batch_size=128,
            lr=0.1,
            momentum=0.9,
            weight_decay=1e-4,
            milestones=(32_000, 48_000),
            total=64_000,
            warmup_iterations=400,  # "until training error is below 80% (about 400 iterations)"
            warmup_lr=0.01,
            warmup_min_depth=110,
            description="CIFAR-10 (paper sec. 4.2): 64k iterations, /10 at 32k and 48k",
        ),
        Recipe(
            name="imagenet",
            batch_size=256,
            lr=0.1,
            momentum=0.9,
            weight_decay=1e-4,
            milestones=(30, 60),
            total=90,
            unit="epoch",
            description="ImageNet, fb.resnet.torch form of the paper's recipe: 90 epochs, /10 at 30 and 60",
        ),
        Recipe(
            name="smoke",
            batch_size=128,
            lr=0.1,
            momentum=0.9,
            weight_decay=1e-4,
            milestones=(200, 300),  # 50% and 75% of the run
            total=400,
            description="small CPU run on a Fashion-MNIST subset: 400 iterations, /10 at 200 and 300",
        ),
    )
}

_NOT_OVERRIDABLE = ("name",)


def list_recipes() -> list[str]:
    """Names accepted by `get_recipe`, sorted."""
    return sorted(_RECIPES)


def get_recipe(name: str, **overrides) -> Recipe:
    """The named recipe, with `overrides` replacing fields (validated like the originals).

    ValueError for an unknown name or field (listing the valid ones) and for bad values.
    """
    if name not in _RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {', '.join(list_recipes())}")
    fields = [f.name for f in dataclasses.fields(Recipe) if f.name not in _NOT_OVERRIDABLE]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown recipe field(s) {', '.join(unknown)}; valid fields: {', '.join(fields)}")
    return dataclasses.replace(_RECIPES[name], **overrides)


def recipe_for_depth(recipe: Recipe, depth: int) -> Recipe:
    """`recipe` with warm-up turned on when the net has `warmup_min_depth` layers or more.

    The paper warmed up only CIFAR ResNet-110 (lr 0.01 for ~400 iterations, then 0.1); recipes
    without `warmup_min_depth` are returned unchanged, as are nets shallower than it.
    """
    _check_int(depth, "depth", minimum=1)
    if recipe.warmup_min_depth is None or depth < recipe.warmup_min_depth or recipe.warmup:
        return recipe
    return dataclasses.replace(recipe, warmup=True)
