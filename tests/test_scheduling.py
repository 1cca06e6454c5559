"""tests/conftest.py's scheduling, run by real pytest-xdist on a small suite of its own: a module
fixture and a SHARED session fixture are each built once across two workers, and a test without
either still runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFTEST = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests.conftest import (  # noqa: F401
    SHARED, pytest_collection_modifyitems, pytest_configure_node, pytest_unconfigure, pytest_xdist_make_scheduler,
)
import pytest

@pytest.fixture(scope="session")
def services(tmp_path_factory):
    with open({{log!r}}, "a") as log:
        log.write("services\\n")
"""

MODULE = """
import pytest

@pytest.fixture(scope="module")
def trained():
    with open({log!r}, "a") as log:
        log.write("trained {name}\\n")

def test_a(trained): pass
def test_b(trained): pass
def test_c(services): pass
def test_d(): pass
def test_e(): pass
"""


def test_fixtures_shared_by_tests_are_built_once_across_two_workers(tmp_path):
    log = tmp_path / "built.log"
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(CONFTEST.format(log=str(log)))
    for name in ("one", "two"):
        (suite / f"test_{name}.py").write_text(MODULE.format(log=str(log), name=name))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup"]
        + ["--no-loadscope-reorder", "-o", "addopts=", str(suite)],
        cwd=suite,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "10 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(log.read_text().splitlines()) == ["services", "trained one", "trained two"]
