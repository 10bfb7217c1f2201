"""The fast data path: the whole data set lives on the training device.

Images are uploaded once as uint8 (150 MB for the training set).  Each batch is then
gathered, normalized, padded, randomly cropped and flipped on the device with batched
tensor ops: no per-sample Python, no worker processes, no host-to-device copies during
training.  The same code runs on the CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from objectives.cifar100.dataset import Split

MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
"""Per-channel statistics of the CIFAR-100 training set, for pixel values in [0, 1]."""

PAD = 4
"""Random crops are taken from the image reflect-padded by this many pixels per side."""


@dataclass(frozen=True)
class Batch:
    """One batch on the training device: normalized float images (B, 3, 32, 32) and
    their fine (B,) and coarse (B,) int64 labels."""

    images: torch.Tensor
    fine: torch.Tensor
    coarse: torch.Tensor


@dataclass(frozen=True)
class DeviceSplit:
    """A :class:`~objectives.cifar100.dataset.Split` on a device: images (N, 3, 32, 32)
    uint8, labels int64."""

    images: torch.Tensor
    fine: torch.Tensor
    coarse: torch.Tensor

    @classmethod
    def upload(cls, split: Split, device: torch.device) -> DeviceSplit:
        images = torch.tensor(split.images, device=device).permute(0, 3, 1, 2).contiguous()
        return cls(
            images=images,
            fine=torch.tensor(split.fine, device=device),
            coarse=torch.tensor(split.coarse, device=device),
        )

    def __len__(self) -> int:
        return len(self.fine)

    def batch(self, index: torch.Tensor | slice) -> Batch:
        """The examples at ``index``, normalized, not augmented."""
        return Batch(normalize(self.images[index]), self.fine[index], self.coarse[index])


@functools.cache
def _channel_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """:data:`MEAN` and :data:`STD` as (1, 3, 1, 1) tensors on ``device``, made once, so
    that a batch costs no host-to-device copy."""
    shape = (1, 3, 1, 1)
    return (
        torch.tensor(MEAN, device=device).view(shape),
        torch.tensor(STD, device=device).view(shape),
    )


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, 3, H, W) as float32, standardized per channel."""
    mean, std = _channel_stats(images.device)
    return (images.float() / 255.0 - mean) / std


def random_crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of the float batch (B, C, H, W) reflect-padded by :data:`PAD`, cropped
    back to H x W at a random offset, and mirrored left-right with probability 1/2.

    The crop is two gathers with per-image row and column indices, so the cost does not
    depend on the batch's composition.
    """
    n, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (PAD, PAD, PAD, PAD), mode="reflect")
    offsets = torch.randint(0, 2 * PAD + 1, (2, n), device=device, generator=generator)
    rows = offsets[0, :, None] + torch.arange(height, device=device)
    cols = offsets[1, :, None] + torch.arange(width, device=device)
    padded_width = width + 2 * PAD
    cropped = padded.gather(2, rows[:, None, :, None].expand(n, channels, height, padded_width))
    cropped = cropped.gather(3, cols[:, None, None, :].expand(n, channels, height, width))
    flip = torch.rand(n, device=device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)


class ResidentBatches:
    """Augmented training batches from a :class:`DeviceSplit`.

    Each :meth:`epoch` visits the examples in a fresh random order, in
    ``len(self)`` batches of ``batch_size`` (the last, partial batch is dropped, so every
    step has the same shape); ``batch_size`` is capped at the number of examples.
    """

    def __init__(self, data: DeviceSplit, batch_size: int, *, seed: int) -> None:
        self.data = data
        self.batch_size = min(batch_size, len(data))
        self.generator = torch.Generator(device=data.images.device).manual_seed(seed)

    def __len__(self) -> int:
        return len(self.data) // self.batch_size

    @property
    def images_per_epoch(self) -> int:
        return len(self) * self.batch_size

    def epoch(self) -> Iterator[Batch]:
        order = torch.randperm(
            len(self.data), device=self.data.images.device, generator=self.generator
        )
        for step in range(len(self)):
            batch = self.data.batch(order[step * self.batch_size : (step + 1) * self.batch_size])
            yield Batch(random_crop_flip(batch.images, self.generator), batch.fine, batch.coarse)


def eval_batches(data: DeviceSplit, batch_size: int) -> Iterator[Batch]:
    """All of ``data`` in order, in batches of at most ``batch_size``, not augmented."""
    for start in range(0, len(data), batch_size):
        yield data.batch(slice(start, start + batch_size))
