"""One parametrized ResNet family: the paper's ImageNet nets (Table 1) and CIFAR nets (section 4.2).

Every net is residual or plain (the same net with the shortcuts removed), with shortcut option
A (zero-padded identity), B (projection where dimensions change) or C (projection everywhere),
and bottleneck stride placement ``paper`` (v1, stride on the first 1x1) or ``torchvision``
(v1.5, stride on the 3x3). Module names follow torchvision's ``resnet.py`` (conv1, bn1, layerN,
downsample.0/1, fc) so that torchvision's checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SHORTCUTS = ("A", "B", "C")
STRIDE_PLACEMENTS = ("paper", "torchvision")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every conv is followed by BatchNorm, whose shift makes a bias redundant.
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity, subsampled by ``stride`` and zero-padded to ``out_planes`` channels.

    Parameter-free, so a residual net with option A has exactly the parameters of its plain twin.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"option A cannot reduce channels ({in_planes} -> {out_planes})")
        self.stride = stride
        self.extra_channels = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x


def make_shortcut(shortcut: str, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """The shortcut module of one block; ``None`` means plain identity (no module, no parameters)."""
    changes_shape = stride != 1 or in_planes != out_planes
    if shortcut == "C" or (shortcut == "B" and changes_shape):
        return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))
    if shortcut == "A" and changes_shape:
        return ZeroPadShortcut(in_planes, out_planes, stride)
    return None


class Block(nn.Module):
    """relu(residual_branch(x) + shortcut(x)); a plain block drops the shortcut term."""

    residual: bool
    downsample: nn.Module | None

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual_branch(x)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class BasicBlock(Block):
    """Two 3x3 convs (ResNet-18/34 and all CIFAR nets)."""

    expansion = 1

    def __init__(
        self, in_planes: int, planes: int, stride: int, *, residual: bool, shortcut: str, stride_placement: str
    ):
        super().__init__()
        del stride_placement  # both placements are the same for a basic block
        self.residual = residual
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = make_shortcut(shortcut, in_planes, planes, stride) if residual else None

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(Block):
    """1x1 reduce, 3x3, 1x1 expand (ResNet-50/101/152)."""

    expansion = 4

    def __init__(
        self, in_planes: int, planes: int, stride: int, *, residual: bool, shortcut: str, stride_placement: str
    ):
        super().__init__()
        self.residual = residual
        # v1 (the paper) downsamples in the first 1x1; v1.5 (torchvision) in the 3x3, which costs
        # more multiply-adds (the 3x3 then sees the full-size map) but is ~0.5% more accurate.
        stride1, stride2 = (stride, 1) if stride_placement == "paper" else (1, stride)
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(in_planes, planes, stride1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride2)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut, in_planes, out_planes, stride) if residual else None

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class ResNet(nn.Module):
    """A ResNet (or plain net) of ``block`` stages.

    ``stem="imagenet"``: 7x7/2 conv + 3x3/2 max pool (Table 1). ``stem="cifar"``: one 3x3 conv, no
    pool (section 4.2). ``widths`` are the stages' ``planes``; every stage after the first starts
    with a stride-2 block.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        widths: list[int],
        *,
        stem: str,
        residual: bool = True,
        shortcut: str = "B",
        stride_placement: str = "paper",
        in_channels: int = 3,
        num_classes: int = 1000,
    ):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}; valid: {', '.join(SHORTCUTS)}")
        if stride_placement not in STRIDE_PLACEMENTS:
            raise ValueError(f"unknown stride_placement {stride_placement!r}; valid: {', '.join(STRIDE_PLACEMENTS)}")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"unknown stem {stem!r}; valid: imagenet, cifar")
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.residual = residual
        self.shortcut = shortcut
        self.stride_placement = stride_placement
        self.in_channels = in_channels
        self.num_classes = num_classes

        stem_width = 64 if stem == "imagenet" else widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(in_channels, stem_width)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()

        in_planes = stem_width
        for i, (blocks, planes) in enumerate(zip(layers, widths), start=1):
            stage = []
            for j in range(blocks):
                stride = 2 if (i > 1 and j == 0) else 1
                stage.append(
                    block(
                        in_planes,
                        planes,
                        stride,
                        residual=residual,
                        shortcut=shortcut,
                        stride_placement=stride_placement,
                    )
                )
                in_planes = planes * block.expansion
            self.add_module(f"layer{i}", nn.Sequential(*stage))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He et al. 2015 ("Kaiming") normal init for convs, BN as identity; fc keeps PyTorch's
        # default uniform init, as torchvision does.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i}") for i in range(1, self.num_stages + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))
