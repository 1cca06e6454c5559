"""Model registry: ``build_model(name, **overrides)`` and ``list_models()``.

Names:
- ``resnet18/34/50/101/152`` and ``plain18/34/50/101/152``: ImageNet nets (Table 1), default
  shortcut B (the paper's choice for 50/101/152; Table 3's better ResNet-34) and ``paper``
  stride placement. ``shortcut="A"`` gives Table 2's parameter-free ResNets.
- ``cifar_resnet{6n+2}`` and ``cifar_plain{6n+2}`` for any n >= 1: CIFAR nets (section 4.2),
  default shortcut A as in the paper. The canonical depths are listed by ``list_models()``.

Plain nets have no shortcuts, so they accept only the default (or an explicit ``"A"``, their
parameter-identical residual twin's option).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from workloads.models.resnet import SHORTCUTS, STRIDE_PLACEMENTS, BasicBlock, Bottleneck, ResNet

IMAGENET_LAYERS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}
IMAGENET_WIDTHS = [64, 128, 256, 512]
CIFAR_WIDTHS = [16, 32, 64]
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)  # the depths of Table 6
CIFAR_PLAIN_DEPTHS = (20, 32, 44, 56, 110)  # Fig. 6; a plain-1202 builds but its gradients explode
OVERRIDES = ("shortcut", "stride_placement", "in_channels", "num_classes")

_NAME = re.compile(r"^(?P<family>cifar_resnet|cifar_plain|resnet|plain)(?P<depth>\d+)$")


@dataclass(frozen=True)
class ModelSpec:
    """What a model name means: family, depth and residual or plain."""

    name: str
    family: str  # "imagenet" or "cifar"
    depth: int
    residual: bool

    @property
    def default_shortcut(self) -> str:
        return "A" if self.family == "cifar" else "B"


def list_models() -> list[str]:
    """Every canonical model name (any other ``cifar_{resnet,plain}{6n+2}`` builds too)."""
    names = [f"{kind}{d}" for kind in ("resnet", "plain") for d in IMAGENET_LAYERS]
    names += [f"cifar_resnet{d}" for d in CIFAR_DEPTHS] + [f"cifar_plain{d}" for d in CIFAR_PLAIN_DEPTHS]
    return names


def parse_model_name(name: str) -> ModelSpec:
    """Validate a model name; raises ``ValueError`` naming the valid choices."""
    match = _NAME.match(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(
            f"unknown model {name!r}; valid: {', '.join(list_models())} "
            "(or cifar_resnet/cifar_plain with any depth 6n+2)"
        )
    family = "cifar" if match["family"].startswith("cifar") else "imagenet"
    depth = int(match["depth"])
    residual = "resnet" in match["family"]
    if family == "imagenet" and depth not in IMAGENET_LAYERS:
        raise ValueError(f"unknown ImageNet depth {depth} in {name!r}; valid: {', '.join(map(str, IMAGENET_LAYERS))}")
    if family == "cifar" and (depth < 8 or (depth - 2) % 6):
        raise ValueError(
            f"CIFAR depth {depth} in {name!r} is not 6n+2 with n >= 1; "
            f"valid: 8, 14, 20, 26, 32, ... (the paper's: {', '.join(map(str, CIFAR_DEPTHS))})"
        )
    return ModelSpec(name=name, family=family, depth=depth, residual=residual)


def build_model(name: str, **overrides) -> ResNet:
    """Build a model by name, e.g. ``build_model("cifar_resnet56", in_channels=1)``.

    Overrides: ``shortcut`` (A, B, C), ``stride_placement`` (paper, torchvision),
    ``in_channels``, ``num_classes`` (default 1000 for ImageNet nets, 10 for CIFAR nets).
    """
    spec = parse_model_name(name)
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ValueError(f"unknown model option(s) {', '.join(unknown)} for {name!r}; valid: {', '.join(OVERRIDES)}")
    shortcut = overrides.get("shortcut") or spec.default_shortcut
    if shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; valid: {', '.join(SHORTCUTS)}")
    if not spec.residual and shortcut not in ("A", spec.default_shortcut):
        raise ValueError(
            f"{name!r} is a plain net and has no shortcuts; shortcut {shortcut!r} "
            "is meaningless (use the resnet twin for B/C)"
        )
    stride_placement = overrides.get("stride_placement") or "paper"
    if stride_placement not in STRIDE_PLACEMENTS:
        raise ValueError(f"unknown stride_placement {stride_placement!r}; valid: {', '.join(STRIDE_PLACEMENTS)}")
    common = dict(
        residual=spec.residual,
        shortcut=shortcut,
        stride_placement=stride_placement,
        in_channels=overrides.get("in_channels", 3),
    )
    if spec.family == "imagenet":
        block, layers = IMAGENET_LAYERS[spec.depth]
        return ResNet(
            block, layers, IMAGENET_WIDTHS, stem="imagenet", num_classes=overrides.get("num_classes", 1000), **common
        )
    n = (spec.depth - 2) // 6
    return ResNet(
        BasicBlock, [n, n, n], CIFAR_WIDTHS, stem="cifar", num_classes=overrides.get("num_classes", 10), **common
    )
