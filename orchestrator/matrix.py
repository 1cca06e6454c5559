"""An ablation as data: a base training config and a matrix of axes, expanded into named trials.

A preset (``configs/ablate/<name>.yaml``) reads::

    name: smoke                   # the ablation's name: rerunning it resumes it
    base: {preset: smoke, ...}    # a train preset and/or config keys shared by every trial
    matrix:                       # the cross product of these axes
      family: cifar               # cifar or imagenet (how depth + residual become a model name)
      depth: [8, 32]
      residual: [false, true]
      shortcut: [A]               # plain nets have no shortcut: they join only the first option
      seed: [0]
      <any config key>: [values]  # e.g. recipe, dataset, train_subset
    include:                      # extra cells outside the cross product (Table 3's 50/101/152)
      - {depth: 50, residual: true, shortcut: B}
    max_concurrent: null          # trials at once (default: what the cluster's resources allow)
    pack: 1                       # engine=fast runs trained together per worker (orchestrator/packing.py)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml

from orchestrator.config import (
    CONFIG_DIR,
    FIELDS,
    ExperimentConfig,
    check_name_length,
    common_scaled_schedule,
    load_config,
    make_config,
    merge,
    parse_overrides,
    preset_path,
    read_yaml,
)

ABLATE_PRESETS = CONFIG_DIR / "ablate"
MODEL_AXES = ("family", "depth", "residual")
TOP_KEYS = ("name", "base", "matrix", "include", "max_concurrent", "pack", "description")
FAMILIES = ("cifar", "imagenet")


T = TypeVar("T")  # what load_scaled's loader returns


@dataclass(frozen=True)
class Trial:
    name: str  # deterministic: <ablation>-<model>-<shortcut>-s<seed>[-<other axes>]
    config: ExperimentConfig
    axes: dict = field(default_factory=dict)  # this cell's axis values, for the results table


@dataclass(frozen=True)
class Ablation:
    name: str
    trials: tuple[Trial, ...]
    max_concurrent: int | None = None
    description: str = ""
    pack: int = 1  # runs per Tune trial, trained together by one worker (engine=fast only)


def model_name(family: str, depth: int, residual: bool) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    kind = "resnet" if residual else "plain"
    return f"cifar_{kind}{depth}" if family == "cifar" else f"{kind}{depth}"


def load_ablation(
    preset: str, overrides: dict | None = None, name: str | None = None, axes: dict | None = None
) -> Ablation:
    """Read and expand an ablation preset; ``overrides`` apply to every trial's config and
    ``axes`` (e.g. ``{"depth": "[20, 56]"}``, values as typed) replace matrix axes."""
    spec = read_yaml(preset_path(preset, ABLATE_PRESETS))
    unknown = sorted(set(spec) - set(TOP_KEYS))
    if unknown:
        raise ValueError(f"{preset}: unknown ablation key(s) {', '.join(unknown)}; valid: {', '.join(TOP_KEYS)}")
    if axes:
        spec["matrix"] = {**(spec.get("matrix") or {}), **{k: yaml.safe_load(str(v)) for k, v in axes.items()}}
    return expand(spec, overrides or {}, name=name)


def expand(spec: dict, overrides: dict, name: str | None = None) -> Ablation:
    name = name or spec.get("name")
    if not name or "/" in str(name):
        raise ValueError(f"ablation name {name!r} must be non-empty and without '/'")
    check_name_length(str(name), "ablation name")
    base = dict(spec.get("base") or {})
    base_preset = base.pop("preset", None)
    matrix = {k: v if isinstance(v, list) else [v] for k, v in (spec.get("matrix") or {}).items()}
    for key in matrix:
        if key not in MODEL_AXES and key not in FIELDS:
            raise ValueError(f"unknown matrix axis {key!r}; valid: {', '.join(MODEL_AXES)} or a config key")
        if key in ("name", "model"):
            raise ValueError(f"matrix axis {key!r} is derived; use family/depth/residual instead")
    cells = [dict(zip(matrix, values)) for values in itertools.product(*matrix.values())] if matrix else []
    for extra in spec.get("include") or []:
        if not isinstance(extra, dict):
            raise ValueError(f"include entries must be mappings, got {extra!r}")
        cells.append({**{k: v[0] for k, v in matrix.items()}, **extra})
    if not cells:
        raise ValueError(f"ablation {name!r} has no trials: give a matrix or include list")

    first_shortcut = (matrix.get("shortcut") or [None])[0]
    trials: dict[str, Trial] = {}
    for cell in cells:
        values = dict(cell)
        family = values.pop("family", "cifar")
        depth = values.pop("depth", None)
        residual = values.pop("residual", True)
        if depth is None:
            raise ValueError(f"ablation {name!r}: a cell has no depth: {cell}")
        model = model_name(family, depth, residual)
        if not residual and values.get("shortcut") not in (None, first_shortcut):
            continue  # a plain net is the same net whatever the shortcut option: run it once
        if not residual:
            values.pop("shortcut", None)
        trial_name = trial_label(name, model, values)
        config_values = merge(merge(_base_values(base_preset), base), {**values, **overrides})
        config_values.update(model=model, name=trial_name)
        trials.setdefault(
            trial_name,
            Trial(
                trial_name, make_config(config_values), {"model": model, "depth": depth, "residual": residual, **values}
            ),
        )
    pack = spec.get("pack", 1)
    if not _count(pack):
        raise ValueError(f"ablation {name!r}: pack must be an integer >= 1, got {pack!r}")
    if spec.get("max_concurrent") is not None and not _count(spec["max_concurrent"]):
        raise ValueError(
            f"ablation {name!r}: max_concurrent must be an integer >= 1 or null (fit the cluster), "
            f"got {spec['max_concurrent']!r}"
        )
    return Ablation(
        name=name,
        trials=tuple(trials.values()),
        max_concurrent=spec.get("max_concurrent"),
        description=str(spec.get("description", "")),
        pack=pack,
    )


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def trial_label(ablation: str, model: str, values: dict) -> str:
    parts = [ablation, model]
    if values.get("shortcut"):
        parts.append(str(values["shortcut"]))
    parts += [f"s{v}" if k == "seed" else f"{k}={v}" for k, v in sorted(values.items()) if k != "shortcut"]
    return "-".join(str(p).replace("/", "_") for p in parts)


def _base_values(preset: str | None) -> dict:
    if preset is None:
        return {}
    load_config(preset)  # validates the preset on its own, so its errors name it
    return read_yaml(preset_path(preset))


def list_ablations() -> list[str]:
    return sorted(p.stem for p in Path(ABLATE_PRESETS).glob("*.yaml"))


def matrix_overrides(args) -> dict:
    """What ``ablate`` and ``ensemble train`` apply to every run: ``--set`` pairs, then the path flags
    given (``--data-root``, ``--tracking-uri``, ``--storage-path``)."""
    overrides = parse_overrides(args.overrides)
    flags = {"data_root": args.data_root, "tracking_uri": args.tracking_uri, "storage_path": args.storage_path}
    return overrides | {key: value for key, value in flags.items() if value is not None}


def load_scaled(
    load: Callable[[dict], T],
    overrides: dict,
    iterations: int | None,
    epochs: int | None,
    trials: Callable[[T], tuple] = lambda ablation: ablation.trials,
) -> T:
    """``load(overrides)``, its runs' schedules made ``iterations`` (or ``epochs``) long when either is
    given (``--iterations`` / ``--epochs``, the lr milestones moved along: ``common_scaled_schedule``).
    ``trials`` finds the loaded thing's trials (an ablation's own, by default)."""
    loaded = load(overrides)
    if iterations is None and epochs is None:
        return loaded
    configs = [t.config for t in trials(loaded)]
    schedule = common_scaled_schedule(configs, iterations=iterations, epochs=epochs)
    return load(overrides | {"recipe_overrides": schedule})
