"""The paper's ResNet family (residual and plain; shortcut A/B/C; paper or torchvision strides)."""

from workloads.models.registry import ModelSpec, build_model, list_models, parse_model_name
from workloads.models.resnet import SHORTCUTS, STRIDE_PLACEMENTS, BasicBlock, Bottleneck, ResNet

__all__ = [
    "SHORTCUTS",
    "STRIDE_PLACEMENTS",
    "BasicBlock",
    "Bottleneck",
    "ModelSpec",
    "ResNet",
    "build_model",
    "list_models",
    "parse_model_name",
]
