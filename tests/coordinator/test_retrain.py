"""``hpo-coord retrain``: the best configuration is read through the store the URL names."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyperopt import base, hp, rand
from pymongo.database import Database
from typer.testing import CliRunner

from coordinator.cli import app
from jobstore import schema as s
from jobstore.schema import State
from jobstore.store import Store
from jobstore.trials import MongoTrials
from objectives.base import Experiment, NullReporter, Reporter, Setting
from objectives.registry import register

RETRAINED: list[tuple[dict[str, Any], dict[str, Any], Path]] = []


def _objective(params: Mapping[str, Any], reporter: Reporter) -> float:
    return (params["x"] - 1.0) ** 2


def _retrain(params: Mapping[str, Any], settings: Mapping[str, Any], out: Path) -> Mapping[str, Any]:
    RETRAINED.append((dict(params), dict(settings), out))
    return {"saved": str(out)}


EXPERIMENT = register(Experiment(
    name="retrainable", space={"x": hp.uniform("x", -5, 5)}, objective=_objective, max_evals=4,
    description="a quadratic that can be retrained (tests only)", retrain=_retrain,
    settings=(Setting("epochs", int, default=1, help="epochs of training", minimum=1),),
))


def _finished_run(store: Store, run: str, n: int) -> list[dict[str, Any]]:
    """``n`` trials of ``run`` suggested, evaluated and finished through ``store``."""
    trials = MongoTrials(store, exp_key=run, experiment=EXPERIMENT.name)
    trials.space = EXPERIMENT.space
    trials.runs.ensure(run, experiment=EXPERIMENT.name, fingerprint=EXPERIMENT.fingerprint(),
                       settings={"epochs": 3})
    domain = base.Domain(EXPERIMENT.objective, EXPERIMENT.space)
    trials.insert_trial_docs(rand.suggest(trials.new_trial_ids(n), domain, trials, 7))
    while (claim := store.queue.claim("w", exp_key=run)) is not None:
        loss = _objective(claim.job[s.PARAMS], NullReporter())
        assert store.queue.finish(claim, State.DONE, {"status": "ok", "loss": loss})
    return list(store.view.jobs.find({s.EXP_KEY: run}))


def test_retrain_reads_the_jobs_collection_named_in_the_url(
        db: Database, mongo_server_url: str, tmp_path: Path) -> None:
    """Found in issue 13: retrain read ``db.jobs`` whatever collection the URL named."""
    jobs = _finished_run(Store(db, jobs_collection="trials_c"), "r", 5)
    assert db.jobs.count_documents({}) == 0
    best = min(jobs, key=lambda job: job[s.RESULT]["loss"])
    url = f"{mongo_server_url.rstrip('/')}/{db.name}.trials_c"
    result = CliRunner().invoke(app, ["retrain", "--run", "r", "--mongo", url, "--out", str(tmp_path / "m"),
                                      "--set", "epochs=9"])
    assert result.exit_code == 0, result.output
    assert f"retraining trial {best[s.TID]} of run r" in " ".join(result.stdout.split())
    params, settings, out = RETRAINED[-1]
    assert params == {"x": best[s.PARAMS]["x"]} and settings["epochs"] == 9 and out == tmp_path / "m"


def test_retrain_names_the_runs_there_are(db: Database, mongo_server_url: str, tmp_path: Path) -> None:
    _finished_run(Store(db, jobs_collection="trials_c"), "r", 1)
    url = f"{mongo_server_url.rstrip('/')}/{db.name}.trials_c"
    result = CliRunner().invoke(app, ["retrain", "--run", "nope", "--mongo", url, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "no run 'nope' started by hpo-coord in this database; runs: r" in " ".join(result.stderr.split())
