"""Data layer: sources (Fashion-MNIST idx, CIFAR-10 pickle batches, class-folder trees, ImageNet,
synthetic), the paper's augmentations and its test-time views. Pure PyTorch/torchvision/numpy/PIL.

See docs/DATA.md for layouts, environment variables and how Fashion-MNIST feeds the CIFAR nets.
"""

from .augment import PCA_EIGVAL, PCA_EIGVEC, ImageNetTrainTransform, lighting_noise, resize_shorter, subtract_mean
from .cifar import RestrictedUnpickler, load_cifar10, train_val_split
from .errors import CorruptImageError
from .fashion_mnist import load_fashion_mnist
from .folders import ImageFileDataset, ImageFolderSource, decode_image_file, load_image_tree
from .imagenet import ImageNetSource
from .registry import InMemoryDataset, list_datasets, load_dataset
from .resident import ResidentLoader, crop_flip, per_pixel_mean
from .synthetic import synthetic
from .views import MULTI_SCALES, center_view, multi_scale_views, ten_crop_views

__all__ = [
    "CorruptImageError", "ImageFileDataset", "ImageFolderSource", "ImageNetSource",
    "ImageNetTrainTransform", "InMemoryDataset", "MULTI_SCALES", "PCA_EIGVAL", "PCA_EIGVEC", "ResidentLoader",
    "RestrictedUnpickler", "center_view", "crop_flip", "decode_image_file", "lighting_noise",
    "list_datasets", "load_cifar10", "load_dataset", "load_fashion_mnist", "load_image_tree",
    "multi_scale_views", "per_pixel_mean", "resize_shorter", "subtract_mean", "synthetic",
    "ten_crop_views", "train_val_split",
]
from .decode import center_view_batch, decode_batch, decode_image_bytes, decode_images, imagenet_train_batch
from .shards import ShardEvent, ShardSource, list_shard_datasets, open_source, resolve_output, shard_files, write_shards

__all__ += [
    "ShardEvent", "ShardSource", "center_view_batch", "decode_batch", "decode_image_bytes", "decode_images",
    "imagenet_train_batch", "list_shard_datasets", "open_source", "resolve_output", "shard_files", "write_shards",
]
