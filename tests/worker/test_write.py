"""Worker._write against the test server, with the server's refusal simulated."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.database import Database
from pymongo.errors import OperationFailure, WriteError

from jobstore import schema as s
from jobstore.schema import State
from jobstore.store import Store
from objectives.registry import register
from tests.support.experiments import recording
from tests.support.jobs import enqueue
from worker.evaluate import Outcome
from worker.loop import Worker, WorkerConfig

register(recording)


def _refusing(worker: Worker, error: Exception) -> list[Any]:
    """Make the worker's first result write fail with ``error``; later ones go through."""
    real = worker.queue.finish
    calls: list[Any] = []

    def finish(claim: Any, state: State, result: Any, *args: Any, **kwargs: Any) -> bool:
        calls.append(result)
        if len(calls) == 1:
            raise error
        return real(claim, state, result, *args, **kwargs)

    worker.queue.finish = finish  # type: ignore[method-assign]
    return calls


def test_a_result_the_server_refuses_is_replaced_by_a_small_error(db: Database) -> None:
    enqueue(db, "r", 1, experiment="recording")
    worker = Worker(Store(db), WorkerConfig(run="r"))
    claim = worker.queue.claim(worker.worker_id, exp_key="r")
    assert claim is not None
    calls = _refusing(worker, WriteError("Resulting document after update is larger than 16777216", 17419))
    worker._write(claim, Outcome(State.DONE, {"status": "ok", "loss": 1.0, "blob": "x" * 100}))
    job = db.jobs.find_one({s.EXP_KEY: "r"})
    assert len(calls) == 2 and job[s.STATE] == State.ERROR
    assert job[s.ERROR]["reason"] == "unstorable result"
    assert job[s.ERROR]["message"] == ("result cannot be stored: WriteError: Resulting document after "
                                       "update is larger than 16777216")


def test_a_database_failure_while_writing_is_not_blamed_on_the_result(db: Database) -> None:
    enqueue(db, "r", 1, experiment="recording")
    worker = Worker(Store(db), WorkerConfig(run="r"))
    claim = worker.queue.claim(worker.worker_id, exp_key="r")
    assert claim is not None
    _refusing(worker, OperationFailure("not authorized on hpo to execute command", 13))
    with pytest.raises(OperationFailure):
        worker._write(claim, Outcome(State.DONE, {"status": "ok", "loss": 1.0}))
    assert db.jobs.find_one({s.EXP_KEY: "r"})[s.STATE] == State.RUNNING
