"""Data layer: sources (Fashion-MNIST idx, CIFAR-10 pickle batches, class-folder trees, ImageNet,
synthetic), the data-set specs, the paper's augmentations and its test-time views. Pure
PyTorch/torchvision/numpy/PIL.

Names load on first use (PEP 562), and torchvision inside the functions that call it: a command
that only validates a config (the data-set specs), and every Ray process that trains from memory
(a CLI driver, a Tune trial, a Train worker), does not pay for torchvision, whose import takes
longer than torch's own (~2 s of CPU here, most of it torch._dynamo through torchvision.ops).

See docs/DATA.md for layouts, environment variables and how Fashion-MNIST feeds the CIFAR nets.
"""

import importlib

_EXPORTS = {  # name -> the module of this package that defines it
    "PCA_EIGVAL": "augment",
    "PCA_EIGVEC": "augment",
    "ImageNetTrainTransform": "augment",
    "lighting_noise": "augment",
    "resize_shorter": "augment",
    "subtract_mean": "augment",
    "RestrictedUnpickler": "cifar",
    "load_cifar10": "cifar",
    "CorruptImageError": "errors",
    "load_fashion_mnist": "fashion_mnist",
    "ImageFileDataset": "folders",
    "ImageFolderSource": "folders",
    "decode_image_file": "folders",
    "load_image_tree": "folders",
    "ImageNetSource": "imagenet",
    "InMemoryDataset": "registry",
    "list_datasets": "registry",
    "load_dataset": "registry",
    "split_size": "registry",
    "ResidentLoader": "resident",
    "crop_flip": "resident",
    "per_pixel_mean": "resident",
    "IMAGENET_MEAN": "specs",
    "MEMORY": "specs",
    "SHARDED": "specs",
    "DatasetSpec": "specs",
    "dataset_spec": "specs",
    "list_dataset_specs": "specs",
    "validation_split": "splits",
    "validation_size": "splits",
    "synthetic": "synthetic",
    "MULTI_SCALES": "views",
    "center_view": "views",
    "multi_scale_views": "views",
    "ten_crop_views": "views",
    "center_view_batch": "decode",
    "decode_batch": "decode",
    "decode_image_bytes": "decode",
    "decode_images": "decode",
    "imagenet_train_batch": "decode",
    "ShardEvent": "shards",
    "ShardSource": "shards",
    "list_shard_datasets": "shards",
    "open_source": "shards",
    "resolve_output": "shards",
    "shard_files": "shards",
    "write_shards": "shards",
}

__all__ = sorted(_EXPORTS)

# A name that is also one of this package's modules: importing that module (as registry does) would
# bind the module to the name, so the function is bound here, before that can happen.
from .synthetic import synthetic  # noqa: E402


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
