"""Worker._write against the test server, with the server's refusal simulated."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import AutoReconnect, OperationFailure, WriteError

from jobstore import schema as s
from jobstore.queue import JobQueue, RequeueOutcome
from jobstore.retry import RetryPolicy
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


class _ResultWriteOutage:
    """A jobs collection whose first update from the thread that made it (the worker's
    own: its result write; heartbeats come from their own thread) loses its connection."""

    def __init__(self, jobs: Collection) -> None:
        self._jobs = jobs
        self._thread = threading.current_thread()
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jobs, name)

    def update_one(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed and threading.current_thread() is self._thread:
            self.failed = True
            raise AutoReconnect("injected: the result write lost its connection")
        return self._jobs.update_one(*args, **kwargs)


def test_the_lease_is_kept_while_the_result_write_rides_out_an_outage(db: Database) -> None:
    """Before, the job's heartbeat ended with the objective: a result write retried through
    an outage longer than the lease met a job the requeuer had handed back meanwhile, the
    result was refused and the trial ran again."""
    lease = 1.5
    enqueue(db, "r", 1)
    requeues: list[RequeueOutcome] = []

    def outage(pause: float) -> None:  # the retry's wait after the failed result write
        time.sleep(2 * lease)  # longer than the lease; heartbeats are answered meanwhile
        requeues.append(JobQueue(db).requeue_expired(observed_s=math.inf))

    worker = Worker(Store(db, retry=RetryPolicy(sleep=outage)), WorkerConfig(run="r", heartbeat=0.1, lease=lease))
    claim = worker.queue.claim(worker.worker_id, exp_key="r", lease_s=lease)
    assert claim is not None
    worker.queue.jobs = jobs = _ResultWriteOutage(worker.queue.jobs)  # type: ignore[assignment]
    worker._process(claim)
    assert jobs.failed and len(requeues) == 1
    assert requeues[0].requeued == [] and requeues[0].waiting == 0
    job = db.jobs.find_one({s.EXP_KEY: "r"})
    assert job[s.STATE] == State.DONE and job[s.ATTEMPTS] == 1
    assert job[s.RESULT]["loss"] == pytest.approx(job[s.PARAMS] ** 2 - job[s.PARAMS] + 1)
    assert worker.jobs_done == 1
