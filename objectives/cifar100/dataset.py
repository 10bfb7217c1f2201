"""CIFAR-100 on disk: finding, downloading and reading it, with fine and coarse labels.

The files are the ``cifar-100-python/`` directory of the official archive (``train``,
``test`` and ``meta``, pickled dicts).  :func:`load_cifar100` goes through torchvision's
:class:`~torchvision.datasets.CIFAR100`, which downloads the archive when asked and
checks every file's MD5 before it reads the images and fine labels; torchvision does
not expose the 20 coarse labels, so they are read from the same, verified files.

:func:`write_cifar100` writes arrays in that same format (the tests and the
benchmark's quick mode use it with :func:`random_cifar100`).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR100

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "HPO_DATA_DIR"
"""Environment variable naming the data directory when the run's settings name none."""

DEFAULT_DATA_DIR = Path("~/.cache/hpo-queue/data")
ARCHIVE_DIR = CIFAR100.base_folder
"""``cifar-100-python``: the directory the archive extracts to, inside the data directory."""

N_FINE = 100
N_COARSE = 20
IMAGE_SHAPE = (32, 32, 3)


class DatasetUnavailable(RuntimeError):
    """CIFAR-100 is not in the data directory and could not (or may not) be downloaded.

    The message names the directory and says how to provide the data.
    """


@dataclass(frozen=True)
class Split:
    """Images and labels of one part of the data set, in memory.

    ``images`` is (N, 32, 32, 3) uint8 (height, width, RGB); ``fine`` (0..99) and
    ``coarse`` (0..19) are (N,) int64.
    """

    images: np.ndarray
    fine: np.ndarray
    coarse: np.ndarray

    def __len__(self) -> int:
        return len(self.fine)

    def subset(self, indices: np.ndarray) -> Split:
        """The examples at ``indices``, in that order."""
        return Split(self.images[indices], self.fine[indices], self.coarse[indices])


@dataclass(frozen=True)
class Cifar100:
    """The official training set (50,000 images) and test set (10,000)."""

    train: Split
    test: Split


def resolve_data_dir(configured: str | os.PathLike[str] | None) -> Path:
    """The data directory: ``configured`` if given, else ``$HPO_DATA_DIR``, else
    ``~/.cache/hpo-queue/data``; ``~`` is expanded and the result made absolute."""
    chosen = configured or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


def load_cifar100(root: Path, *, download: bool) -> Cifar100:
    """CIFAR-100 from ``root/cifar-100-python``, downloaded there first when missing and
    ``download`` is true.

    The result is cached per process (a worker evaluates many trials on the same data);
    treat its arrays as read-only.

    Raises:
        DatasetUnavailable: the files are missing or corrupt and ``download`` is false,
            or downloading failed (offline, disk full, ...).
    """
    return _load_cached(Path(root).expanduser().resolve(), download)


@functools.lru_cache(maxsize=1)
def _load_cached(root: Path, download: bool) -> Cifar100:
    how_to_fix = (
        f"Download {CIFAR100.url} on a machine with internet access and extract it into "
        f"{root} (so that {root / ARCHIVE_DIR / 'train'} exists), or point the run's "
        f"'data_dir' setting or ${DATA_DIR_ENV} at a directory that holds "
        f"{ARCHIVE_DIR}/."
    )
    with _download_lock(root) if download else nullcontext():
        try:
            train = CIFAR100(str(root), train=True, download=download)
            test = CIFAR100(str(root), train=False, download=download)
        except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
            why = "the downloaded files did not verify" if download else "download is disabled"
            raise DatasetUnavailable(
                f"CIFAR-100 is missing or corrupt in {root / ARCHIVE_DIR} and {why} "
                f"({exc}). {how_to_fix}"
            ) from exc
        except OSError as exc:  # URLError, connection refused, disk full, ...
            raise DatasetUnavailable(
                f"CIFAR-100 is not in {root / ARCHIVE_DIR} and downloading it failed: "
                f"{exc}. {how_to_fix}"
            ) from exc
    logger.info("loaded CIFAR-100 from %s", root / ARCHIVE_DIR)
    return Cifar100(
        train=_with_coarse_labels(train, root / ARCHIVE_DIR / "train"),
        test=_with_coarse_labels(test, root / ARCHIVE_DIR / "test"),
    )


@contextmanager
def _download_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on a file in ``root`` (created if need be), so that two
    workers on one machine do not download into the same directory at once."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".cifar-100.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _with_coarse_labels(dataset: CIFAR100, path: Path) -> Split:
    """``dataset``'s images and fine labels, with coarse labels read from ``path`` (the
    pickle torchvision read them from, after it verified its checksum)."""
    with path.open("rb") as handle:
        entry = pickle.load(handle, encoding="latin1")
    return Split(
        images=np.ascontiguousarray(dataset.data),
        fine=np.asarray(dataset.targets, dtype=np.int64),
        coarse=np.asarray(entry["coarse_labels"], dtype=np.int64),
    )


def validation_split(train: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    """``(training part, validation part)``: ``val_size`` examples of ``train`` chosen
    uniformly at random with ``seed`` (the same seed gives the same split).

    Raises:
        ValueError: ``val_size`` is not between 1 and ``len(train) - 1``.
    """
    if not 0 < val_size < len(train):
        raise ValueError(
            f"val_size must be between 1 and {len(train) - 1} (the training set has "
            f"{len(train)} images), not {val_size}"
        )
    order = np.random.default_rng(seed).permutation(len(train))
    return train.subset(np.sort(order[val_size:])), train.subset(np.sort(order[:val_size]))


def random_cifar100(n_train: int, n_test: int, seed: int = 0) -> Cifar100:
    """A data set of random images in CIFAR-100's shapes, with random fine labels and
    the coarse label ``fine // 5``: for tests and for timing, not for learning."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        fine = rng.integers(0, N_FINE, size=n, dtype=np.int64)
        images = rng.integers(0, 256, size=(n, *IMAGE_SHAPE), dtype=np.uint8)
        return Split(images, fine, fine // (N_FINE // N_COARSE))

    return Cifar100(train=split(n_train), test=split(n_test))


def write_cifar100(dataset: Cifar100, root: Path) -> Path:
    """Write ``dataset`` as ``root/cifar-100-python/{train,test,meta}`` in the official
    format and return that directory.

    The files carry other MD5 sums than the official ones, so torchvision accepts them
    only where its expected sums are changed to theirs (as the tests do).
    """
    directory = Path(root) / ARCHIVE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", dataset.train), ("test", dataset.test)):
        entry = {
            "filenames": [f"{name}_{i:05d}.png" for i in range(len(split))],
            "batch_label": f"{name} batch 1 of 1",
            "fine_labels": split.fine.tolist(),
            "coarse_labels": split.coarse.tolist(),
            # Rows are the 1024 red, then green, then blue values of an image.
            "data": split.images.transpose(0, 3, 1, 2).reshape(len(split), -1),
        }
        with (directory / name).open("wb") as handle:
            pickle.dump(entry, handle)
    meta = {
        "fine_label_names": [f"fine_{i}" for i in range(N_FINE)],
        "coarse_label_names": [f"coarse_{i}" for i in range(N_COARSE)],
    }
    with (directory / "meta").open("wb") as handle:
        pickle.dump(meta, handle)
    return directory
