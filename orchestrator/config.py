"""One training run's configuration: a YAML preset plus ``--set key=value`` overrides, validated.

The resolved ``ExperimentConfig`` is the single object that flows from the CLI to every Ray Train
worker (as a plain dict) and into MLflow's params. Unknown keys and bad values are refused with
the valid choices named, before Ray starts.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from orchestrator.storage import is_remote
from workloads.data import SHARDED, dataset_spec, list_dataset_specs
from workloads.data.splits import validation_size
from workloads.engine import Recipe, config_hash, get_recipe, list_recipes, recipe_for_depth
from workloads.models import build_model, parse_model_name

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# Data sets streamed from Parquet shards (python -m orchestrator.prepare) rather than held in memory.
TRAIN_PRESETS = CONFIG_DIR / "train"
ENSEMBLE_PRESETS = CONFIG_DIR / "ensemble"
ENGINES = ("loop", "fast")
MAX_NAME_BYTES = 200
DECODES = ("cpu", "device")
MEANS = ("pixel", "channel")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one training run needs. Units are in the comments."""

    name: str = "smoke"  # run name: deterministic, so rerunning the same name resumes it
    # What is trained (these fields make up the config hash that guards a resume).
    model: str = "cifar_resnet20"
    shortcut: str | None = None  # None: the family's default (A for CIFAR nets, B for ImageNet)
    stride_placement: str = "paper"
    dataset: str = "fashion-mnist"
    data_root: str | None = None  # None: the data set's environment variable or default path
    train_subset: int | None = None  # images of the training split used (a fixed random subset)
    test_subset: int | None = None  # images of the test split evaluated
    # Held-out training images for model selection (the best checkpoint, greedy ensemble
    # selection, the plateau schedule): a fraction in (0, 1) or a number of images, carved per
    # class (workloads/data/splits.py) before train_subset. None: no validation split; the run
    # keeps its last checkpoint as its best, as nothing may be selected on the test split.
    val_split: float | None = None
    # The mean subtracted from every input ([0,1] units). "pixel": the training split's per-pixel
    # mean image, as the paper did (ImageNet: the one prepare stores beside the train shards).
    # "channel": one value per channel (in memory: that image's average; ImageNet: the usual
    # per-channel constants, e.g. for shards prepared without the image).
    mean: str = "pixel"
    recipe: str = "smoke"
    recipe_overrides: dict = field(default_factory=dict)  # e.g. {"lr": 0.05, "total": 800}
    seed: int = 0
    # How it runs (may change between a run and its resume).
    workers: int = 2  # data-parallel Ray Train workers
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # fractions pack several small runs on one GPU
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch is always saved)
    keep_checkpoints: int = 2
    max_failures: int = 2  # worker-group restarts from the latest checkpoint before giving up
    log_every: int = 20  # iterations between logged training-loss points
    compile: bool = False  # torch.compile the model
    # "loop": the plain training loop (any data set, any number of workers). "fast": the in-memory
    # CIFAR-style trainer (workloads/engine/fast_cifar.py: augmentation on the device, one host sync
    # an epoch, the step in a CUDA graph on a GPU; 5x the loop on an H200), one worker per run.
    engine: str = "loop"
    # Where a sharded data set's training JPEGs are decoded and augmented. "cpu": Ray Data tasks on
    # the node's spare cores (~2.2k images/s on 16 cores, below one GPU's ResNet-50). "device": Ray
    # Data only streams the shard rows, each worker decodes and augments its batches on its own
    # device (workloads/data/device_decode.py; 8.9k images/s on an H200). Like engine, not part of
    # identity(): both draw the paper's augmentation from the same distribution, only the random
    # stream differs, so a run may resume with the other one.
    decode: str = "cpu"
    storage_path: str = "runs"  # Ray Train storage: a folder, or s3:// / NFS on a cluster
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite in storage_path
    experiment: str = "resnet-orchestrator"
    # Fault injection for reliability tests: "RANK:ITERATION" makes that rank's loss NaN there.
    inject_nan: str | None = None

    def identity(self) -> dict:
        """The fields that define what is trained; a resume must match them exactly."""
        keys = (
            "model",
            "shortcut",
            "stride_placement",
            "dataset",
            "train_subset",
            "test_subset",
            "val_split",
            "mean",
            "seed",
        )
        # The schedule as it will run (recipe, overrides, depth rule), not its name: editing a
        # recipe must not let an old run resume under the same hash.
        return {k: getattr(self, k) for k in keys} | {
            "recipe": self.recipe,
            "schedule": self.effective_recipe().schedule_fields(),
        }

    def effective_recipe(self) -> Recipe:
        """The recipe with its overrides and the depth rule (warm-up for 110+ layers) applied, in
        its own unit (epochs stay epochs until the data size is known: ``build.run_recipe``)."""
        return recipe_for_depth(get_recipe(self.recipe, **self.recipe_overrides), parse_model_name(self.model).depth)

    def hash(self) -> str:
        return config_hash(self.identity())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolved_tracking_uri(self) -> str:
        """``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else sqlite next to the run storage."""
        from orchestrator.tracking import default_tracking_uri

        return default_tracking_uri(self.tracking_uri, self.storage_path)

    def resolved_storage_path(self) -> str:
        return self.storage_path if is_remote(self.storage_path) else str(Path(self.storage_path).resolve())


FIELDS = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
_HINTS = typing.get_type_hints(ExperimentConfig)


def list_presets(folder: Path = TRAIN_PRESETS) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def read_yaml(path: Path) -> dict:
    """A YAML mapping from ``path``; ValueError naming the file when it is not one."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def preset_path(preset: str, folder: Path = TRAIN_PRESETS) -> Path:
    """A preset name from ``folder`` or a path to a YAML file."""
    if preset.endswith((".yaml", ".yml")):
        path = Path(preset)
        if not path.is_file():
            raise FileNotFoundError(f"config file {preset!r} not found")
        return path
    path = folder / f"{preset}.yaml"
    if not path.is_file():
        raise ValueError(
            f"unknown preset {preset!r}; valid: {', '.join(list_presets(folder))} (or a path to a .yaml file)"
        )
    return path


class RawValue(str):
    """A ``--set`` value as typed: read as YAML (``0.1``, ``true``, ``[1, 2]``) unless the key
    wants a string, so ``inject_nan=1:20`` stays "1:20" (YAML 1.1 would read 80)."""


def parse_overrides(pairs: list[str]) -> dict:
    """``["seed=1", "recipe.total=800"]`` -> ``{"seed": RawValue("1"), "recipe_overrides": {"total": 800}}``.

    ``recipe.<field>`` goes to ``recipe_overrides`` (recipe fields are numbers, lists or bools).
    """
    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {pair!r} is not key=value")
        if key.startswith("recipe."):
            out.setdefault("recipe_overrides", {})[key.removeprefix("recipe.")] = _read_yaml_value(raw)
        else:
            out[key] = RawValue(raw)
    return out


def _read_yaml_value(raw: str):
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


def merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if key == "recipe_overrides" and isinstance(value, dict):
            merged[key] = {**(merged.get(key) or {}), **value}
        else:
            merged[key] = value
    return merged


def make_config(values: dict) -> ExperimentConfig:
    """Type-check ``values`` against ``ExperimentConfig`` and validate them against the registries."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)}; valid: {', '.join(FIELDS)}")
    checked = {key: _coerce(key, value) for key, value in values.items()}
    config = ExperimentConfig(**checked)
    validate(config)
    return config


def load_config(preset: str | None = None, overrides: dict | None = None) -> ExperimentConfig:
    base = read_yaml(preset_path(preset)) if preset else {}
    return make_config(merge(base, overrides or {}))


def validate(config: ExperimentConfig) -> None:
    """Everything that can be checked without Ray or the data: names, options, resources."""
    options = {"stride_placement": config.stride_placement}
    if config.shortcut is not None:
        options["shortcut"] = config.shortcut
    with torch.device("meta"):  # builds instantly, checks every option combination
        build_model(config.model, **options)
    spec = dataset_spec(config.dataset)
    if config.recipe not in list_recipes():
        raise ValueError(f"unknown recipe {config.recipe!r}; valid: {', '.join(list_recipes())}")
    recipe = config.effective_recipe()
    recipe.per_worker_batch(config.workers)
    _validate_selection(config, recipe, spec)
    positive = {"workers": 1, "checkpoint_every": 1, "keep_checkpoints": 1, "log_every": 1}
    for key, minimum in positive.items():
        if getattr(config, key) < minimum:
            raise ValueError(f"{key} must be >= {minimum}, got {getattr(config, key)}")
    for key in ("train_subset", "test_subset"):
        value = getattr(config, key)
        if value is not None and value < 1:
            raise ValueError(f"{key} must be a positive number of images or null, got {value}")
    if config.max_failures < 0:
        raise ValueError(f"max_failures must be >= 0, got {config.max_failures}")
    if config.cpus_per_worker <= 0:
        raise ValueError(f"cpus_per_worker must be > 0, got {config.cpus_per_worker}")
    gpus = config.gpus_per_worker
    if config.use_gpu and (gpus <= 0 or (gpus > 1 and gpus % 1)):
        raise ValueError(
            f"gpus_per_worker must be a fraction in (0, 1] or a whole number, got {config.gpus_per_worker}"
        )
    if config.engine not in ENGINES:
        raise ValueError(f"unknown engine {config.engine!r}; valid: {', '.join(ENGINES)}")
    if config.engine == "fast":
        if config.workers != 1:
            raise ValueError(
                f"engine 'fast' trains one worker per run (it does not all-reduce), got workers "
                f"{config.workers}; use workers=1 or engine=loop"
            )
        if spec.sharded:
            raise ValueError(
                f"engine 'fast' needs an in-memory data set, not the sharded {config.dataset!r}; use engine=loop"
            )
        if recipe.unit != "iteration":
            raise ValueError(
                f"engine 'fast' needs a recipe counted in iterations; {config.recipe!r} counts {recipe.unit}s"
            )
    if config.mean not in MEANS:
        raise ValueError(f"unknown mean {config.mean!r}; valid: {', '.join(MEANS)}")
    if config.decode not in DECODES:
        raise ValueError(f"unknown decode {config.decode!r}; valid: {', '.join(DECODES)}")
    if config.decode == "device" and not spec.sharded:
        raise ValueError(
            f"decode 'device' needs a sharded data set ({', '.join(list_dataset_specs(SHARDED))}), not the "
            f"in-memory {config.dataset!r} (augmented on the device already); use decode=cpu"
        )
    if config.inject_nan is not None:
        rank, _, iteration = config.inject_nan.partition(":")
        if not (rank.isdigit() and iteration.isdigit()):
            raise ValueError(f"inject_nan {config.inject_nan!r} must be RANK:ITERATION, e.g. 1:5")
    if not config.name or "/" in config.name or config.name.strip() != config.name:
        raise ValueError(f"name {config.name!r} must be non-empty, without '/' or edge spaces")
    check_name_length(config.name, "name")


def _validate_selection(config: ExperimentConfig, recipe: Recipe, spec) -> None:
    """The validation split and what reads it (the plateau schedule)."""
    if config.val_split is not None:
        if spec.sharded:
            raise ValueError(
                f"val_split {config.val_split:g}: the sharded {config.dataset!r} has no validation split "
                "(its val/ folder is the reported split); leave val_split null: runs keep their last checkpoint"
            )
        validation_size(config.val_split, 2**62)  # the form; the size is checked against the data
    if recipe.schedule == "plateau":
        if config.val_split is None:
            raise ValueError(
                "recipe.schedule=plateau divides the lr when the validation error plateaus: set val_split "
                "(e.g. val_split=0.1); selecting on the test split is what it must not do"
            )
        if recipe.milestones:
            raise ValueError(
                f"recipe.schedule=plateau decides where the lr drops; set recipe.milestones=[] "
                f"(got {list(recipe.milestones)})"
            )
        if config.engine == "fast":
            raise ValueError("recipe.schedule=plateau needs engine=loop (the fast trainer's schedule is fixed)")


def check_name_length(name: str, what: str) -> None:
    """A name becomes a folder (Ray Train's run, Tune's experiment) and an MLflow run name: keep it
    well inside a file name's 255 bytes and MLflow's 250-character run names."""
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(
            f"{what} {name[:40]!r}... is {len(name.encode())} bytes long; at most {MAX_NAME_BYTES} "
            "(it names the run's folders and its MLflow run)"
        )


def _coerce(key: str, value):
    """Check one value against its field's type hint; ints are accepted where floats are."""
    hint = _HINTS[key]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if isinstance(value, RawValue):
        value = str(value) if str in allowed and value not in ("null", "~", "") else _read_yaml_value(value)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    for kind in allowed:
        if kind is type(None):
            continue
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
    names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
    raise ValueError(f"config key {key!r} must be {names}, got {json.dumps(value, default=str)}")


def scaled_schedule(config: ExperimentConfig, *, iterations: int | None = None, epochs: int | None = None) -> dict:
    """``recipe_overrides`` that make the run ``iterations`` (or ``epochs``) long, with the lr
    milestones moved proportionally (the paper's 32k/48k of 64k stays at 50%/75%)."""
    recipe = get_recipe(config.recipe, **config.recipe_overrides)
    unit, length = ("iteration", iterations) if iterations is not None else ("epoch", epochs)
    if recipe.unit != unit:
        flag = "--epochs" if recipe.unit == "epoch" else "--iterations"
        raise ValueError(f"recipe {recipe.name!r} counts {recipe.unit}s; use {flag} instead")
    if length is None or length < 1:
        raise ValueError(f"--{unit}s must be a positive integer, got {length}")
    milestones = sorted({round(m * length / recipe.total) for m in recipe.milestones} - {0})
    return {**config.recipe_overrides, "total": length, "milestones": [m for m in milestones if m < length]}


def common_scaled_schedule(
    configs: list[ExperimentConfig], *, iterations: int | None = None, epochs: int | None = None
) -> dict:
    """The one ``recipe_overrides`` that makes every run of a matrix ``iterations`` (or ``epochs``)
    long (``scaled_schedule``); runs of different recipes cannot share it."""
    found: dict[str, str] = {}
    for config in configs:
        found.setdefault(
            json.dumps(scaled_schedule(config, iterations=iterations, epochs=epochs), sort_keys=True), config.name
        )
    if len(found) > 1:
        raise ValueError(
            f"--iterations/--epochs scale one schedule, but these runs have different recipes: "
            f"{', '.join(found.values())}; set recipe.total and recipe.milestones with --set instead"
        )
    return json.loads(next(iter(found)))
