"""A sweep as data: a base training config, a search space over its keys, how many samples, which
scheduler and searcher, what is minimised, and the budget that follows. Ray-free, so ``--help``,
``--dry-run`` and every mistake answer before Ray or MLflow load.

A search dimension is ``KEY=DIST:ARGS`` on the command line (``--space``) and ``KEY: DIST:ARGS`` in
a preset's ``space``, over any config key or ``recipe.FIELD``::

    recipe.lr=loguniform:0.01:0.5        # log-uniform in [0.01, 0.5]
    recipe.momentum=uniform:0.8:0.95     # uniform in [0.8, 0.95]
    recipe.batch_size=choice:64,128,256  # one of the values (each read as YAML: numbers stay numbers)
    seed=randint:0:9                     # an integer in [0, 9], both ends included

A preset (``configs/sweep/<name>.yaml``) reads::

    name: sweep-smoke             # the sweep's name: rerunning it resumes it
    base: {preset: smoke, ...}    # a train preset and/or config keys shared by every trial
    space: {recipe.lr: loguniform:0.01:0.5}
    samples: 8                    # trials drawn from the space
    scheduler: asha               # asha (stop the worst early), pbt (perturb the lr), or fifo (none)
    searcher: random              # random or optuna (TPE)
    metric: val_top1_error        # minimised; a validation metric: never the test split
    seed: 0                       # the searcher's seed
    max_concurrent: null          # trials at once (default: what the cluster holds)
    asha: {grace_epochs: 1, reduction_factor: 2}
    pbt: {interval_epochs: 1, quantile: 0.25, resample: 0.25}
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orchestrator.config import (
    CONFIG_DIR,
    FIELDS,
    ExperimentConfig,
    check_name_length,
    make_config,
    merge,
    preset_path,
    read_yaml,
)
from workloads.engine import Recipe, config_hash

SWEEP_PRESETS = CONFIG_DIR / "sweep"
DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")
SCHEDULERS = ("asha", "pbt", "fifo")
SEARCHERS = ("random", "optuna")
# What a sweep may minimise: measured on the validation split (or the training batches). The test
# split is what a run reports, so nothing is selected on it.
METRICS = ("val_top1_error", "val_top5_error", "val_loss", "train_loss", "train_error")
TOP_KEYS = (
    "name",
    "description",
    "base",
    "space",
    "samples",
    "scheduler",
    "searcher",
    "metric",
    "seed",
    "max_concurrent",
    "asha",
    "pbt",
)
ASHA_DEFAULTS = {"grace_epochs": 1, "reduction_factor": 2}
PBT_DEFAULTS = {"interval_epochs": 1, "quantile": 0.25, "resample": 0.25}
PBT_MUTABLE = "recipe.lr"  # what PBT perturbs between checkpoints (the step reads it at every iteration)
# Keys a trial may not vary: the sweep's identity and storage, the data it is compared on, what each
# trial asks of the cluster, and the schedule's length (the budget and the rungs count in it).
FIXED_KEYS = (
    "name",
    "storage_path",
    "tracking_uri",
    "experiment",
    "data_root",
    "dataset",
    "val_split",
    "test_subset",
    "train_subset",
    "workers",
    "use_gpu",
    "cpus_per_worker",
    "gpus_per_worker",
    "engine",
    "inject_nan",
    "recipe",
    "recipe_overrides",
    "recipe.total",
    "recipe.unit",
    "recipe.milestones",
    "recipe.schedule",
)
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "description"))


@dataclass(frozen=True)
class Dimension:
    """One searched key: ``kind`` one of DISTRIBUTIONS; ``args`` (low, high) or the choices."""

    key: str  # a config key, or recipe.FIELD
    kind: str
    args: tuple

    def text(self) -> str:
        if self.kind == "choice":
            return f"choice:{','.join(json.dumps(v) if not isinstance(v, str) else v for v in self.args)}"
        return f"{self.kind}:{self.args[0]:g}:{self.args[1]:g}"

    def describe(self) -> str:
        if self.kind == "choice":
            return f"one of {', '.join(str(v) for v in self.args)}"
        low, high = self.args
        return {
            "loguniform": f"log-uniform in [{low:g}, {high:g}]",
            "uniform": f"uniform in [{low:g}, {high:g}]",
            "randint": f"an integer in [{low}, {high}]",
        }[self.kind]

    def extremes(self) -> list:
        """The values a trial can take at the edges (every one, for a choice): what is validated."""
        return list(self.args)

    def domain(self):
        """Ray Tune's sampler for this dimension."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        low, high = self.args
        if self.kind == "randint":
            return tune.randint(low, high + 1)  # Tune's upper end is excluded
        return tune.loguniform(low, high) if self.kind == "loguniform" else tune.uniform(low, high)


def parse_dimension(text: str) -> Dimension:
    """``KEY=DIST:ARGS`` -> a checked ``Dimension``."""
    key, sep, spec = text.partition("=")
    if not sep:
        raise ValueError(f"--space {text!r} is not KEY=DIST:ARGS (e.g. recipe.lr=loguniform:0.01:0.5)")
    return dimension(key.strip(), spec)


def dimension(key: str, spec) -> Dimension:
    """A checked dimension over ``key`` from its ``DIST:ARGS`` text."""
    check_key(key)
    if not isinstance(spec, str):
        raise ValueError(f"space {key}: expected DIST:ARGS text, e.g. loguniform:0.01:0.5, got {spec!r}")
    kind, _, rest = spec.strip().partition(":")
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"space {key}: unknown distribution {kind!r}; valid: {', '.join(DISTRIBUTIONS)}")
    if kind == "choice":
        values = tuple(_value(v) for v in rest.split(",")) if rest.strip() else ()
        if len(values) < 1 or any(v == "" for v in values):
            raise ValueError(f"space {key}: choice needs values, e.g. choice:64,128,256, got {spec!r}")
        return Dimension(key, kind, values)
    parts = rest.split(":")
    if len(parts) != 2:
        raise ValueError(f"space {key}: {kind} takes LOW:HIGH, e.g. {kind}:1:10, got {spec!r}")
    low, high = (_value(p) for p in parts)
    numbers = (int,) if kind == "randint" else (int, float)
    if not all(isinstance(v, numbers) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
        what = "integers" if kind == "randint" else "numbers"
        raise ValueError(f"space {key}: {kind} bounds must be finite {what}, got {spec!r}")
    if not low < high:
        raise ValueError(f"space {key}: {kind} needs LOW < HIGH, got {low} and {high}")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"space {key}: loguniform needs LOW > 0, got {low}")
    return Dimension(key, kind, (low, high) if kind == "randint" else (float(low), float(high)))


def _value(text: str):
    try:
        return yaml.safe_load(text.strip()) if text.strip() else ""
    except yaml.YAMLError:
        return text.strip()


def check_key(key: str) -> None:
    if key in FIXED_KEYS:
        raise ValueError(f"space key {key!r} is fixed for a whole sweep; set it with --set instead")
    if key.startswith("recipe."):
        if key.removeprefix("recipe.") not in RECIPE_FIELDS:
            valid = ", ".join(f"recipe.{f}" for f in RECIPE_FIELDS if f"recipe.{f}" not in FIXED_KEYS)
            raise ValueError(f"unknown space key {key!r}; valid recipe keys: {valid}")
    elif key not in FIELDS:
        valid = ", ".join(k for k in FIELDS if k not in FIXED_KEYS)
        raise ValueError(f"unknown space key {key!r}; valid: {valid}, or recipe.FIELD")


def overrides(values: dict) -> dict:
    """A trial's sampled ``{key: value}`` as config values (``recipe.X`` into ``recipe_overrides``)."""
    out: dict = {}
    for key, value in values.items():
        if key.startswith("recipe."):
            out.setdefault("recipe_overrides", {})[key.removeprefix("recipe.")] = value
        else:
            out[key] = value
    return out


def trial_config(base: ExperimentConfig, values: dict, name: str) -> ExperimentConfig:
    """The config of a trial that drew ``values``, named ``name``."""
    return make_config(merge(base.to_dict(), overrides(values) | {"name": name}))


@dataclass(frozen=True)
class Sweep:
    name: str
    base: ExperimentConfig  # every trial's config before its sampled values (named after the sweep)
    space: tuple[Dimension, ...]
    samples: int
    scheduler: str
    searcher: str
    metric: str
    seed: int
    iterations: int  # a trial's schedule, in iterations of the global batch
    epoch_iterations: int  # iterations in one epoch of the base config's training split
    max_concurrent: int | None = None
    asha: dict = field(default_factory=lambda: dict(ASHA_DEFAULTS))
    pbt: dict = field(default_factory=lambda: dict(PBT_DEFAULTS))
    description: str = ""

    @property
    def epochs(self) -> int:
        return math.ceil(self.iterations / self.epoch_iterations)

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.space]

    def rungs(self) -> list[int]:
        """The epochs at which ASHA compares trials and stops all but the best 1/reduction_factor
        (the last epoch is each survivor's end, not a rung)."""
        grace, factor = self.asha["grace_epochs"], self.asha["reduction_factor"]
        rungs, t = [], grace
        while t < self.epochs:
            rungs.append(t)
            t *= factor
        return rungs

    def decision_epochs(self) -> list[int]:
        """The epochs after which the scheduler may stop, pause or exploit a trial: its training waits
        there for the verdict, so a stopped trial trains nothing past them (ASHA's rungs, PBT's
        perturbation points; FIFO decides nothing)."""
        if self.scheduler == "asha":
            return self.rungs()
        if self.scheduler == "pbt":
            return list(range(self.pbt["interval_epochs"], self.epochs, self.pbt["interval_epochs"]))
        return []

    def full_budget(self) -> int:
        """Iterations of every sample trained to its end: the worst case, and the full grid's cost."""
        return self.samples * self.iterations

    def asha_budget(self) -> int:
        """Iterations ASHA spends when it promotes exactly the best 1/reduction_factor at each rung."""
        left, spent, reached = self.samples, 0, 0
        for rung in self.rungs():
            spent += left * (min(rung * self.epoch_iterations, self.iterations) - reached)
            reached = min(rung * self.epoch_iterations, self.iterations)
            left = max(1, math.ceil(left / self.asha["reduction_factor"]))
        return spent + left * (self.iterations - reached)

    def identity(self) -> dict:
        """What a rerun under the same name must match to resume this sweep."""
        return {
            "base": self.base.hash(),
            "space": [(d.key, d.text()) for d in self.space],
            "samples": self.samples,
            "scheduler": self.scheduler,
            "searcher": self.searcher,
            "metric": self.metric,
            "seed": self.seed,
            "asha": self.asha if self.scheduler == "asha" else None,
            "pbt": self.pbt if self.scheduler == "pbt" else None,
        }

    def hash(self) -> str:
        return config_hash(self.identity())

    def plan(self) -> list[str]:
        """What ``--dry-run`` prints: the space, the scheduler's rungs and the budget."""
        scheduler = {"asha": "ASHA", "pbt": "PBT", "fifo": "no early stopping"}[self.scheduler]
        lines = [
            f"sweep {self.name}: {self.samples} samples of {self.base.model} on {self.base.dataset}, "
            f"{self.searcher} search, {scheduler}, minimising {self.metric}",
            "space:",
        ]
        width = max(len(d.key) for d in self.space)
        lines += [f"  {d.key:<{width}}  {d.describe()}" for d in self.space]
        lines.append(
            f"schedule: {self.iterations} iterations a trial = {self.epochs} epochs of {self.epoch_iterations} "
            f"iterations (one report and checkpoint an epoch)"
        )
        if self.scheduler == "asha":
            lines.append(
                f"ASHA rungs (epochs): {', '.join(map(str, self.rungs()))}; the best 1/"
                f"{self.asha['reduction_factor']} at each go on"
            )
        elif self.scheduler == "pbt":
            lines.append(
                f"PBT: every {self.pbt['interval_epochs']} epoch(s) the worst {self.pbt['quantile']:.0%} of trials "
                f"take a top {self.pbt['quantile']:.0%} trial's checkpoint and config, {PBT_MUTABLE} perturbed"
            )
        lines.append(
            f"budget: at most {self.samples} x {self.iterations} = {self.full_budget()} iterations (the full grid; "
            "the worst case)"
            + (f", about {self.asha_budget()} when ASHA stops as planned" if self.scheduler == "asha" else "")
        )
        return lines


def load_sweep(
    preset: str,
    config_overrides: dict | None = None,
    *,
    space: list[str] | None = None,
    name: str | None = None,
    samples: int | None = None,
    scheduler: str | None = None,
    searcher: str | None = None,
    metric: str | None = None,
    max_concurrent: int | None = None,
    train_images=None,
) -> Sweep:
    """Read a sweep preset, apply the command line's choices and check the whole sweep: the space's
    keys and values (each end of each range builds a valid config), the metric (a validation split
    is required) and the budget. ``train_images(config)``: images in a config's training split
    (default: ``orchestrator.data.train_images``, which reads the data)."""
    spec = read_yaml(preset_path(preset, SWEEP_PRESETS))
    unknown = sorted(set(spec) - set(TOP_KEYS))
    if unknown:
        raise ValueError(f"{preset}: unknown sweep key(s) {', '.join(unknown)}; valid: {', '.join(TOP_KEYS)}")
    name = name or spec.get("name")
    if not name or "/" in str(name):
        raise ValueError(f"sweep name {name!r} must be non-empty and without '/'")
    check_name_length(f"{name}-00000-0000000000", "sweep name")  # its trials' runs add a suffix
    base_values = dict(spec.get("base") or {})
    base_preset = base_values.pop("preset", None)
    values = merge(read_yaml(preset_path(base_preset)) if base_preset else {}, base_values)
    base = make_config(merge(values, (config_overrides or {}) | {"name": str(name)}))
    space_spec = spec.get("space") or {}
    if not isinstance(space_spec, dict):
        raise ValueError(f"{preset}: space must map keys to DIST:ARGS, got {space_spec!r}")
    dims = {key: dimension(str(key), value) for key, value in space_spec.items()}
    dims |= {d.key: d for d in map(parse_dimension, space or [])}
    if not dims:
        raise ValueError(f"sweep {name!r} has an empty search space: give --space KEY=DIST:ARGS")
    for dim in dims.values():  # each end of each range must make a valid run
        for value in dim.extremes():
            try:
                trial_config(base, {dim.key: value}, str(name))
            except ValueError as error:
                raise ValueError(f"space {dim.key}={dim.text()}: {value!r} gives a bad run: {error}") from None
    images = (train_images or _train_images)(base)
    recipe = base.effective_recipe()
    epoch_iterations = images // recipe.batch_size
    if epoch_iterations < 1:
        raise ValueError(f"{images} training images give no batch of {recipe.batch_size}")
    iterations = recipe.resolve(epoch_iterations).total
    sweep = Sweep(
        name=str(name),
        base=base,
        space=tuple(dims.values()),
        samples=_pick(samples, spec, "samples", 8),
        scheduler=_pick(scheduler, spec, "scheduler", "asha"),
        searcher=_pick(searcher, spec, "searcher", "random"),
        metric=_pick(metric, spec, "metric", "val_top1_error"),
        seed=_pick(None, spec, "seed", 0),
        iterations=iterations,
        epoch_iterations=epoch_iterations,
        max_concurrent=_pick(max_concurrent, spec, "max_concurrent", None),
        asha=_options(spec, "asha", ASHA_DEFAULTS),
        pbt=_options(spec, "pbt", PBT_DEFAULTS),
        description=str(spec.get("description", "")),
    )
    check(sweep)
    return sweep


def _train_images(config: ExperimentConfig) -> int:
    from orchestrator.data import train_images

    return train_images(config)


def _pick(given, spec: dict, key: str, default):
    return given if given is not None else spec.get(key, default)


def _options(spec: dict, key: str, defaults: dict) -> dict:
    given = spec.get(key) or {}
    if not isinstance(given, dict) or set(given) - set(defaults):
        raise ValueError(f"sweep {key}: expected a mapping of {', '.join(defaults)}, got {given!r}")
    return defaults | given


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check(sweep: Sweep) -> None:
    """The choices, the metric and the budget: refused with what would work."""
    if sweep.scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {sweep.scheduler!r}; valid: {', '.join(SCHEDULERS)}")
    if sweep.searcher not in SEARCHERS:
        raise ValueError(f"unknown searcher {sweep.searcher!r}; valid: {', '.join(SEARCHERS)}")
    if sweep.metric.startswith("test_"):
        raise ValueError(
            f"metric {sweep.metric!r} is measured on the test split, which is what runs report: selecting on "
            f"it is what the protocol forbids; use a validation metric ({', '.join(METRICS[:3])}) with val_split"
        )
    if sweep.metric not in METRICS:
        raise ValueError(f"unknown metric {sweep.metric!r}; valid: {', '.join(METRICS)}")
    if sweep.metric.startswith("val_") and sweep.base.val_split is None:
        raise ValueError(
            f"metric {sweep.metric} needs a validation split: set one, e.g. --set val_split=0.1 "
            "(sweeps never select on the test split)"
        )
    if not _count(sweep.samples):
        raise ValueError(f"samples must be an integer >= 1, got {sweep.samples!r}")
    if sweep.max_concurrent is not None and not _count(sweep.max_concurrent):
        raise ValueError(f"max_concurrent must be an integer >= 1 or null, got {sweep.max_concurrent!r}")
    if not isinstance(sweep.seed, int):
        raise ValueError(f"seed must be an integer, got {sweep.seed!r}")
    if sweep.epochs < 2 and sweep.scheduler != "fifo":
        raise ValueError(
            f"a trial of {sweep.iterations} iterations is {sweep.epochs} epoch of {sweep.epoch_iterations}: "
            f"{sweep.scheduler.upper()} compares trials between epochs, so it needs at least 2 "
            "(raise recipe.total, or use --scheduler fifo)"
        )
    if sweep.scheduler == "asha":
        grace, factor = sweep.asha["grace_epochs"], sweep.asha["reduction_factor"]
        if not _count(grace) or not (_count(factor) and factor >= 2):
            raise ValueError(f"asha needs grace_epochs >= 1 and reduction_factor >= 2, got {sweep.asha}")
        if grace >= sweep.epochs:
            raise ValueError(
                f"ASHA's grace period of {grace} epoch(s) is not below a trial's {sweep.epochs} epochs: it "
                "could never stop a trial early; lower asha.grace_epochs or raise recipe.total"
            )
        if sweep.samples < factor:
            raise ValueError(
                f"ASHA with reduction factor {factor} needs at least {factor} samples to stop any, got {sweep.samples}"
            )
    if sweep.scheduler == "pbt":
        interval, quantile = sweep.pbt["interval_epochs"], sweep.pbt["quantile"]
        if not _count(interval) or interval >= sweep.epochs:
            raise ValueError(
                f"PBT's interval of {interval} epoch(s) must be >= 1 and below a trial's {sweep.epochs} epochs: "
                "it would never exploit; lower pbt.interval_epochs or raise recipe.total"
            )
        if not 0 < quantile <= 0.5:
            raise ValueError(f"pbt.quantile must be in (0, 0.5], got {quantile!r}")
        if sweep.samples < 2:
            raise ValueError(f"PBT needs at least 2 samples (a population), got {sweep.samples}")
        if sweep.searcher != "random":
            raise ValueError(
                f"PBT samples its population at random and then perturbs it; searcher {sweep.searcher!r} "
                "cannot steer it (Ray Tune refuses the pair): use --searcher random, or --scheduler asha"
            )
        if PBT_MUTABLE not in sweep.keys:
            raise ValueError(
                f"PBT perturbs {PBT_MUTABLE}: put it in the space, e.g. --space {PBT_MUTABLE}=loguniform:0.01:0.5"
            )
        lr = next(d for d in sweep.space if d.key == PBT_MUTABLE)
        if lr.kind == "choice":
            raise ValueError(f"PBT perturbs {PBT_MUTABLE} by a factor: give it a range, not {lr.text()}")


def list_sweeps() -> list[str]:
    return sorted(p.stem for p in Path(SWEEP_PRESETS).glob("*.yaml"))
