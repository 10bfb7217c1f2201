"""Fixtures for the objectives' tests: one torch thread, and a tiny CIFAR-100 on disk."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torchvision.datasets import CIFAR100

from objectives.cifar100.dataset import Cifar100, random_cifar100, write_cifar100


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run like a worker does (``OMP_NUM_THREADS=1``): one intra-op thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_cifar() -> Cifar100:
    """320 training and 64 test images, random, with fine and coarse labels."""
    return random_cifar100(320, 64, seed=1)


@pytest.fixture
def cifar_dir(tiny_cifar: Cifar100, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory holding ``tiny_cifar`` in CIFAR-100's official on-disk format,
    loadable through torchvision's ``CIFAR100``.

    torchvision verifies each file against the MD5 sums of the official release before
    it reads it.  Only those expected sums are replaced, by the sums of the files written
    here, so the integrity check itself and the rest of the user's loading path run
    unchanged.
    """
    root = tmp_path / "data"
    directory = write_cifar100(tiny_cifar, root)

    def md5(name: str) -> str:
        return hashlib.md5((directory / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5("train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5("test")]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5("meta")})
    return root
