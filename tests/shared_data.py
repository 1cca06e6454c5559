"""Files of the shared data folder beside the checkout (`../shared/data`): CI has it, a bare clone
may not. A test that needs one skips with one line naming it, unless CI is set: there it fails."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def required_by_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def shared_data_file(name: str, folder: Path = SHARED_DATA) -> Path:
    """`folder/name`; when it is missing, skip the calling test (or fixture), or fail it under CI."""
    path = folder / name
    if path.is_file():
        return path
    missing = f"{path} is missing (the shared data folder beside the checkout)"
    if required_by_ci():
        pytest.fail(f"{missing}; CI is set, so the test needs it", pytrace=False)
    pytest.skip(f"{missing}; with CI set this fails")
