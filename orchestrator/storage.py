"""Where runs keep their checkpoints (``--storage-path``) and data sets their shards (``--data-root``,
``prepare --out``): a local folder, or an object store URI (``s3://bucket/prefix``, ``gs://...``)
that pyarrow opens, as Ray Train and Ray Data do.

An object store is reached with the standard environment of its SDK (for S3: ``AWS_ENDPOINT_URL``
for another endpoint than AWS's, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``).
``check`` asks it for the URI's bucket before Ray starts, so a wrong endpoint, credentials or
bucket is one line naming the flag, not a Ray Train run failing minutes later.
"""

from __future__ import annotations

import os


def is_remote(path: str | None) -> bool:
    """Whether ``path`` is a URI (``s3://...``, ``file://...``) rather than a local folder."""
    return path is not None and "://" in path


def joined(base: str, name: str) -> str:
    """``base``/``name`` for a folder (made absolute) or a URI (kept as given)."""
    from pathlib import Path

    return f"{base.rstrip('/')}/{name}" if is_remote(base) else str(Path(base).resolve() / name)


def check(uri: str | None, flag: str) -> None:
    """Refuse an object store URI whose store does not answer or whose bucket does not exist
    (``ValueError`` naming ``flag``); folders and ``file://`` URIs are left to their commands."""
    if not is_remote(uri):
        return
    import pyarrow
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowInvalid, ValueError) as error:
        raise ValueError(f"{flag} {uri}: not a storage URI pyarrow can open ({_first_line(error)})") from None
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        return
    bucket = path.split("/", 1)[0]
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    where = f" at {endpoint} (AWS_ENDPOINT_URL)" if endpoint and uri.startswith("s3://") else ""
    try:
        info = fs.get_file_info(bucket)
    except OSError as error:
        raise ValueError(f"{flag} {uri}: cannot reach the object store{where}: {_first_line(error)}") from None
    if info.type == pyarrow.fs.FileType.NotFound:
        raise ValueError(f"{flag} {uri}: bucket {bucket!r} does not exist{where}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
