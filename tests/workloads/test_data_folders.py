"""Class-folder trees, odd image files, ImageNet layouts, the real CIFAR-10 JPEG copy, the registry."""

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.shared_data import shared_data_file
from tests.workloads.data_fixtures import (
    smooth_rgb,
    write_cifar10,
    write_fashion_mnist,
    write_odd_files,
    write_png_tree,
)
from workloads.data import (
    CorruptImageError,
    ImageFileDataset,
    ImageFolderSource,
    ImageNetSource,
    decode_image_file,
    list_datasets,
    load_dataset,
    load_image_tree,
)

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ---- class folders and decoding --------------------------------------------------------------


def test_png_tree_decodes_to_exact_pixels_with_sorted_class_labels(tmp_path):
    images, labels = write_png_tree(tmp_path, ["zebra", "ant", "mole"], per_class=3)
    source = ImageFolderSource(tmp_path)
    assert source.classes == ("ant", "mole", "zebra")
    assert [p.parent.name for p, _ in source.samples] == ["ant"] * 3 + ["mole"] * 3 + ["zebra"] * 3
    decoded, decoded_labels = load_image_tree(source)
    assert decoded.shape == (9, 3, 8, 8) and decoded.dtype == torch.uint8
    assert np.array_equal(decoded.numpy(), images)
    assert decoded_labels.tolist() == labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_max_per_class_keeps_full_tree_labels(tmp_path):
    write_png_tree(tmp_path, ["a", "b", "c"], per_class=4)
    source = ImageFolderSource(tmp_path, max_per_class=2)
    assert source.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert [p.name for p, _ in source.samples[:2]] == ["0000.png", "0001.png"]


def test_cmyk_jpeg_and_png_named_jpeg_decode_to_rgb(tmp_path):
    paths = write_odd_files(tmp_path)
    png = decode_image_file(paths["png"])
    assert np.array_equal(png.permute(1, 2, 0).numpy(), smooth_rgb(seed=2))  # lossless: exact
    cmyk = decode_image_file(paths["cmyk"])
    assert cmyk.shape == (3, 40, 30)
    # JPEG is lossy; a wrong CMYK handling (inverted or channel-dropped) is off by ~100 levels.
    error = (cmyk.permute(1, 2, 0).int() - torch.from_numpy(smooth_rgb(seed=1)).int()).abs().float().mean()
    assert error < 3


@pytest.mark.parametrize("name", ["truncated", "empty"])
def test_truncated_and_zero_byte_files_raise_corrupt_image_error(tmp_path, name):
    path = write_odd_files(tmp_path)[name]
    with pytest.raises(CorruptImageError) as error:
        decode_image_file(path)
    assert error.value.path == path and str(path) in str(error.value)
    assert isinstance(error.value, ValueError)
    with pytest.raises(CorruptImageError):
        ImageFileDataset([(path, 0)])[0]


def test_missing_image_is_file_not_found_not_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError):
        decode_image_file(tmp_path / "gone.jpg")


def test_folder_errors_name_the_place(tmp_path):
    with pytest.raises(FileNotFoundError, match="root/<class>/<image>.*--data-root"):
        ImageFolderSource(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolderSource(tmp_path)
    write_png_tree(tmp_path, ["a"], per_class=1)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=f"{tmp_path / 'b'} holds no images"):
        ImageFolderSource(tmp_path)


def test_load_image_tree_refuses_mixed_sizes_naming_the_file(tmp_path):
    write_png_tree(tmp_path, ["a"], per_class=2, size=8)
    odd = tmp_path / "a" / "0009.png"
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(odd)
    with pytest.raises(ValueError, match=str(odd)):
        load_image_tree(ImageFolderSource(tmp_path))


# ---- ImageNet --------------------------------------------------------------------------------

WNIDS_BY_ILSVRC_ID = ["n02119789", "n01440764", "n03000134"]  # ids 1, 2, 3; deliberately unsorted


def _imagenet_train(root: Path) -> None:
    write_png_tree(root / "train", WNIDS_BY_ILSVRC_ID, per_class=2, suffix=".JPEG")


def test_imagenet_train_and_val_class_folders(tmp_path):
    _imagenet_train(tmp_path)
    write_png_tree(tmp_path / "val", WNIDS_BY_ILSVRC_ID, per_class=1, suffix=".JPEG", seed=5)
    train = ImageNetSource(tmp_path, "train")
    assert train.classes == ("n01440764", "n02119789", "n03000134")
    assert [label for _, label in train.samples] == [0, 0, 1, 1, 2, 2]
    val = ImageNetSource(tmp_path, "val")
    assert [(p.parent.name, label) for p, label in val.samples] == [
        ("n01440764", 0),
        ("n02119789", 1),
        ("n03000134", 2),
    ]
    image, label = ImageFileDataset(val.samples, transform=lambda x: x.float())[1]
    assert image.dtype == torch.float32 and image.shape == (3, 8, 8) and label == 1


def test_imagenet_flat_val_with_devkit_ground_truth(tmp_path):
    _imagenet_train(tmp_path)
    val = tmp_path / "val"
    val.mkdir()
    ids = [3, 1, 2, 1]  # ILSVRC2012_IDs of val files 1..4
    for i in range(len(ids)):
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(val / f"ILSVRC2012_val_{i + 1:08d}.JPEG", "PNG")
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in ids))
    (tmp_path / "ILSVRC2012_id_to_wnid.txt").write_text("".join(f"{w} some words\n" for w in WNIDS_BY_ILSVRC_ID))
    source = ImageNetSource(tmp_path, "val")
    sorted_wnids = sorted(WNIDS_BY_ILSVRC_ID)
    expected = [sorted_wnids.index(WNIDS_BY_ILSVRC_ID[i - 1]) for i in ids]
    assert [label for _, label in source.samples] == expected == [2, 1, 0, 1]
    assert [p.name for p, _ in source.samples][0] == "ILSVRC2012_val_00000001.JPEG"
    assert source.classes == ImageNetSource(tmp_path, "train").classes
    # Labels and files pair up: file i holds pixel value i.
    assert [int(decode_image_file(p)[0, 0, 0]) for p, _ in source.samples] == [0, 1, 2, 3]

    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("3\n1\n2\n")
    with pytest.raises(ValueError, match="holds 4 images but .* has 3 labels"):
        ImageNetSource(tmp_path, "val")
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("3\n1\n2\n4\n")
    with pytest.raises(ValueError, match="line 4: '4' is not an ILSVRC2012_ID in 1..3"):
        ImageNetSource(tmp_path, "val")
    (tmp_path / "ILSVRC2012_id_to_wnid.txt").write_text("".join(f"n{i:08d}\n" for i in range(1000)))
    with pytest.raises(ValueError, match="LOC_synset_mapping"):
        ImageNetSource(tmp_path, "val")
    (tmp_path / "ILSVRC2012_id_to_wnid.txt").unlink()
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_id_to_wnid.txt"):
        ImageNetSource(tmp_path, "val")


def test_imagenet_missing_root_and_bad_split(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGENET_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="--data-root.*IMAGENET_ROOT"):
        ImageNetSource(split="train")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train")):
        ImageNetSource(tmp_path, "train")
    with pytest.raises(ValueError, match="'test'.*valid"):
        ImageNetSource(tmp_path, "test")


# ---- the real CIFAR-10 JPEG copy -------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_jpeg_root(tmp_path_factory):
    tarball = shared_data_file("cifar10-jpeg.tar.gz")  # skips on a bare clone, fails under CI
    root = tmp_path_factory.mktemp("cifar_jpeg")
    # Only the first 50 test files of each class. The archive stores test/ before train/, so
    # reading stops at the first train/ member instead of decompressing all 19 MB.
    members = []
    with tarfile.open(tarball) as archive:
        for member in archive:
            if member.name.startswith("cifar10-jpeg/train/"):
                break
            if member.isfile() and member.name.startswith("cifar10-jpeg/test/") and int(Path(member.name).stem) < 50:
                members.append(member)
        archive.extractall(root, members=members, filter="data")
    return root / "cifar10-jpeg"


def test_real_cifar10_jpeg_subset_loads_with_cifar_labels(cifar_jpeg_root):
    data = load_dataset("cifar10-jpeg", "test", root=cifar_jpeg_root, max_per_class=20)
    assert data.classes == CIFAR_CLASSES and data.num_classes == 10
    assert data.images.shape == (200, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.bincount().tolist() == [20] * 10
    assert data.in_channels == 3 and data.image_size == 32
    first_truck = cifar_jpeg_root / "test" / "truck" / "0000.jpg"
    with Image.open(first_truck) as reference:
        assert np.array_equal(data.images[180].permute(1, 2, 0).numpy(), np.asarray(reference.convert("RGB")))
    assert data.labels[180] == 9
    assert 60 < data.images.float().mean() < 200 and data.images.float().std() > 30  # real photos


# ---- registry --------------------------------------------------------------------------------


def test_registry_lists_and_rejects_unknown_names():
    assert list_datasets() == ["cifar10", "cifar10-jpeg", "fashion-mnist", "synthetic"]
    with pytest.raises(ValueError, match=r"'imagenet'.*\['cifar10', 'cifar10-jpeg', 'fashion-mnist', 'synthetic'\]"):
        load_dataset("imagenet")


def test_registry_fashion_mnist_pads_to_32_for_cifar_nets(tmp_path):
    expected = write_fashion_mnist(tmp_path, n_train=6, n_test=4)
    plain = load_dataset("fashion-mnist", "train", root=tmp_path)
    assert (plain.in_channels, plain.image_size, plain.num_classes) == (1, 28, 10)
    padded = load_dataset("fashion-mnist", "train", root=tmp_path, pad_to=32)
    assert padded.images.shape == (6, 1, 32, 32) and padded.image_size == 32
    assert np.array_equal(padded.images[:, 0, 2:30, 2:30].numpy(), expected["train"][0])
    border = padded.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.eq(0).all()
    with pytest.raises(ValueError, match="pad_to=31"):
        load_dataset("fashion-mnist", "train", root=tmp_path, pad_to=31)


def test_registry_cifar10_and_synthetic(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR10_JPEG_ROOT", raising=False)
    expected = write_cifar10(tmp_path, per_batch=10)
    data = load_dataset("cifar10", "train", root=tmp_path)
    assert data.classes == CIFAR_CLASSES and np.array_equal(data.images.numpy(), expected["train"][0])
    part = data.subset(torch.tensor([3, 7]))
    assert part.labels.tolist() == expected["train"][1][[3, 7]].tolist() and part.classes == data.classes
    bench = load_dataset("synthetic", "train", n=16, shape=(3, 8, 8), num_classes=4, seed=1)
    assert bench.images.shape == (16, 3, 8, 8) and bench.num_classes == 4 and bench.labels.max() < 4
    assert bench.images.equal(load_dataset("synthetic", "train", n=16, shape=(3, 8, 8), num_classes=4, seed=1).images)
    assert not bench.images.equal(
        load_dataset("synthetic", "test", n=16, shape=(3, 8, 8), num_classes=4, seed=1).images
    )
    with pytest.raises(FileNotFoundError, match="CIFAR10_JPEG_ROOT"):
        load_dataset("cifar10-jpeg", "train")
