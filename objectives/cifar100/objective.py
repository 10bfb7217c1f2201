"""The ``cifar100`` objective and the final retraining of a chosen point.

The objective trains on the training set less a held-out validation split and returns
the validation error as the loss; the test set is evaluated once at the end, for
reporting only.  :func:`retrain` trains on the whole training set and saves the model.

Failures the optimizer should learn from are returned as failed results, not raised:
CUDA running out of memory (``reason: "oom"``, after the memory is released so that the
worker can go on) and a non-finite training loss (``reason: "diverged"``).
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from objectives.base import Reporter, TrialInterrupted
from objectives.cifar100.dataset import Split, load_cifar100, validation_split
from objectives.cifar100.resident import DeviceSplit, ResidentBatches, eval_batches
from objectives.cifar100.settings import Cifar100Settings
from objectives.cifar100.training import Recipe, Trainer, TrainingDiverged

logger = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 1024


@dataclass(frozen=True)
class _Session:
    """A trial's data on its device, and its trainer."""

    trainer: Trainer
    batches: ResidentBatches
    test: DeviceSplit


def _start(
    params: Mapping[str, Any], settings: Cifar100Settings, train: Split, test: Split
) -> _Session:
    device = settings.torch_device()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batches = ResidentBatches(
        DeviceSplit.upload(train, device), Recipe.from_params(params).batch_size, seed=settings.seed
    )
    trainer = Trainer(
        params,
        device=device,
        total_steps=settings.epochs * len(batches),
        seed=settings.seed,
        compile=settings.compile,
    )
    return _Session(trainer, batches, DeviceSplit.upload(test, device))


def _device_summary(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {
            "device": torch.cuda.get_device_name(device),
            "peak_memory": torch.cuda.max_memory_allocated(device),
        }
    return {"device": str(device), "peak_memory": None}


def _train_and_validate(
    params: Mapping[str, Any], settings: Cifar100Settings, reporter: Reporter
) -> dict[str, Any]:
    data = load_cifar100(settings.data_dir, download=settings.download)
    train, val = validation_split(data.train, settings.val_size, settings.split_seed)
    session = _start(params, settings, train, data.test)
    trainer = session.trainer
    val_data = DeviceSplit.upload(val, trainer.device)
    train_time = 0.0
    val_accuracy = 0.0
    for epoch in range(1, settings.epochs + 1):
        stats = trainer.train_epoch(session.batches.epoch())
        train_time += stats.epoch_time
        val_loss, val_accuracy = trainer.evaluate(eval_batches(val_data, EVAL_BATCH_SIZE))
        reporter.report(
            epoch,
            loss=1.0 - val_accuracy,
            train_loss=stats.train_loss,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            lr=stats.lr,
            epoch_time=stats.epoch_time,
            images_per_s=stats.images_per_s,
        )
        if reporter.should_stop():
            raise TrialInterrupted(f"cifar100 trial asked to stop after epoch {epoch}")
    _, test_accuracy = trainer.evaluate(eval_batches(session.test, EVAL_BATCH_SIZE))
    return {
        "status": "ok",
        "loss": 1.0 - val_accuracy,
        "val_accuracy": val_accuracy,
        "test_accuracy": test_accuracy,
        "n_params": trainer.n_params,
        "train_time": train_time,
        "epochs": settings.epochs,
        **_device_summary(trainer.device),
    }


@contextmanager
def _released_on_exit() -> Iterator[None]:
    """Collect garbage and return cached CUDA memory when the block exits, whatever
    way, so that a failed trial's tensors do not stay allocated in the worker."""
    try:
        yield
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def objective(params: Mapping[str, Any], reporter: Reporter) -> dict[str, Any]:
    """Train ``params`` for ``settings["epochs"]`` epochs; loss = validation error.

    Reports ``loss`` (the validation error so far), ``train_loss``, ``val_loss``, ``val_accuracy``, ``lr``, ``epoch_time`` and
    ``images_per_s`` every epoch.  Returns an ``ok`` result with ``loss``,
    ``val_accuracy``, ``test_accuracy``, ``n_params``, ``train_time`` (seconds of
    training, evaluation excluded), ``epochs``, ``device`` and ``peak_memory`` (bytes,
    CUDA only, else None); or a ``fail`` result with ``reason`` ``"oom"`` or
    ``"diverged"`` and a ``message``.

    Raises:
        TrialInterrupted: the worker asked to stop; the trial is abandoned.
        DatasetUnavailable: no data and no way to get it.
    """
    settings = Cifar100Settings.from_mapping(reporter.settings)
    # Only the message outlives the except clauses: the exception's traceback holds the
    # frames that hold the model, its gradients and the optimizer state, which must be
    # garbage by the time _released_on_exit collects.
    with _released_on_exit():
        try:
            return _train_and_validate(params, settings, reporter)
        except torch.cuda.OutOfMemoryError as exc:
            failure = {"status": "fail", "reason": "oom", "message": str(exc)}
        except TrainingDiverged as exc:
            failure = {"status": "fail", "reason": "diverged", "message": str(exc)}
    logger.warning("cifar100 trial failed (%s): %s", failure["reason"], failure["message"])
    return failure


def retrain(
    params: Mapping[str, Any], settings: Mapping[str, Any], out_dir: Path
) -> dict[str, Any]:
    """Train ``params`` on the whole training set (no validation split) and evaluate it
    on the test set.

    Writes ``out_dir/model.pt`` (the model's ``state_dict``, tensors on the CPU; load it
    into ``objectives.cifar100.model.build_model(params)``) and ``out_dir/config.json``
    (``params``, the resolved ``settings`` and the summary) and returns the summary:
    ``test_accuracy``, ``test_loss``, ``n_params``, ``train_time``, ``epochs``,
    ``device``, ``peak_memory``.

    Raises:
        TrainingDiverged: the training loss stopped being finite.
        torch.cuda.OutOfMemoryError: the configuration does not fit on the device.
        DatasetUnavailable: no data and no way to get it.
    """
    resolved = Cifar100Settings.from_mapping(settings)
    data = load_cifar100(resolved.data_dir, download=resolved.download)
    with _released_on_exit():
        session = _start(params, resolved, data.train, data.test)
        trainer = session.trainer
        train_time = 0.0
        for _ in range(resolved.epochs):
            stats = trainer.train_epoch(session.batches.epoch())
            train_time += stats.epoch_time
            logger.info(
                "retrain epoch %d/%d: train loss %.4f, %.0f images/s",
                stats.epoch,
                resolved.epochs,
                stats.train_loss,
                stats.images_per_s,
            )
        test_loss, test_accuracy = trainer.evaluate(eval_batches(session.test, EVAL_BATCH_SIZE))
        summary = {
            "test_accuracy": test_accuracy,
            "test_loss": test_loss,
            "n_params": trainer.n_params,
            "train_time": train_time,
            "epochs": resolved.epochs,
            **_device_summary(trainer.device),
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        weights = {name: tensor.cpu() for name, tensor in trainer.model.state_dict().items()}
        torch.save(weights, out_dir / "model.pt")
        config = {"params": dict(params), "settings": resolved.as_json(), "result": summary}
        (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=_plain) + "\n")
    logger.info("retrained cifar100 model saved in %s: %s", out_dir, summary)
    return summary


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars in ``params`` (hyperopt samples them)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
