"""The ``cifar100`` search space, in the spirit of the Hyperopt-Keras-CNN-CIFAR-100 tutorial.

Every point builds a valid model (:mod:`objectives.cifar100.model`) and a valid training
recipe (:mod:`objectives.cifar100.training`).  Nested choices carry their own
hyperparameters: SGD's momentum, the number of residual units, the first convolution's
kernel, the second dense layer's width, and the auxiliary coarse head's loss weight
exist only on the branch that uses them.  docs/cifar100.md describes each entry.
"""

from __future__ import annotations

import math
from typing import Any

from hyperopt import hp


def _log_uniform(label: str, low: float, high: float) -> Any:
    return hp.loguniform(label, math.log(low), math.log(high))


space: dict[str, Any] = {
    # Optimization.
    "lr_multiplier": _log_uniform("lr_multiplier", 0.2, 5.0),
    "weight_decay_multiplier": _log_uniform("weight_decay_multiplier", 0.1, 10.0),
    "batch_size": hp.quniform("batch_size", 128, 1024, 128),
    "optimizer": hp.choice(
        "optimizer",
        [
            {"name": "sgd_nesterov", "momentum": hp.uniform("sgd_momentum", 0.8, 0.95)},
            {"name": "adamw"},
            {"name": "adam"},
        ],
    ),
    "label_smoothing": hp.uniform("label_smoothing", 0.0, 0.2),
    "coarse_head": hp.choice(
        "coarse_head", [None, {"weight": hp.uniform("coarse_weight", 0.05, 0.5)}]
    ),
    # Architecture.
    "n_stages": hp.choice("n_stages", [2, 3, 4]),
    "width_multiplier": _log_uniform("width_multiplier", 0.5, 1.5),
    "residual": hp.choice(
        "residual", [None, {"units_per_stage": hp.quniform("residual_units", 1, 3, 1)}]
    ),
    "pooling": hp.choice("pooling", ["max", "avg", "strided_conv"]),
    "first_conv": hp.choice(
        "first_conv", [None, {"kernel_size": hp.choice("first_conv_kernel", [3, 5])}]
    ),
    "second_dense": hp.choice(
        "second_dense", [None, {"width": hp.quniform("second_dense_width", 128, 1024, 128)}]
    ),
    "batch_norm": hp.choice("batch_norm", [True, False]),
    "activation": hp.choice("activation", ["relu", "elu", "gelu", "silu"]),
    "conv_dropout": hp.uniform("conv_dropout", 0.0, 0.25),
    "dense_dropout": hp.uniform("dense_dropout", 0.0, 0.5),
}

REFERENCE_PARAMS: dict[str, Any] = {
    "lr_multiplier": 1.0,
    "weight_decay_multiplier": 1.0,
    "batch_size": 512.0,
    "optimizer": {"name": "sgd_nesterov", "momentum": 0.9},
    "label_smoothing": 0.1,
    "coarse_head": None,
    "n_stages": 3,
    "width_multiplier": 1.0,
    "residual": {"units_per_stage": 1.0},
    "pooling": "max",
    "first_conv": {"kernel_size": 3},
    "second_dense": None,
    "batch_norm": True,
    "activation": "relu",
    "conv_dropout": 0.0,
    "dense_dropout": 0.0,
}
"""A point of :data:`space` that is a ResNet-9-like network (64-channel stem, stages of
128, 256 and 512 channels with one residual unit each), trained with Nesterov SGD: the
benchmark's model and a known-good starting point."""
