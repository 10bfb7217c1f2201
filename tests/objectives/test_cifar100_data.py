"""CIFAR-100 files, the validation split and the on-device augmentation."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from objectives.cifar100.dataset import (
    DATA_DIR_ENV,
    Cifar100,
    DatasetUnavailable,
    load_cifar100,
    random_cifar100,
    resolve_data_dir,
    validation_split,
    write_cifar100,
)
from objectives.cifar100.resident import (
    PAD,
    DeviceSplit,
    ResidentBatches,
    eval_batches,
    normalize,
    random_crop_flip,
)


def test_loads_images_fine_and_coarse_labels_through_torchvision(
    cifar_dir: Path, tiny_cifar: Cifar100
) -> None:
    data = load_cifar100(cifar_dir, download=False)
    for got, want in ((data.train, tiny_cifar.train), (data.test, tiny_cifar.test)):
        assert got.images.shape == want.images.shape and got.images.dtype == np.uint8
        np.testing.assert_array_equal(got.images, want.images)
        np.testing.assert_array_equal(got.fine, want.fine)
        np.testing.assert_array_equal(got.coarse, want.coarse)


def test_files_with_other_checksums_are_rejected(tmp_path: Path) -> None:
    # No checksum patch here: torchvision's own integrity check must refuse the files.
    write_cifar100(random_cifar100(20, 10), tmp_path)
    with pytest.raises(DatasetUnavailable, match="missing or corrupt"):
        load_cifar100(tmp_path, download=False)


def test_missing_dataset_without_download_says_where_and_how(tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    with pytest.raises(DatasetUnavailable) as caught:
        load_cifar100(empty, download=False)
    message = str(caught.value)
    assert str(empty / "cifar-100-python") in message
    assert "cifar-100-python.tar.gz" in message and DATA_DIR_ENV in message
    assert not empty.exists()


def test_failed_download_says_where_and_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(DatasetUnavailable, match="downloading it failed.*no route to host"):
        load_cifar100(tmp_path, download=True)


def test_data_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from-env"))
    assert resolve_data_dir(None) == tmp_path / "from-env"
    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv(DATA_DIR_ENV)
    assert resolve_data_dir(None) == Path.home() / ".cache" / "hpo-queue" / "data"


def test_validation_split_is_fixed_by_its_seed_and_disjoint() -> None:
    train = random_cifar100(100, 1).train
    part, held_out = validation_split(train, 30, seed=0)
    again, held_out_again = validation_split(train, 30, seed=0)
    _, other = validation_split(train, 30, seed=1)
    assert (len(part), len(held_out)) == (70, 30)
    np.testing.assert_array_equal(held_out.images, held_out_again.images)
    assert not np.array_equal(held_out.images, other.images)
    rows = {row.tobytes() for row in part.images} | {row.tobytes() for row in held_out.images}
    assert len(rows) == 100
    with pytest.raises(ValueError, match="val_size"):
        validation_split(train, 100, seed=0)


def test_random_crop_flip_gives_windows_of_the_padded_image() -> None:
    images = normalize(torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8))
    out = random_crop_flip(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    padded = F.pad(images, (PAD, PAD, PAD, PAD), mode="reflect")
    for image, crop in zip(padded, out, strict=True):
        windows = [
            image[:, dy : dy + 32, dx : dx + 32]
            for dy in range(2 * PAD + 1)
            for dx in range(2 * PAD + 1)
        ]
        assert any(
            torch.equal(crop, window) or torch.equal(crop, window.flip(2)) for window in windows
        )


def test_resident_batches_cover_an_epoch_in_full_batches() -> None:
    split = random_cifar100(70, 1).train
    data = DeviceSplit.upload(split, torch.device("cpu"))
    assert data.images.shape == (70, 3, 32, 32) and data.images.dtype == torch.uint8
    batches = ResidentBatches(data, 16, seed=0)
    epoch = list(batches.epoch())
    assert len(epoch) == len(batches) == 4 and batches.images_per_epoch == 64
    seen = torch.cat([b.fine for b in epoch])
    assert len(seen) == 64 and all(b.images.dtype == torch.float32 for b in epoch)
    for batch in epoch:
        assert torch.equal(batch.coarse, batch.fine // 5)
    assert ResidentBatches(data, 1024, seed=0).batch_size == 70
    in_order = torch.cat([b.fine for b in eval_batches(data, 32)])
    assert torch.equal(in_order, data.fine)
