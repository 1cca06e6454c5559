"""The paper's reported errors (shared PAPER.md), looked up by data set, model, shortcut and view.

Errors are percentages. ImageNet single models: 10-crop validation errors (Tables 2 and 3) and
multi-scale fully-convolutional validation errors (Table 4); the ILSVRC 2015 ensemble: top-5 test
error (Table 5). CIFAR-10 numbers are test errors (Table 6). Plain CIFAR nets appear only in a
figure, so they have none.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperResult:
    table: str
    top1_error: float | None
    top5_error: float | None = None


# Table 6, CIFAR-10 test error %, ResNets with option A.
CIFAR10_TABLE6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}

# Tables 2 and 3, ImageNet val 10-crop, (top-1, top-5) error %, keyed (model, shortcut).
IMAGENET_10CROP = {
    ("plain18", None): ("Table 2", 27.94, None),
    ("resnet18", "A"): ("Table 2", 27.88, None),
    ("plain34", None): ("Table 3", 28.54, 10.02),
    ("resnet34", "A"): ("Table 3", 25.03, 7.76),
    ("resnet34", "B"): ("Table 3", 24.52, 7.46),
    ("resnet34", "C"): ("Table 3", 24.19, 7.40),
    ("resnet50", "B"): ("Table 3", 22.85, 6.71),
    ("resnet101", "B"): ("Table 3", 21.75, 6.05),
    ("resnet152", "B"): ("Table 3", 21.43, 5.71),
}


# Table 4, single models, ImageNet val, multi-scale fully-convolutional, (top-1, top-5) error %,
# keyed (model, shortcut); 50/101/152 use B.
IMAGENET_MULTISCALE = {
    ("resnet34", "B"): (21.84, 5.71),
    ("resnet34", "C"): (21.53, 5.60),
    ("resnet50", "B"): (20.74, 5.25),
    ("resnet101", "B"): (19.87, 4.60),
    ("resnet152", "B"): (19.38, 4.49),
}

# Table 5, the ResNet ensemble (six models of different depth, two of them 152-layer), top-5 error %
# on the ImageNet test set (ILSVRC 2015). The paper gives no top-1 error for it.
IMAGENET_ENSEMBLE_TOP5 = 3.57


def paper_result(dataset: str, model: str, shortcut: str | None, view: str = "center") -> PaperResult | None:
    """The paper's number for this single-model cell, or None where the paper reports none.

    ``view`` is how the cell was measured: ``multiscale`` ImageNet cells take Table 4; every other
    view takes the closest table there is (ImageNet: the 10-crop Tables 2/3, CIFAR-10: Table 6's
    single view), so the difference then includes the gap between the views.
    """
    if dataset == "cifar10" and model.startswith("cifar_resnet") and shortcut in (None, "A"):
        error = CIFAR10_TABLE6.get(int(model.removeprefix("cifar_resnet")))
        return PaperResult("Table 6", error) if error is not None else None
    if dataset == "imagenet" and view == "multiscale":
        errors = IMAGENET_MULTISCALE.get((model, shortcut))
        return PaperResult("Table 4", *errors) if errors else None
    if dataset == "imagenet":
        key = (model, None if model.startswith("plain") else shortcut)
        if key in IMAGENET_10CROP:
            table, top1, top5 = IMAGENET_10CROP[key]
            return PaperResult(table, top1, top5)
    return None


def paper_ensemble(dataset: str) -> PaperResult | None:
    """The paper's number for an ensemble of this data set's nets (Table 5), or None."""
    return PaperResult("Table 5", None, IMAGENET_ENSEMBLE_TOP5) if dataset == "imagenet" else None
