"""The network a point of the ``cifar100`` space describes.

A stack of stages, each halving the resolution::

    [first conv k x k, 64w channels]
    stage i: conv 3x3 -> pool 2x2 (or one stride-2 conv 3x3), then r residual units
    global max pool -> dropout -> [dense(width) -> dropout] -> 100 fine logits
                                                           \\-> 20 coarse logits (optional)

where every conv and dense layer is followed by batch norm (when enabled) and the
activation.  Stage i has ``128 * 2**i`` channels (at most 512) times the width
multiplier, rounded to a multiple of 16.  Four stages take 32x32 inputs down to 2x2, so
every point of the space gives a valid network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from objectives.cifar100.dataset import N_COARSE, N_FINE

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}
POOLING = ("max", "avg", "strided_conv")
FIRST_CONV_CHANNELS = 64
STAGE_CHANNELS = (128, 256, 512, 512)
CHANNEL_QUANTUM = 16


@dataclass(frozen=True)
class Architecture:
    """The architectural part of a point, as typed values."""

    n_stages: int
    width_multiplier: float
    residual_units: int
    pooling: str
    first_conv_kernel: int | None
    second_dense_width: int | None
    batch_norm: bool
    activation: str
    conv_dropout: float
    dense_dropout: float
    coarse_head: bool

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Architecture:
        """Read a point of :data:`objectives.cifar100.space.space`.

        Raises:
            ValueError: a value outside what the model supports.
        """
        arch = cls(
            n_stages=int(params["n_stages"]),
            width_multiplier=float(params["width_multiplier"]),
            residual_units=int(params["residual"]["units_per_stage"]) if params["residual"] else 0,
            pooling=str(params["pooling"]),
            first_conv_kernel=(
                int(params["first_conv"]["kernel_size"]) if params["first_conv"] else None
            ),
            second_dense_width=(
                int(params["second_dense"]["width"]) if params["second_dense"] else None
            ),
            batch_norm=bool(params["batch_norm"]),
            activation=str(params["activation"]),
            conv_dropout=float(params["conv_dropout"]),
            dense_dropout=float(params["dense_dropout"]),
            coarse_head=params["coarse_head"] is not None,
        )
        if not 1 <= arch.n_stages <= len(STAGE_CHANNELS):
            raise ValueError(f"n_stages must be 1..{len(STAGE_CHANNELS)}, not {arch.n_stages}")
        if arch.pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, not {arch.pooling!r}")
        if arch.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}")
        if arch.first_conv_kernel is not None and arch.first_conv_kernel % 2 == 0:
            raise ValueError("the first conv's kernel size must be odd")
        return arch

    def channels(self, base: int) -> int:
        """``base`` times the width multiplier, rounded to a multiple of 16 (at least 16)."""
        return max(
            CHANNEL_QUANTUM, round(base * self.width_multiplier / CHANNEL_QUANTUM) * CHANNEL_QUANTUM
        )


class ConvUnit(nn.Sequential):
    """Conv k x k (same padding) -> batch norm (if enabled) -> activation."""

    def __init__(self, arch: Architecture, c_in: int, c_out: int, kernel: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(
                c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=not arch.batch_norm
            ),
            nn.BatchNorm2d(c_out) if arch.batch_norm else nn.Identity(),
            ACTIVATIONS[arch.activation](),
        )


class ResidualUnit(nn.Module):
    """``x + ConvUnit(ConvUnit(x))`` at constant width."""

    def __init__(self, arch: Architecture, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            ConvUnit(arch, channels, channels), ConvUnit(arch, channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _dropout(p: float) -> list[nn.Module]:
    """A dropout layer, or none when ``p`` is 0."""
    return [nn.Dropout(p)] if p > 0 else []


class Cifar100Net(nn.Module):
    """``forward(images)`` maps (B, 3, 32, 32) to ``(fine_logits (B, 100), coarse_logits
    (B, 20) or None)``; coarse logits exist when the architecture has the coarse head."""

    def __init__(self, arch: Architecture):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        if arch.first_conv_kernel is not None:
            layers.append(
                ConvUnit(arch, channels, arch.channels(FIRST_CONV_CHANNELS), arch.first_conv_kernel)
            )
            channels = arch.channels(FIRST_CONV_CHANNELS)
        for base in STAGE_CHANNELS[: arch.n_stages]:
            width = arch.channels(base)
            if arch.pooling == "strided_conv":
                layers.append(ConvUnit(arch, channels, width, stride=2))
            else:
                pool = nn.MaxPool2d(2) if arch.pooling == "max" else nn.AvgPool2d(2)
                layers += [ConvUnit(arch, channels, width), pool]
            layers += [ResidualUnit(arch, width) for _ in range(arch.residual_units)]
            layers += _dropout(arch.conv_dropout)
            channels = width
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), *_dropout(arch.dense_dropout)]
        if arch.second_dense_width is not None:
            layers += [
                nn.Linear(channels, arch.second_dense_width, bias=not arch.batch_norm),
                nn.BatchNorm1d(arch.second_dense_width) if arch.batch_norm else nn.Identity(),
                ACTIVATIONS[arch.activation](),
                *_dropout(arch.dense_dropout),
            ]
            channels = arch.second_dense_width
        self.features = nn.Sequential(*layers)
        self.fine_head = nn.Linear(channels, N_FINE)
        self.coarse_head = nn.Linear(channels, N_COARSE) if arch.coarse_head else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.features(images)
        coarse = self.coarse_head(features) if self.coarse_head is not None else None
        return self.fine_head(features), coarse


def build_model(params: Mapping[str, Any]) -> Cifar100Net:
    """The network for a point of the space (weights from the current torch RNG)."""
    return Cifar100Net(Architecture.from_params(params))
