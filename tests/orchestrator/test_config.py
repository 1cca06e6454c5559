"""orchestrator.config: presets, ``--set`` overrides, validation, schedule scaling, config identity.

Fast: no Ray, no MLflow, no data (models are built on the meta device by ``validate``).
"""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator.config import (
    FIELDS,
    ExperimentConfig,
    RawValue,
    common_scaled_schedule,
    list_presets,
    load_config,
    make_config,
    parse_overrides,
    preset_path,
    scaled_schedule,
)
from orchestrator.train import build_parser, config_from_args
from workloads.engine import get_recipe


def config_of(*argv: str) -> ExperimentConfig:
    """The config the CLI would build from ``argv`` (no training)."""
    return config_from_args(build_parser().parse_args(list(argv)))


# --- presets ----------------------------------------------------------------------------------------


def test_presets_are_listed_and_load():
    presets = list_presets()
    assert {"smoke", "cifar10"} <= set(presets)
    for preset in presets:
        config = load_config(preset)
        assert isinstance(config, ExperimentConfig)
        assert config.name == yaml_name(preset)


def yaml_name(preset: str) -> str:
    import yaml

    return yaml.safe_load(preset_path(preset).read_text()).get("name", ExperimentConfig.name)


def test_smoke_preset_is_the_cli_default_and_a_cpu_run():
    config = config_of()
    assert config == load_config("smoke")
    assert (config.model, config.dataset, config.recipe, config.workers, config.use_gpu) == (
        "cifar_resnet20",
        "fashion-mnist",
        "smoke",
        2,
        False,
    )


def test_cifar10_preset_is_the_paper_recipe():
    config = load_config("cifar10")
    recipe = get_recipe(config.recipe, **config.recipe_overrides)
    assert (config.dataset, recipe.batch_size, recipe.lr, recipe.total, recipe.milestones) == (
        "cifar10",
        128,
        0.1,
        64_000,
        (32_000, 48_000),
    )


def test_imagenet_presets_decode_on_the_gpu():
    """Sixteen CPU cores feed one GPU's ResNet-50 a third of what it trains at (docs/PERFORMANCE.md);
    the ImageNet ablations take the train preset's decode."""
    from orchestrator.matrix import load_ablation

    configs = [load_config("imagenet")] + [
        trial.config for preset in ("imagenet-table2", "imagenet-table3") for trial in load_ablation(preset).trials
    ]
    assert {(c.dataset, c.use_gpu, c.decode) for c in configs} == {("imagenet", True, "device")}


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown preset 'nope'; valid: .*smoke"):
        load_config("nope")


def test_preset_from_a_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nmodel: cifar_plain20\nseed: 3\n")
    config = load_config(str(path))
    assert (config.name, config.model, config.seed) == ("mine", "cifar_plain20", 3)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"list\.yaml: expected a mapping"):
        load_config(str(bad))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: not valid YAML"):
        load_config(str(broken))


def test_yaml_with_an_unknown_key_is_refused(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: typo\nmodle: cifar_resnet20\n")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) modle; valid: name, model"):
        load_config(str(path))


# --- --set parsing -----------------------------------------------------------------------------------


def test_parse_overrides_splits_recipe_fields():
    out = parse_overrides(
        ["seed=3", "recipe.lr=0.05", "recipe.milestones=[10, 20]", "recipe.nesterov=true", "name=a=b"]
    )
    assert out == {
        "seed": "3",
        "recipe_overrides": {"lr": 0.05, "milestones": [10, 20], "nesterov": True},
        "name": "a=b",
    }
    assert isinstance(out["seed"], RawValue)  # typed later, against the field it sets


@pytest.mark.parametrize("pair", ["seed", "=3", " =3"])
def test_parse_overrides_refuses_a_pair_without_key_or_value(pair):
    with pytest.raises(ValueError, match="is not key=value"):
        parse_overrides([pair])


@pytest.mark.parametrize(
    "pair, key, value",
    [
        ("seed=7", "seed", 7),
        ("train_subset=4096", "train_subset", 4096),
        ("train_subset=null", "train_subset", None),
        ("cpus_per_worker=1", "cpus_per_worker", 1.0),  # an int where a float is wanted
        ("cpus_per_worker=0.5", "cpus_per_worker", 0.5),
        ("use_gpu=true", "use_gpu", True),
        ("compile=false", "compile", False),
        ("model=cifar_plain56", "model", "cifar_plain56"),
        ("shortcut=B", "shortcut", "B"),
        ("shortcut=null", "shortcut", None),
        ("name=123", "name", "123"),  # a string field keeps digits as text
        ("experiment=yes", "experiment", "yes"),  # ... and YAML 1.1 booleans too
        ("inject_nan=1:20", "inject_nan", "1:20"),  # YAML 1.1 would read sexagesimal 80
        ("recipe_overrides={lr: 0.05}", "recipe_overrides", {"lr": 0.05}),
    ],
)
def test_set_values_are_typed_by_their_field(pair, key, value):
    config = load_config("smoke", parse_overrides([pair]))
    assert getattr(config, key) == value
    assert type(getattr(config, key)) is type(value)


def test_recipe_overrides_merge_with_the_preset_and_reach_the_recipe():
    config = load_config(
        "smoke", parse_overrides(["recipe.lr=0.05", "recipe.total=800", "recipe.milestones=[400, 600]"])
    )
    recipe = get_recipe(config.recipe, **config.recipe_overrides)
    assert (recipe.lr, recipe.total, recipe.milestones, recipe.batch_size) == (0.05, 800, (400, 600), 128)


def test_cli_flags_and_set_build_the_same_config():
    a = config_of("--model", "cifar_plain20", "--workers", "1", "--name", "p20", "--gpu")
    b = config_of("--set", "model=cifar_plain20", "--set", "workers=1", "--set", "name=p20", "--set", "use_gpu=true")
    assert a == b
    assert (a.model, a.workers, a.name, a.use_gpu) == ("cifar_plain20", 1, "p20", True)


# --- refusals name the valid choices -----------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"seedx": "1"}, r"unknown config key\(s\) seedx; valid: name, model, shortcut"),
        ({"seed": "abc"}, r"config key 'seed' must be int, got \"abc\""),
        ({"seed": "1.5"}, r"config key 'seed' must be int, got 1\.5"),
        ({"seed": "true"}, r"config key 'seed' must be int, got true"),
        ({"use_gpu": "yes please"}, r"config key 'use_gpu' must be bool"),
        ({"use_gpu": "1"}, r"config key 'use_gpu' must be bool, got 1"),
        ({"train_subset": "many"}, r"config key 'train_subset' must be int or null"),
        ({"name": ""}, r"config key 'name' must be str, got null"),
        ({"model": "resnet21"}, r"unknown ImageNet depth 21 in 'resnet21'; valid: 18, 34, 50, 101, 152"),
        ({"model": "cifar_resnet21"}, r"CIFAR depth 21 in 'cifar_resnet21' is not 6n\+2.*valid: 8, 14, 20"),
        ({"model": "vgg16"}, r"unknown model 'vgg16'; valid: resnet18"),
        ({"shortcut": "D"}, r"shortcut.*'D'.*A.*B.*C"),
        ({"stride_placement": "middle"}, r"stride.*'middle'"),
        ({"dataset": "mnist"}, r"unknown dataset 'mnist'; valid: .*fashion-mnist"),
        ({"recipe": "fast"}, r"unknown recipe 'fast'; valid: cifar, imagenet, smoke"),
        (
            {"recipe_overrides": {"momentum": 0.9, "lrr": 0.1}},
            r"unknown recipe field\(s\) lrr; valid fields: batch_size",
        ),
        ({"recipe_overrides": {"lr": -1}}, r"lr must be"),
        ({"workers": "3"}, r"batch_size 128 of recipe 'smoke' is not divisible by world_size 3"),
        ({"workers": "0"}, r"world_size must be an integer >= 1|workers must be >= 1"),
        ({"keep_checkpoints": "0"}, r"keep_checkpoints must be >= 1, got 0"),
        ({"checkpoint_every": "0"}, r"checkpoint_every must be >= 1, got 0"),
        ({"log_every": "0"}, r"log_every must be >= 1, got 0"),
        ({"train_subset": "0"}, r"train_subset must be a positive number of images or null, got 0"),
        ({"max_failures": "-1"}, r"max_failures must be >= 0, got -1"),
        ({"cpus_per_worker": "0"}, r"cpus_per_worker must be > 0, got 0"),
        ({"use_gpu": "true", "gpus_per_worker": "1.5"}, r"gpus_per_worker must be a fraction in \(0, 1\]"),
        ({"inject_nan": "1"}, r"inject_nan '1' must be RANK:ITERATION"),
        ({"inject_nan": "a:b"}, r"inject_nan 'a:b' must be RANK:ITERATION"),
        ({"name": "a/b"}, r"name 'a/b' must be non-empty, without '/'"),
        ({"name": " a"}, r"name ' a' must be non-empty, without '/' or edge spaces"),
        ({"engine": "turbo"}, r"unknown engine 'turbo'; valid: loop, fast"),
        ({"engine": "fast", "workers": "2"}, r"engine 'fast' trains one worker per run .* got workers 2"),
        (
            {"engine": "fast", "workers": "1", "dataset": "imagenet", "model": "resnet18", "recipe": "imagenet"},
            r"engine 'fast' needs an in-memory data set, not the sharded 'imagenet'",
        ),
        (
            {"engine": "fast", "workers": "1", "recipe_overrides": {"unit": "epoch", "total": 4, "milestones": [2]}},
            r"engine 'fast' needs a recipe counted in iterations; 'smoke' counts epochs",
        ),
        ({"decode": "gpu"}, r"unknown decode 'gpu'; valid: cpu, device"),
        ({"mean": "image"}, r"unknown mean 'image'; valid: pixel, channel"),
        ({"val_split": "0"}, r"val_split 0 must be a fraction in \(0, 1\) or a whole number of images >= 1"),
        ({"val_split": "12.5"}, r"val_split 12.5 must be a fraction in \(0, 1\) or a whole number"),
        (
            {"val_split": "0.1", "dataset": "imagenet", "model": "resnet18", "recipe": "imagenet"},
            r"val_split 0.1: the sharded 'imagenet' has no validation split .* runs keep their last checkpoint",
        ),
        (
            {"recipe_overrides": {"schedule": "plateau", "milestones": []}},
            r"recipe.schedule=plateau divides the lr when the validation error plateaus: set val_split",
        ),
        (
            {"val_split": "0.1", "recipe_overrides": {"schedule": "plateau"}},
            r"recipe.schedule=plateau decides where the lr drops; set recipe.milestones=\[\] \(got \[200, 300\]\)",
        ),
        (
            {
                "val_split": "0.1",
                "engine": "fast",
                "workers": "1",
                "recipe_overrides": {"schedule": "plateau", "milestones": []},
            },
            r"recipe.schedule=plateau needs engine=loop",
        ),
        (
            {"decode": "device"},
            r"decode 'device' needs a sharded data set \(imagenet\), not the in-memory 'fashion-mnist'",
        ),
    ],
)
def test_bad_values_are_refused_with_the_choices_named(overrides, message):
    values = {k: RawValue(v) if isinstance(v, str) else v for k, v in overrides.items()}
    with pytest.raises(ValueError, match=message):
        load_config("smoke", values)


def test_every_field_is_a_valid_key():
    assert set(FIELDS) == {f.name for f in dataclasses.fields(ExperimentConfig)}
    defaults = make_config({})
    assert defaults == ExperimentConfig()


def test_config_is_frozen():
    config = load_config("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]


def test_to_dict_round_trips_as_the_workers_rebuild_it():
    config = load_config("smoke", parse_overrides(["recipe.lr=0.05", "inject_nan=1:3", "seed=2"]))
    assert ExperimentConfig(**config.to_dict()) == config
    assert make_config(config.to_dict()) == config


# --- schedule scaling --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iterations, milestones",
    [
        (400, [200, 300]),
        (1000, [500, 750]),
        (48, [24, 36]),
        (160, [80, 120]),
        (8, [4, 6]),
        (2, [1]),
        (1, []),
    ],
)
def test_scaled_schedule_keeps_milestones_proportional(iterations, milestones):
    config = load_config("smoke")  # 400 iterations, /10 at 200 and 300
    overrides = scaled_schedule(config, iterations=iterations)
    assert overrides == {"total": iterations, "milestones": milestones}
    recipe = get_recipe(config.recipe, **overrides)  # a valid recipe
    assert recipe.total_iterations == iterations


def test_scaled_schedule_of_the_paper_recipe_stays_at_half_and_three_quarters():
    config = load_config("cifar10")
    assert scaled_schedule(config, iterations=6400)["milestones"] == [3200, 4800]


def test_scaled_schedule_keeps_other_recipe_overrides():
    config = load_config("smoke", parse_overrides(["recipe.lr=0.05"]))
    assert scaled_schedule(config, iterations=100) == {"lr": 0.05, "total": 100, "milestones": [50, 75]}


def test_scaled_schedule_scales_epoch_recipes_by_epochs():
    config = load_config("smoke", {"recipe": "imagenet", "model": "resnet18"})
    assert scaled_schedule(config, epochs=9) == {"total": 9, "milestones": [3, 6]}
    with pytest.raises(ValueError, match="counts epochs; use --epochs instead"):
        scaled_schedule(config, iterations=100)
    with pytest.raises(ValueError, match="counts iterations; use --iterations instead"):
        scaled_schedule(load_config("smoke"), epochs=3)


@pytest.mark.parametrize("iterations", [0, -5])
def test_scaled_schedule_refuses_a_non_positive_length(iterations):
    with pytest.raises(ValueError, match=f"--iterations must be a positive integer, got {iterations}"):
        scaled_schedule(load_config("smoke"), iterations=iterations)


def test_cli_iterations_scale_the_schedule():
    config = config_of("--iterations", "48", "--set", "recipe.lr=0.05")
    assert config.recipe_overrides == {"lr": 0.05, "total": 48, "milestones": [24, 36]}
    assert config_of("--iterations", "400").recipe_overrides == {"total": 400, "milestones": [200, 300]}


# --- config identity (the hash that guards a resume) -------------------------------------------------


def test_hash_ignores_how_the_run_is_executed():
    base = load_config("smoke")
    same = [
        {"workers": 1},
        {"workers": 4},
        {"use_gpu": True},
        {"cpus_per_worker": 0.5},
        {"name": "other"},
        {"storage_path": "/elsewhere"},
        {"tracking_uri": "sqlite:///x.db"},
        {"max_failures": 0},
        {"keep_checkpoints": 5},
        {"checkpoint_every": 2},
        {"log_every": 7},
        {"compile": True},
        {"data_root": "/data"},
        {"experiment": "e2"},
        {"decode": "device"},
    ]
    for change in same:
        changed = dataclasses.replace(base, **change)
        assert changed.hash() == base.hash(), change
    assert len(base.hash()) == 64 and base.hash() == load_config("smoke").hash()


def test_hash_changes_with_what_is_trained():
    base = load_config("smoke")
    different = [
        {"model": "cifar_resnet32"},
        {"model": "cifar_plain20"},
        {"seed": 1},
        {"shortcut": "B"},
        {"stride_placement": "torchvision"},
        {"dataset": "synthetic"},
        {"train_subset": 100},
        {"test_subset": None},
        {"recipe": "cifar"},
        {"recipe_overrides": {"lr": 0.05}},
        {"val_split": 0.1},
        {"mean": "channel"},
    ]
    hashes = {base.hash()}
    for change in different:
        changed = dataclasses.replace(base, **change)
        assert changed.hash() != base.hash(), change
        hashes.add(changed.hash())
    assert len(hashes) == len(different) + 1


def test_hash_covers_the_recipe_as_it_will_run_not_its_name(monkeypatch):
    from workloads.engine import recipes

    before = load_config("smoke").hash()
    # Editing the recipe itself (same name, same overrides) must not let an old run resume.
    monkeypatch.setitem(recipes._RECIPES, "smoke", dataclasses.replace(recipes._RECIPES["smoke"], lr=0.2))
    assert load_config("smoke").hash() != before
    # The depth rule is part of it: ResNet-110 warms up under the cifar recipe, ResNet-56 does not.
    assert load_config("cifar10", {"model": "cifar_resnet110"}).effective_recipe().warmup
    assert not load_config("cifar10", {"model": "cifar_resnet56"}).effective_recipe().warmup
    assert load_config("cifar10", {"model": "cifar_resnet110"}).identity()["schedule"]["warmup"] is True


def test_hash_does_not_depend_on_key_order_of_recipe_overrides():
    a = load_config("smoke", {"recipe_overrides": {"lr": 0.05, "total": 1000}})
    b = load_config("smoke", {"recipe_overrides": {"total": 1000, "lr": 0.05}})
    assert a.hash() == b.hash()


# --- tracking URI resolution -------------------------------------------------------------------------


def test_tracking_uri_defaults_to_sqlite_next_to_the_storage(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config("smoke", {"storage_path": str(tmp_path / "runs")})
    assert config.resolved_tracking_uri() == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert config.resolved_tracking_uri() == "http://mlflow:5000"
    explicit = dataclasses.replace(config, tracking_uri="sqlite:////x/y.db")
    assert explicit.resolved_tracking_uri() == "sqlite:////x/y.db"


def test_remote_storage_needs_a_tracking_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config("smoke", {"storage_path": "s3://bucket/runs"})
    assert config.resolved_storage_path() == "s3://bucket/runs"
    with pytest.raises(ValueError, match="is remote: give a tracking_uri"):
        config.resolved_tracking_uri()


def test_ablate_iterations_scale_every_trials_schedule():
    from orchestrator import ablate

    ablation = ablate.ablation_from_args(
        ablate.build_parser().parse_args(["-p", "cifar10-table6", "--iterations", "24"])
    )
    recipes = {t.name: get_recipe(t.config.recipe, **t.config.recipe_overrides) for t in ablation.trials}
    assert len(recipes) == 10 and {(r.total, tuple(r.milestones)) for r in recipes.values()} == {(24, (12, 18))}


def test_ensemble_epochs_scale_every_members_schedule_and_refuse_the_wrong_unit():
    from orchestrator import ensemble
    from orchestrator.ensemble_train import load_ensemble

    ablation, _ = load_ensemble("ilsvrc2015")
    schedule = common_scaled_schedule([t.config for t in ablation.trials], epochs=9)
    assert schedule["total"] == 9 and schedule["milestones"] == [3, 6]
    with pytest.raises(ValueError, match=r"recipe 'imagenet' counts epochs; use --epochs instead"):
        common_scaled_schedule([t.config for t in ablation.trials], iterations=100)
    assert ensemble.build_parser().parse_args(["train", "--epochs", "2"]).epochs == 2


def test_one_schedule_cannot_scale_runs_of_different_recipes():
    configs = [
        load_config("smoke", {"name": "a"}),
        load_config("smoke", {"name": "b", "recipe_overrides": {"lr": 0.05}}),
    ]
    with pytest.raises(ValueError, match=r"different recipes: a, b; set recipe.total and recipe.milestones"):
        common_scaled_schedule(configs, iterations=10)


def test_load_scaled_scales_an_ensembles_members_as_ensemble_train_does():
    from orchestrator.ensemble_train import load_ensemble
    from orchestrator.matrix import load_scaled

    ablation, view = load_scaled(
        lambda o: load_ensemble("smoke", o), {}, 10, None, trials=lambda loaded: loaded[0].trials
    )
    recipes = [get_recipe(t.config.recipe, **t.config.recipe_overrides) for t in ablation.trials]
    assert view and recipes and all(r.total == 10 for r in recipes)
