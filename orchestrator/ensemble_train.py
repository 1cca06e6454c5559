"""Ensemble presets (``configs/ensemble``) and training their members: each member a trial of the
ablation machinery, a child MLflow run of one ensemble parent run, then the members evaluated."""

from __future__ import annotations

from orchestrator import tracking
from orchestrator.ablation import ablate, place_trials
from orchestrator.config import ENSEMBLE_PRESETS, preset_path, read_yaml
from orchestrator.ensemble_eval import evaluate
from orchestrator.matrix import Ablation, expand
from orchestrator.members import parent_members
from orchestrator.resources import DEFAULT_WAIT_MINUTES
from workloads import ensemble as ensemble_math

TOP_KEYS = ("name", "description", "base", "members", "view", "max_concurrent")


def load_ensemble(preset: str, overrides: dict | None = None, name: str | None = None) -> tuple[Ablation, str]:
    """An ensemble preset as an ``Ablation`` (one trial per member) and its test-time view."""
    spec = read_yaml(preset_path(preset, ENSEMBLE_PRESETS))
    unknown = sorted(set(spec) - set(TOP_KEYS))
    if unknown:
        raise ValueError(f"{preset}: unknown ensemble key(s) {', '.join(unknown)}; valid: {', '.join(TOP_KEYS)}")
    members = spec.get("members")
    if not isinstance(members, list) or not members:
        raise ValueError(f"{preset}: 'members' must be a non-empty list of member mappings")
    # Members are the ablation's `include` cells: no matrix, one trial each.
    ablation = expand(
        {k: spec.get(k) for k in ("name", "base", "max_concurrent", "description")} | {"include": members},
        overrides or {},
        name=name,
    )
    if len(ablation.trials) != len(members):
        raise ValueError(f"{preset}: two members give the same run; give them different seeds")
    view = spec.get("view", "center")
    if view not in ensemble_math.VIEWS:
        raise ValueError(f"{preset}: unknown view {view!r}; valid: {', '.join(ensemble_math.VIEWS)}")
    return ablation, view


def train(
    ablation: Ablation,
    view: str,
    *,
    evaluate_after: bool = True,
    max_concurrent: int | None = None,
    wait_s: float = DEFAULT_WAIT_MINUTES * 60,
    echo=print,
) -> dict:
    """Train (or resume) every member as a child run of one ensemble parent, then evaluate them."""
    first = place_trials(ablation)[0].config
    taken = tracking.lookup(first.tracking_uri, first.experiment, [ablation.name])[ablation.name]
    if taken is not None and tracking.kind_of(taken) != tracking.ENSEMBLE:
        raise ValueError(
            f"name {ablation.name!r} is taken by a {tracking.kind_of(taken) or 'training'} run "
            f"({taken.info.run_id}); pick another --name"
        )
    summary = ablate(ablation, max_concurrent=max_concurrent, wait_s=wait_s, echo=echo, kind=tracking.ENSEMBLE)
    if evaluate_after and not summary["failed"]:
        client = tracking.connect(first.tracking_uri)
        runs = parent_members(client, client.get_run(summary["parent_run_id"]))
        summary["evaluation"] = evaluate(
            client,
            runs,
            view=view,
            use_gpu=first.use_gpu,
            storage_path=first.storage_path,
            parent=summary["parent_run_id"],
            wait_s=wait_s,
            echo=echo,
        )
    return summary
