"""Worker records: who is working, where, on what, and when they were last seen.

One document per worker process in ``workers`` (``_id`` is the worker id,
``"host:pid"``).  Workers write their own record; ``hpo-coord status`` and plain
Mongo queries read it.  A worker whose ``last_seen`` is older than a few heartbeat
intervals is dead, whatever its ``status`` says.

Writes are retried under the store's :class:`jobstore.retry.RetryPolicy`, except
:meth:`WorkerRegistry.beat`, the heartbeat's write (a heartbeat skips a beat on a
transient error rather than block).
"""

from __future__ import annotations

from typing import Any

from pymongo.database import Database

from jobstore import schema as s
from jobstore.retry import RetryPolicy, database_display
from jobstore.schema import literal


class WorkerRegistry:
    """The ``workers`` collection (its owner), retried under ``retry`` (default: the
    default outage limit, naming ``db``'s server)."""

    def __init__(self, db: Database, *, retry: RetryPolicy | None = None) -> None:
        self.workers = db[s.WORKERS]
        self.retry = retry or RetryPolicy(server=database_display(db))

    def ensure_indexes(self) -> None:
        """Create the ``last_seen`` index live workers are found by (idempotent; each
        worker does at start)."""
        self.retry(lambda: self.workers.create_indexes(s.WORKER_INDEXES), "creating indexes")

    def register(self, worker_id: str, *, host: str, pid: int, device: str, version: str) -> None:
        """Create or reset the worker's record: idle, nothing done, seen now."""
        self.retry(lambda: self.workers.update_one(
            {s.ID: worker_id},
            [
                {
                    "$set": {
                        s.WORKER_HOST: literal(host),
                        s.WORKER_PID: literal(pid),
                        s.WORKER_DEVICE: literal(device),
                        s.WORKER_VERSION: literal(version),
                        s.WORKER_STARTED_AT: "$$NOW",
                        s.WORKER_LAST_SEEN: "$$NOW",
                        s.WORKER_CURRENT: None,
                        s.WORKER_DONE: 0,
                        s.WORKER_STATUS: "idle",
                    }
                }
            ],
            upsert=True,
        ), "registering the worker")

    def update(self, worker_id: str, *, status: str, current: dict[str, Any] | None = None,
               trials_done: int | None = None) -> bool:
        """Record the worker's status (``idle``, ``busy``, ``stopped``), current trial and
        count of finished trials, and refresh ``last_seen``; False if the record is gone."""
        return self.retry(lambda: self.beat(worker_id, status=status, current=current, trials_done=trials_done),
                          "updating the worker record")

    def beat(self, worker_id: str, *, status: str, current: dict[str, Any] | None = None,
             trials_done: int | None = None) -> bool:
        """:meth:`update` once, not retried: the heartbeat's write (a transient error
        reaches the caller).  Workers call it from their heartbeat, so ``status`` and
        ``current`` lag the truth by at most one heartbeat interval.
        """
        stage: dict[str, Any] = {
            s.WORKER_STATUS: literal(status),
            s.WORKER_CURRENT: literal(current),
            s.WORKER_LAST_SEEN: "$$NOW",
        }
        if trials_done is not None:
            stage[s.WORKER_DONE] = literal(trials_done)
        return self.workers.update_one({s.ID: worker_id}, [{"$set": stage}]).matched_count == 1
