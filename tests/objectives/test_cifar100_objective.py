"""The ``cifar100`` objective and retrain, on a tiny on-disk CIFAR-100, on the CPU."""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch

from objectives.base import NullReporter, TrialInterrupted
from objectives.cifar100 import cifar100
from objectives.cifar100 import training as training_module
from objectives.cifar100.dataset import DatasetUnavailable
from objectives.cifar100.model import build_model
from objectives.cifar100.objective import objective, retrain
from objectives.cifar100.settings import Cifar100Settings
from objectives.cifar100.space import REFERENCE_PARAMS
from objectives.registry import get_experiment

SMALL_POINT: dict[str, Any] = {
    **REFERENCE_PARAMS,
    "batch_size": 64.0,
    "n_stages": 2,
    "width_multiplier": 0.25,
    "coarse_head": {"weight": 0.3},
    "second_dense": {"width": 128.0},
    "conv_dropout": 0.1,
    "dense_dropout": 0.2,
}
"""A small network with every optional part switched on, so one CPU epoch is quick."""

EPOCH_METRICS = {"loss", "train_loss", "val_loss", "val_accuracy", "lr", "epoch_time", "images_per_s"}
RESULT_FIELDS = {
    "status",
    "loss",
    "val_accuracy",
    "test_accuracy",
    "n_params",
    "train_time",
    "device",
    "peak_memory",
}


def _settings(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "epochs": 1,
        "val_size": 64,
        "data_dir": str(data_dir),
        "download": False,
        "device": "cpu",
        **overrides,
    }


def _constant_step(loss: float) -> Any:
    """A stand-in for ``train_step`` that steps the optimizer without gradients and
    returns ``loss``."""

    def step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, *args: Any) -> torch.Tensor:
        optimizer.step()
        return torch.tensor(loss)

    return step


class StopAfterFirstEpoch(NullReporter):
    def should_stop(self) -> bool:
        return bool(self.metrics)


def test_registered_with_retrain() -> None:
    assert get_experiment("cifar100") is cifar100
    assert cifar100.objective is objective and cifar100.retrain is retrain
    assert cifar100.max_evals == 50
    assert cifar100.default_settings["epochs"] >= 1
    assert "data_dir" not in cifar100.default_settings


def test_one_epoch_reports_metrics_and_returns_the_result_fields(cifar_dir: Path) -> None:
    reporter = NullReporter(_settings(cifar_dir))
    result = objective(SMALL_POINT, reporter)
    assert result["status"] == "ok", result
    assert RESULT_FIELDS <= result.keys()
    assert result["loss"] == pytest.approx(1 - result["val_accuracy"])
    assert 0 <= result["test_accuracy"] <= 1
    assert result["n_params"] > 0 and result["train_time"] > 0
    assert result["device"] == "cpu" and result["peak_memory"] is None
    assert len(reporter.metrics) == 1 and reporter.metrics[0]["step"] == 1
    assert EPOCH_METRICS <= reporter.metrics[0].keys()
    assert all(
        isinstance(v, float) and v == v for k, v in reporter.metrics[0].items() if k != "step"
    )


def test_out_of_memory_fails_the_trial_and_frees_the_model(
    cifar_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models: list[weakref.ref[torch.nn.Module]] = []
    emptied: list[bool] = []

    def out_of_memory(net: torch.nn.Module, *args: Any) -> torch.Tensor:
        models.append(weakref.ref(net))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(training_module, "train_step", out_of_memory)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    result = objective(SMALL_POINT, NullReporter(_settings(cifar_dir)))
    assert result["status"] == "fail" and result["reason"] == "oom"
    assert "out of memory" in result["message"]
    assert emptied and models and models[0]() is None


def test_nan_loss_fails_the_trial_as_diverged(
    cifar_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training_module, "train_step", _constant_step(float("nan")))
    reporter = NullReporter(_settings(cifar_dir, epochs=3))
    result = objective(SMALL_POINT, reporter)
    assert result["status"] == "fail" and result["reason"] == "diverged"
    assert "nan" in result["message"]
    assert reporter.metrics == []


def test_stop_request_interrupts_the_trial(
    cifar_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training_module, "train_step", _constant_step(1.0))
    reporter = StopAfterFirstEpoch(_settings(cifar_dir, epochs=3))
    with pytest.raises(TrialInterrupted):
        objective(SMALL_POINT, reporter)
    assert len(reporter.metrics) == 1


def test_missing_dataset_raises_the_clear_error(tmp_path: Path) -> None:
    reporter = NullReporter(_settings(tmp_path / "empty"))
    with pytest.raises(DatasetUnavailable, match="download is disabled"):
        objective(SMALL_POINT, reporter)


def test_retrain_uses_the_full_training_set_and_saves_the_model(
    cifar_dir: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "final"
    settings = _settings(cifar_dir, val_size=5000)  # ignored: retrain has no validation
    summary = retrain(SMALL_POINT, settings, out_dir)
    assert 0 <= summary["test_accuracy"] <= 1 and summary["n_params"] > 0
    config = json.loads((out_dir / "config.json").read_text())
    assert config["params"]["batch_size"] == 64.0
    assert config["settings"]["epochs"] == 1 and config["result"] == summary
    model = build_model(SMALL_POINT)
    model.load_state_dict(torch.load(out_dir / "model.pt"))


def test_settings_from_strings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path))
    settings = Cifar100Settings.from_mapping({"epochs": "3", "compile": "true", "download": "0"})
    assert (settings.epochs, settings.compile, settings.download) == (3, True, False)
    assert settings.val_size == 5000 and settings.data_dir == tmp_path
    with pytest.raises(ValueError, match="compile"):
        Cifar100Settings.from_mapping({"compile": "maybe"})
    with pytest.raises(ValueError, match="epochs"):
        Cifar100Settings.from_mapping({"epochs": 0})


def test_the_learning_rate_schedule_is_the_one_docs_cifar100_md_describes() -> None:
    """Linear warm-up over the first 20 % of the steps, then a linear fall towards zero
    that the last step does not reach (it trains at the peak / steps after the warm-up)."""
    factor = training_module.warmup_then_decay(10)
    assert [factor(step) for step in range(10)] == pytest.approx(
        [0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
