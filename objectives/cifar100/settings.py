"""Run settings of the ``cifar100`` experiment.

Settings are fixed per run (``hpo-coord start --set KEY=VALUE``) and are not searched.
Values may arrive as strings from a command line; :meth:`Cifar100Settings.from_mapping`
converts them.  Keys it does not know are ignored (they may be meant for the worker).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from objectives.base import Setting
from objectives.cifar100.dataset import resolve_data_dir

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError(f"setting {key!r} must be a boolean (true/false), not {value!r}")


SETTINGS: tuple[Setting, ...] = (
    Setting("epochs", int, 15, "training epochs (the budget); the learning-rate schedule spans them",
            minimum=1),
    Setting("val_size", int, 5000, "training images held out for validation", minimum=1, maximum=49_999),
    Setting("split_seed", int, 0, "seed of the validation split"),
    Setting("seed", int, 0, "seed of weight initialisation, batch order and augmentation"),
    Setting("compile", bool, False, "wrap the model in torch.compile"),
    Setting("data_dir", str, help="directory holding cifar-100-python/ (default: each worker's "
            "$HPO_DATA_DIR or ~/.cache/hpo-queue/data)"),
    Setting("download", bool, help="download CIFAR-100 when missing (default: true)"),
    Setting("device", str, help="auto (CUDA when available, else CPU) or a torch device (default: auto)"),
)
"""The experiment's run settings.  ``data_dir``, ``download`` and ``device`` have no
default on purpose: they describe a worker's machine, not the run, so unless a run sets
them each worker resolves them itself (defaults: ``$HPO_DATA_DIR`` or
``~/.cache/hpo-queue/data``, ``true``, ``"auto"``)."""

DEFAULT_SETTINGS: dict[str, Any] = {s.name: s.default for s in SETTINGS if s.default is not None}

_MACHINE_DEFAULTS: dict[str, Any] = {"download": True, "device": "auto"}


@dataclass(frozen=True)
class Cifar100Settings:
    """Everything about a trial that is not a hyperparameter.

    Attributes:
        epochs: training epochs (the budget); the learning-rate schedule spans them.
        val_size: training images held out for validation; the loss is measured on them.
        split_seed: seed of the validation split (the same for every trial of a run).
        seed: seed of weight initialisation, batch order and augmentation.
        data_dir: the directory holding (or to receive) ``cifar-100-python/``.
        download: download CIFAR-100 into ``data_dir`` when it is missing.
        compile: wrap the model in ``torch.compile``.
        device: ``"auto"`` (CUDA when available, else CPU) or a torch device string.
    """

    epochs: int
    val_size: int
    split_seed: int
    seed: int
    data_dir: Path
    download: bool
    compile: bool
    device: str

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> Cifar100Settings:
        """Settings from a run's settings mapping, missing keys taking the defaults.

        Raises:
            ValueError: a value of the wrong kind, or ``epochs`` < 1.
        """
        values = {**DEFAULT_SETTINGS, **_MACHINE_DEFAULTS, **settings}
        result = cls(
            epochs=int(values["epochs"]),
            val_size=int(values["val_size"]),
            split_seed=int(values["split_seed"]),
            seed=int(values["seed"]),
            data_dir=resolve_data_dir(values.get("data_dir")),
            download=_as_bool("download", values["download"]),
            compile=_as_bool("compile", values["compile"]),
            device=str(values["device"]),
        )
        if result.epochs < 1:
            raise ValueError(f"setting 'epochs' must be at least 1, not {result.epochs}")
        return result

    def torch_device(self) -> torch.device:
        """The device to train on."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def as_json(self) -> dict[str, Any]:
        """The settings as JSON-serializable values."""
        return {**asdict(self), "data_dir": str(self.data_dir)}
