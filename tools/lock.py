"""requirements.lock: the exact versions this project is reproduced with, and its check.

pyproject.toml states the ranges the code supports; requirements.lock pins one tested point inside
them (this machine's environment), as a pip constraints file: `make` installs through it with
`pip install -c requirements.lock -e '.[dev]'`. A constraint pins a package only if something
requires it, so pins the running platform or Python never asks for (CUDA wheels on a Mac,
back-ports on a newer Python) are harmless.

    .venv/bin/python tools/lock.py     # rewrite requirements.lock from the installed environment

It writes the dependency closure of the project and its `dev` extra as installed in the running
interpreter's environment, nothing else that may be installed there. `problems()` is what
tests/test_packaging.py checks: the lock pins every direct dependency inside its range.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as pip ships it
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"
EXTRAS = ("dev",)


def read_pyproject(path: Path = PYPROJECT) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def direct_requirements(pyproject: dict, extras=EXTRAS) -> list[Requirement]:
    """The project's requirements and those of `extras`, as written (markers kept)."""
    project = pyproject["project"]
    lines = list(project.get("dependencies", []))
    for extra in extras:
        lines += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(line) for line in lines]


def applies(requirement: Requirement, extras=("",)) -> bool:
    """Whether the running interpreter needs `requirement` when `extras` of its owner are asked for."""
    return requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in extras)


def read_lock(path: Path = LOCK) -> dict[str, Version]:
    """{canonical name: pinned version} from `name==version` lines; anything else is an error."""
    pins = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specs = list(requirement.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or requirement.marker or requirement.extras:
            raise ValueError(f"{path}:{number}: {raw!r} is not a plain name==version pin")
        pins[canonicalize_name(requirement.name)] = Version(specs[0].version)
    return pins


def problems(pyproject: dict, lock: dict[str, Version], python: str | None = None) -> list[str]:
    """Every way the lock and pyproject's ranges disagree, one line each (empty: they agree).

    A direct dependency (project or dev extra) that applies here must be pinned, inside its range;
    requires-python must admit `python` (default: the running interpreter's X.Y.Z)."""
    found = []
    python = python or platform.python_version()
    requires_python = SpecifierSet(pyproject["project"]["requires-python"])
    if not requires_python.contains(python, prereleases=True):
        found.append(f"requires-python {requires_python} does not admit this Python {python}")
    for requirement in direct_requirements(pyproject):
        if not applies(requirement):
            continue
        name = canonicalize_name(requirement.name)
        if name not in lock:
            found.append(f"{requirement.name} ({requirement}) is not pinned in the lock")
        elif not requirement.specifier.contains(lock[name], prereleases=True):
            found.append(f"the lock pins {requirement.name}=={lock[name]}, outside pyproject's {requirement}")
    return found


def installed_closure(requirements: list[Requirement], skip: str) -> dict[str, tuple[str, str]]:
    """{canonical name: (name, installed version)} of everything `requirements` pull in here,
    extras followed, markers evaluated for the running interpreter; `skip` is the project itself."""
    found: dict[str, tuple[str, str]] = {}
    asked: set[tuple[str, str]] = set()
    todo = [(r, ("",)) for r in requirements]
    while todo:
        requirement, owner_extras = todo.pop()
        if not applies(requirement, owner_extras):
            continue
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(skip):  # the project itself (its own extras refer to it)
            continue
        wanted = tuple(sorted(requirement.extras)) or ("",)
        if all((name, e) in asked for e in wanted):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise metadata.PackageNotFoundError(f"{requirement} is required but not installed") from None
        found[name] = (dist.metadata["Name"], dist.version)
        asked.update((name, e) for e in wanted)
        todo += [(Requirement(line), ("",) + wanted) for line in dist.requires or []]
    return found


def main() -> None:
    pyproject = read_pyproject()
    try:
        closure = installed_closure(direct_requirements(pyproject), skip=pyproject["project"]["name"])
    except metadata.PackageNotFoundError as error:
        raise SystemExit(f"error: {error} (run make setup first)") from None
    header = [
        "# The exact versions this project is tested with, as pip constraints (pyproject.toml has the",
        "# supported ranges). Installed by `make setup`: pip install -c requirements.lock -e '.[dev]'.",
        f"# Written by tools/lock.py from Python {platform.python_version()} on {sys.platform}"
        f" {platform.machine()}; rerun it after installing new versions.",
    ]
    pins = [f"{display}=={version}" for _, (display, version) in sorted(closure.items())]
    LOCK.write_text("\n".join(header + pins) + "\n")
    print(f"{LOCK.name}: {len(pins)} pins")


if __name__ == "__main__":
    main()
