"""Run documents: what a run is, its trial-id counter, and its coordinator lease.

A run (hyperopt's ``exp_key``) is created by the first coordinator that starts it and
records the experiment name, the fingerprint of its space and objective version, and
the run settings.  Guarantees:

* ``experiment`` and ``fingerprint`` never change once written; starting a run again
  with another experiment or fingerprint raises :class:`RunMismatch`.
* :meth:`RunStore.allocate_tids` hands out each trial id of a run once, ever, across
  coordinator restarts.
* At most one coordinator holds a run's lease at a time; a lease that was not renewed
  for its length (server time) can be taken over, and so can a ``coordinator`` field
  that is not a lease at all (not a document, or without a date in ``expires``: no
  live coordinator writes one).
* Every method but :meth:`RunStore.renew_coordinator` (called by a heartbeat, which
  skips a beat on a transient error) and :meth:`RunStore.release_coordinator` (best
  effort on the way out: a lease not released lapses) is retried under the store's
  :class:`jobstore.retry.RetryPolicy`; each is safe to repeat after a lost reply.
* A malformed run document is a clear error (:class:`MalformedRun`, naming the field
  and how to repair it), never a traceback; jobs with a malformed ``tid`` are left out
  when the counter's floor is computed.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.errors import CoordinatorBusy, RunMismatch
from jobstore.retry import RetryPolicy, database_display
from jobstore.schema import Expr, literal
from user_errors import UserError


class MalformedRun(UserError):
    """A run document whose fields are not as documented; the message says how to fix it."""


class RunStore:
    """The ``runs`` collection (its owner), retried under ``retry`` (default: the
    default outage limit, naming ``db``'s server)."""

    def __init__(self, db: Database, jobs_collection: str = s.JOBS, *, retry: RetryPolicy | None = None) -> None:
        self.db = db
        self.runs = db[s.RUNS]
        self.jobs = db[jobs_collection]
        self.retry = retry or RetryPolicy(server=database_display(db))

    def get(self, exp_key: str | None) -> dict[str, Any] | None:
        """The run's document, or None."""
        return self.retry(lambda: self.runs.find_one({s.ID: exp_key}), f"reading run {exp_key!r}")

    def started_runs(self) -> list[str]:
        """The names of the runs ``hpo-coord start`` created (those with an experiment), sorted."""
        found = self.retry(lambda: list(self.runs.find({s.RUN_EXPERIMENT: {"$exists": True}}, {s.ID: 1})),
                           "listing runs")
        return sorted(str(run[s.ID]) for run in found)

    def ensure(
        self,
        exp_key: str | None,
        *,
        experiment: str | None = None,
        fingerprint: str | None = None,
        settings: Mapping[str, Any] | None = None,
        max_evals: int | None = None,
        algo: str | None = None,
    ) -> dict[str, Any]:
        """Create the run, or check that the existing one matches; return its document.

        Settings, max_evals and algo of an existing run are updated to the new values
        (a resumed run may be extended); experiment and fingerprint must match.
        """
        run, floor = self.retry(lambda: self._ensure(exp_key, experiment, fingerprint, settings, max_evals, algo),
                                f"recording run {exp_key!r}")
        counter = run.get(s.RUN_NEXT_TID)
        if s.as_int(counter) is None:
            raise MalformedRun(
                f"run {exp_key!r} is damaged: its trial-id counter {s.RUN_NEXT_TID!r} is "
                f"{counter!r}, not an integer. Repair it with "
                f"db.{s.RUNS}.updateOne({{_id: {exp_key!r}}}, {{$set: {{{s.RUN_NEXT_TID}: {floor}}}}}) "
                "(one above the run's highest trial id) and start again"
            )
        if experiment is not None:
            if run.get(s.RUN_EXPERIMENT) != experiment:
                raise RunMismatch(
                    f"run {exp_key!r} belongs to experiment {run.get(s.RUN_EXPERIMENT)!r}, "
                    f"not {experiment!r}; choose another --run name"
                )
            if run.get(s.RUN_FINGERPRINT) != fingerprint:
                raise RunMismatch(
                    f"run {exp_key!r} was started with another search space or objective "
                    f"version (fingerprint {run.get(s.RUN_FINGERPRINT)}, this code gives "
                    f"{fingerprint}); choose another --run name to start a new run"
                )
        return run

    def _ensure(self, exp_key: str | None, experiment: str | None, fingerprint: str | None,
                settings: Mapping[str, Any] | None, max_evals: int | None,
                algo: str | None) -> tuple[dict[str, Any], int]:
        """One attempt of :meth:`ensure`'s write: the run document after it, and the
        trial-id floor the run's jobs give."""
        highest = self.jobs.find_one({s.EXP_KEY: exp_key, s.TID: {"$type": ["int", "long"]}}, {s.TID: 1},
                                     sort=[(s.TID, -1)])
        floor = int(highest[s.TID]) + 1 if highest else 0
        on_insert: dict[str, Any] = {s.RUN_CREATED_AT: server_time(self.db)}
        if experiment is not None:
            on_insert[s.RUN_EXPERIMENT] = experiment
            on_insert[s.RUN_FINGERPRINT] = fingerprint
        update: dict[str, Any] = {"$setOnInsert": on_insert, "$max": {s.RUN_NEXT_TID: floor}}
        changes = {
            key: value
            for key, value in (
                (s.RUN_SETTINGS, dict(settings) if settings is not None else None),
                (s.RUN_MAX_EVALS, max_evals),
                (s.RUN_ALGO, algo),
            )
            if value is not None
        }
        if changes:
            update["$set"] = s.bson_safe(changes)
        run = self.runs.find_one_and_update(
            {s.ID: exp_key}, update, upsert=True, return_document=ReturnDocument.AFTER
        )
        return run, floor

    def allocate_tids(self, exp_key: str | None, n: int) -> list[int]:
        """``n`` fresh trial ids for the run, never handed out before."""
        if n <= 0:
            return []
        return self.retry(lambda: self._allocate(exp_key, n), "allocating trial ids")

    def _allocate(self, exp_key: str | None, n: int) -> list[int]:
        """One attempt of :meth:`allocate_tids` (a lost reply skips a block, never reuses one)."""
        while True:
            run = self.runs.find_one_and_update(
                {s.ID: exp_key}, {"$inc": {s.RUN_NEXT_TID: n}}, return_document=ReturnDocument.AFTER
            )
            if run is not None:
                break
            # No run document yet (a plain hyperopt script): create it, tolerating a
            # concurrent creator, rather than upserting, which can race.
            try:
                self.runs.insert_one({s.ID: exp_key, s.RUN_NEXT_TID: 0})
            except DuplicateKeyError:
                pass
        end = int(run[s.RUN_NEXT_TID])
        return list(range(end - n, end))

    def acquire_coordinator(self, exp_key: str, lease_s: float) -> str:
        """Take the run's coordinator lease; return its token.

        Raises:
            CoordinatorBusy: another coordinator's lease is still live.
        """
        token = uuid.uuid4().hex
        if self.retry(lambda: self._take(exp_key, token, lease_s), f"taking the lease of run {exp_key!r}"):
            return token
        run = self.get(exp_key) or {}
        current = run.get(s.RUN_COORDINATOR)
        current = current if isinstance(current, Mapping) else {}
        raise CoordinatorBusy(
            f"run {exp_key!r} is already being coordinated by {current.get('host')} "
            f"pid {current.get('pid')} (lease renewed until {current.get('expires')} UTC); "
            "stop that coordinator first, or wait until its lease expires "
            f"({lease_s:.0f} s after it stopped) to take over"
        )

    def _take(self, exp_key: str, token: str, lease_s: float) -> bool:
        """One attempt to take the lease with ``token``; a retry after a lost reply finds
        the lease already held by ``token`` and takes it again."""
        now = server_time(self.db)
        holder = Expr(
            {
                "token": literal(token),
                "host": literal(socket.gethostname()),
                "pid": literal(os.getpid()),
                "since": "$$NOW",
                "expires": {"$add": ["$$NOW", int(lease_s * 1000)]},
            }
        )
        taken = self.runs.update_one(
            {
                s.ID: exp_key,
                "$or": [
                    {s.RUN_COORDINATOR: None},
                    {s.RUN_COORDINATOR_EXPIRES: {"$lt": now}},
                    # not a lease at all (malformed): no live coordinator wrote it
                    {s.RUN_COORDINATOR_EXPIRES: {"$not": {"$type": "date"}}},
                    {s.RUN_COORDINATOR_TOKEN: token},  # this attempt's own, reply lost
                ],
            },
            [{"$set": {s.RUN_COORDINATOR: holder.expression}}],
        )
        return taken.matched_count == 1

    def renew_coordinator(self, exp_key: str, token: str, lease_s: float) -> bool:
        """Extend the lease; False if ``token`` no longer holds it.  Not retried (see the
        module doc): a transient error reaches the caller."""
        renewed = self.runs.update_one(
            {s.ID: exp_key, s.RUN_COORDINATOR_TOKEN: token},
            [{"$set": {s.RUN_COORDINATOR_EXPIRES: {"$add": ["$$NOW", int(lease_s * 1000)]}}}],
        )
        return renewed.matched_count == 1

    def release_coordinator(self, exp_key: str, token: str) -> None:
        """Give the lease up so the next coordinator can start at once.  Not retried (see
        the module doc): a transient error reaches the caller."""
        self.runs.update_one(
            {s.ID: exp_key, s.RUN_COORDINATOR_TOKEN: token}, {"$set": {s.RUN_COORDINATOR: None}}
        )
