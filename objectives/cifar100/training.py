"""Training a ``cifar100`` network: the recipe a point describes, and the loop.

:class:`Trainer` owns the model, optimizer and learning-rate schedule of one trial and
trains epoch by epoch from any iterable of :class:`~objectives.cifar100.resident.Batch`
(the GPU-resident batches, or the benchmark's DataLoader baseline), so both data paths
train the same model in the same way.

The model and its inputs use the channels_last memory format.  On CUDA the forward pass
runs under bf16 autocast and cuDNN's autotuner is switched on (process-wide; every step
has the same shapes); on the CPU everything is float32.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from objectives.cifar100.model import Cifar100Net, build_model
from objectives.cifar100.resident import Batch

logger = logging.getLogger(__name__)

WARMUP_FRACTION = 0.2
"""The learning rate rises linearly from ~0 to its peak over this fraction of the steps,
then falls linearly to 0 at the last step."""

REFERENCE_BATCH_SIZE = 256


@dataclass(frozen=True)
class OptimizerDefaults:
    """An optimizer's base learning rate and weight decay; a point scales both."""

    lr: float
    weight_decay: float
    lr_scales_with_batch: bool
    """Whether the base lr is for a batch of 256 and grows linearly with the batch size."""


OPTIMIZERS: dict[str, OptimizerDefaults] = {
    "sgd_nesterov": OptimizerDefaults(lr=0.1, weight_decay=5e-4, lr_scales_with_batch=True),
    "adamw": OptimizerDefaults(lr=2e-3, weight_decay=5e-2, lr_scales_with_batch=False),
    "adam": OptimizerDefaults(lr=1e-3, weight_decay=1e-4, lr_scales_with_batch=False),
}


class TrainingDiverged(RuntimeError):
    """The training loss of an epoch was not finite; the trial is abandoned."""


@dataclass(frozen=True)
class Recipe:
    """The optimization part of a point, as typed values (peak lr and weight decay
    already scaled)."""

    optimizer: str
    momentum: float
    lr: float
    weight_decay: float
    batch_size: int
    label_smoothing: float
    coarse_weight: float
    """Weight of the coarse-label loss; 0 without the coarse head."""

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Recipe:
        choice = params["optimizer"]
        name = str(choice["name"])
        if name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, not {name!r}")
        defaults = OPTIMIZERS[name]
        batch_size = int(params["batch_size"])
        batch_scale = batch_size / REFERENCE_BATCH_SIZE if defaults.lr_scales_with_batch else 1.0
        coarse = params["coarse_head"]
        return cls(
            optimizer=name,
            momentum=float(choice.get("momentum", 0.0)),
            lr=defaults.lr * batch_scale * float(params["lr_multiplier"]),
            weight_decay=defaults.weight_decay * float(params["weight_decay_multiplier"]),
            batch_size=batch_size,
            label_smoothing=float(params["label_smoothing"]),
            coarse_weight=float(coarse["weight"]) if coarse else 0.0,
        )


@dataclass(frozen=True)
class EpochStats:
    """What one training epoch did."""

    epoch: int
    train_loss: float
    lr: float
    """The learning rate of the epoch's last step."""
    epoch_time: float
    images_per_s: float


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a disabled context elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def trial_loss(
    fine_logits: torch.Tensor, coarse_logits: torch.Tensor | None, batch: Batch, recipe: Recipe
) -> torch.Tensor:
    """Label-smoothed cross-entropy on the fine labels, plus ``coarse_weight`` times the
    same on the coarse labels when the model has the coarse head."""
    loss = F.cross_entropy(fine_logits, batch.fine, label_smoothing=recipe.label_smoothing)
    if coarse_logits is not None:
        loss = loss + recipe.coarse_weight * F.cross_entropy(
            coarse_logits, batch.coarse, label_smoothing=recipe.label_smoothing
        )
    return loss


def train_step(
    net: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, recipe: Recipe
) -> torch.Tensor:
    """One optimizer step on ``batch``; returns the batch's loss (detached, on the device,
    so that the caller does not wait for the GPU)."""
    with autocast(batch.images.device):
        fine_logits, coarse_logits = net(batch.images)
        loss = trial_loss(fine_logits, coarse_logits, batch, recipe)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices and kernels only, not on biases or norm scales."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = _param_groups(model, recipe.weight_decay)
    if recipe.optimizer == "sgd_nesterov":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    return torch.optim.Adam(groups, lr=recipe.lr)


def warmup_then_decay(total_steps: int) -> Callable[[int], float]:
    """The lr factor of step ``s`` (from 0): linear warm-up over
    :data:`WARMUP_FRACTION` of ``total_steps``, then linear decay, never exactly 0."""
    warmup = max(1, round(WARMUP_FRACTION * total_steps))

    def factor(step: int) -> float:
        return min(
            (step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup))
        )

    return factor


class Trainer:
    """Model, optimizer and schedule of one trial.

    Args:
        params: a point of the space.
        device: where to train.
        total_steps: optimizer steps the schedule spans (epochs x batches per epoch).
        seed: seed of the initial weights.
        compile: run the model through ``torch.compile``.
    """

    def __init__(
        self,
        params: Mapping[str, Any],
        *,
        device: torch.device,
        total_steps: int,
        seed: int,
        compile: bool = False,
    ) -> None:
        self.recipe = Recipe.from_params(params)
        self.device = device
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every step has the same shapes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model: Cifar100Net = build_model(params)
        self.model.to(device).to(memory_format=torch.channels_last)
        self.net = cast(nn.Module, torch.compile(self.model)) if compile else self.model
        """What is trained and evaluated: the model, or its compiled wrapper."""
        self.optimizer = make_optimizer(self.model, self.recipe)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_then_decay(total_steps)
        )
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.epochs_done = 0

    def train_epoch(self, batches: Iterable[Batch]) -> EpochStats:
        """Train on every batch of ``batches`` (one epoch).

        Raises:
            TrainingDiverged: the epoch's mean loss is not finite.
        """
        self.net.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        steps = images = 0
        lr = self.optimizer.param_groups[0]["lr"]
        for batch in batches:
            batch = Batch(
                batch.images.contiguous(memory_format=torch.channels_last), batch.fine, batch.coarse
            )
            loss_sum += train_step(self.net, self.optimizer, batch, self.recipe)
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            steps += 1
            images += len(batch.fine)
        train_loss = loss_sum.item() / max(1, steps)  # waits for the device
        epoch_time = time.perf_counter() - start
        self.epochs_done += 1
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"training loss was {train_loss} in epoch {self.epochs_done} "
                f"(optimizer {self.recipe.optimizer}, peak lr {self.recipe.lr:.3g})"
            )
        return EpochStats(
            epoch=self.epochs_done,
            train_loss=train_loss,
            lr=lr,
            epoch_time=epoch_time,
            images_per_s=images / epoch_time,
        )

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Batch]) -> tuple[float, float]:
        """``(mean cross-entropy, top-1 accuracy)`` on the fine labels of ``batches``
        (no label smoothing)."""
        self.net.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        count = 0
        for batch in batches:
            with autocast(self.device):
                fine_logits, _ = self.net(
                    batch.images.contiguous(memory_format=torch.channels_last)
                )
            loss_sum += F.cross_entropy(fine_logits.float(), batch.fine, reduction="sum")
            correct += (fine_logits.argmax(1) == batch.fine).sum()
            count += len(batch.fine)
        return loss_sum.item() / count, correct.item() / count
