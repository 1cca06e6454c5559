"""Class-folder image trees (``root/<class>/<image>``), as ImageNet and the CIFAR-10 JPEG copy use.

Class index = position of the class folder's name in the sorted list of class folders, so the
same tree gives the same labels everywhere (and the CIFAR-10 copy gets CIFAR's own label order,
which is alphabetical).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import CorruptImageError, require_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # compared lower-cased: .JPEG (ImageNet) matches


def decode_image_file(path: str | Path) -> torch.Tensor:
    """Decode one file to RGB ``uint8 [3,H,W]``, whatever its real format.

    PIL sniffs the format from the bytes, so ImageNet's PNG saved as .JPEG decodes, and
    ``convert("RGB")`` turns its CMYK and grayscale JPEGs into RGB. A zero-byte, truncated or
    non-image file raises ``CorruptImageError`` naming it; a missing one ``FileNotFoundError``.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))  # convert() forces the full decode
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        # PIL reports truncation as OSError and a few broken headers as SyntaxError/ValueError.
        raise CorruptImageError(path, str(e) or type(e).__name__) from e
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


class ImageFolderSource:
    """The (path, label) list of a class-folder tree, sorted by class then file name.

    ``root/<class>/*.{jpg,jpeg,png}`` (case-insensitive). ``max_per_class`` keeps the first k files
    of every class (a quick subset whose labels stay the full tree's). Raises FileNotFoundError for
    a missing root and ValueError for a root without class folders or a class folder without images.
    ``env_var`` names the environment variable that error messages suggest (callers' data set).
    """

    def __init__(self, root: str | Path, *, max_per_class: int | None = None, env_var: str | None = None):
        self.root = require_dir(Path(root), "class-folder image tree (root/<class>/<image>)", env_var)
        self.classes = tuple(sorted(p.name for p in self.root.iterdir() if p.is_dir()))
        if not self.classes:
            raise ValueError(f"no class folders in {self.root}: expected root/<class>/<image>.jpg")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        for name in self.classes:
            files = sorted(
                p for p in (self.root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not files:
                raise ValueError(
                    f"class folder {self.root / name} holds no images "
                    f"(expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
                )
            self.samples += [(p, self.class_to_idx[name]) for p in files[:max_per_class]]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)


def load_image_tree(source: ImageFolderSource) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a small tree of same-sized images into ``(uint8 [N,3,H,W], int64 [N])``.

    Meant for the 32x32 CIFAR-10 JPEG copy: one thread decodes 60,000 such files in about 7 s on
    this project's 2-core CPU machine (a thread pool was slower there: the GIL dominates for files
    this small). Raises ValueError naming the first file whose size differs from the first image's.
    """
    if not source.samples:
        raise ValueError(f"no images to decode under {source.root}")
    first = decode_image_file(source.samples[0][0])
    images = torch.empty((len(source), *first.shape), dtype=torch.uint8)
    images[0] = first
    for i, (path, _) in enumerate(source.samples[1:], start=1):
        image = decode_image_file(path)
        if image.shape != first.shape:
            raise ValueError(
                f"{path} is {tuple(image.shape)}, expected {tuple(first.shape)} "
                f"like {source.samples[0][0]}: load_image_tree needs same-sized images"
            )
        images[i] = image
    return images, source.labels


class ImageFileDataset(torch.utils.data.Dataset):
    """A torch Dataset over ``(path, label)`` samples: item i is ``(transform(uint8 [3,H,W]), label)``.

    Decoding happens per item (in DataLoader workers), for trees too big to hold in memory
    (ImageNet). A broken file raises ``CorruptImageError`` with its path; a caller that wants to
    skip such files catches it, counts ``error.path`` and moves on.
    """

    def __init__(self, samples: list[tuple[Path, int]], transform=None):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = decode_image_file(path)
        return (self.transform(image) if self.transform else image), label
