"""``MongoTrials``: a hyperopt ``Trials`` backed by the job queue, driven by hyperopt's fmin.

A drop-in replacement for ``hyperopt.mongoexp.MongoTrials`` on pymongo 4::

    from jobstore.trials import MongoTrials      # was: from hyperopt.mongoexp import MongoTrials
    trials = MongoTrials("mongo://localhost:27017/hpo/jobs", exp_key="exp1")
    best = fmin(fn, space, algo=tpe.suggest, max_evals=100, trials=trials)

The public API of the original is kept (constructor ``(url, exp_key=...)``, ``refresh``,
``count_by_state_unsynced``, ``new_trial_ids``, ``insert_trial_docs``, ``delete_all``,
``attachments``, ``trial_attachments``, ``losses``, ``best_trial``, ``argmin``, ``view``),
with these differences, all of them deliberate:

* ``refresh`` is incremental: after the first load it asks only for documents whose
  ``updated_at`` moved since the previous refresh (an indexed range query on a short
  window, then a fetch of the documents whose ``version`` changed).  Its database cost
  does not grow with the run's history.
* Trial ids come from the run's counter in the ``runs`` collection, reserved
  atomically per run in blocks; ids are unique.  Ids an algorithm asked for and did
  not use (TPE asks for several and uses one) are handed out again, so in fmin's use
  ids are contiguous; gaps remain where a coordinator stopped holding reserved ids, an
  algorithm returned no trial, or several trials objects added to one run.
* fmin polls every ``poll_interval`` seconds (default 0.05) instead of hyperopt's
  hard-coded 1 s.
* Inserted jobs also carry ``params`` (the point as plain values), and, when the
  trials object is bound to a registered experiment, ``experiment``.  For such runs the
  pickled Domain that hyperopt's fmin stores as an attachment is not written: workers
  look the experiment up by name, and nothing executable goes into the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import gridfs
import numpy as np
from hyperopt import base
from hyperopt.fmin import FMinIter, space_eval
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from jobstore import schema as s
from jobstore.connection import connect, parse_url, server_time
from jobstore.errors import TrialIdTaken
from jobstore.queue import DEFAULT_MAX_ATTEMPTS, JobQueue
from jobstore.retry import retrying
from jobstore.runs import RunStore

log = logging.getLogger(__name__)

DOMAIN_ATTACHMENT = "FMinIter_Domain"
DUPLICATE_KEY = 11000
TID_BLOCK = 16
DEFAULT_POLL_INTERVAL_S = 0.05
REFRESH_OVERLAP = timedelta(seconds=1)
"""How far back each incremental refresh looks before the newest ``updated_at`` it has
seen: a write stamped by the server just before a refresh but made visible just after
it is still picked up.  Writes become visible within milliseconds; one second is ample."""


class GridFSAttachments:
    """``trials.attachments``: a mapping of name to bytes in GridFS, scoped to the run.

    Files are stored as hyperopt's MongoTrials stores them (``filename`` plus the run's
    ``exp_key`` field on the file document), so existing tooling finds them.
    """

    def __init__(self, db: Database, exp_key: str | None, skip: Iterable[str] = ()) -> None:
        self._fs = gridfs.GridFS(db)
        self._files = db["fs.files"]
        self._scope = {} if exp_key is None else {s.EXP_KEY: exp_key}
        self._skip = set(skip)

    def __contains__(self, name: object) -> bool:
        return self._fs.exists(filename=name, **self._scope)

    def __getitem__(self, name: str) -> bytes:
        try:
            return self._fs.get_last_version(filename=name, **self._scope).read()
        except gridfs.NoFile:
            raise KeyError(name) from None

    def __setitem__(self, name: str, value: bytes | str) -> None:
        if name in self._skip:
            log.debug("not storing attachment %r for a registered experiment", name)
            return
        if isinstance(value, str):
            value = value.encode()
        for old in self._files.find({"filename": name, **self._scope}, {"_id": 1}):
            self._fs.delete(old["_id"])
        self._fs.put(value, filename=name, **self._scope)

    def __delitem__(self, name: str) -> None:
        found = list(self._files.find({"filename": name, **self._scope}, {"_id": 1}))
        if not found:
            raise KeyError(name)
        for old in found:
            self._fs.delete(old["_id"])

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._files.distinct("filename", self._scope)))

    def keys(self) -> list[str]:
        return list(self)

    def items(self) -> list[tuple[str, bytes]]:
        return [(name, self[name]) for name in self]

    def delete_all(self) -> None:
        for old in self._files.find(self._scope, {"_id": 1}):
            self._fs.delete(old["_id"])


class MongoTrials(base.Trials):
    """hyperopt Trials stored as job documents in MongoDB (see the module docstring).

    Args:
        arg: a URL (``mongodb://host:port/DB`` or ``mongo://host:port/DB/jobs``) or a
            pymongo ``Database``.
        exp_key: the run.  ``None`` means all jobs in the collection, as in hyperopt.
        refresh: load the run's trials now.
        experiment: the registered experiment the run evaluates; set by ``hpo-coord``.
        max_attempts: lost-worker claims a job survives before it becomes an error.
        poll_interval: seconds fmin sleeps between looks at the queue.
        jobs_collection: the collection, when ``arg`` is a Database.
    """

    asynchronous = True

    def __init__(
        self,
        arg: str | Database,
        exp_key: str | None = None,
        refresh: bool = True,
        *,
        experiment: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        jobs_collection: str = s.JOBS,
    ) -> None:
        if isinstance(arg, Database):
            self.db = arg
        else:
            target = parse_url(arg)
            self.db = connect(target)
            jobs_collection = target.jobs_collection
        self._jobs_collection = jobs_collection
        self.queue = JobQueue(self.db, jobs_collection)
        self.runs = RunStore(self.db, jobs_collection)
        self.queue.ensure_indexes()
        self._exp_key = exp_key
        self.experiment = experiment
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.space: Any = None
        self._ids: set[int] = set()
        self._docs: dict[Any, dict[str, Any]] = {}
        self._trials: list[dict[str, Any]] = []
        self._watermark: datetime | None = None
        self._tid_pool: list[int] = []
        self._handed: list[int] = []
        skip = (DOMAIN_ATTACHMENT,) if experiment is not None else ()
        self._attachments = GridFSAttachments(self.db, exp_key, skip)
        if refresh:
            self.refresh()

    # -- hyperopt's Trials API ------------------------------------------------------

    @property
    def attachments(self) -> GridFSAttachments:  # type: ignore[override]
        """Run-level attachments (name -> bytes) in GridFS."""
        return self._attachments

    @property
    def handle(self) -> "MongoTrials":
        """hyperopt's ``trials.handle``; here the store itself (see ``.db``, ``.queue``)."""
        return self

    def view(self, exp_key: str | None = None, refresh: bool = True) -> "MongoTrials":
        return MongoTrials(
            self.db,
            exp_key=self._exp_key if exp_key is None else exp_key,
            refresh=refresh,
            experiment=self.experiment,
            max_attempts=self.max_attempts,
            poll_interval=self.poll_interval,
            jobs_collection=self._jobs_collection,
        )

    def _scope(self) -> dict[str, Any]:
        return {} if self._exp_key is None else {s.EXP_KEY: self._exp_key}

    def refresh(self) -> None:
        """Bring the local copy up to date, fetching only what changed (see module doc).

        While the database is unreachable this waits and retries (jobstore.retry).
        """
        fetched = retrying(self._fetch_changes, "refreshing trials")
        if not fetched and self._watermark is not None:
            return
        for doc in fetched:
            self._docs[doc[s.ID]] = doc
            stamp = doc.get(s.UPDATED_AT)
            if stamp is not None and (self._watermark is None or stamp > self._watermark):
                self._watermark = stamp
        if self._watermark is None:
            self._watermark = retrying(lambda: server_time(self.db), "reading the server clock")
        valid = [d for d in self._docs.values() if d[s.STATE] in base.JOB_VALID_STATES]
        valid.sort(key=lambda d: d[s.TID])
        self._trials = valid
        self._ids.update(d[s.TID] for d in valid)

    def _fetch_changes(self) -> list[dict[str, Any]]:
        query = self._scope()
        if self._watermark is None:
            return list(self.queue.jobs.find(query, s.TRIAL_PROJECTION))
        query[s.UPDATED_AT] = {"$gte": self._watermark - REFRESH_OVERLAP}
        stubs = self.queue.jobs.find(query, {s.ID: 1, s.VERSION: 1})
        changed = [
            stub[s.ID]
            for stub in stubs
            if (self._docs.get(stub[s.ID]) or {}).get(s.VERSION) != stub.get(s.VERSION)
        ]
        if not changed:
            return []
        return list(self.queue.jobs.find({s.ID: {"$in": changed}}, s.TRIAL_PROJECTION))

    def count_by_state_unsynced(self, arg: int | Iterable[int]) -> int:
        """How many of the run's jobs are in state ``arg`` (or any of them), in the database now.

        New and running jobs are counted by the server (an index count over few
        entries).  Jobs in a final state never change (``schema.FINAL_STATES``), so those
        the last refresh saw before its window are counted from the local copy, and the
        server counts only the final jobs written since: the cost of counting done trials
        follows the recent writes, not the run's history.  Jobs deleted by another process
        since this object last loaded the run are still counted (``delete_all`` here
        reloads).
        """
        if isinstance(arg, (int, np.integer)):
            if arg not in base.JOB_STATES:
                raise ValueError(f"invalid job state {arg!r}")
            states = {int(arg)}
        else:
            states = {int(x) for x in arg}
            if not states <= set(base.JOB_STATES):
                raise ValueError(f"invalid job states {sorted(states)!r}")
        live = sorted(states - s.FINAL_STATES)
        final = states & s.FINAL_STATES
        total = 0
        if live:
            total += self._server_count({s.STATE: {"$in": live}})
        if final and self._watermark is None:
            total += self._server_count({s.STATE: {"$in": sorted(final)}})
        elif final:
            since = self._watermark - REFRESH_OVERLAP
            total += sum(
                1 for doc in self._docs.values()
                if doc[s.STATE] in final and not (doc.get(s.UPDATED_AT) and doc[s.UPDATED_AT] >= since)
            )
            total += sum(1 for state in self._states_written_since(since) if state in final)
        return total

    def _server_count(self, query: dict[str, Any]) -> int:
        query = {**self._scope(), **query}
        return retrying(lambda: self.queue.jobs.count_documents(query), "counting trials")

    def _states_written_since(self, since: datetime) -> list[int]:
        """The states of the run's jobs written at or after ``since`` (the refresh index).

        Read as a find on ``{exp_key, updated_at}`` and filtered here rather than counted
        with the state in the query: SecantusDB plans the three-field count as a
        collection scan; MongoDB serves either from the index."""
        query = {**self._scope(), s.UPDATED_AT: {"$gte": since}}
        return retrying(lambda: [doc[s.STATE] for doc in self.queue.jobs.find(query, {s.ID: 0, s.STATE: 1})],
                        "counting trials")

    def new_trial_ids(self, n: int) -> list[int]:
        """``n`` trial ids, unique in the run.

        Ids are reserved from the run's counter atomically, a block at a time
        (``TID_BLOCK``), and handed out from the block: TPE asks for ids once per
        suggestion, and this saves a database round trip for most of them.

        When the next insert uses only ids of this call, the ones it left out are
        handed out again by later calls (hyperopt's algorithms may return fewer trials
        than ids); ids inserted later after all are taken out of the pool.  So a caller
        that inserts one call's trials in parts must not ask for new ids in between:
        those could be ids it still holds, and inserting them twice raises
        :class:`jobstore.errors.TrialIdTaken`.  Ids of a block that a stopped
        coordinator did not use are skipped, never reused.
        """
        while len(self._tid_pool) < n:
            block = max(n - len(self._tid_pool), TID_BLOCK)
            self._tid_pool.extend(
                retrying(lambda b=block: self.runs.allocate_tids(self._exp_key, b), "allocating trial ids"))
        ids, self._tid_pool = self._tid_pool[:n], self._tid_pool[n:]
        self._handed = list(ids)
        self._ids.update(ids)
        return ids

    def _recycle(self, inserted: set[int]) -> None:
        """Put the ids of the last ``new_trial_ids`` call that this insert left unused
        back in the pool.  Only when the insert used ids of that call alone: an id
        handed out by an earlier call may still be in the caller's hands."""
        if not self._handed or not inserted <= set(self._handed):
            return
        unused = [tid for tid in self._handed if tid not in inserted]
        self._handed = []
        self._tid_pool = sorted(unused + self._tid_pool)
        self._ids.difference_update(unused)

    def _insert_trial_docs(self, docs: list[dict[str, Any]]) -> list[int]:
        if not docs:
            return []
        now = retrying(lambda: server_time(self.db), "reading the server clock")
        for doc in docs:
            # a fresh _id from insert_many, so that a retry can tell its own documents
            doc.pop(s.ID, None)
            doc.update(
                {
                    s.PARAMS: self._params(doc),
                    s.ATTEMPTS: 0,
                    s.MAX_ATTEMPTS: self.max_attempts,
                    s.UPDATED_AT: now,
                }
            )
            if self.experiment is not None:
                doc[s.EXPERIMENT] = self.experiment
        retrying(lambda: self._insert_new(docs), "inserting trials")
        inserted = {doc[s.TID] for doc in docs}
        self._tid_pool = [tid for tid in self._tid_pool if tid not in inserted]
        self._recycle(inserted)
        return [doc[s.TID] for doc in docs]

    def _insert_new(self, docs: list[dict[str, Any]]) -> None:
        """Insert ``docs``; a retry after a lost reply skips the ones already in.

        Raises:
            TrialIdTaken: another trial of the run has the id of one of ``docs``.
        """
        try:
            self.queue.jobs.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if exc.details.get("writeConcernErrors") or any(error.get("code") != DUPLICATE_KEY for error in errors):
                raise
            # insert_many gave each document its _id before the first attempt, so a
            # retry finds its own documents; a clash with any other is another trial.
            clashing = [docs[error["index"]] for error in errors]
            present = {doc[s.ID] for doc in self.queue.jobs.find(
                {s.ID: {"$in": [doc[s.ID] for doc in clashing]}}, {s.ID: 1})}
            taken = sorted(doc[s.TID] for doc in clashing if doc[s.ID] not in present)
            if taken:
                raise TrialIdTaken(
                    f"run {self._exp_key!r} already has trials with ids {taken}; ask "
                    "new_trial_ids() for the ids of new trials instead of reusing ids it gave before"
                ) from None

    def _params(self, doc: Mapping[str, Any]) -> Any:
        point = s.point_from_vals(doc[s.MISC]["vals"])
        if self.space is None:
            return point
        try:
            return s.bson_safe(space_eval(self.space, point))
        except Exception as exc:  # noqa: BLE001 - params are a convenience copy
            log.warning("could not evaluate params of trial %s: %s", doc[s.TID], exc)
            return point

    def delete_all(self, cond: Mapping[str, Any] | None = None) -> None:
        """Delete the run's jobs (those matching ``cond`` too) and its attachments.

        Trial ids are not reused afterwards: the run's counter keeps counting.
        """
        self.queue.jobs.delete_many({**(dict(cond) if cond else {}), **self._scope()})
        self._attachments.delete_all()
        self._docs.clear()
        self._ids.clear()
        self._trials = []
        self._watermark = None
        self.refresh()

    # -- fmin -----------------------------------------------------------------------

    def fmin(
        self,
        fn: Callable[..., Any],
        space: Any,
        algo: Callable[..., Any] | None = None,
        max_evals: int | None = None,
        timeout: float | None = None,
        loss_threshold: float | None = None,
        max_queue_len: int = 1,
        rstate: np.random.Generator | None = None,
        verbose: bool = False,
        pass_expr_memo_ctrl: bool | None = None,
        catch_eval_exceptions: bool = False,
        return_argmin: bool = True,
        show_progressbar: Any = True,
        early_stop_fn: Callable[..., Any] | None = None,
        trials_save_file: str = "",
    ) -> Any:
        """What ``hyperopt.fmin(..., trials=self)`` calls: hyperopt's own FMinIter,
        with this store's poll interval instead of hyperopt's fixed 1 s."""
        from hyperopt import tpe

        self.space = space
        self.runs.ensure(self._exp_key)
        domain = base.Domain(fn, space, pass_expr_memo_ctrl=pass_expr_memo_ctrl)
        iterator = FMinIter(
            algo or tpe.suggest,
            domain,
            self,
            rstate=rstate if rstate is not None else np.random.default_rng(),
            max_evals=max_evals if max_evals is not None else 2**63 - 1,
            timeout=timeout,
            loss_threshold=loss_threshold,
            verbose=verbose,
            max_queue_len=max_queue_len,
            show_progressbar=show_progressbar,
            early_stop_fn=early_stop_fn,
            trials_save_file=trials_save_file,
            poll_interval_secs=self.poll_interval,
        )
        iterator.catch_eval_exceptions = catch_eval_exceptions
        iterator.exhaust()
        if return_argmin:
            if not self._trials:
                raise ValueError("there are no trials, so there is no argmin")
            return self.argmin
        if self.best_trial_or_none() is not None:
            return space_eval(space, self.argmin)
        return None

    def best_trial_or_none(self) -> dict[str, Any] | None:
        """The best ok trial, or None when no trial succeeded yet."""
        ok = [
            t for t in self._trials
            if t[s.RESULT].get("status") == base.STATUS_OK and s.is_finite_number(t[s.RESULT].get("loss"))
        ]
        return min(ok, key=lambda t: t[s.RESULT]["loss"]) if ok else None

