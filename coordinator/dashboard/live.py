"""What tells the dashboard's pages that something changed: a MongoDB change stream
where the server offers one, else polling.

:class:`ChangeFeed` keeps one counter per run (bumped when a job of that run is
written) and one for the workers (bumped when a worker record is written).  Pages ask
the web server for the counters (server-sent events, :mod:`coordinator.dashboard.app`)
and re-read what they show when one moves.  Contracts:

* **Change stream first.**  ``db.watch`` on the jobs, runs and workers collections
  (MongoDB 7/8 replica sets and sharded clusters, and SecantusDB).  A standalone
  mongod has no change streams: the feed then polls every :data:`POLL_INTERVAL_S`,
  comparing each watched key's :meth:`ChangeFeed.signature` (small indexed reads; the
  runs page watches every run).  :attr:`ChangeFeed.mode` says which, and the pages
  show it.
* **Heartbeats are not changes.**  A running trial's heartbeat (an update of its
  heartbeat fields only) is not counted by the change stream; polling compares only
  what a heartbeat cannot change: a run's trial states and its finished trials, and
  which workers there are and their state (busy, idle, stopped, or lost once not seen
  for ``stale_after``), never ``updated_at`` or ``last_seen``.
* **Read-only**, and one background thread.  A stream that breaks (server restart)
  is reopened after :data:`RETRY_S` (:attr:`ChangeFeed.note` says so meanwhile, and
  the pages show it rather than "live"), one the server ended (the database was
  dropped) at once; if the server refuses one (a standalone mongod, or an error such as
  lost change history), the feed polls from then on.  An
  error the thread cannot ride out (anything but a database error) takes the process
  down loudly (:func:`jobstore.fatal.die`): a dashboard whose pages silently stopped
  updating would show a stale run as live.
* Workers going stale are a change of time, not of data: pages re-read the workers
  on the feed's ``tick`` (every :data:`TICK_S`), which costs one small indexed query.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from coordinator import monitor
from jobstore import schema as s
from jobstore.fatal import die
from jobstore.retry import DatabaseOutage, describe
from jobstore.schema import State
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
THREAD = "dashboard change feed"
"""The feed thread's name (in the log line of its death)."""


class ChangeFeed:
    """Counters of changes per run and for the workers, kept by a daemon thread.

    ``stale_after``: when polling, a worker not seen for this long counts as lost, a
    change of the workers.
    """

    def __init__(self, db: Database, jobs_collection: str = s.JOBS, poll_interval_s: float = POLL_INTERVAL_S,
                 use_stream: bool = True, stale_after: timedelta = monitor.STALE_AFTER) -> None:
        self._db = db
        self._jobs = jobs_collection
        self._view = ReadOnlyView(db, jobs_collection)
        self._poll_interval_s = poll_interval_s
        self._use_stream = use_stream
        self._stale_after = stale_after
        self._since: datetime | None = None
        self._versions: defaultdict[str, int] = defaultdict(int)
        self._watched: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=THREAD, daemon=True)
        self.mode = STREAM if use_stream else POLLING
        """:data:`STREAM` or :data:`POLLING`; may change to polling once the thread runs."""
        self.note = ""
        """Why the feed polls, when it does; why the change stream is not followed, while
        it is being reopened."""

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
            if key not in (WORKERS_KEY, ANY_RUN_KEY):  # a run's change is also a change of any run
                self._versions[ANY_RUN_KEY] += 1

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException as exc:  # noqa: BLE001 - frozen pages must not pass for live ones
            die(THREAD, exc, consequence="the dashboard's pages would stop updating without it")

    def _follow(self) -> None:
        while not self._stop.is_set():
            if self._use_stream:
                try:
                    self._stream()
                    continue
                except OperationFailure as exc:
                    self.mode, self.note = POLLING, f"the server refused a change stream ({exc.details and exc.details.get('errmsg') or exc}); polling every {self._poll_interval_s:g} s"
                    log.warning("dashboard: %s", self.note)
                except PyMongoError as exc:  # shown on the pages until the stream is open again
                    self.note = f"change stream interrupted ({describe(exc)}); reopening every {RETRY_S:g} s"
                    log.warning("dashboard: %s", self.note)
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
            # a dropped or renamed database ends (invalidates) the stream: return to reopen it
            while not self._stop.is_set() and stream.alive:
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
                    latest = self.signature(key)
                except (PyMongoError, DatabaseOutage) as exc:  # an outage past the view's limit too
                    log.warning("dashboard: polling failed (%s); trying again", exc)
                    break
                if key in seen and seen[key] != latest:
                    self._bump(key)
                seen[key] = latest
            self._stop.wait(self._poll_interval_s)

    def signature(self, key: str) -> Any:
        """What polling compares for ``key``; it changes when a page's data does, not
        with heartbeats.

        A run: how many trials are new, which are running (a few per worker), and how
        many finished since the feed first polled (``run_state_tid`` and
        ``run_finished``: index reads bounded by the queue and the recent finishes, not
        by the run's history).  :data:`WORKERS_KEY`: each worker seen within
        :data:`coordinator.monitor.WORKER_HORIZON` with its state (lost once not seen
        for ``stale_after``) and current trial.  :data:`ANY_RUN_KEY`: every run's
        signature.
        """
        if key == ANY_RUN_KEY:
            return tuple((run, self.signature(run)) for run in monitor.known_runs(self._view))
        if key == WORKERS_KEY:
            now = self._view.server_time()
            return tuple((w.id, w.state, w.current) for w in monitor.workers(self._view, now, self._stale_after))
        if self._since is None:
            self._since = self._view.server_time()
        jobs = self._view.jobs
        running = jobs.find({s.EXP_KEY: key, s.STATE: State.RUNNING}, {s.ID: 0, s.TID: 1}, sort=[(s.TID, ASCENDING)])
        return (jobs.count({s.EXP_KEY: key, s.STATE: State.NEW}), [job.get(s.TID) for job in running],
                jobs.count({s.EXP_KEY: key, s.FINISHED_AT: {"$gte": self._since}}))


def _heartbeat(change: dict[str, Any]) -> bool:
    """Whether a change event of a job is a heartbeat (see :data:`HEARTBEAT_FIELDS`)."""
    update = change.get("updateDescription") or {}
    return (change.get("operationType") == "update" and not update.get("removedFields")
            and set(update.get("updatedFields") or {}) <= HEARTBEAT_FIELDS)
