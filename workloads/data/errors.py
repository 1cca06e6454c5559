"""Errors of the data layer, and the one hint every "where is the data" message ends with."""

from __future__ import annotations

from pathlib import Path


class CorruptImageError(ValueError):
    """An image file that exists but cannot be decoded (zero bytes, truncated, not an image).

    ImageNet holds a few such files in some copies; callers that stream many files catch this,
    count the file and skip it. ``path`` is the offending file.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        super().__init__(f"cannot decode image {self.path}: {reason}")


def root_hint(env_var: str | None) -> str:
    """How a user points us at a data set: the CLI flag, and the environment variable if it has one."""
    hint = "pass --data-root DIR (root= in Python)"
    return f"{hint} or set the environment variable {env_var}=DIR" if env_var else hint


def require_dir(path: Path, what: str, env_var: str | None) -> Path:
    """Return ``path`` if it is a directory, else raise FileNotFoundError saying what belongs there."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: expected a directory at {path}, found none; {root_hint(env_var)}")
    return path


def require_file(path: Path, what: str, env_var: str) -> Path:
    """Return ``path`` if it is a file, else raise FileNotFoundError saying what belongs there."""
    if not path.is_file():
        raise FileNotFoundError(f"{what}: expected a file at {path}, found none; {root_hint(env_var)}")
    return path
