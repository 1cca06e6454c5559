"""Fixtures shared by the orchestrator tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def python_in_fresh_process(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -c code`` from the checkout, off any cluster (a private Ray needs a process of its own)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def dataset_reads(monkeypatch) -> list[str]:
    """The file splits ("train", "test") ``orchestrator.data`` reads from disk while the test runs,
    in order: each is a full decode (cifar10-jpeg's training split: 50,000 JPEGs, 10-26 s a core)."""
    from orchestrator import data

    reads, real = [], data.load_dataset
    monkeypatch.setattr(data, "load_dataset", lambda name, split, **kw: reads.append(split) or real(name, split, **kw))
    return reads


# A matrix small enough for tests: depth 8 and 14, plain and residual, one worker per trial,
# 2 epochs of 4 iterations (512 images, batch 128).
TINY = ["train_subset=512", "test_subset=256", "recipe.total=8", "recipe.milestones=[6]", "log_every=2"]


@pytest.fixture(scope="session")
def tiny_ablation(ray_local, tmp_path_factory):
    """One tiny real ablation (Ray Tune + Ray Train + MLflow on sqlite + Fashion-MNIST), run once per
    test session and shared by the tests that read its runs: ``(ablation, summary, lines)``."""
    from orchestrator.ablation import ablate
    from orchestrator.config import parse_overrides
    from orchestrator.matrix import load_ablation

    folder = tmp_path_factory.mktemp("tiny-ablation")
    overrides = parse_overrides(TINY) | {"storage_path": str(folder / "runs")}
    ablation = load_ablation("smoke", overrides, name="tiny", axes={"depth": "[8, 14]"})
    lines: list[str] = []
    summary = ablate(ablation, echo=lines.append)
    return ablation, summary, lines
