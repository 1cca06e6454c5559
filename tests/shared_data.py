"""Files of the shared data folder beside the checkout (`../shared/data`): CI has it, a bare clone
may not. A test that needs one skips with one line naming it, unless CI is set: there it fails
(`needed_by_ci`, also for what else CI provides, such as a mountable tmpfs)."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FASHION_MNIST = Path(os.environ.get("FASHION_MNIST_ROOT", "/usr/share/datasets/fashion-mnist"))


def required_by_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def shared_data_file(name: str, folder: Path = SHARED_DATA) -> Path:
    """`folder/name`; when it is missing, skip the calling test (or fixture), or fail it under CI."""
    path = folder / name
    if path.is_file():
        return path
    needed_by_ci(f"{path} is missing (the shared data folder beside the checkout)")


def needed_by_ci(why: str) -> None:
    """Skip the calling test with one line saying ``why`` it cannot run here; under CI, fail it."""
    if required_by_ci():
        pytest.fail(f"{why}; CI is set, so the test needs it", pytrace=False)
    pytest.skip(f"{why}; with CI set this fails")


# Modules of real runs on the embedded data set (`make data` installs it) skip without it, but
# not under CI, where it is part of the set-up: there they run and fail on the missing files.
needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists() and not required_by_ci(),
    reason=f"Fashion-MNIST not at {FASHION_MNIST} (make data); with CI set this fails",
)
