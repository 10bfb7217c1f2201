"""The queue's contract (jobstore/queue.py docstring), against the real test server."""

from __future__ import annotations

import logging
import multiprocessing
import random
import time
from datetime import timedelta
from typing import Any

import pytest
from pymongo.database import Database
from pymongo.errors import AutoReconnect, OperationFailure

from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.queue import _MAX_SPREAD, LOST_WORKER, JobQueue
from jobstore.requeuer import Requeuer
from jobstore.retry import RetryPolicy
from jobstore.schema import State
from tests.support.jobs import enqueue


def job(db: Database, run: str, tid: int) -> dict:
    return db.jobs.find_one({s.EXP_KEY: run, s.TID: tid})


def test_claim_takes_lowest_tid_and_marks_running(db: Database) -> None:
    enqueue(db, "r", 3)
    queue = JobQueue(db)
    claim = queue.claim("w1", exp_key="r")
    assert claim is not None and claim.tid == 0
    stored = job(db, "r", 0)
    assert stored[s.STATE] == State.RUNNING
    assert stored[s.OWNER] == "w1"
    assert stored[s.LEASE][s.LEASE_TOKEN.split(".")[1]] == claim.token
    assert stored[s.LEASE]["expires"] > server_time(db)
    assert stored[s.ATTEMPTS] == 1
    assert stored[s.BOOK_TIME] is not None


class _Rival:
    """Stands in for a queue's collection: before each of the next ``races`` claim
    updates, another worker claims the very job the update is about to take."""

    def __init__(self, queue: JobQueue, rival: JobQueue, races: int) -> None:
        self._jobs = queue.jobs
        self._rival = rival
        self.races = races

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jobs, name)

    def update_one(self, condition: dict, update: Any) -> Any:
        if self.races and condition.get(s.STATE) == State.NEW:
            self.races -= 1
            self._jobs.update_one({s.ID: condition[s.ID]}, {"$set": {s.STATE: State.RUNNING}})
        return self._jobs.update_one(condition, update)


def _lowest_new(db: Database, run: str) -> int:
    return db.jobs.find_one({s.EXP_KEY: run, s.STATE: State.NEW}, sort=[(s.TID, 1)])[s.TID]


def test_claim_spreads_over_the_queue_head_after_lost_races_then_returns_to_tid_order(
    db: Database,
) -> None:
    enqueue(db, "spread", 40)
    random.seed(7)
    queue = JobQueue(db)
    rival = _Rival(queue, JobQueue(db), races=3)
    queue.jobs = rival  # type: ignore[assignment]
    first = queue.claim("w1", exp_key="spread")
    assert first is not None and rival.races == 0
    # Three lost races: the next claims pick among the first few new jobs, not the first.
    picks = []
    for _ in range(3):
        new = [d[s.TID] for d in db.jobs.find({s.EXP_KEY: "spread", s.STATE: State.NEW},
                                              sort=[(s.TID, 1)], limit=_MAX_SPREAD)]
        claim = queue.claim("w1", exp_key="spread")
        assert claim is not None and claim.tid in new
        picks.append(claim.tid == new[0])
    assert not all(picks)
    # Uncontended, the spread shrinks back and claims are strictly lowest-tid first.
    for _ in range(_MAX_SPREAD):
        assert queue.claim("w1", exp_key="spread") is not None
    for _ in range(5):
        lowest = _lowest_new(db, "spread")
        claim = queue.claim("w1", exp_key="spread")
        assert claim is not None and claim.tid == lowest


def test_claim_respects_run_filter_and_exclusions(db: Database) -> None:
    enqueue(db, "a", 1)
    enqueue(db, "b", 1)
    queue = JobQueue(db)
    assert queue.claim("w", exp_key="c") is None
    claim = queue.claim("w", exclude_runs={"a"})
    assert claim is not None and claim.exp_key == "b"
    assert queue.claim("w", exclude_runs={"a"}) is None
    assert queue.claim("w").exp_key == "a"


def test_each_claim_gets_a_fresh_token(db: Database) -> None:
    enqueue(db, "r", 2)
    queue = JobQueue(db)
    first, second = queue.claim("w", exp_key="r"), queue.claim("w", exp_key="r")
    assert first.token != second.token


def test_heartbeat_extends_the_lease_only_for_the_holder(db: Database) -> None:
    enqueue(db, "r", 1)
    queue = JobQueue(db)
    claim = queue.claim("w", exp_key="r", lease_s=5)
    before = job(db, "r", 0)[s.LEASE]["expires"]
    time.sleep(0.05)
    assert queue.heartbeat(claim, lease_s=60)
    assert job(db, "r", 0)[s.LEASE]["expires"] > before
    claim.token = "not-the-token"
    assert not queue.heartbeat(claim)


def test_a_heartbeat_after_the_holders_own_result_is_not_a_lost_lease(db: Database) -> None:
    """A worker's heartbeat runs until its result write returns, so a beat can land after
    the write: it must not report the lease lost.  A job handed back is no longer held."""
    enqueue(db, "r", 3)
    queue = JobQueue(db)
    done, failed, released = (queue.claim("w", exp_key="r") for _ in range(3))
    assert queue.finish(done, State.DONE, {"status": "ok", "loss": 1.0})
    assert queue.finish(failed, State.ERROR, {"status": "fail"}, {"message": "boom"})
    assert queue.release(released)
    assert queue.heartbeat(done) and queue.heartbeat(failed)
    assert not queue.heartbeat(released)
    assert job(db, "r", done.tid)[s.STATE] == State.DONE and job(db, "r", failed.tid)[s.STATE] == State.ERROR


def test_finish_writes_result_and_is_fenced(db: Database) -> None:
    enqueue(db, "r", 1)
    queue = JobQueue(db)
    claim = queue.claim("w", exp_key="r")
    stranger = type(claim)(job=claim.job, token="stale", owner="zombie")
    assert not queue.finish(stranger, State.DONE, {"status": "ok", "loss": -1.0})
    assert queue.finish(claim, State.DONE, {"status": "ok", "loss": 2.5})
    stored = job(db, "r", 0)
    assert stored[s.STATE] == State.DONE and stored[s.RESULT]["loss"] == 2.5
    assert stored[s.FINISHED_AT] is not None


def test_finish_retry_after_lost_reply_recognises_its_own_write(db: Database) -> None:
    enqueue(db, "r", 1)
    queue = JobQueue(db)
    claim = queue.claim("w", exp_key="r")
    assert queue.finish(claim, State.DONE, {"status": "ok", "loss": 1.0})
    assert queue.finish(claim, State.DONE, {"status": "ok", "loss": 1.0})
    assert job(db, "r", 0)[s.VERSION] == 2


def test_report_appends_metrics_in_order(db: Database) -> None:
    enqueue(db, "r", 1)
    queue = JobQueue(db)
    claim = queue.claim("w", exp_key="r")
    assert queue.report(claim, 1, {"val_loss": 0.9})
    assert queue.report(claim, 2, {"val_loss": 0.5, "note": "$not-an-expression"})
    assert job(db, "r", 0)[s.METRICS] == [
        {"step": 1, "val_loss": 0.9},
        {"step": 2, "val_loss": 0.5, "note": "$not-an-expression"},
    ]


def test_release_returns_job_without_counting_an_attempt(db: Database) -> None:
    enqueue(db, "r", 1)
    queue = JobQueue(db)
    claim = queue.claim("w", exp_key="r")
    queue.report(claim, 1, {"x": 1.0})
    assert queue.release(claim)
    stored = job(db, "r", 0)
    assert stored[s.STATE] == State.NEW and stored[s.ATTEMPTS] == 0
    assert stored[s.METRICS] == [] and stored[s.OWNER] is None
    assert not queue.finish(claim, State.DONE, {"status": "ok", "loss": 0.0})


def test_expired_lease_is_requeued_then_failed_after_max_attempts(db: Database) -> None:
    enqueue(db, "r", 1, max_attempts=2)
    queue = JobQueue(db)
    for attempt in (1, 2):
        claim = queue.claim("w", exp_key="r", lease_s=0.05)
        assert claim is not None and job(db, "r", 0)[s.ATTEMPTS] == attempt
        time.sleep(0.1)
        outcome = queue.requeue_expired()
        if attempt == 1:
            assert outcome.requeued == [("r", 0)] and not outcome.failed
            assert job(db, "r", 0)[s.STATE] == State.NEW
        else:
            assert outcome.failed == [("r", 0)]
    stored = job(db, "r", 0)
    assert stored[s.STATE] == State.ERROR
    assert stored[s.RESULT]["reason"] == LOST_WORKER
    assert stored[s.ERROR]["type"] == "LostWorker"
    assert not queue.finish(claim, State.DONE, {"status": "ok", "loss": 0.0})


def test_an_exited_workers_jobs_are_requeued_at_once_then_failed_after_max_attempts(db: Database) -> None:
    """A worker known to have exited (a local worker the coordinator saw die) holds
    nothing: its jobs go back at once, live leases and all, and no other worker's."""
    enqueue(db, "r", 2, max_attempts=2)
    queue = JobQueue(db)
    other = queue.claim("host:2", exp_key="r", lease_s=60)
    assert other is not None
    for attempt in (1, 2):
        claim = queue.claim("host:1", exp_key="r", lease_s=60)
        assert claim is not None and claim.tid != other.tid and job(db, "r", claim.tid)[s.ATTEMPTS] == attempt
        outcome = queue.requeue_abandoned("host:1", "exited with code -9")
        if attempt == 1:
            assert outcome.requeued == [("r", claim.tid)] and not outcome.failed
            assert job(db, "r", claim.tid)[s.STATE] == State.NEW
        else:
            assert outcome.failed == [("r", claim.tid)] and not outcome.requeued
    stored = job(db, "r", claim.tid)
    assert stored[s.STATE] == State.ERROR and stored[s.RESULT]["reason"] == LOST_WORKER
    assert stored[s.ERROR]["message"].startswith("worker host:1 exited with code -9; the job was lost 2 time(s)")
    assert not queue.finish(claim, State.DONE, {"status": "ok", "loss": 0.0})
    assert job(db, "r", other.tid)[s.STATE] == State.RUNNING and queue.heartbeat(other)


def test_live_leases_are_not_requeued(db: Database) -> None:
    enqueue(db, "r", 1)
    queue = JobQueue(db)
    queue.claim("w", exp_key="r", lease_s=60)
    assert queue.requeue_expired().requeued == []
    assert job(db, "r", 0)[s.STATE] == State.RUNNING


def test_zombie_cannot_overwrite_the_retry(db: Database) -> None:
    enqueue(db, "r", 1)
    queue = JobQueue(db)
    zombie = queue.claim("zombie", exp_key="r", lease_s=0.05)
    time.sleep(0.1)
    queue.requeue_expired()
    retry = queue.claim("healthy", exp_key="r")
    assert retry.tid == zombie.tid
    assert queue.finish(retry, State.DONE, {"status": "ok", "loss": 1.0})
    assert not queue.heartbeat(zombie)
    assert not queue.report(zombie, 3, {"x": 0.0})
    assert not queue.finish(zombie, State.DONE, {"status": "ok", "loss": 99.0})
    stored = job(db, "r", 0)
    assert stored[s.RESULT]["loss"] == 1.0 and stored[s.OWNER] == "healthy"


def _claim_all(url: str, run: str, owner: str, out: "multiprocessing.Queue[list[int]]",
               start: Any) -> None:
    """Claim jobs of ``run`` until none is left, from the moment every process is
    connected (``start``, a barrier), and put the tids claimed on ``out``."""
    import pymongo

    client = pymongo.MongoClient(url)
    queue = JobQueue(client.get_default_database())
    client.admin.command("ping")
    start.wait(120)
    got = []
    while (claim := queue.claim(owner, exp_key=run)) is not None:
        got.append(claim.tid)
    out.put(got)


@pytest.mark.parametrize("jobs", [200, pytest.param(1000, marks=pytest.mark.slow)])
def test_racing_processes_never_claim_a_job_twice(db: Database, db_url: str, jobs: int) -> None:
    enqueue(db, "race", jobs)
    # forked from a server that imported the store once (a fresh interpreter per process
    # spent most of the test importing it), never from this multithreaded process
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["jobstore.queue", "pymongo"])
    out: multiprocessing.Queue[list[int]] = context.Queue()
    start = context.Barrier(8)
    workers = [context.Process(target=_claim_all, args=(db_url, "race", f"w{i}", out, start)) for i in range(8)]
    for process in workers:
        process.start()
    per_process = [out.get(timeout=300) for _ in workers]
    for process in workers:
        process.join(30)
    assert sum(1 for got in per_process if got) > 1, "the processes did not race"
    claimed = [tid for got in per_process for tid in got]
    assert sorted(claimed) == list(range(jobs))
    assert db.jobs.count_documents({s.EXP_KEY: "race", s.ATTEMPTS: {"$ne": 1}}) == 0


@pytest.mark.parametrize("lease_s", [30.0])
def test_server_time_is_used_for_leases(db: Database, lease_s: float) -> None:
    enqueue(db, "r", 1)
    queue = JobQueue(db)
    before = server_time(db)
    queue.claim("w", exp_key="r", lease_s=lease_s)
    after = server_time(db)
    expires = job(db, "r", 0)[s.LEASE]["expires"]
    # the claim's server time lies between the two readings (all in the server's
    # milliseconds), however long the claim took
    assert before + timedelta(seconds=lease_s) <= expires <= after + timedelta(seconds=lease_s)


# -- malformed documents are poison, never a crash (issue 12, defects 3 and 9) -----------


def _past(db: Database) -> Any:
    return server_time(db) - timedelta(minutes=1)


def _malformed_running(db: Database) -> dict[str, dict]:
    """Running jobs with expired (or no) leases, each malformed in one way, each in a
    run of its own (as found: one bad document in another run)."""
    past = _past(db)
    lease = {"token": "t", "expires": past, "seconds": 1.0}
    docs = {
        "tid is missing": {"lease": lease},
        "tid is 'abc', not an integer": {"tid": "abc", "lease": lease},
        "attempts is 'x', not an integer >= 0": {"tid": 1, "attempts": "x", "lease": lease},
        "max_attempts is 'y', not an integer >= 1": {"tid": 1, "max_attempts": "y", "lease": lease},
        "exp_key is 42, not a string": {"tid": 1, "lease": lease},
        "lease is missing": {"tid": 1},
        "lease is 'foo', not a document": {"tid": 1, "lease": "foo"},
        "lease.token is 5, not a string": {"tid": 1, "lease": {"token": 5, "expires": past}},
        "lease.expires is 'yesterday', not a date": {"tid": 1, "lease": {"token": "t", "expires": "yesterday"}},
    }
    made = {}
    for i, (problem, fields) in enumerate(docs.items()):
        doc = {s.EXP_KEY: 42 if problem.startswith("exp_key") else f"junk-{i}", s.STATE: State.RUNNING,
               s.OWNER: "gone:1", **fields}
        doc[s.ID] = db.jobs.insert_one(doc).inserted_id
        made[problem] = doc
    return made


def test_malformed_running_jobs_are_marked_as_errors_and_never_stop_the_requeue(db: Database) -> None:
    enqueue(db, "r", 1)
    queue = JobQueue(db)
    queue.claim("w", exp_key="r", lease_s=0.05)
    bad = _malformed_running(db)
    time.sleep(0.1)
    outcome = queue.requeue_expired()
    assert outcome.requeued == [("r", 0)]
    assert sorted(map(str, outcome.malformed)) == sorted(str(d[s.ID]) for d in bad.values())
    for problem, doc in bad.items():
        stored = db.jobs.find_one({s.ID: doc[s.ID]})
        assert stored[s.STATE] == State.ERROR, problem
        assert stored[s.ERROR]["reason"] == "malformed job" and stored[s.ERROR]["type"] == "MalformedJob"
        assert problem in stored[s.ERROR]["message"], (problem, stored[s.ERROR]["message"])
        assert stored[s.RESULT] == {"status": "fail", "reason": "malformed job"}
        assert stored[s.LEASE] == {"token": None, "expires": None}
    again = queue.requeue_expired()
    assert (again.requeued, again.failed, again.malformed) == ([], [], [])


class _Refusing:
    """A jobs collection whose updates of one document raise a server error."""

    def __init__(self, jobs: Any, refused: Any) -> None:
        self._jobs = jobs
        self.refused = refused

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jobs, name)

    def update_one(self, condition: dict, update: Any) -> Any:
        if condition.get(s.ID) == self.refused:
            raise OperationFailure("injected refusal", code=2)
        return self._jobs.update_one(condition, update)


def test_a_malformed_job_that_cannot_be_marked_is_skipped_with_one_warning(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    bad = _malformed_running(db)["tid is 'abc', not an integer"]
    queue = JobQueue(db)
    queue.jobs = _Refusing(queue.jobs, bad[s.ID])  # type: ignore[assignment]
    enqueue(db, "r", 1)
    with caplog.at_level(logging.WARNING, logger="jobstore.queue"):
        for _ in range(3):
            queue.requeue_expired()
        assert queue.claim("w", exp_key="r") is not None
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping job")]
    assert len(skips) == 1, skips
    assert str(bad[s.ID]) in skips[0] and "injected refusal" in skips[0]
    assert db.jobs.find_one({s.ID: bad[s.ID]})[s.STATE] == State.RUNNING


def test_claim_marks_malformed_new_jobs_as_errors_and_takes_a_good_one(db: Database) -> None:
    bad = {
        "tid is missing": {s.EXP_KEY: "bad-a"},
        "tid is 'abc', not an integer": {s.EXP_KEY: "bad-b", s.TID: "abc"},
        "attempts is 'x', not an integer >= 0": {s.EXP_KEY: "bad-c", s.TID: 0, s.ATTEMPTS: "x"},
        "max_attempts is -1, not an integer >= 1": {s.EXP_KEY: "bad-d", s.TID: 0, s.MAX_ATTEMPTS: -1},
    }
    ids = {problem: db.jobs.insert_one({**doc, s.STATE: State.NEW}).inserted_id for problem, doc in bad.items()}
    enqueue(db, "r", 1)
    queue = JobQueue(db)
    assert queue.claim("w", exp_key="bad-a") is None
    first = queue.claim("w")
    assert first is not None and (first.exp_key, first.tid) == ("r", 0)
    assert queue.claim("w") is None
    for problem, _id in ids.items():
        stored = db.jobs.find_one({s.ID: _id})
        assert stored[s.STATE] == State.ERROR, problem
        assert problem in stored[s.ERROR]["message"] and stored[s.ERROR]["reason"] == "malformed job"


def test_writes_never_fail_on_counters_and_metrics_of_the_wrong_type(db: Database) -> None:
    enqueue(db, "r", 1)
    queue = JobQueue(db)
    claim = queue.claim("w", exp_key="r")
    db.jobs.update_one({s.ID: claim.id}, {"$set": {s.VERSION: "x", s.METRICS: "oops"}})
    assert queue.heartbeat(claim)
    assert queue.report(claim, 1, {"loss": 0.5})
    assert queue.finish(claim, State.DONE, {"status": "ok", "loss": 0.5})
    stored = job(db, "r", 0)
    assert stored[s.METRICS] == [{"step": 1, "loss": 0.5}] and stored[s.VERSION] == 3


# -- claim retried after a lost reply (defect 7) -----------------------------------------


class _ReplyLost:
    """A jobs collection whose next claim update is applied and then reported as a
    network error, as when the server's reply is lost."""

    def __init__(self, jobs: Any) -> None:
        self._jobs = jobs
        self.armed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jobs, name)

    def update_one(self, condition: dict, update: Any) -> Any:
        result = self._jobs.update_one(condition, update)
        if self.armed and condition.get(s.STATE) == State.NEW:
            self.armed = False
            raise AutoReconnect("injected: connection closed before the reply")
        return result


def test_a_claim_retried_after_a_lost_reply_keeps_its_job(db: Database) -> None:
    enqueue(db, "r", 2, max_attempts=1)
    queue = JobQueue(db, retry=RetryPolicy(sleep=lambda _: None))
    lossy = _ReplyLost(queue.jobs)
    queue.jobs = lossy  # type: ignore[assignment]
    claim = queue.claim("w", exp_key="r")  # retried inside, as every call of the store
    assert not lossy.armed
    assert claim is not None and claim.tid == 0
    first, second = job(db, "r", 0), job(db, "r", 1)
    assert first[s.STATE] == State.RUNNING and first[s.LEASE]["token"] == claim.token
    assert first[s.ATTEMPTS] == 1
    assert second[s.STATE] == State.NEW and not second.get(s.ATTEMPTS)
    assert queue.finish(claim, State.DONE, {"status": "ok", "loss": 1.0})


# -- a zombie's error result after "lost worker" (defect 8) ---------------------------


def test_a_zombies_error_result_is_refused_after_the_job_failed_as_lost(db: Database) -> None:
    enqueue(db, "r", 1, max_attempts=1)
    queue = JobQueue(db)
    zombie = queue.claim("zombie", exp_key="r", lease_s=0.05)
    time.sleep(0.1)
    assert queue.requeue_expired().failed == [("r", 0)]
    error = {"type": "ValueError", "message": "late", "reason": "exception"}
    assert not queue.finish(zombie, State.ERROR, {"status": "fail", "reason": "exception"}, error)
    stored = job(db, "r", 0)
    assert stored[s.ERROR]["type"] == "LostWorker" and stored[s.LEASE]["token"] is None


# -- the holder's own lease decides when a job is lost (defect 6) -------------------------


def test_an_expired_job_is_lost_only_after_its_holders_lease_was_observed(db: Database) -> None:
    enqueue(db, "r", 2)
    queue = JobQueue(db)
    long_lease = queue.claim("w1", exp_key="r", lease_s=30)
    assert queue.heartbeat(long_lease, lease_s=0.2)  # renewals record the lease they ask for
    old = queue.claim("w2", exp_key="r", lease_s=0.2)
    db.jobs.update_one({s.ID: old.id}, {"$unset": {s.LEASE_SECONDS: ""}})  # claimed by older code
    assert job(db, "r", 0)[s.LEASE]["seconds"] == 0.2
    time.sleep(0.3)
    waiting = queue.requeue_expired(observed_s=0.1, default_lease_s=5)
    assert waiting.requeued == [] and waiting.waiting == 2
    assert queue.requeue_expired(observed_s=0.2, default_lease_s=5).requeued == [("r", 0)]
    assert queue.requeue_expired(observed_s=5, default_lease_s=5).requeued == [("r", 1)]


def test_the_requeuer_waits_for_the_holders_lease_after_regaining_contact(db: Database) -> None:
    enqueue(db, "r", 1)
    queue = JobQueue(db)
    queue.claim("w", exp_key="r", lease_s=1.5)
    db.jobs.update_one({s.EXP_KEY: "r"}, {"$set": {s.LEASE_EXPIRES: _past(db)}})
    requeuer = Requeuer(JobQueue(db), interval=0.05, grace=0.1)
    started = time.monotonic()
    while job(db, "r", 0)[s.STATE] == State.RUNNING:
        requeuer.tick()
        time.sleep(0.02)
        # a guard against hanging, not a speed claim: a stall of more than a second
        # between ticks on a busy host counts as a break in contact and restarts the wait
        assert time.monotonic() - started < 120, "the job was never requeued"
    assert time.monotonic() - started >= 1.5
