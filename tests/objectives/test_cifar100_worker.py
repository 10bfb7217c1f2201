"""CIFAR-100 end to end: a real worker loop trains one CPU epoch from a job in the
test server, loading a tiny dataset in CIFAR-100's on-disk format, and the per-epoch
metrics land in MongoDB; then ``hpo-coord retrain`` retrains that best trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hyperopt import base
from pymongo.database import Database
from typer.testing import CliRunner

from jobstore import schema as s
from jobstore.schema import State
from jobstore.trials import MongoTrials
from jobstore.store import Store
from objectives.cifar100 import cifar100
from worker.loop import Worker, WorkerConfig

# A small point of the space, with the auxiliary coarse head switched on.
VALS = {
    "lr_multiplier": [1.0], "weight_decay_multiplier": [1.0], "batch_size": [128.0],
    "optimizer": [1], "sgd_momentum": [], "label_smoothing": [0.1],
    "coarse_head": [1], "coarse_weight": [0.3], "n_stages": [0], "width_multiplier": [0.5],
    "residual": [0], "residual_units": [], "pooling": [0], "first_conv": [0],
    "first_conv_kernel": [], "second_dense": [0], "second_dense_width": [],
    "batch_norm": [0], "activation": [0], "conv_dropout": [0.1], "dense_dropout": [0.1],
}


def queue_one_trial(db: Database, run: str, settings: dict) -> None:
    trials = MongoTrials(db, exp_key=run, experiment="cifar100")
    trials.space = cifar100.space
    trials.runs.ensure(run, experiment="cifar100", fingerprint=cifar100.fingerprint(), settings=settings)
    (tid,) = trials.new_trial_ids(1)
    misc = {"tid": tid, "cmd": None, "workdir": None, "vals": VALS,
            "idxs": {label: [tid] if value else [] for label, value in VALS.items()}}
    trials.insert_trial_docs(trials.new_trial_docs([tid], [None], [{"status": base.STATUS_NEW}], [misc]))


def test_one_epoch_through_a_worker_with_metrics_in_mongodb_then_retrain(
    db: Database, db_url: str, cifar_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    settings = {"epochs": 1, "val_size": 64, "data_dir": str(cifar_dir), "download": False}
    queue_one_trial(db, "c", settings)
    worker = Worker(Store(db), WorkerConfig(run="c", max_jobs=1, gpus=0, heartbeat=1, lease=30))
    assert worker.run() == 0

    job = db.jobs.find_one({s.EXP_KEY: "c"})
    assert job[s.STATE] == State.DONE, job.get(s.ERROR)
    assert job[s.PARAMS]["coarse_head"] == {"weight": 0.3}
    (epoch,) = job[s.METRICS]
    assert epoch["step"] == 1
    assert {"train_loss", "val_loss", "val_accuracy", "lr", "epoch_time", "images_per_s"} <= set(epoch)
    result = job[s.RESULT]
    assert result["status"] == "ok"
    assert result["loss"] == pytest.approx(1 - result["val_accuracy"])
    assert 0 <= result["test_accuracy"] <= 1 and result["n_params"] > 0 and result["device"] == "cpu"

    from coordinator.cli import app

    out = tmp_path / "retrained"
    ran = CliRunner().invoke(app, ["retrain", "--run", "c", "--mongo", db_url, "--out", str(out)])
    assert ran.exit_code == 0, ran.output
    assert (out / "model.pt").stat().st_size > 1000
    config = json.loads((out / "config.json").read_text())
    assert config["params"]["coarse_head"] == {"weight": 0.3}
    assert "test_accuracy" in ran.stdout


def test_retrain_explains_a_run_it_cannot_use(db: Database, db_url: str) -> None:
    from coordinator.cli import app

    ran = CliRunner().invoke(app, ["retrain", "--run", "nothing", "--mongo", db_url])
    assert ran.exit_code == 2 and "no run 'nothing' started by hpo-coord" in ran.output
    MongoTrials(db, exp_key="q", experiment="quadratic").runs.ensure(
        "q", experiment="quadratic", fingerprint="x")
    ran = CliRunner().invoke(app, ["retrain", "--run", "q", "--mongo", db_url])
    assert ran.exit_code == 2 and "run 'q' has no best trial: no trial has finished with status ok yet" in ran.output
