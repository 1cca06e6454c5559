"""Fashion-MNIST idx files, CIFAR-10 pickle batches and the 45k/5k split."""

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.workloads.data_fixtures import cifar_batch, idx_bytes, py2_pickle, write_cifar10, write_fashion_mnist
from workloads.data import load_cifar10, load_fashion_mnist, validation_split

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# ---- Fashion-MNIST ---------------------------------------------------------------------------


def test_fashion_mnist_fixture_round_trips_exact_pixels_and_labels(tmp_path):
    expected = write_fashion_mnist(tmp_path)
    for split in ("train", "test"):
        images, labels = load_fashion_mnist(tmp_path, split)
        assert images.dtype == torch.uint8 and images.shape == (len(expected[split][0]), 1, 28, 28)
        assert labels.dtype == torch.int64
        assert np.array_equal(images[:, 0].numpy(), expected[split][0])
        assert np.array_equal(labels.numpy(), expected[split][1])


def test_fashion_mnist_root_from_env_var(tmp_path, monkeypatch):
    expected = write_fashion_mnist(tmp_path, n_train=5, n_test=3)
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(tmp_path))
    assert load_fashion_mnist(split="test")[0].shape[0] == len(expected["test"][0]) == 3


def test_real_fashion_mnist_loads():
    assert REAL_FASHION_MNIST.is_dir(), (
        f"{REAL_FASHION_MNIST} is missing: install the Debian package dataset-fashion-mnist "
        f"(apt-get install dataset-fashion-mnist)"
    )
    train_images, train_labels = load_fashion_mnist(REAL_FASHION_MNIST, "train")
    test_images, test_labels = load_fashion_mnist(REAL_FASHION_MNIST, "test")
    assert train_images.shape == (60000, 1, 28, 28) and test_images.shape == (10000, 1, 28, 28)
    assert train_labels.bincount().tolist() == [6000] * 10
    assert test_labels.bincount().tolist() == [1000] * 10
    # Real photos, not blank: dark background, bright garments.
    assert 50 < train_images.float().mean() < 100 and train_images.max() == 255


@pytest.mark.parametrize("case", ["magic", "short", "count_mismatch", "bad_label"])
def test_fashion_mnist_bad_files_raise_value_error_naming_the_file(tmp_path, case):
    write_fashion_mnist(tmp_path, n_train=4, n_test=4)
    images_path = tmp_path / "t10k-images-idx3-ubyte.gz"
    labels_path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(images_path.read_bytes())
    if case == "magic":
        images_path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + raw[4:]))  # labels' magic on images
        bad, message = images_path, "magic number 2049, expected 2051"
    elif case == "short":
        images_path.write_bytes(gzip.compress(raw[:-7]))
        bad, message = images_path, "expected"
    elif case == "count_mismatch":
        labels_path.write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8), 2049)))
        bad, message = labels_path, "4 images"
    else:
        labels_path.write_bytes(gzip.compress(idx_bytes(np.array([0, 1, 10, 2], np.uint8), 2049)))
        bad, message = labels_path, "label 10"
    with pytest.raises(ValueError, match=message) as error:
        load_fashion_mnist(tmp_path, "test")
    assert str(bad) in str(error.value)


def test_fashion_mnist_missing_files_say_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist.*--data-root.*FASHION_MNIST_ROOT"):
        load_fashion_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(ValueError, match="'val'.*valid"):
        load_fashion_mnist(tmp_path, "val")


# ---- CIFAR-10 pickle batches -----------------------------------------------------------------


@pytest.mark.parametrize("py2", [True, False], ids=["python2-original-format", "python3-repickled"])
def test_cifar10_batches_round_trip_exact_pixels_and_labels(tmp_path, py2):
    expected = write_cifar10(tmp_path, per_batch=40, py2=py2)
    for split, n in (("train", 200), ("test", 40)):
        # Both the parent directory and cifar-10-batches-py itself are accepted as root.
        for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
            images, labels = load_cifar10(root, split)
            assert images.shape == (n, 3, 32, 32) and images.dtype == torch.uint8
            assert labels.dtype == torch.int64
            assert np.array_equal(images.numpy(), expected[split][0])
            assert np.array_equal(labels.numpy(), expected[split][1])


def test_cifar10_row_layout_is_red_then_green_then_blue_planes(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.arange(1024) % 256]).astype(np.uint8)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (folder / name).write_bytes(py2_pickle(cifar_batch(row[None], np.array([3]), name)))
    images, labels = load_cifar10(tmp_path, "test")
    assert images[0, 0].unique().tolist() == [10] and images[0, 1].unique().tolist() == [20]
    assert images[0, 2, 1, 0] == 32  # blue plane, row-major: pixel (1, 0) is value 32
    assert labels.tolist() == [3]


def test_cifar10_root_from_env_and_missing_root_errors(tmp_path, monkeypatch):
    write_cifar10(tmp_path, per_batch=2)
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path))
    assert load_cifar10(split="test")[0].shape == (2, 3, 32, 32)
    monkeypatch.delenv("CIFAR10_ROOT")
    with pytest.raises(FileNotFoundError, match="--data-root.*CIFAR10_ROOT"):
        load_cifar10(split="test")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_cifar10(tmp_path / "elsewhere")
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(tmp_path, "train")
    with pytest.raises(ValueError, match="'validation'.*valid"):
        load_cifar10(tmp_path, "validation")


@pytest.mark.parametrize("case", ["columns", "dtype", "labels", "not_a_dict", "garbage"])
def test_cifar10_malformed_batch_raises_value_error_naming_the_file(tmp_path, case):
    write_cifar10(tmp_path, per_batch=4)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch = cifar_batch(np.zeros((4, 3, 32, 32), np.uint8), np.zeros(4), "test_batch")
    if case == "columns":
        batch[b"data"] = np.zeros((4, 3000), np.uint8)
    elif case == "dtype":
        batch[b"data"] = np.zeros((4, 3072), np.float32)
    elif case == "labels":
        batch[b"labels"] = [0, 1, 2]
    path.write_bytes(
        b"not a pickle at all" if case == "garbage" else py2_pickle([1, 2] if case == "not_a_dict" else batch)
    )
    with pytest.raises(ValueError) as error:
        load_cifar10(tmp_path, "test")
    assert str(path) in str(error.value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused_before_running_code(tmp_path, monkeypatch):
    write_cifar10(tmp_path, per_batch=2)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": [0]}, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to load global (posix|os)\.system") as error:
        load_cifar10(tmp_path, "test")
    assert str(path) in str(error.value)
    assert not (tmp_path / "pwned").exists()


def test_codecs_encode_is_only_allowed_for_latin1(tmp_path):
    write_cifar10(tmp_path, per_batch=2)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    # _codecs.encode("...", "rot13") would be allowed by a naive module allow-list.
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(ValueError, match="rot13"):
        load_cifar10(tmp_path, "test")


# ---- validation split ------------------------------------------------------------------------------


def test_validation_split_is_the_papers_45k_5k_per_class_and_deterministic():
    labels = torch.arange(50000) % 10
    train, val = validation_split(labels, 5000)
    assert len(train) == 45000 and len(val) == 5000
    assert torch.cat([train, val]).sort().values.equal(torch.arange(50000))
    assert torch.bincount(labels[val]).tolist() == [500] * 10  # every class keeps its share
    again_train, again_val = validation_split(labels, 5000.0)
    assert again_train.equal(train) and again_val.equal(val)
    assert validation_split(labels, 0.1)[1].equal(val)  # a fraction names the same images


def test_validation_split_settles_rounding_and_refuses_bad_sizes():
    labels = torch.tensor([0] * 7 + [1] * 3)
    _, val = validation_split(labels, 3)
    assert len(val) == 3 and torch.bincount(labels[val]).tolist() == [2, 1]
    for bad, match in ((10, "holds out 10 of 10"), (0.0, "must be a fraction"), (2.5, "must be a fraction")):
        with pytest.raises(ValueError, match=match):
            validation_split(labels, bad)
