"""pyproject.toml's ranges and requirements.lock's pins agree, and the suite runs on the lock."""

import platform

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tools.lock import direct_requirements, installed_closure, problems, read_lock, read_pyproject


def test_lock_pins_every_direct_dependency_inside_pyprojects_range():
    assert problems(read_pyproject(), read_lock()) == []


def test_requires_python_admits_this_interpreter():
    requires_python = SpecifierSet(read_pyproject()["project"]["requires-python"])
    assert requires_python.contains(platform.python_version())
    assert not requires_python.contains("3.9.18")  # Ray 2.60 has no wheel for it


def test_the_check_names_a_pin_outside_its_range_a_missing_pin_and_a_python_left_out():
    pyproject = {
        "project": {
            "requires-python": ">=3.10,<3.15",
            "dependencies": ["torch>=2.11,<3", "mlflow>=3.17,<4", "tomli; python_version < '3'"],
            "optional-dependencies": {"dev": ["pytest>=8"]},
        }
    }
    good = {"torch": Version("2.14.1"), "mlflow": Version("3.17.2"), "pytest": Version("9.2.0")}
    assert problems(pyproject, good, python="3.12.1") == []  # tomli's marker never applies

    bad = {"torch": Version("2.10.0"), "pytest": Version("7.4.0")}
    found = problems(pyproject, bad, python="3.15.0")
    assert len(found) == 4, found
    assert "does not admit this Python 3.15.0" in found[0]
    assert found[1].startswith("the lock pins torch==2.10.0, outside pyproject's torch")
    assert found[2].startswith("mlflow (mlflow") and found[2].endswith("is not pinned in the lock")
    assert found[3].startswith("the lock pins pytest==7.4.0")  # the dev extra counts too


def test_the_installed_environment_is_the_locks():
    """make setup installs through the lock, so every package the project pulls in here is pinned
    there at the installed version (after installing other versions: make lock)."""
    pyproject = read_pyproject()
    lock = read_lock()
    closure = installed_closure(direct_requirements(pyproject), skip=pyproject["project"]["name"])
    # extras followed: tensorboardx from ray[tune], flask-wtf from mlflow[auth] in the dev extra
    assert {"torch", "ray", "mlflow", "tensorboardx", "pytest", "flask-wtf"} <= closure.keys()
    differ = {
        name: (version, str(lock.get(name)))
        for name, (_, version) in closure.items()
        if lock.get(name) != Version(version)
    }
    assert not differ, f"installed vs requirements.lock: {differ}"
