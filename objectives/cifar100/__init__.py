"""``cifar100``: a nested CNN search space trained on CIFAR-100 (issue 4).

The loss is the validation error after ``settings["epochs"]`` epochs, on a held-out
split of the training set; see docs/cifar100.md for the space, the data handling, the
GPU-resident data path, the settings, the failure results and retraining.

Modules: :mod:`~objectives.cifar100.space` (the search space),
:mod:`~objectives.cifar100.model` (the network a point describes),
:mod:`~objectives.cifar100.dataset` (files on disk),
:mod:`~objectives.cifar100.resident` (the on-device data path),
:mod:`~objectives.cifar100.training` (recipe and training loop),
:mod:`~objectives.cifar100.settings` (run settings) and
:mod:`~objectives.cifar100.objective` (the objective and :func:`retrain`).
"""

from __future__ import annotations

from objectives.base import Experiment
from objectives.cifar100.objective import objective, retrain
from objectives.cifar100.settings import SETTINGS
from objectives.cifar100.space import space
from objectives.pruning import PruningMetric

cifar100 = Experiment(
    name="cifar100",
    space=space,
    objective=objective,
    max_evals=50,
    description=(
        "A nested CNN space (stages, width, residual units, pooling, optional first conv "
        "and second dense layer, coarse-label head, optimizer, regularization) trained on "
        "CIFAR-100; loss = validation error after `epochs` epochs."
    ),
    settings=SETTINGS,
    pruning=PruningMetric("loss", "minimize"),
    retrain=retrain,
)

__all__ = ["cifar100"]
