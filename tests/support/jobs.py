"""Helpers that put realistic jobs into a test database."""

from __future__ import annotations

from typing import Any

from hyperopt import base, rand
from pymongo.database import Database

from jobstore import schema as s
from jobstore.trials import MongoTrials


def enqueue(db: Database, run: str, n: int, *, experiment: str = "quadratic", seed: int = 0,
            max_attempts: int = 3, settings: dict[str, Any] | None = None) -> MongoTrials:
    """Insert ``n`` new jobs for ``run`` the way fmin does (rand suggestions)."""
    from objectives.registry import get_experiment

    exp = get_experiment(experiment)
    trials = MongoTrials(db, exp_key=run, experiment=experiment, max_attempts=max_attempts)
    trials.space = exp.space
    trials.runs.ensure(run, experiment=experiment, fingerprint=exp.fingerprint(), settings=settings or {})
    domain = base.Domain(exp.objective, exp.space)
    ids = trials.new_trial_ids(n)
    docs = rand.suggest(ids, domain, trials, seed)
    trials.insert_trial_docs(docs)
    trials.refresh()
    return trials



def jobs(db: Database, run: str) -> list[dict[str, Any]]:
    """``run``'s job documents in ``tid`` order."""
    return list(db.jobs.find({s.EXP_KEY: run}).sort(s.TID, 1))
