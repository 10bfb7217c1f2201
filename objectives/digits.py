"""``digits``: a small CNN on scikit-learn's 8x8 handwritten digits.

A real (if small) deep-learning objective that needs no download: the data ships with
scikit-learn.  The 1,797 images are split once, stratified and with a fixed seed (the
setting ``split_seed``, default :data:`SPLIT_SEED`: another seed checks a configuration
on other data), into 80 % training and 20 % validation; the loss is the validation error
(``1 - validation accuracy``) after ``settings["epochs"]`` epochs (default
:data:`DEFAULT_EPOCHS`).  One trial takes a few seconds on one CPU thread.

The objective reports ``loss`` (the validation error so far: what it would return if
it stopped there), ``train_loss``, ``val_loss``, ``val_accuracy``, ``lr`` and
``epoch_time`` every epoch (pruning compares ``loss``), raises
:class:`~objectives.base.TrialInterrupted` when the worker asks it to stop, and returns
a failed result with ``reason: "diverged"`` when the training loss stops being finite.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from hyperopt import hp
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from objectives.base import Experiment, Reporter, Setting, TrialInterrupted
from objectives.pruning import PruningMetric

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = 10
"""Training epochs when the run sets no ``epochs``."""

VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0
"""Seed of the stratified train/validation split when the run sets no ``split_seed``;
fixed so every trial sees the same split."""

TRAINING_SEED = 0
"""Seed of weight initialisation, batch order and dropout, so that a point's loss is
repeatable (the process's own random state is left as it was)."""

space: dict[str, Any] = {
    "lr": hp.loguniform("lr", math.log(1e-4), math.log(0.3)),
    "batch_size": hp.choice("batch_size", [32, 64, 128]),
    "channels": hp.quniform("channels", 8, 32, 8),
    "dropout": hp.uniform("dropout", 0.0, 0.5),
    "optimizer": hp.choice(
        "optimizer",
        [
            {"name": "sgd", "momentum": hp.uniform("sgd_momentum", 0.5, 0.99)},
            {"name": "adam"},
        ],
    ),
    "extra_dense": hp.choice(
        "extra_dense",
        [None, {"width": hp.quniform("extra_dense_width", 16, 128, 16)}],
    ),
}
"""The search space.  ``channels`` is the width of the first convolution (the second has
twice as many); ``extra_dense`` optionally adds a hidden dense layer of its own width."""


@functools.cache
def _dataset(split_seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train_x, train_y, val_x, val_y)`` of the split ``split_seed``: images as
    (N, 1, 8, 8) floats in [0, 1]."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    train_x, val_x, train_y, val_y = train_test_split(
        images,
        digits.target,
        test_size=VALIDATION_FRACTION,
        stratify=digits.target,
        random_state=split_seed,
    )
    return (
        torch.from_numpy(train_x),
        torch.from_numpy(train_y).long(),
        torch.from_numpy(val_x),
        torch.from_numpy(val_y).long(),
    )


def build_model(params: Mapping[str, Any]) -> nn.Module:
    """The CNN for one point of :data:`space`: two 3x3 convolutions, a 2x2 max pool, an
    optional hidden dense layer, and 10 logits."""
    channels = int(params["channels"])
    dropout = float(params["dropout"])
    layers: list[nn.Module] = [
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
    ]
    features = 2 * channels * 4 * 4
    extra = params["extra_dense"]
    if extra is not None:
        width = int(extra["width"])
        layers += [nn.Linear(features, width), nn.ReLU(), nn.Dropout(dropout)]
        features = width
    layers.append(nn.Linear(features, 10))
    return nn.Sequential(*layers)


def _optimizer(model: nn.Module, params: Mapping[str, Any]) -> torch.optim.Optimizer:
    choice = params["optimizer"]
    lr = float(params["lr"])
    if choice["name"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(choice["momentum"]))
    if choice["name"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    raise ValueError(f"unknown optimizer {choice['name']!r}")


def _objective(params: Mapping[str, Any], reporter: Reporter) -> dict[str, Any]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TRAINING_SEED)
        return _train(params, reporter)


def _train(params: Mapping[str, Any], reporter: Reporter) -> dict[str, Any]:
    epochs = int(reporter.settings.get("epochs", DEFAULT_EPOCHS))
    batch_size = int(params["batch_size"])
    train_x, train_y, val_x, val_y = _dataset(int(reporter.settings.get("split_seed", SPLIT_SEED)))
    model = build_model(params)
    optimizer = _optimizer(model, params)
    loss_fn = nn.CrossEntropyLoss()
    n_params = sum(p.numel() for p in model.parameters())
    train_time = 0.0
    val_accuracy = 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        loss_sum = 0.0
        permutation = torch.randperm(len(train_x))
        for batch in permutation.split(batch_size):
            loss = loss_fn(model(train_x[batch]), train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(batch)
        train_loss = loss_sum / len(train_x)
        if not math.isfinite(train_loss):
            logger.info("digits trial diverged at epoch %d (lr=%g)", epoch, params["lr"])
            return {
                "status": "fail",
                "reason": "diverged",
                "message": f"training loss became {train_loss} in epoch {epoch}",
            }
        model.eval()
        with torch.no_grad():
            logits = model(val_x)
            val_loss = loss_fn(logits, val_y).item()
            val_accuracy = (logits.argmax(1) == val_y).float().mean().item()
        epoch_time = time.perf_counter() - start
        train_time += epoch_time
        reporter.report(
            epoch,
            loss=1.0 - val_accuracy,
            train_loss=train_loss,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            lr=optimizer.param_groups[0]["lr"],
            epoch_time=epoch_time,
        )
        if reporter.should_stop():
            raise TrialInterrupted(f"digits trial asked to stop after epoch {epoch}")
    return {
        "status": "ok",
        "loss": 1.0 - val_accuracy,
        "val_accuracy": val_accuracy,
        "train_time": train_time,
        "n_params": n_params,
    }


digits = Experiment(
    name="digits",
    space=space,
    objective=_objective,
    max_evals=30,
    description=(
        "A small CNN on scikit-learn's 8x8 digits; loss = validation error after "
        f"`epochs` epochs (default {DEFAULT_EPOCHS})."
    ),
    settings=(
        Setting("epochs", int, DEFAULT_EPOCHS, "training epochs of each trial", minimum=1),
        Setting("split_seed", int, help=f"seed of the train/validation split (default {SPLIT_SEED}); "
                "another seed checks a configuration on other data", minimum=0),
    ),
    pruning=PruningMetric("loss", "minimize"),
)
