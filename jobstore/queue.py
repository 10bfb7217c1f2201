"""Queue operations on job documents: claim, heartbeat, report, finish, release, requeue.

Contract (holds on MongoDB 7/8 and on SecantusDB):

* **Claim is atomic.**  A job goes from new to running for exactly one worker.  The
  claim is an indexed ``find`` for the lowest new ``tid`` (or the few lowest) followed
  by an ``update_one`` conditional on ``{_id, state: new}``; a worker whose update
  matched nothing lost the race and looks again.  On a real mongod a single-document
  conditional update is atomic, so this is as safe as ``find_one_and_update``; it was
  chosen because it is several times faster on SecantusDB (see docs/reliability.md)
  and costs one extra round trip on MongoDB.  Jobs are taken lowest ``tid`` first
  within a window of the queue; a job requeued below the window is taken once the
  window is empty.  A worker that loses races picks at random among the first few new
  jobs (up to ``_MAX_SPREAD``, doubling with each lost race and shrinking by one with
  each claim won at the first try), so workers that finish together spread over the
  queue's head instead of all writing to its first job; the order is roughly, not
  strictly, by ``tid``, and strictly by ``tid`` for a worker that meets no competition.
* **Every claim gets a fresh token** (fencing).  Heartbeats, metrics and the result
  are written only while ``lease.token`` still equals the claimer's token and the job
  is still running; a worker that lost its lease has its writes refused (the methods
  return False) and cannot overwrite the work of the job's next holder.
* **Leases are in server time.**  ``lease.expires`` is computed by the server
  (``$$NOW`` + lease), so worker clocks do not matter.
* **Claiming is idempotent** under retries: a claim whose update was applied but whose
  reply was lost is recognised by the next :meth:`JobQueue.claim` of the same queue
  object (it first looks, by ``_id``, for the job holding that attempt's token), so a
  retried claim neither takes a second job nor orphans the first.
* **Finishing is idempotent** under retries: if a result write was applied but its
  reply was lost, the retry recognises its own token and reports success.  Only the
  holder's own final write keeps its token: a job failed by the requeuer (``lost
  worker``) or as malformed has its token cleared, so a zombie's late write is refused
  whatever state it asks for.
* A job is **lost** when its lease expired and the requeuer has been in contact with
  the database for at least the lease length the holder recorded (``lease.seconds``;
  for jobs without it, the requeuer's ``default_lease_s``), so a holder with a long
  lease gets its whole lease to renew after an outage.  A lost job goes back to new
  with ``attempts`` kept; once ``attempts`` reaches ``max_attempts`` it becomes an
  error with the reason ``lost worker``.  A graceful :meth:`JobQueue.release` does not
  count as an attempt.
* **Malformed jobs are poison, never a crash.**  A new job met by a claim, or a running
  job whose lease expired (or that has no valid lease at all), whose queue fields are
  not as documented (:func:`jobstore.schema.job_problems`: no ``tid``, ``tid: "abc"``,
  ``attempts: "x"``, ...) becomes an error with the reason ``malformed job`` and a
  message naming the fields, written conditionally on its ``_id`` and state.  If even
  that write is refused, the job is skipped (left out of later queries) with one
  warning.  Such a job never makes a claim or a requeue raise.

**Retries live here.**  Every method runs its database operations under the queue's
:class:`jobstore.retry.RetryPolicy` (the store's: backoff, then
:class:`jobstore.retry.DatabaseOutage` after the outage limit), so callers make plain
calls; claims, reports and finishes are idempotent, so a retry after a lost reply is
safe.  Two
methods are not retried, because their callers have their own rules for an outage:
:meth:`JobQueue.heartbeat` (a heartbeat skips a beat rather than block) and
:meth:`JobQueue.requeue_expired` (the requeuer counts a failed tick as a break in
contact, see :mod:`jobstore.requeuer`); their transient errors reach the caller.
"""

from __future__ import annotations

import logging
import math
import random
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo.collection import Collection as MongoCollection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.curves import CurveStore
from jobstore.retry import RetryPolicy, database_display, describe, is_transient
from jobstore.schema import Expr, State, stamped

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 30.0
DUPLICATE_KEY = 11000
DEFAULT_MAX_ATTEMPTS = 3
LOST_WORKER = "lost worker"
MALFORMED_JOB = "malformed job"
_CLAIM_RACES = 50
_MAX_SPREAD = 8
_WINDOW = 64

# What a job looks like again when it goes back to the queue (the metrics of the
# unfinished attempt are dropped, and so are its pruning scores in ``curves``: the
# next attempt starts a fresh curve).
_BACK_TO_NEW: dict[str, Any] = {
    s.STATE: State.NEW,
    s.OWNER: None,
    s.BOOK_TIME: None,
    s.LEASE: None,
    s.METRICS: [],
    s.STARTED_AT: None,
}


@dataclass
class Claim:
    """A job held by this process, and the token that proves it."""

    job: dict[str, Any]
    token: str
    owner: str

    @property
    def id(self) -> Any:
        return self.job[s.ID]

    @property
    def exp_key(self) -> str:
        return str(self.job.get(s.EXP_KEY))

    @property
    def tid(self) -> int:
        return int(self.job[s.TID])


@dataclass
class RequeueOutcome:
    """What :meth:`JobQueue.requeue_expired` did: ``(exp_key, tid)`` pairs, and the
    ``_id`` of each malformed job it marked as an error or skipped."""

    requeued: list[tuple[str, int]] = field(default_factory=list)
    failed: list[tuple[str, int]] = field(default_factory=list)
    malformed: list[Any] = field(default_factory=list)
    waiting: int = 0
    """Expired jobs not yet lost: the requeuer has not been in contact for their lease."""


@dataclass
class _Attempt:
    """A claim update sent and not yet known to have failed (its reply may be lost)."""

    id: Any
    token: str
    owner: str


# The running/new jobs' fields a claim or a requeue reads.
_QUEUE_PROJECTION = {s.EXP_KEY: 1, s.TID: 1, s.LEASE: 1, s.ATTEMPTS: 1, s.MAX_ATTEMPTS: 1, s.OWNER: 1}


class JobQueue:
    """Queue operations on one jobs collection, retried under ``retry`` (default: the
    default outage limit, naming ``db``'s server)."""

    def __init__(self, db: Database, collection: str = s.JOBS, *, retry: RetryPolicy | None = None) -> None:
        self.db = db
        self.jobs: MongoCollection = db[collection]
        self.retry = retry or RetryPolicy(server=database_display(db))
        self.curves = CurveStore(db, collection, self.retry)
        self._low_tid: dict[str, int] = {}
        self._spread: dict[str, int] = {}
        self._attempt: _Attempt | None = None
        self._skipped: dict[Any, str] = {}

    def ensure_indexes(self) -> None:
        """Create the indexes the queue and pruning rely on (idempotent)."""
        self.retry(lambda: self.jobs.create_indexes(s.JOB_INDEXES), "creating indexes")
        self.curves.ensure_indexes()

    # -- new jobs ----------------------------------------------------------------------

    def insert_new(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert ``docs`` (each gets a fresh ``_id``); return those that were refused
        because another document holds a unique key of theirs (the run's ``tid``).

        A retry after a lost reply skips the documents already in: insert_many gives
        each document its ``_id`` before the first attempt, so a retry finds its own.
        """
        for doc in docs:
            doc.pop(s.ID, None)
        return self.retry(lambda: self._insert_new(docs), "inserting trials")

    def _insert_new(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            self.jobs.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if exc.details.get("writeConcernErrors") or any(error.get("code") != DUPLICATE_KEY for error in errors):
                raise
            clashing = [docs[error["index"]] for error in errors]
            present = {doc[s.ID] for doc in self.jobs.find(
                {s.ID: {"$in": [doc[s.ID] for doc in clashing]}}, {s.ID: 1})}
            return [doc for doc in clashing if doc[s.ID] not in present]
        return []

    def delete(self, query: Mapping[str, Any]) -> int:
        """Delete the jobs matching ``query``; how many were deleted."""
        return self.retry(lambda: self.jobs.delete_many(dict(query)).deleted_count, "deleting trials")

    # -- claim --------------------------------------------------------------------------

    def claim(
        self,
        owner: str,
        *,
        exp_key: str | None = None,
        exclude_runs: Collection[str] = (),
        lease_s: float = DEFAULT_LEASE_S,
    ) -> Claim | None:
        """Claim a new job (of ``exp_key`` when given), or None if there is none.

        The job is the lowest-tid new one unless this queue object has been losing
        races, when it is one of the first few (see the module doc).  If this queue's
        previous claim raised after sending its update, that claim is looked for first
        and returned if it was applied, so a claim retried after a lost reply keeps its
        job instead of taking a second one."""
        return self.retry(lambda: self._claim(owner, exp_key, exclude_runs, lease_s), "claiming a job")

    def _claim(self, owner: str, exp_key: str | None, exclude_runs: Collection[str],
               lease_s: float) -> Claim | None:
        """One attempt of :meth:`claim`."""
        earlier = self._recover_attempt(owner)
        if earlier is not None:
            return earlier
        query: dict[str, Any] = {s.STATE: State.NEW}
        if exp_key is not None:
            query[s.EXP_KEY] = exp_key
        elif exclude_runs:
            query[s.EXP_KEY] = {"$nin": list(exclude_runs)}
        scope = exp_key if exp_key is not None else ""
        spread = self._spread.get(scope, 1)
        for lost in range(_CLAIM_RACES):
            candidates = self._candidates(query, scope, spread)
            if not candidates:
                return None
            job = random.choice(candidates)
            token = uuid.uuid4().hex
            update = stamped(
                {
                    s.STATE: State.RUNNING,
                    s.OWNER: owner,
                    s.BOOK_TIME: Expr.now(),
                    s.REFRESH_TIME: Expr.now(),
                    s.LEASE: Expr.lease(token, lease_s),
                    s.ATTEMPTS: Expr.add(s.ATTEMPTS, 1),
                    s.METRICS: [],
                }
            )
            self._attempt = _Attempt(job[s.ID], token, owner)
            won = self.jobs.update_one({s.ID: job[s.ID], s.STATE: State.NEW}, update)
            self._attempt = None
            if won.modified_count == 1:
                self._spread[scope] = spread if lost else max(1, spread - 1)
                job.update({s.STATE: State.RUNNING, s.OWNER: owner})
                job[s.ATTEMPTS] = (s.as_int(job.get(s.ATTEMPTS)) or 0) + 1
                return Claim(job=job, token=token, owner=owner)
            spread = min(spread * 2, _MAX_SPREAD)
        self._spread[scope] = spread
        log.warning("gave up claiming after %d lost races; will poll again", _CLAIM_RACES)
        return None

    def _recover_attempt(self, owner: str) -> Claim | None:
        """The job of this queue's last claim attempt if its update was applied after all."""
        attempt = self._attempt
        if attempt is None or attempt.owner != owner:
            return None
        job = self.jobs.find_one(
            {s.ID: attempt.id, s.LEASE_TOKEN: attempt.token, s.STATE: State.RUNNING}, {s.METRICS: 0}
        )
        self._attempt = None
        if job is None:
            return None
        claim = Claim(job=job, token=attempt.token, owner=owner)
        log.info("run %r trial %d: the claim was applied though its reply was lost; keeping it",
                 claim.exp_key, claim.tid)
        return claim

    def _candidates(self, query: dict[str, Any], scope: str, spread: int) -> list[dict[str, Any]]:
        """Up to ``spread`` well-formed new jobs at the head of the queue; malformed ones
        met on the way are dealt with as poison (see the module doc)."""
        projection = {s.METRICS: 0}
        while True:
            if self._skipped:
                query = {**query, s.ID: {"$nin": list(self._skipped)}}
            # Look in a window of tids from the lowest new job seen last time: the
            # query then touches at most _WINDOW jobs however long the queue is
            # (SecantusDB cannot stop an equality-plus-sort query early).
            low = self._low_tid.get(scope, 0)
            windowed = {**query, s.TID: {"$gte": low, "$lt": low + _WINDOW}}
            found = list(self.jobs.find(windowed, projection, sort=[(s.TID, 1)], limit=spread))
            unbounded = not found
            if unbounded:
                # Nothing there (or a requeued job sits below the window): ask for the
                # lowest new tids without bounds, and start the next window there.
                found = list(self.jobs.find(query, projection, sort=[(s.TID, 1)], limit=spread))
                if not found:
                    return []
            valid = [job for job in found if not self._poison(job, State.NEW, s.QUEUE_FIELDS)]
            if valid:
                if unbounded:
                    self._low_tid[scope] = int(valid[0][s.TID])
                return valid
            # every job found was malformed and is now out of the way: look again

    # -- the holder's writes -----------------------------------------------------------

    def _held(self, claim: Claim) -> dict[str, Any]:
        return {s.ID: claim.id, s.LEASE_TOKEN: claim.token, s.STATE: State.RUNNING}

    def holds(self, claim: Claim) -> bool:
        """Whether ``claim`` still holds its job (running, with its token)."""
        return self.retry(lambda: self.jobs.find_one(self._held(claim), {s.ID: 1}) is not None,
                          f"checking the lease of trial {claim.job.get(s.TID)}")

    def heartbeat(self, claim: Claim, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Extend the lease; False if this claim no longer holds the job.

        Once this claim's own result is written (the job done or an error with its token,
        see :meth:`finish`) there is no lease left to extend and nobody took the job: True,
        so a heartbeat kept running until the result write returns does not report the
        lease lost.

        Not retried: the :class:`jobstore.heartbeat.Heartbeat` calling it skips a beat on
        a transient error instead of blocking (the error reaches it)."""
        update = stamped({s.REFRESH_TIME: Expr.now()}, lease_ms=int(lease_s * 1000))
        if self.jobs.update_one(self._held(claim), update).matched_count == 1:
            return True
        # the states a holder's finish writes; only that write keeps the token (module doc)
        finished = {s.ID: claim.id, s.LEASE_TOKEN: claim.token, s.STATE: {"$in": [State.DONE, State.ERROR]}}
        return self.jobs.find_one(finished, {s.ID: 1}) is not None

    def report(
        self, claim: Claim, step: int, metrics: Mapping[str, Any], lease_s: float = DEFAULT_LEASE_S
    ) -> bool:
        """Append ``{"step": step, **metrics}`` to the job's metrics (and extend the lease);
        False if this claim no longer holds the job.

        Safe to retry after a lost reply: an entry equal to the last one is not appended
        again (an objective reporting the very same step and values twice in a row gets
        one entry, which says the same)."""
        entry = s.bson_safe({"step": step, **metrics})
        update = stamped(
            {s.METRICS: Expr.append_once(s.METRICS, entry), s.REFRESH_TIME: Expr.now()},
            lease_ms=int(lease_s * 1000),
        )
        return self.retry(lambda: self.jobs.update_one(self._held(claim), update).matched_count == 1,
                          f"reporting metrics of trial {claim.job.get(s.TID)}")

    def finish(
        self,
        claim: Claim,
        state: State,
        result: Mapping[str, Any],
        error: Mapping[str, Any] | None = None,
        elapsed_s: float | None = None,
        scored: bool = False,
    ) -> bool:
        """Write the final state and result; False if the write was refused (lease lost).

        ``scored``: the attempt recorded pruning scores (a run with a pruner); a
        completed result (done, ok, not pruned) then marks them complete, for the median.

        ``elapsed_s``, the objective's running time, dates ``started_at`` back from the
        server's clock at the write (a duration, so worker clocks still do not matter).
        Safe to call again after a lost reply: a retry that finds its own finished
        write (this token, this state) returns True; only the holder's own final write
        keeps the token (see the module doc).
        """
        fields: dict[str, Any] = {
            s.STATE: state,
            s.RESULT: s.bson_safe(result),
            s.REFRESH_TIME: Expr.now(),
            s.FINISHED_AT: Expr.now(),
            s.LEASE_EXPIRES: None,
        }
        if elapsed_s is not None:
            fields[s.STARTED_AT] = Expr({"$subtract": ["$$NOW", int(elapsed_s * 1000)]})
        if error is not None:
            fields[s.ERROR] = s.bson_safe(error)
        update = stamped(fields)

        def write() -> bool:
            if self.jobs.update_one(self._held(claim), update).matched_count == 1:
                return True
            return self.jobs.find_one(
                {s.ID: claim.id, s.LEASE_TOKEN: claim.token, s.STATE: state}, {s.ID: 1}
            ) is not None

        if self.retry(write, f"writing the result of trial {claim.job.get(s.TID)} of run {claim.exp_key!r}"):
            if scored and state == State.DONE and result.get("status") == "ok" and not result.get(s.RESULT_PRUNED):
                self.curves.complete(claim.exp_key, claim.job.get(s.TID), claim.token)
            return True
        log.warning(
            "result of run %r trial %d refused: this worker's lease was lost and the job "
            "was handed to another worker",
            claim.exp_key, claim.tid,
        )
        return False

    def release(self, claim: Claim) -> bool:
        """Give an unfinished job back to the queue (graceful shutdown).

        The job becomes new again and this claim does not count as an attempt.
        """
        update = stamped({**_BACK_TO_NEW, s.ATTEMPTS: Expr.add(s.ATTEMPTS, -1)})
        if not self.retry(lambda: self.jobs.update_one(self._held(claim), update).matched_count == 1,
                          f"returning trial {claim.job.get(s.TID)} to the queue"):
            return False
        self.curves.forget(claim.exp_key, claim.job.get(s.TID), claim.token)
        return True

    # -- lost and malformed jobs ----------------------------------------------------------

    def requeue_expired(
        self,
        now: datetime | None = None,
        *,
        observed_s: float = math.inf,
        default_lease_s: float = DEFAULT_LEASE_S,
    ) -> RequeueOutcome:
        """Return lost jobs to the queue, or fail them after too many losses; mark
        malformed running jobs as errors.

        ``now`` is the server time to compare with (fetched when not given).
        ``observed_s`` is how long the caller has been in contact with the database
        without a break: an expired job is lost only once that is at least its
        holder's lease (``lease.seconds``, else ``default_lease_s``); see the module doc.
        Not retried: a transient error reaches the caller (see the module doc).
        """
        now = now or server_time(self.db)
        outcome = RequeueOutcome()
        expired = {s.STATE: State.RUNNING, s.LEASE_EXPIRES: {"$lt": now}}
        for job in self.jobs.find(self._unskipped(expired), _QUEUE_PROJECTION):
            if observed_s < (s.lease_seconds(job) or default_lease_s):
                outcome.waiting += 1
                continue
            if self._poison(job, State.RUNNING, (*s.QUEUE_FIELDS, s.LEASE)):
                outcome.malformed.append(job[s.ID])
                continue
            try:
                self._lost(job, outcome)
            except PyMongoError as exc:
                if is_transient(exc):
                    raise
                self._skip(job, f"could not be requeued ({describe(exc)})")
                outcome.malformed.append(job[s.ID])
        # A running job without a valid lease can have no live holder (every claim
        # writes one atomically with the state), and would otherwise run forever.
        unleased = {s.STATE: State.RUNNING, s.LEASE_EXPIRES: {"$not": {"$type": "date"}}}
        for job in self.jobs.find(self._unskipped(unleased), _QUEUE_PROJECTION):
            if self._poison(job, State.RUNNING, (*s.QUEUE_FIELDS, s.LEASE)):
                outcome.malformed.append(job[s.ID])
        return outcome

    def requeue_abandoned(self, owner: str, why: str) -> RequeueOutcome:
        """Return the running jobs of ``owner``, a worker known to hold nothing any more
        (its process has exited), to the queue at once, or fail them after too many
        losses, as :meth:`requeue_expired` does once their lease has lapsed; ``why`` says
        what became of the worker (for the log and the error message).  Malformed jobs
        are left to :meth:`requeue_expired`.  Not retried: errors reach the caller, and
        a job not requeued here is requeued when its lease lapses.
        """
        outcome = RequeueOutcome()
        for job in self.jobs.find({s.STATE: State.RUNNING, s.OWNER: owner}, _QUEUE_PROJECTION):
            if not s.job_problems(job, (*s.QUEUE_FIELDS, s.LEASE)):
                self._lost(job, outcome, why)
        return outcome

    def _lost(self, job: dict[str, Any], outcome: RequeueOutcome, why: str = "stopped heartbeating") -> None:
        """Requeue or fail the well-formed, lost ``job``, whose worker ``why``."""
        token = job[s.LEASE]["token"]
        condition = {s.ID: job[s.ID], s.STATE: State.RUNNING, s.LEASE_TOKEN: token}
        attempts = s.as_int(job.get(s.ATTEMPTS)) or 0
        allowed = s.as_int(job.get(s.MAX_ATTEMPTS)) or DEFAULT_MAX_ATTEMPTS
        key = (str(job.get(s.EXP_KEY)), int(job[s.TID]))
        if attempts >= allowed:
            message = (
                f"worker {job.get(s.OWNER)} {why}; the job was lost "
                f"{attempts} time(s), the limit is {allowed} (--max-attempts)"
            )
            fields: dict[str, Any] = {
                s.STATE: State.ERROR,
                s.RESULT: {"status": "fail", "reason": LOST_WORKER},
                s.ERROR: {"type": "LostWorker", "message": message, "reason": LOST_WORKER},
                # the token goes: a zombie's late write must not pass for its own
                s.LEASE_TOKEN: None,
                s.LEASE_EXPIRES: None,
                s.FINISHED_AT: Expr.now(),
            }
            if self.jobs.update_one(condition, stamped(fields)).modified_count:
                self.curves.forget(job.get(s.EXP_KEY), job[s.TID], token)
                outcome.failed.append(key)
                log.error("run %r trial %d failed: %s", key[0], key[1], message)
        elif self.jobs.update_one(condition, stamped(_BACK_TO_NEW)).modified_count:
            self.curves.forget(job.get(s.EXP_KEY), job[s.TID], token)
            outcome.requeued.append(key)
            log.warning(
                "run %r trial %d: worker %s %s; job requeued (attempt %d of %d)",
                key[0], key[1], job.get(s.OWNER), why, attempts, allowed,
            )

    def _unskipped(self, query: dict[str, Any]) -> dict[str, Any]:
        return {**query, s.ID: {"$nin": list(self._skipped)}} if self._skipped else query

    def _poison(self, job: dict[str, Any], state: State, fields: tuple[str, ...]) -> bool:
        """False if ``fields`` of ``job`` (in ``state``) are well-formed; else mark the
        job as an error (``malformed job``), or skip it with one warning, and say True."""
        problems = s.job_problems(job, fields)
        if not problems:
            return False
        what = f"job {job[s.ID]} (run {job.get(s.EXP_KEY)!r}, tid {job.get(s.TID)!r})"
        message = (f"{what} is malformed: {'; '.join(problems)}. No worker can run it; "
                   "fix or delete the document and queue the trial again")
        condition: dict[str, Any] = {s.ID: job[s.ID], s.STATE: state}
        if state == State.RUNNING:
            # the lease as read: a holder's write in between makes this match nothing
            condition[s.LEASE] = job.get(s.LEASE)
        fields_set: dict[str, Any] = {
            s.STATE: State.ERROR,
            s.RESULT: {"status": "fail", "reason": MALFORMED_JOB},
            s.ERROR: {"type": "MalformedJob", "message": message, "reason": MALFORMED_JOB},
            s.LEASE: {"token": None, "expires": None},
            s.FINISHED_AT: Expr.now(),
        }
        try:
            marked = self.jobs.update_one(condition, stamped(fields_set)).modified_count
        except PyMongoError as exc:
            if is_transient(exc):
                raise
            self._skip(job, f"is malformed ({'; '.join(problems)}) and could not be marked as "
                            f"an error ({describe(exc)})")
            return True
        if marked:
            log.error("%s; marked as an error", message)
        return True

    def _skip(self, job: dict[str, Any], why: str) -> None:
        """Leave ``job`` out of this queue's later queries, with one warning."""
        if job[s.ID] not in self._skipped:
            self._skipped[job[s.ID]] = why
            log.warning("skipping job %s (run %r, tid %r): it %s; fix or delete the document",
                        job[s.ID], job.get(s.EXP_KEY), job.get(s.TID), why)
