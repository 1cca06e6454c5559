"""ImageNet (ILSVRC2012) file lists: ``train/<wnid>/*.JPEG`` and ``val/`` in either of two layouts.

- ``val/<wnid>/*.JPEG``: class folders (what the usual ``valprep.sh`` produces).
- ``val/ILSVRC2012_val_00000001.JPEG ...`` flat, as the tarball ships, plus two text files found in
  the root or in ``ILSVRC2012_devkit_t12/data/``:
  ``ILSVRC2012_validation_ground_truth.txt`` (devkit: line i = ILSVRC2012_ID, 1-based, of the i-th
  val file in sorted order) and ``ILSVRC2012_id_to_wnid.txt`` (line k = the wnid of ILSVRC2012_ID k,
  optionally followed by words). The devkit keeps that map in ``meta.mat``; write it once with
  ``scipy.io.loadmat(meta.mat)["synsets"]`` (entries 1..1000, field WNID) since this package
  reads no MATLAB files.

Class index = position of the wnid in the sorted wnid list (torchvision's convention, so its
checkpoints' outputs line up). Note that ILSVRC2012_IDs are NOT in sorted-wnid order: a sorted wnid
list such as Kaggle's LOC_synset_mapping.txt is refused as an id map.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import require_dir, root_hint
from .folders import IMAGE_EXTENSIONS, ImageFolderSource

ENV_VAR = "IMAGENET_ROOT"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
ID_TO_WNID = "ILSVRC2012_id_to_wnid.txt"
_SPLITS = ("train", "val")


def _find_text(root: Path, name: str) -> Path:
    candidates = (root / name, root / "ILSVRC2012_devkit_t12" / "data" / name)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"ImageNet val is flat (no class folders) so it needs {name}; looked in "
        f"{', '.join(str(p) for p in candidates)}; see workloads/data/imagenet.py for the format"
    )


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _flat_val(root: Path, val_dir: Path) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    id_map_path = _find_text(root, ID_TO_WNID)
    id_to_wnid = [line.split()[0] for line in _read_lines(id_map_path)]
    if len(id_to_wnid) == 1000 and id_to_wnid == sorted(id_to_wnid):
        raise ValueError(
            f"{id_map_path} lists the 1000 wnids in sorted order, like LOC_synset_mapping.txt; the "
            f"ground truth uses the devkit's ILSVRC2012_ID order (meta.mat), which is not sorted"
        )
    gt_path = _find_text(root, GROUND_TRUTH)
    ids = []
    for line_no, line in enumerate(_read_lines(gt_path), start=1):
        if not line.isdigit() or not 1 <= int(line) <= len(id_to_wnid):
            raise ValueError(
                f"{gt_path} line {line_no}: {line!r} is not an ILSVRC2012_ID in "
                f"1..{len(id_to_wnid)} (the ids {id_map_path} maps)"
            )
        ids.append(int(line))
    files = sorted(p for p in val_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if len(files) != len(ids):
        raise ValueError(f"{val_dir} holds {len(files)} images but {gt_path} has {len(ids)} labels")
    classes = tuple(sorted(set(id_to_wnid)))
    class_to_idx = {wnid: i for i, wnid in enumerate(classes)}
    return classes, [(path, class_to_idx[id_to_wnid[i - 1]]) for path, i in zip(files, ids)]


class ImageNetSource:
    """``samples`` (list of (path, label)) and ``classes`` (sorted wnids) of one ImageNet split.

    ``root`` holds ``train/`` and ``val/``; it defaults to ``$IMAGENET_ROOT``. ``split`` is
    "train" or "val". Feed ``samples`` to ``ImageFileDataset`` with a transform from ``augment``.
    """

    def __init__(self, root: str | Path | None = None, split: str = "train"):
        if split not in _SPLITS:
            raise ValueError(f"ImageNet split {split!r}; valid: {list(_SPLITS)}")
        root = root or os.environ.get(ENV_VAR)
        if not root:
            raise FileNotFoundError(
                f"ImageNet: no data root given; {root_hint(ENV_VAR)} (the directory holding train/ and val/)"
            )
        self.root = Path(root)
        split_dir = require_dir(self.root / split, f"ImageNet {split} images", ENV_VAR)
        if any(p.is_dir() for p in split_dir.iterdir()):
            tree = ImageFolderSource(split_dir, env_var=ENV_VAR)
            self.classes, self.samples = tree.classes, tree.samples
        elif split == "val":
            self.classes, self.samples = _flat_val(self.root, split_dir)
        else:
            raise ValueError(f"ImageNet train split {split_dir} has no class folders: expected train/<wnid>/*.JPEG")

    def __len__(self) -> int:
        return len(self.samples)
