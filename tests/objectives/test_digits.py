"""The ``digits`` experiment: real data, a real CNN, a few seconds per trial."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from hyperopt.pyll.stochastic import sample

from objectives.base import NullReporter, TrialInterrupted
from objectives.digits import SPLIT_SEED, build_model, digits
from objectives.registry import get_experiment

GOOD_POINT = {
    "lr": 3e-3,
    "batch_size": 64,
    "channels": 16.0,
    "dropout": 0.1,
    "optimizer": {"name": "adam"},
    "extra_dense": {"width": 64.0},
}


def _trial(params: Mapping[str, Any], reporter: NullReporter) -> Mapping[str, Any]:
    result = digits.objective(params, reporter)
    assert isinstance(result, Mapping)
    return result


class StopAfterFirstEpoch(NullReporter):
    def should_stop(self) -> bool:
        return bool(self.metrics)


def test_registered_under_its_name() -> None:
    assert get_experiment("digits") is digits
    assert digits.algo is None and 20 <= digits.max_evals <= 50


def test_short_trial_learns_and_reports_every_epoch() -> None:
    reporter = NullReporter({"epochs": 4})
    result = _trial(GOOD_POINT, reporter)
    assert result["status"] == "ok"
    assert result["val_accuracy"] > 0.9
    assert result["loss"] == pytest.approx(1 - result["val_accuracy"])
    assert result["n_params"] > 0 and result["train_time"] > 0
    assert [m["step"] for m in reporter.metrics] == [1, 2, 3, 4]
    for metrics in reporter.metrics:
        assert {"train_loss", "val_loss", "val_accuracy", "lr", "epoch_time"} <= metrics.keys()
        # the pruning metric digits declares: the loss it would return if it stopped here
        assert metrics[digits.pruning.name] == pytest.approx(1 - metrics["val_accuracy"])
    assert digits.pruning.direction == "minimize"
    assert reporter.metrics[-1]["loss"] == result["loss"]
    assert reporter.metrics[-1]["train_loss"] < reporter.metrics[0]["train_loss"]


def test_same_point_same_loss() -> None:
    first = _trial(GOOD_POINT, NullReporter({"epochs": 1}))
    second = _trial(GOOD_POINT, NullReporter({"epochs": 1}))
    assert first["loss"] == second["loss"]


def _val_loss(settings: dict[str, int]) -> float:
    reporter = NullReporter({"epochs": 1, **settings})
    _trial(GOOD_POINT, reporter)
    return reporter.metrics[-1]["val_loss"]


def test_split_seed_trains_and_validates_on_other_data() -> None:
    default = _val_loss({})
    assert _val_loss({"split_seed": SPLIT_SEED}) == default
    other = [_val_loss({"split_seed": seed}) for seed in (1, 2)]
    assert all(loss != default for loss in other) and other[0] != other[1]
    setting = next(setting for setting in digits.settings if setting.name == "split_seed")
    assert setting.default is None  # a run that does not set it stores nothing: the default split
    assert setting.parse(3) == 3


def test_space_samples_build_models() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        params = sample(digits.space, rng=rng)
        assert params["optimizer"]["name"] in {"sgd", "adam"}
        logits = build_model(params)(torch.zeros(int(params["batch_size"]), 1, 8, 8))
        assert logits.shape == (int(params["batch_size"]), 10)


def test_divergence_is_a_failed_trial() -> None:
    result = _trial({**GOOD_POINT, "lr": 1e30}, NullReporter({"epochs": 2}))
    assert result["status"] == "fail"
    assert result["reason"] == "diverged"
    assert "nan" in result["message"]


def test_stop_request_interrupts_the_trial() -> None:
    reporter = StopAfterFirstEpoch({"epochs": 5})
    with pytest.raises(TrialInterrupted):
        _trial(GOOD_POINT, reporter)
    assert len(reporter.metrics) == 1
