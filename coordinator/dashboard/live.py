"""What tells the dashboard's pages that something changed: a MongoDB change stream
where the server offers one, else polling.

:class:`ChangeFeed` keeps one counter per run (bumped when a job of that run is
written) and one for the workers (bumped when a worker record is written).  Pages ask
the web server for the counters (server-sent events, :mod:`coordinator.dashboard.app`)
and re-read what they show when one moves.  Contracts:

* **Change stream first.**  ``db.watch`` on the jobs, runs and workers collections
  (MongoDB 7/8 replica sets and sharded clusters, and SecantusDB).  A standalone
  mongod has no change streams: the feed then polls every :data:`POLL_INTERVAL_S`,
  reading the newest ``updated_at`` of each run a page asked about (one indexed
  ``find_one`` per run, through ``run_updated``; the runs page asks about every run)
  and the newest worker ``last_seen`` (through ``last_seen``).  :attr:`ChangeFeed.mode` says which, and the pages show it.
* **Read-only**, and one background thread.  A stream that breaks (server restart)
  is reopened after :data:`RETRY_S`; if it cannot be reopened the feed polls.
* A running trial's heartbeat (an update of its heartbeat fields only) is not a change
  for the change stream; polling cannot tell it apart (it reads ``updated_at`` only).
* Workers going stale are a change of time, not of data: pages re-read the workers
  on the feed's ``tick`` (every :data:`TICK_S`), which costs one small indexed query.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from coordinator import monitor
from jobstore import schema as s
from jobstore.view import ReadOnlyView

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0
RETRY_S = 2.0
TICK_S = 1.0
WORKERS_KEY = ""
"""The counter of the workers (no run has an empty name)."""
ANY_RUN_KEY = "*"
"""The counter bumped by a change to any run (the runs page)."""
HEARTBEAT_FIELDS = frozenset({s.REFRESH_TIME, s.LEASE, s.LEASE_EXPIRES, s.UPDATED_AT, s.VERSION})
"""A job update that sets only these is a running trial's heartbeat: nothing a page
shows changes, so the change stream does not count it."""
STREAM = "change stream"
POLLING = "polling"


class ChangeFeed:
    """Counters of changes per run and for the workers, kept by a daemon thread."""

    def __init__(self, db: Database, jobs_collection: str = s.JOBS, poll_interval_s: float = POLL_INTERVAL_S,
                 use_stream: bool = True) -> None:
        self._db = db
        self._jobs = jobs_collection
        self._view = ReadOnlyView(db, jobs_collection)
        self._poll_interval_s = poll_interval_s
        self._use_stream = use_stream
        self._versions: defaultdict[str, int] = defaultdict(int)
        self._watched: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)
        self.mode = STREAM if use_stream else POLLING
        """:data:`STREAM` or :data:`POLLING`; may change to polling once the thread runs."""
        self.note = ""
        """Why the feed polls, when it does."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def version(self, key: str) -> int:
        """The counter of run ``key`` (or :data:`WORKERS_KEY`); watching starts with the
        first call for a run."""
        with self._lock:
            self._watched.add(key)
            return self._versions[key]

    def _bump(self, key: str) -> None:
        with self._lock:
            self._versions[key] += 1
            if key != WORKERS_KEY:
                self._versions[ANY_RUN_KEY] += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._use_stream:
                try:
                    self._stream()
                    continue
                except OperationFailure as exc:
                    self.mode, self.note = POLLING, f"this server has no change streams ({exc.details and exc.details.get('errmsg') or exc}); polling every {self._poll_interval_s:g} s"
                    log.warning("dashboard: %s", self.note)
                except PyMongoError as exc:
                    log.warning("dashboard: change stream interrupted (%s); reopening in %g s", exc, RETRY_S)
                    self._stop.wait(RETRY_S)
                    continue
            self._poll()
            return

    def _stream(self) -> None:
        collections = [self._jobs, s.RUNS, s.WORKERS]
        pipeline: list[dict[str, Any]] = [
            {"$match": {"ns.coll": {"$in": collections}}},
            {"$project": {"ns": 1, "documentKey": 1, "operationType": 1, "fullDocument." + s.EXP_KEY: 1,
                          "updateDescription.updatedFields": 1, "updateDescription.removedFields": 1}},
        ]
        with self._db.watch(pipeline, full_document="updateLookup", max_await_time_ms=500) as stream:
            self.mode, self.note = STREAM, ""
            while not self._stop.is_set():
                change = stream.try_next()
                if change is None:
                    continue
                collection = change.get("ns", {}).get("coll")
                if collection == s.WORKERS:
                    self._bump(WORKERS_KEY)
                elif collection == s.RUNS:
                    self._bump(str(change.get("documentKey", {}).get(s.ID)))
                elif not _heartbeat(change):
                    run = (change.get("fullDocument") or {}).get(s.EXP_KEY)
                    if isinstance(run, str):
                        self._bump(run)

    def _poll(self) -> None:
        seen: dict[str, Any] = {}
        while not self._stop.is_set():
            with self._lock:
                keys = list(self._watched)
            for key in keys:
                try:
                    latest = self._latest(key)
                except PyMongoError as exc:
                    log.warning("dashboard: polling failed (%s); trying again", exc)
                    break
                if key in seen and seen[key] != latest and key != ANY_RUN_KEY:
                    self._bump(key)
                elif key in seen and seen[key] != latest:
                    with self._lock:
                        self._versions[ANY_RUN_KEY] += 1
                seen[key] = latest
            self._stop.wait(self._poll_interval_s)

    def _latest(self, key: str) -> Any:
        if key == ANY_RUN_KEY:
            return tuple((run, self._latest(run)) for run in monitor.known_runs(self._view))
        if key == WORKERS_KEY:
            doc = self._view.workers.find_one({}, {s.WORKER_LAST_SEEN: 1}, sort=[(s.WORKER_LAST_SEEN, DESCENDING)])
            return None if doc is None else s.as_date(doc.get(s.WORKER_LAST_SEEN))
        doc = self._view.jobs.find_one({s.EXP_KEY: key}, {s.UPDATED_AT: 1},
                                            sort=[(s.UPDATED_AT, DESCENDING)])
        return None if doc is None else s.as_date(doc.get(s.UPDATED_AT))


def _heartbeat(change: dict[str, Any]) -> bool:
    """Whether a change event of a job is a heartbeat (see :data:`HEARTBEAT_FIELDS`)."""
    update = change.get("updateDescription") or {}
    return (change.get("operationType") == "update" and not update.get("removedFields")
            and set(update.get("updatedFields") or {}) <= HEARTBEAT_FIELDS)
