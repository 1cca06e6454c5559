"""Parquet shards of any source, written deterministically and resumably with pyarrow.

Layout under an output folder or URI (anything ``pyarrow.fs.FileSystem.from_uri`` opens)::

    OUT/<split>/part-00000-of-00013.parquet ...   columns: key, image, [shape], label, split
    OUT/<split>/manifest.json                     plan, classes, counts, per-shard rows + sha256,
                                                  quarantined files with reasons

- ``image``: the file's bytes as they are on disk (``encoded``, file sources: JPEG/PNG), or raw
  uint8 pixels in C,H,W order (``raw``) with ``shape`` = [C,H,W]. ``key``: the file's path relative
  to the data root, or ``<split>/<index>`` for tensor sources.
- Order: the source's own order (class, then file name), permuted with a fixed seed for the train
  split so every shard mixes classes. Input i of that order goes to shard i // shard_size, so a
  shard's content never depends on other shards; a corrupt file leaves its shard one row short.
- Deterministic: no timestamps, fixed row-group size rule, fixed compression; the same input and
  pyarrow version give byte-identical files (and manifest).
- Resumable: each shard is written to a hidden temp name and renamed; the manifest is rewritten
  after every shard. A rerun keeps a shard whose file matches the manifest's sha256 and rewrites
  the rest. A manifest of another plan (options or inputs changed) is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import CorruptImageError, root_hint
from .folders import ImageFolderSource
from .imagenet import ImageNetSource
from .registry import CIFAR10_JPEG_ENV_VAR, load_dataset

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TENSOR_DATASETS = ("cifar10", "fashion-mnist", "synthetic")  # in memory: raw pixels
FILE_DATASETS = ("cifar10-jpeg", "folder", "imagenet")  # one file per image: encoded bytes
IMAGE_FORMATS = ("encoded", "raw")
ROW_GROUP_ROWS = 1000  # at most this many rows per row group: readers stream one group at a time
ROW_GROUP_BYTES = 64 << 20  # ...and about this many image bytes (64 MiB), for large images
TRAIN_SHUFFLE_SEED = 0


def list_shard_datasets() -> list[str]:
    """Names ``open_source`` (and ``python -m orchestrator.prepare --dataset``) accepts."""
    return sorted(TENSOR_DATASETS + FILE_DATASETS)


@dataclass(frozen=True)
class ShardSource:
    """One split of a data set, listed but not yet read: either files or an in-memory uint8 array."""

    dataset: str
    split: str
    classes: tuple[str, ...]
    keys: tuple[str, ...]
    labels: np.ndarray  # int64 [N]
    paths: tuple[Path, ...] | None = None  # file sources
    images: np.ndarray | None = None  # tensor sources: uint8 [N,C,H,W]

    @property
    def is_files(self) -> bool:
        return self.paths is not None

    def __len__(self) -> int:
        return len(self.keys)

    def row(self, i: int, image_format: str) -> tuple[bytes, list[int] | None]:
        """``(image bytes, [C,H,W] or None)`` of input i; a file that does not decode raises
        ``CorruptImageError`` (checked for both formats: a shard holds only decodable images)."""
        if not self.is_files:
            return self.images[i].tobytes(), list(self.images[i].shape)
        data = self.paths[i].read_bytes()
        from .decode import decode_image_bytes  # torchvision: loaded when an image is decoded, not for --help

        pixels = decode_image_bytes(data, str(self.paths[i]))
        if image_format == "encoded":
            return data, None
        return pixels.numpy().tobytes(), list(pixels.shape)


def _files_source(dataset: str, split: str, tree, base: Path) -> ShardSource:
    paths = tuple(p for p, _ in tree.samples)
    return ShardSource(
        dataset,
        split,
        tuple(tree.classes),
        tuple(p.relative_to(base).as_posix() for p in paths),
        np.array([label for _, label in tree.samples], dtype=np.int64),
        paths=paths,
    )


def open_source(dataset: str, split: str = "train", root: str | Path | None = None) -> ShardSource:
    """List one split of ``dataset`` (see ``list_shard_datasets``).

    - tensor sources (cifar10, fashion-mnist, synthetic): loaded with ``load_dataset``.
    - cifar10-jpeg: ``root/<split>/<class>/*.jpg``, root or ``$CIFAR10_JPEG_ROOT``; train | test.
    - imagenet: ``ImageNetSource(root, split)``, root or ``$IMAGENET_ROOT``; train | val.
    - folder: any class-folder tree ``root/<class>/*``; ``split`` only names it (train | test | val).
    """
    if dataset in TENSOR_DATASETS:
        data = load_dataset(dataset, split, root=root)
        images = data.images.numpy()
        return ShardSource(
            dataset,
            split,
            data.classes,
            tuple(f"{split}/{i:08d}" for i in range(len(images))),
            data.labels.numpy().astype(np.int64),
            images=images,
        )
    if dataset == "imagenet":
        source = ImageNetSource(root, split)
        return _files_source(dataset, split, source, source.root)
    if dataset == "cifar10-jpeg":
        if split not in ("train", "test"):
            raise ValueError(f"cifar10-jpeg split {split!r}; valid: ['test', 'train']")
        root = root or os.environ.get(CIFAR10_JPEG_ENV_VAR)
        if not root:
            raise FileNotFoundError(f"cifar10-jpeg: no data root given; {root_hint(CIFAR10_JPEG_ENV_VAR)}")
        tree = ImageFolderSource(Path(root) / split, env_var=CIFAR10_JPEG_ENV_VAR)
        return _files_source(dataset, split, tree, Path(root))
    if dataset == "folder":
        if split not in ("train", "test", "val"):
            raise ValueError(f"folder split {split!r}; valid: ['test', 'train', 'val']")
        if not root:
            raise FileNotFoundError("folder: no data root given; pass --data-root DIR (root/<class>/<image>)")
        tree = ImageFolderSource(root)
        return _files_source(dataset, split, tree, tree.root)
    raise ValueError(f"unknown data set {dataset!r}; valid: {list_shard_datasets()}")


def shard_schema(image_format: str) -> pa.Schema:
    """The shard columns; ``shape`` only for raw pixels."""
    fields = [pa.field("key", pa.string()), pa.field("image", pa.binary())]
    if image_format == "raw":
        fields.append(pa.field("shape", pa.list_(pa.int32(), 3)))
    return pa.schema(fields + [pa.field("label", pa.int64()), pa.field("split", pa.string())])


def resolve_output(out: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` of a local folder (relative is fine) or a URI (file://, s3://, gs://...)."""
    uri = out if "://" in out else str(Path(out).resolve())
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
        raise ValueError(f"output {out!r} is not a folder or a filesystem URI pyarrow can open: {e}") from None


def sha256_of(fs: pafs.FileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    # A hidden temp name (readers and globs skip dot files) renamed over the target: a reader or a
    # rerun never sees half a file. On object stores the move is a copy + delete, still whole-file.
    tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.tmp")
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, path)
    except BaseException:
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_file(tmp)
        raise


def read_manifest(fs: pafs.FileSystem, folder: str) -> dict | None:
    """The manifest in ``folder``, or None if there is none."""
    path = posixpath.join(folder, MANIFEST)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


def _manifest_bytes(manifest: dict) -> bytes:
    return (
        json.dumps(manifest, indent=1)  # insertion order: deterministic, classes in label order
        + "\n"
    ).encode()


def _plan(source: ShardSource, image_format: str, shard_size: int) -> dict:
    # Identifies what the shards hold: options, and every input's key and label in source order.
    inputs = hashlib.sha256()
    for key, label in zip(source.keys, source.labels.tolist()):
        inputs.update(f"{key}\t{label}\n".encode())
    return {
        "format_version": FORMAT_VERSION,
        "dataset": source.dataset,
        "split": source.split,
        "image_format": image_format,
        "shard_size": shard_size,
        "shuffle_seed": TRAIN_SHUFFLE_SEED if source.split == "train" else None,
        "num_inputs": len(source),
        "inputs_sha256": inputs.hexdigest(),
        "row_group_rows": ROW_GROUP_ROWS,
        "row_group_bytes": ROW_GROUP_BYTES,
        "pyarrow": pa.__version__,
    }


def shard_table(source: ShardSource, indices: np.ndarray, image_format: str) -> tuple[pa.Table, list[dict]]:
    """The rows of ``indices`` as a table, and the quarantined inputs among them (key, label, reason)."""
    columns = {name: [] for name in shard_schema(image_format).names}
    quarantined = []
    for i in indices.tolist():
        try:
            data, shape = source.row(i, image_format)
        except CorruptImageError as e:
            reason = str(e).split(": ", 1)[-1]
            quarantined.append({"key": source.keys[i], "label": int(source.labels[i]), "reason": reason})
            continue
        columns["key"].append(source.keys[i])
        columns["image"].append(data)
        if image_format == "raw":
            columns["shape"].append(shape)
        columns["label"].append(int(source.labels[i]))
        columns["split"].append(source.split)
    return pa.table(columns, schema=shard_schema(image_format)), quarantined


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as Parquet bytes: row groups of <= ROW_GROUP_ROWS rows and ~ROW_GROUP_BYTES image bytes."""
    mean_row = table.column("image").nbytes / max(1, table.num_rows)
    rows = max(1, min(ROW_GROUP_ROWS, int(ROW_GROUP_BYTES // max(1.0, mean_row))))
    sink = pa.BufferOutputStream()
    # zstd: raw pixels shrink; JPEG bytes do not, but zstd gives up on them quickly. No statistics
    # on the image bytes (min/max of blobs are useless and large).
    pq.write_table(table, sink, row_group_size=rows, compression="zstd", write_statistics=["key", "label", "split"])
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True)
class ShardEvent:
    """What ``write_shards`` reports after each shard: written or kept from an earlier run."""

    index: int
    num_shards: int
    file: str
    rows: int
    bytes: int
    seconds: float
    written: bool


def write_shards(
    source: ShardSource,
    out: str,
    *,
    image_format: str | None = None,
    shard_size: int = 1000,
    max_bad_fraction: float = 0.001,
    on_shard: Callable[[ShardEvent], None] | None = None,
) -> dict:
    """Write ``source`` as Parquet shards under ``out/<split>/``; returns a summary dict.

    ``image_format``: "encoded" (default for file sources) or "raw" (default, and the only choice,
    for tensor sources). Corrupt files are skipped and listed in the manifest; once more than
    ``max_bad_fraction`` of all inputs are corrupt a ValueError stops the job (shards already written
    stay valid; the one being built is not written). ``on_shard`` is called after each shard.
    Summary: out, manifest (URI-less path), rows, shards, written and kept shard indices,
    quarantined count, seconds.
    """
    image_format = image_format or ("encoded" if source.is_files else "raw")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format {image_format!r}; valid: {list(IMAGE_FORMATS)}")
    if image_format == "encoded" and not source.is_files:
        raise ValueError(
            f"{source.dataset} is held in memory as pixels, so it has no encoded bytes; valid format for it: 'raw'"
        )
    if shard_size < 1:
        raise ValueError(f"shard size {shard_size}: must be >= 1 rows")
    if not 0 <= max_bad_fraction < 1:
        raise ValueError(f"max bad fraction {max_bad_fraction}: must be in [0, 1)")
    if not len(source):
        raise ValueError(f"{source.dataset} {source.split} holds no images")
    started = time.perf_counter()
    fs, base = resolve_output(out)
    folder = posixpath.join(base, source.split)
    fs.create_dir(folder, recursive=True)

    plan = _plan(source, image_format, shard_size)
    old = read_manifest(fs, folder)
    if old is not None and old.get("plan") != plan:
        changed = sorted(k for k in plan if old.get("plan", {}).get(k) != plan[k])
        raise ValueError(
            f"{posixpath.join(folder, MANIFEST)} was written for other inputs or options "
            f"(differs in {changed}); pick another --out or delete that folder"
        )
    done = {entry["index"]: entry for entry in (old or {}).get("shards", [])}

    order = np.arange(len(source))
    if plan["shuffle_seed"] is not None:
        order = np.random.default_rng(plan["shuffle_seed"]).permutation(len(source))
    num_shards = -(-len(source) // shard_size)
    bad_budget = int(max_bad_fraction * len(source))  # the most corrupt files the job tolerates
    entries, written, kept = {}, [], []
    for index in range(num_shards):
        name = f"part-{index:05d}-of-{num_shards:05d}.parquet"
        path = posixpath.join(folder, name)
        t0 = time.perf_counter()
        entry = done.get(index)
        if (
            entry is not None
            and fs.get_file_info(path).type == pafs.FileType.File
            and sha256_of(fs, path) == entry["sha256"]
        ):
            kept.append(index)
        else:
            table, quarantined = shard_table(source, order[index * shard_size : (index + 1) * shard_size], image_format)
            bad = sum(len(e["quarantined"]) for e in entries.values()) + len(quarantined)
            if bad > bad_budget:
                first = quarantined[0]
                raise ValueError(
                    f"{bad} of {len(source)} inputs are corrupt so far, more than --max-bad-fraction "
                    f"{max_bad_fraction} allows ({bad_budget}); e.g. {first['key']}: {first['reason']}"
                )
            data = parquet_bytes(table)
            _write_atomic(fs, path, data)
            entry = {
                "index": index,
                "file": name,
                "rows": table.num_rows,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "quarantined": quarantined,
            }
            written.append(index)
        entries[index] = entry
        _write_atomic(
            fs,
            posixpath.join(folder, MANIFEST),
            _manifest_bytes(_manifest(source, plan, entries, complete=len(entries) == num_shards)),
        )
        if on_shard:
            on_shard(
                ShardEvent(
                    index, num_shards, name, entry["rows"], entry["bytes"], time.perf_counter() - t0, index in written
                )
            )
    quarantined = sum(len(e["quarantined"]) for e in entries.values())
    return {
        "out": out,
        "folder": folder,
        "manifest": posixpath.join(folder, MANIFEST),
        "rows": sum(e["rows"] for e in entries.values()),
        "shards": num_shards,
        "written": written,
        "kept": kept,
        "quarantined": quarantined,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _manifest(source: ShardSource, plan: dict, entries: dict, *, complete: bool) -> dict:
    quarantined = [q for index in sorted(entries) for q in entries[index]["quarantined"]]
    counts = np.bincount(source.labels, minlength=len(source.classes))
    if complete:
        counts -= np.bincount([q["label"] for q in quarantined], minlength=len(source.classes)).astype(counts.dtype)
    return {
        "plan": plan,
        "complete": complete,
        "classes": list(source.classes),
        "rows": sum(e["rows"] for e in entries.values()),
        # Per class, images in the finished shards (only final once complete).
        "class_counts": dict(zip(source.classes, counts.tolist())) if complete else None,
        "quarantined": quarantined,
        "shards": [entries[index] for index in sorted(entries)],
    }


def shard_files(fs: pafs.FileSystem, folder: str) -> tuple[dict, list[str]]:
    """``(manifest, shard paths)`` of a finished split folder; ValueError if it is not finished."""
    manifest = read_manifest(fs, folder)
    if manifest is None:
        raise FileNotFoundError(f"no {MANIFEST} in {folder}: write shards there with python -m orchestrator.prepare")
    if not manifest["complete"]:
        raise ValueError(
            f"shards in {folder} are incomplete ({len(manifest['shards'])} of "
            f"{-(-manifest['plan']['num_inputs'] // manifest['plan']['shard_size'])} written); "
            f"rerun the same prepare command to finish them"
        )
    return manifest, [posixpath.join(folder, e["file"]) for e in manifest["shards"]]
