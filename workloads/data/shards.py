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
- ImageNet's train split: ``OUT/train/pixel_mean.npy``, the per-pixel mean image (``mean_view``),
  named in the manifest with its sha256 once the last shard is written; until then each shard's
  sum waits in ``OUT/train/.pixel-sums/<shard sha256>.npy`` so a resumed job does not decode kept
  shards again.

Reading order (``epoch_windows``, ``rank_windows``, ``window_table``): a new order of a split's rows
every epoch, a function of (seed, epoch) alone, which ranks split into equal contiguous parts.
"""

from __future__ import annotations

import hashlib
import io
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
PIXEL_MEAN = "pixel_mean.npy"  # beside the manifest: float32 [3,224,224], the train split's mean image
PIXEL_SUMS = ".pixel-sums"  # per-shard sums while a split is being written (hidden: no reader lists it)
MEAN_RESIZE, MEAN_CROP = 256, 224  # pixels: the mean image averages each image's center view
MEAN_DEFINITION = (
    "mean over the split's stored images of the central 224x224 crop after resizing the shorter side "
    "to 256 (antialiased bilinear), RGB in [0,1] units"
)


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
        data, shape, _ = self.row_and_pixels(i, image_format)
        return data, shape

    def row_and_pixels(self, i: int, image_format: str):
        """``row(i)`` and the input's decoded pixels (uint8 [C,H,W] tensor, or a numpy array for
        tensor sources): every file is decoded once anyway, to refuse corrupt ones."""
        if not self.is_files:
            return self.images[i].tobytes(), list(self.images[i].shape), self.images[i]
        data = self.paths[i].read_bytes()
        from .decode import decode_image_bytes  # torchvision: loaded when an image is decoded, not for --help

        pixels = decode_image_bytes(data, str(self.paths[i]))
        if image_format == "encoded":
            return data, None, pixels
        return pixels.numpy().tobytes(), list(pixels.shape), pixels


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


def mean_view(pixels) -> np.ndarray:
    """One image (uint8 [3,H,W], tensor or array) as the mean image averages it: float64
    [3,224,224] in [0,1] units, the center view's pixels (shorter side 256, central 224x224).

    The paper subtracts "the per-pixel mean" from its 224x224 crops. The crops are random (shorter
    side 256-480, any position), so their exact expected image is a blur; the center view at 256
    is the single-crop evaluation's own input and, like AlexNet's mean of its 256x256 images, keeps
    the mean's centre-weighted structure at the resolution the nets see.
    """
    import torch

    from .views import center_view  # torchvision: loaded when an image is averaged, not for --help

    image = torch.as_tensor(np.asarray(pixels))
    return center_view(image, torch.zeros(3), resize=MEAN_RESIZE, crop=MEAN_CROP)[0].double().numpy()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)  # a fixed header, no timestamps: deterministic bytes
    return buffer.getvalue()


def _load_npy(fs: pafs.FileSystem, path: str) -> tuple[np.ndarray, str]:
    """``(array, sha256 of the file)``."""
    with fs.open_input_stream(path) as f:
        data = f.read()
    return np.load(io.BytesIO(data), allow_pickle=False), hashlib.sha256(data).hexdigest()


def read_pixel_mean(fs: pafs.FileSystem, folder: str, manifest: dict | None = None) -> np.ndarray | None:
    """The per-pixel mean image ``prepare`` stored for the split in ``folder`` (float32 [3,224,224],
    [0,1] units), or None when its manifest names none (other data sets and splits, or shards
    written before the mean existed). A file whose checksum is not the manifest's is a ValueError."""
    manifest = manifest if manifest is not None else read_manifest(fs, folder)
    entry = (manifest or {}).get("pixel_mean")
    if not entry:
        return None
    path = posixpath.join(folder, entry["file"])
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{path}: named by the manifest but missing; rerun the prepare command that wrote it")
    mean, sha = _load_npy(fs, path)
    if sha != entry["sha256"]:
        raise ValueError(f"{path}: checksum differs from the manifest's; rerun the prepare command that wrote it")
    return mean.astype(np.float32)


def _shard_pixel_sum(fs: pafs.FileSystem, folder: str, entry: dict) -> np.ndarray:
    """A kept shard's sum of ``mean_view``: saved while it was written (named by the shard's sha256),
    or, when that file is gone (shards from before the mean existed), summed again from the shard."""
    path = _pixel_sum_path(folder, entry["sha256"])
    if fs.get_file_info(path).type == pafs.FileType.File:
        return _load_npy(fs, path)[0]
    from .decode import decode_images

    total = np.zeros((3, MEAN_CROP, MEAN_CROP))
    rows = pq.read_table(posixpath.join(folder, entry["file"]), filesystem=fs).to_pydict()
    for pixels in decode_images(rows):
        total += mean_view(pixels)
    _write_pixel_sum(fs, folder, entry["sha256"], total)
    return total


def _pixel_sum_path(folder: str, shard_sha256: str) -> str:
    # Named by the shard's checksum: a sum can only be taken for the shard content it was made of.
    return posixpath.join(folder, PIXEL_SUMS, f"{shard_sha256}.npy")


def _write_pixel_sum(fs: pafs.FileSystem, folder: str, shard_sha256: str, total: np.ndarray) -> None:
    fs.create_dir(posixpath.join(folder, PIXEL_SUMS), recursive=True)
    _write_atomic(fs, _pixel_sum_path(folder, shard_sha256), _npy_bytes(total))


def shard_table(
    source: ShardSource, indices: np.ndarray, image_format: str, pixel_sum: np.ndarray | None = None
) -> tuple[pa.Table, list[dict]]:
    """The rows of ``indices`` as a table, and the quarantined inputs among them (key, label, reason).
    ``pixel_sum``: a float64 [3,224,224] array to which every stored image's ``mean_view`` is added."""
    columns = {name: [] for name in shard_schema(image_format).names}
    quarantined = []
    for i in indices.tolist():
        try:
            data, shape, pixels = source.row_and_pixels(i, image_format)
        except CorruptImageError as e:
            reason = str(e).split(": ", 1)[-1]
            quarantined.append({"key": source.keys[i], "label": int(source.labels[i]), "reason": reason})
            continue
        if pixel_sum is not None:
            pixel_sum += mean_view(pixels)
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
    pixel_mean: bool | None = None,
) -> dict:
    """Write ``source`` as Parquet shards under ``out/<split>/``; returns a summary dict.

    ``image_format``: "encoded" (default for file sources) or "raw" (default, and the only choice,
    for tensor sources). Corrupt files are skipped and listed in the manifest; once more than
    ``max_bad_fraction`` of all inputs are corrupt a ValueError stops the job (shards already written
    stay valid; the one being built is not written). ``on_shard`` is called after each shard.
    ``pixel_mean`` (default: on for ImageNet's train split only): also write ``pixel_mean.npy``, the
    mean of every stored image's ``mean_view``, once the last shard is written (each shard's sum is
    kept under ``.pixel-sums/`` until then, so a resumed job does not decode kept shards again).
    Summary: out, manifest (URI-less path), rows, shards, written and kept shard indices,
    quarantined count, pixel_mean (its path or None), seconds.
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
    if pixel_mean is None:
        pixel_mean = (source.dataset, source.split) == ("imagenet", "train")
    # A mean already finished for this plan stays right whatever shards get rewritten: a shard's
    # content is a function of the plan's inputs, so its sum is too.
    finished_mean = None
    if pixel_mean and old is not None and old.get("pixel_mean"):
        try:
            read_pixel_mean(fs, folder, old)
            finished_mean = old["pixel_mean"]
        except (FileNotFoundError, ValueError):
            finished_mean = None
    pixel_total = np.zeros((3, MEAN_CROP, MEAN_CROP)) if pixel_mean and finished_mean is None else None

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
            if pixel_total is not None:
                pixel_total += _shard_pixel_sum(fs, folder, entry)
        else:
            pixel_sum = None if pixel_total is None else np.zeros_like(pixel_total)
            indices = order[index * shard_size : (index + 1) * shard_size]
            table, quarantined = shard_table(source, indices, image_format, pixel_sum)
            bad = sum(len(e["quarantined"]) for e in entries.values()) + len(quarantined)
            if bad > bad_budget:
                first = quarantined[0]
                raise ValueError(
                    f"{bad} of {len(source)} inputs are corrupt so far, more than --max-bad-fraction "
                    f"{max_bad_fraction} allows ({bad_budget}); e.g. {first['key']}: {first['reason']}"
                )
            data = parquet_bytes(table)
            _write_atomic(fs, path, data)
            if pixel_sum is not None:
                _write_pixel_sum(fs, folder, hashlib.sha256(data).hexdigest(), pixel_sum)
                pixel_total += pixel_sum
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
        complete = len(entries) == num_shards
        mean_entry = None
        if complete and pixel_mean:
            # The mean file first, then the manifest naming it with its checksum: a reader never
            # takes a mean the manifest does not vouch for, and a crash between the two leaves the
            # last shard unrecorded, so the rerun redoes the mean too.
            mean_entry = finished_mean or _write_pixel_mean(fs, folder, pixel_total, entries)
        _write_atomic(
            fs,
            posixpath.join(folder, MANIFEST),
            _manifest_bytes(_manifest(source, plan, entries, complete=complete, pixel_mean=mean_entry)),
        )
        if (
            mean_entry is not None
            and fs.get_file_info(posixpath.join(folder, PIXEL_SUMS)).type == pafs.FileType.Directory
        ):
            fs.delete_dir(posixpath.join(folder, PIXEL_SUMS))  # the sums are in the mean now
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
        "pixel_mean": posixpath.join(folder, PIXEL_MEAN) if pixel_mean else None,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _write_pixel_mean(fs: pafs.FileSystem, folder: str, total: np.ndarray, entries: dict) -> dict:
    """Write the split's mean image; its manifest entry."""
    images = sum(e["rows"] for e in entries.values())
    data = _npy_bytes((total / max(1, images)).astype(np.float32))
    _write_atomic(fs, posixpath.join(folder, PIXEL_MEAN), data)
    return {
        "file": PIXEL_MEAN,
        "shape": [3, MEAN_CROP, MEAN_CROP],
        "images": images,
        "sha256": hashlib.sha256(data).hexdigest(),
        "definition": MEAN_DEFINITION,
    }


def _manifest(
    source: ShardSource, plan: dict, entries: dict, *, complete: bool, pixel_mean: dict | None = None
) -> dict:
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
        # The train split's per-pixel mean image (file, shape, images, sha256, definition), once complete.
        "pixel_mean": pixel_mean,
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


# --- Reading order: one new, seeded order of a split's rows every epoch -------------------------

WINDOW_FILES = 2  # shard files whose rows one shuffle mixes: ~220 MB of ImageNet JPEGs held at once


@dataclass(frozen=True)
class Window:
    """A group of shard files whose rows one seeded permutation mixes, and the part of that mixed
    sequence one rank takes (``start:stop``, positions in the permuted rows)."""

    files: tuple[str, ...]  # shard file names, rows concatenated in this order before permuting
    rows: int  # rows in those files together (the manifest's per-shard counts)
    seed: tuple[int, int, int]  # (run seed, epoch, window index): seeds the window's permutation
    start: int
    stop: int

    def permutation(self) -> np.ndarray:
        """The order of the window's concatenated rows in the epoch's sequence (int64 [rows])."""
        return np.random.default_rng(np.random.SeedSequence(list(self.seed))).permutation(self.rows)


def epoch_windows(manifest: dict, seed: int, epoch: int, window_files: int = WINDOW_FILES) -> list[Window]:
    """Epoch ``epoch``'s order of every row of a split, as windows covering it whole (start=0, stop=rows).

    The epoch's sequence: the shard files permuted by ``(seed, epoch)``, cut into consecutive groups
    of ``window_files`` files, and each group's rows permuted by ``(seed, epoch, group index)``. A
    function of (seed, epoch) and the manifest only: a resumed run that restores its epoch number
    reads the order it would have read without stopping, and the rank count plays no part.
    """
    if window_files < 1:
        raise ValueError(f"window_files {window_files}: must be >= 1")
    shards = manifest["shards"]
    order = np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(len(shards))
    windows = []
    for k, first in enumerate(range(0, len(order), window_files)):
        group = [shards[i] for i in order[first : first + window_files].tolist()]
        rows = sum(entry["rows"] for entry in group)
        windows.append(Window(tuple(entry["file"] for entry in group), rows, (seed, epoch, k), 0, rows))
    return windows


def rank_windows(
    manifest: dict, seed: int, epoch: int, rank: int = 0, world_size: int = 1, window_files: int = WINDOW_FILES
) -> list[Window]:
    """The part of epoch ``epoch``'s sequence (``epoch_windows``) rank ``rank`` of ``world_size`` reads.

    Rank r takes positions ``[r*n, (r+1)*n)`` of the sequence, n = rows // world_size: every rank
    the same count (data-parallel steps stay in lockstep), the ranks' parts concatenated in rank
    order are the same sequence on any rank count, and the last ``rows % world_size`` rows (fewer
    than one per rank, other rows each epoch) sit out. Contiguous parts, not every world_size-th
    row: a rank reads only the windows its part overlaps (a window at a boundary is read by both
    ranks beside it), so the ranks together read each file about once an epoch.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world size {world_size}: must be in [0, {world_size})")
    windows = epoch_windows(manifest, seed, epoch, window_files)
    per_rank = sum(w.rows for w in windows) // world_size
    lo, hi = rank * per_rank, (rank + 1) * per_rank
    mine, start = [], 0
    for window in windows:
        a, b = max(lo, start), min(hi, start + window.rows)
        if a < b:
            mine.append(Window(window.files, window.rows, window.seed, a - start, b - start))
        start += window.rows
    return mine


def window_table(fs: pafs.FileSystem, folder: str, window: Window, columns: list[str] | None = None) -> pa.Table:
    """The rows of ``window``'s part, in the epoch's order: its files read whole, then permuted and cut."""
    tables = [pq.read_table(posixpath.join(folder, name), columns=columns, filesystem=fs) for name in window.files]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if table.num_rows != window.rows:
        raise ValueError(
            f"{folder}: shards {list(window.files)} hold {table.num_rows} rows, their manifest says "
            f"{window.rows}; rerun the prepare command that wrote them"
        )
    return table.take(pa.array(window.permutation()[window.start : window.stop]))
