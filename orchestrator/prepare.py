"""python -m orchestrator.prepare: convert a data set into Parquet shards for streaming with Ray Data.

Writes OUT/<split>/part-NNNNN-of-MMMMM.parquet (columns key, image, [shape], label, split) and
OUT/<split>/manifest.json (per-class counts, per-shard rows and sha256, quarantined files and why).
File sources keep each image's bytes as they are on disk ("encoded"); in-memory sources store raw
uint8 pixels and their [C,H,W] shape ("raw"). Same input, same bytes out. Rerunning the same command
keeps every shard whose checksum matches the manifest and writes the rest, so an interrupted job
resumes where it stopped. Corrupt images (zero bytes, truncated, not an image) are skipped and listed;
the job stops once more than --max-bad-fraction of the inputs are corrupt.

ImageNet's train split also gets OUT/train/pixel_mean.npy, the per-pixel mean image the paper
subtracts (float32 [3,224,224] in [0,1] units: the mean over the stored images of their central
224x224 crop after resizing the shorter side to 256), named with its checksum in the manifest.

Examples:
  python -m orchestrator.prepare --dataset cifar10 --data-root ~/data --out shards/cifar10 --shard-size 10000
  python -m orchestrator.prepare --dataset imagenet --data-root /data/imagenet --out s3://bucket/imagenet
  python -m orchestrator.prepare --dataset imagenet --split val --out file:///mnt/nfs/imagenet
  python -m orchestrator.prepare --dataset folder --data-root photos/ --out shards/photos --format raw
"""

from __future__ import annotations

from pathlib import Path

from orchestrator import cli, storage
from workloads.data.shards import IMAGE_FORMATS, ShardEvent, list_shard_datasets, open_source, write_shards


def build_parser():
    p = cli.parser("orchestrator.prepare", __doc__)
    p.add_argument("--dataset", required=True, help=f"one of: {', '.join(list_shard_datasets())}")
    p.add_argument(
        "--data-root",
        help="where the data set lives (else its environment variable; for 'folder' the class-folder tree itself)",
    )
    p.add_argument("--out", required=True, help="output folder, or a pyarrow filesystem URI (file://, s3://, gs://...)")
    p.add_argument("--split", default="train", help="train (default), test, or val (imagenet, folder)")
    p.add_argument(
        "--shard-size",
        type=int,
        default=1000,
        help="inputs per shard (default 1000: ~110 MB of ImageNet JPEGs, 3 MB of CIFAR pixels)",
    )
    p.add_argument(
        "--format",
        dest="image_format",
        choices=IMAGE_FORMATS,
        help="encoded: file bytes as on disk (default for file sources); "
        "raw: uint8 pixels + shape (default and only choice for in-memory sources)",
    )
    p.add_argument(
        "--max-bad-fraction",
        type=float,
        default=0.001,
        help="stop when more than this fraction of the inputs is corrupt (default 0.001 = 0.1%%)",
    )
    p.add_argument("--json", metavar="PATH", type=Path, help="write a machine-readable summary to PATH")
    return p


def shard_line(split: str, event: ShardEvent) -> str:
    """One progress line per shard: rows, MB and images/s (or that it was kept from an earlier run)."""
    head = (
        f"[{split}] shard {event.index + 1}/{event.num_shards} {event.file}: "
        f"{event.rows} rows, {event.bytes / 1e6:.1f} MB"
    )
    if not event.written:
        return f"{head}, kept (checksum matches the manifest)"
    return f"{head}, {event.rows / max(event.seconds, 1e-9):.0f} images/s"


def prepare(
    dataset: str,
    out: str,
    *,
    split: str = "train",
    data_root: str | None = None,
    shard_size: int = 1000,
    image_format: str | None = None,
    max_bad_fraction: float = 0.001,
    echo=print,
) -> dict:
    """List the split, write (or finish writing) its shards; returns ``write_shards``' summary."""
    if dataset not in list_shard_datasets():
        raise ValueError(f"unknown data set {dataset!r}; valid: {list_shard_datasets()}")
    storage.check(out, "--out")
    source = open_source(dataset, split, data_root)
    echo(f"[{split}] {dataset}: {len(source)} inputs, {len(source.classes)} classes -> {out}")
    summary = write_shards(
        source,
        out,
        image_format=image_format,
        shard_size=shard_size,
        max_bad_fraction=max_bad_fraction,
        on_shard=lambda e: echo(shard_line(split, e)),
    )
    echo(
        f"[{split}] done: {summary['rows']} rows in {summary['shards']} shards ({len(summary['written'])} "
        f"written, {len(summary['kept'])} kept), {summary['quarantined']} quarantined; "
        f"manifest {summary['manifest']}"
    )
    if summary["pixel_mean"]:
        echo(f"[{split}] per-pixel mean image of its {summary['rows']} images: {summary['pixel_mean']}")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_writable(args.json)
    summary = prepare(
        args.dataset,
        args.out,
        split=args.split,
        data_root=args.data_root,
        shard_size=args.shard_size,
        image_format=args.image_format,
        max_bad_fraction=args.max_bad_fraction,
    )
    if args.json:
        cli.write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    cli.run(main)
