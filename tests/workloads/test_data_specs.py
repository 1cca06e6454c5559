"""The data-set spec registry: every training data set states its storage, shape, mean and
augmentations, and those agree with what its reader really yields."""

import pytest

from workloads.data import MEMORY, SHARDED, dataset_spec, list_dataset_specs, list_datasets, load_dataset
from workloads.data.registry import _LOADERS


def test_every_in_memory_spec_has_a_loader_and_every_loader_a_spec():
    assert list_dataset_specs(MEMORY) == sorted(_LOADERS) == list_datasets()
    assert set(list_dataset_specs()) == set(list_dataset_specs(MEMORY)) | set(list_dataset_specs(SHARDED))


@pytest.mark.parametrize("name", list_dataset_specs())
def test_a_spec_is_complete(name):
    spec = dataset_spec(name)
    assert spec.storage in (MEMORY, SHARDED) and spec.channels in (1, 3) and spec.image_size > 0 and spec.classes > 1
    assert set(spec.splits) == {"train", "test"}
    if spec.mean is not None:
        assert len(spec.mean) == spec.channels and all(0 <= m <= 1 for m in spec.mean)
    if spec.sharded:  # read through Ray Data with read_shards' augmentations, at a fixed crop size
        from orchestrator.shards import AUGMENTS

        assert spec.mean is not None and {spec.train_augment, spec.eval_view} <= set(AUGMENTS)
    else:  # augmented on the device by the resident loader, scored whole
        assert (spec.train_augment, spec.eval_view) == ("crop-flip", "full")


@pytest.mark.parametrize("name", ["synthetic", "fashion-mnist"])
def test_a_spec_states_the_shape_its_loader_yields(name):
    spec = dataset_spec(name)
    data = load_dataset(name, "test")  # fashion-mnist: the Debian package the set-up installs
    assert (data.in_channels, data.num_classes, data.image_size) == spec.shape()


def test_an_unknown_data_set_names_the_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"unknown dataset 'mnist'; valid: cifar10, cifar10-jpeg, fashion-mnist, "
        r"imagenet, synthetic",
    ):
        dataset_spec("mnist")
