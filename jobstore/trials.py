"""``MongoTrials``: a hyperopt ``Trials`` backed by the job queue, driven by hyperopt's fmin.

A drop-in replacement for ``hyperopt.mongoexp.MongoTrials`` on pymongo 4::

    from jobstore.trials import MongoTrials      # was: from hyperopt.mongoexp import MongoTrials
    trials = MongoTrials("mongo://localhost:27017/hpo/jobs", exp_key="exp1")
    best = fmin(fn, space, algo=tpe.suggest, max_evals=100, trials=trials)
    trials.close()  # the connection it opened from the URL (or: with MongoTrials(...) as trials)

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
* A job document hyperopt could not use as a trial (no ``tid``, no ``misc``, a
  ``result`` that is not a dict, ...; see :func:`trial_problem`) is left out with one
  warning naming its ``_id``, where the original raises on every later refresh.
* While the database is unreachable, operations wait and retry (the store's policy,
  :mod:`jobstore.retry`); after ``outage_timeout`` seconds (default 300; ``None``: no limit) they raise
  :class:`jobstore.retry.DatabaseOutage`, naming the server, where the original raises
  pymongo's error after its 30 s server-selection timeout.

Trials are presented as the original presents them, in ``_id`` order (the order of
insertion), whatever the types of their ``tid``.  hyperopt's own tests of
``MongoTrials`` run against this class in CI: docs/conformance.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import gridfs
import numpy as np
from bson import ObjectId
from hyperopt import base
from hyperopt.exceptions import AllTrialsFailed
from hyperopt.fmin import FMinIter, space_eval
from pymongo.database import Database

from jobstore import schema as s
from jobstore.errors import TrialIdTaken
from jobstore.queue import DEFAULT_MAX_ATTEMPTS
from jobstore.retry import RetryPolicy
from jobstore.store import Store

log = logging.getLogger(__name__)

DOMAIN_ATTACHMENT = "FMinIter_Domain"
TID_BLOCK = 16
DEFAULT_POLL_INTERVAL_S = 0.05
DEFAULT_OUTAGE_TIMEOUT_S = 300.0
OUTAGE_TIMEOUT_HINT = "MongoTrials(..., outage_timeout=SECONDS or None); hpo-coord start --outage-timeout SECONDS"
"""How long a library user's ``MongoTrials`` waits for an unreachable database before
``fmin`` raises :class:`jobstore.retry.DatabaseOutage`.  Five minutes rides out what a
healthy deployment goes through (a mongod restart, a replica-set election, which takes
seconds, a network blip) while a script or notebook whose server is gone for good stops
with a message instead of hanging.  ``hpo-coord start`` passes ``None``: it waits."""
REFRESH_OVERLAP = timedelta(seconds=1)
"""How far back each incremental refresh looks before the newest ``updated_at`` it has
seen: a write stamped by the server just before a refresh but made visible just after
it is still picked up.  Writes become visible within milliseconds; one second is ample."""


def _written_since(doc: Mapping[str, Any], since: datetime) -> bool:
    stamp = doc.get(s.UPDATED_AT)
    return isinstance(stamp, datetime) and stamp >= since


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def trial_problem(doc: Mapping[str, Any], labels: frozenset[str] | None = None) -> str | None:
    """Why hyperopt cannot use job document ``doc`` as a trial; None when it can.

    A document needs a ``state`` that is one of hyperopt's job states.  One in a state
    hyperopt presents (new, running, done) also needs what hyperopt's ``Trials`` API and
    algorithms read: a ``tid`` (any hashable value, as in hyperopt), a ``spec``, a
    ``result`` dict with a ``status`` (and a numeric ``loss`` when the status is ok),
    and a ``misc`` dict with the same ``tid`` and ``idxs``/``vals`` dicts of lists of
    equal length, each ``idxs`` list ``[]`` or ``[tid]`` (hyperopt's own invariant).
    With ``labels`` (the search space's, once fmin runs), ``idxs`` must name them all.
    """
    state = doc.get(s.STATE)
    if not _is_number(state) or state not in base.JOB_STATES:
        return f"state {state!r} is not one of hyperopt's job states {list(base.JOB_STATES)}"
    if state not in base.JOB_VALID_STATES:
        return None
    tid = doc.get(s.TID)
    if tid is None or isinstance(tid, (dict, list)):
        return "no tid" if tid is None else f"tid {tid!r} is not a plain value"
    if s.SPEC not in doc:
        return "no spec"
    result = doc.get(s.RESULT)
    if not isinstance(result, dict) or "status" not in result:
        return f"result {result!r} is not a dict with a status"
    if result["status"] == base.STATUS_OK and not _is_number(result.get("loss")):
        return f"result has status ok but loss {result.get('loss')!r} is not a number"
    misc = doc.get(s.MISC)
    if not isinstance(misc, dict):
        return f"misc {misc!r} is not a dict"
    if misc.get("tid") != tid:
        return f"misc.tid {misc.get('tid')!r} differs from tid {tid!r}"
    idxs, vals = misc.get("idxs"), misc.get("vals")
    if not isinstance(idxs, dict) or not isinstance(vals, dict) or idxs.keys() != vals.keys():
        return "misc.idxs and misc.vals are not dicts with the same labels"
    for label, ids in idxs.items():
        if not isinstance(ids, list) or not isinstance(vals[label], list) or len(ids) != len(vals[label]):
            return f"misc.idxs/vals of {label!r} are not lists of the same length"
        if ids not in ([], [tid]):
            return f"misc.idxs of {label!r} is {ids!r}, not [] or [tid]"
    if labels is not None and not labels <= idxs.keys():
        return f"misc.idxs lacks labels of the search space: {sorted(labels - idxs.keys())}"
    return None


def _key(value: Any) -> Any:
    """An ``_id`` as a dict key: documents and arrays (legal ``_id`` values) are not hashable."""
    return ("unhashable _id", repr(value)) if isinstance(value, (dict, list)) else value


def _bson_order(value: Any) -> tuple[int, Any]:
    """Sort key for values of any mix of types (``_id``s, trial ids), in MongoDB's order
    of the types: numbers, strings, ObjectIds (by creation), then anything else (by repr)."""
    if _is_number(value):
        return (0, float(value))
    if isinstance(value, str):
        return (1, value)
    if isinstance(value, ObjectId):
        return (2, value.binary)
    return (3, f"{type(value).__name__}:{value!r}")


class GridFSAttachments:
    """``trials.attachments``: a mapping of name to bytes in GridFS, scoped to the run.

    Files are stored as hyperopt's MongoTrials stores them (``filename`` plus the run's
    ``exp_key`` field on the file document), so existing tooling finds them.  Every
    operation rides out outages under ``retry``.
    """

    def __init__(self, db: Database, exp_key: str | None, retry: RetryPolicy, skip: Iterable[str] = ()) -> None:
        self._fs = gridfs.GridFS(db)
        self._files = db["fs.files"]
        self._scope = {} if exp_key is None else {s.EXP_KEY: exp_key}
        self._skip = set(skip)
        self._retry = retry

    def __contains__(self, name: object) -> bool:
        return bool(self._retry(lambda: self._fs.exists(filename=name, **self._scope),
                                f"looking up attachment {name!r}"))

    def __getitem__(self, name: str) -> bytes:
        def read() -> bytes:
            try:
                return self._fs.get_last_version(filename=name, **self._scope).read()
            except gridfs.NoFile:
                raise KeyError(name) from None

        return self._retry(read, f"reading attachment {name!r}")

    def __setitem__(self, name: str, value: bytes | str) -> None:
        if name in self._skip:
            log.debug("not storing attachment %r for a registered experiment", name)
            return
        data = value.encode() if isinstance(value, str) else value

        def replace() -> None:
            for old in self._files.find({"filename": name, **self._scope}, {"_id": 1}):
                self._fs.delete(old["_id"])
            self._fs.put(data, filename=name, **self._scope)

        self._retry(replace, f"storing attachment {name!r}")

    def __delitem__(self, name: str) -> None:
        found = self._retry(lambda: list(self._files.find({"filename": name, **self._scope}, {"_id": 1})),
                            f"looking up attachment {name!r}")
        if not found:
            raise KeyError(name)
        for old in found:
            self._retry(lambda doc=old: self._fs.delete(doc["_id"]), f"deleting attachment {name!r}")

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._retry(lambda: self._files.distinct("filename", self._scope), "listing attachments")))

    def keys(self) -> list[str]:
        return list(self)

    def items(self) -> list[tuple[str, bytes]]:
        return [(name, self[name]) for name in self]

    def delete_all(self) -> None:
        for old in self._retry(lambda: list(self._files.find(self._scope, {"_id": 1})), "listing attachments"):
            self._retry(lambda doc=old: self._fs.delete(doc["_id"]), "deleting attachments")


class MongoTrials(base.Trials):
    """hyperopt Trials stored as job documents in MongoDB (see the module docstring).

    Args:
        arg: a URL (``mongodb://host:port/DB`` or ``mongo://host:port/DB/jobs``), a
            :class:`jobstore.store.Store` (its jobs collection), or a pymongo ``Database``.
        exp_key: the run.  ``None`` means all jobs in the collection, as in hyperopt.
        refresh: load the run's trials now.
        experiment: the registered experiment the run evaluates; set by ``hpo-coord``.
        max_attempts: times a job's worker may be lost; the last makes it an error.
        poll_interval: seconds fmin sleeps between looks at the queue.
        jobs_collection: the collection, when ``arg`` is a Database (a URL or a Store
            names its own).
        outage_timeout: seconds the database may stay unreachable before an operation
            (and so ``fmin``) raises :class:`jobstore.retry.DatabaseOutage`, which names
            the server; ``None`` waits for it forever (what ``hpo-coord start`` does
            unless given ``--outage-timeout``).  See ``DEFAULT_OUTAGE_TIMEOUT_S``.
    """

    asynchronous = True

    def __init__(
        self,
        arg: str | Store | Database,
        exp_key: str | None = None,
        refresh: bool = True,
        *,
        experiment: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        jobs_collection: str = s.JOBS,
        outage_timeout: float | None = DEFAULT_OUTAGE_TIMEOUT_S,
    ) -> None:
        if outage_timeout is not None and not outage_timeout >= 0:
            raise ValueError(f"outage_timeout must be a number of seconds >= 0 or None, not {outage_timeout!r}")
        if isinstance(arg, str):
            store = Store.open(arg)
        elif isinstance(arg, Store):
            store = arg
        else:
            store = Store(arg, jobs_collection=jobs_collection)
        self._opened = store if isinstance(arg, str) else None
        try:
            self._setup(store, exp_key, refresh, experiment, max_attempts, poll_interval, outage_timeout)
        except BaseException:
            self.close()
            raise

    def _setup(self, store: Store, exp_key: str | None, refresh: bool, experiment: str | None,
               max_attempts: int, poll_interval: float, outage_timeout: float | None) -> None:
        self.outage_timeout = outage_timeout
        self.store = store.with_outage_limit(outage_timeout, OUTAGE_TIMEOUT_HINT)
        """The store this object reads and writes through, with its outage limit."""
        self.db = self.store.db
        self.queue = self.store.queue
        self.runs = self.store.runs
        self._jobs = self.store.view.jobs
        self.queue.ensure_indexes()
        self._exp_key = exp_key
        self.experiment = experiment
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.space: Any = None
        self._ids: set[Any] = set()
        self._docs: dict[Any, dict[str, Any]] = {}
        self._problems: dict[Any, str] = {}
        self._labels: frozenset[str] | None = None
        self._trials: list[dict[str, Any]] = []
        self._watermark: datetime | None = None
        self._tid_pool: list[int] = []
        self._handed: list[int] = []
        skip = (DOMAIN_ATTACHMENT,) if experiment is not None else ()
        self._attachments = GridFSAttachments(self.db, exp_key, self.store.retry, skip)
        if refresh:
            self.refresh()

    def close(self) -> None:
        """Close the connection this object opened from a URL (it and its :meth:`view`
        objects are unusable afterwards); a ``Store`` or ``Database`` the caller passed
        stays open, the caller's to close.  Idempotent; ``with MongoTrials(url) as
        trials:`` closes on leaving the block."""
        if self._opened is not None:
            self._opened.close()

    def __enter__(self) -> "MongoTrials":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hyperopt's Trials API ------------------------------------------------------

    @property
    def attachments(self) -> GridFSAttachments:  # type: ignore[override]
        """Run-level attachments (name -> bytes) in GridFS."""
        return self._attachments

    @property
    def handle(self) -> "MongoTrials":
        """hyperopt's ``trials.handle``; here this object itself (see ``.db``, ``.queue``, ``.store``)."""
        return self

    def view(self, exp_key: str | None = None, refresh: bool = True) -> "MongoTrials":
        return MongoTrials(
            self.store,
            exp_key=self._exp_key if exp_key is None else exp_key,
            refresh=refresh,
            experiment=self.experiment,
            max_attempts=self.max_attempts,
            poll_interval=self.poll_interval,
            outage_timeout=self.outage_timeout,
        )

    def _scope(self) -> dict[str, Any]:
        return {} if self._exp_key is None else {s.EXP_KEY: self._exp_key}

    def refresh(self) -> None:
        """Bring the local copy up to date, fetching only what changed (see module doc).

        Trials are presented in stock MongoTrials' order (by ``_id``: creation order for
        the ObjectIds inserts give), whatever the types of their ids.  A document
        hyperopt cannot use as a trial (see :func:`trial_problem`; in an hpo-coord run,
        ``experiment`` set, also one whose tid is not an integer) is left out with one
        warning naming its ``_id``; it is still counted by ``count_by_state_unsynced``.
        While the database is unreachable this waits and retries, up to the outage limit.
        """
        fetched = self._fetch_changes()
        if not fetched and self._watermark is not None:
            return
        for doc in fetched:
            self._docs[_key(doc[s.ID])] = doc
            self._check(doc)
            stamp = doc.get(s.UPDATED_AT)
            if isinstance(stamp, datetime) and (self._watermark is None or stamp > self._watermark):
                self._watermark = stamp
        if self._watermark is None:
            self._watermark = self.store.server_time()
        self._present()

    def _check(self, doc: Mapping[str, Any]) -> None:
        """Record whether ``doc`` can be presented; when it cannot, warn (once per problem)."""
        problem = trial_problem(doc, self._labels)
        if problem is None and self.experiment is not None:
            # an hpo-coord run numbers its trials from an integer counter, and the queue
            # marks any other tid as malformed; presented, it breaks TPE's sort by tid
            problem = next(iter(s.job_problems(doc, (s.TID,))), None)
        if problem is None:
            self._problems.pop(_key(doc[s.ID]), None)
            return
        if self._problems.get(_key(doc[s.ID])) != problem:
            log.warning("skipping job document _id=%r%s: %s", doc[s.ID],
                        f" of run {self._exp_key!r}" if self._exp_key is not None else "", problem)
        self._problems[_key(doc[s.ID])] = problem

    def _present(self) -> None:
        valid = [
            doc for key, doc in self._docs.items()
            if key not in self._problems and doc.get(s.STATE) in base.JOB_VALID_STATES
        ]
        valid.sort(key=lambda doc: _bson_order(doc[s.ID]))
        self._trials = valid
        self._ids.update(doc[s.TID] for doc in valid)

    def _use_labels(self, labels: frozenset[str]) -> None:
        """Check the trials against the search space's labels from now on."""
        if labels == self._labels:
            return
        self._labels = labels
        for doc in self._docs.values():
            self._check(doc)
        self._present()

    def _fetch_changes(self) -> list[dict[str, Any]]:
        query = self._scope()
        if self._watermark is None:
            return self._jobs.find(query, s.TRIAL_PROJECTION, what="refreshing trials")
        query[s.UPDATED_AT] = {"$gte": self._watermark - REFRESH_OVERLAP}
        stubs = self._jobs.find(query, {s.ID: 1, s.VERSION: 1}, what="refreshing trials")
        changed = [
            stub[s.ID]
            for stub in stubs
            if (self._docs.get(_key(stub[s.ID])) or {}).get(s.VERSION) != stub.get(s.VERSION)
        ]
        if not changed:
            return []
        return self._jobs.find({s.ID: {"$in": changed}}, s.TRIAL_PROJECTION, what="refreshing trials")

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
                if doc.get(s.STATE) in final and not _written_since(doc, since)
            )
            total += sum(1 for state in self._states_written_since(since) if state in final)
        return total

    def _server_count(self, query: dict[str, Any]) -> int:
        query = {**self._scope(), **query}
        return self._jobs.count(query, what="counting trials")

    def _states_written_since(self, since: datetime) -> list[int]:
        """The states of the run's jobs written at or after ``since`` (the refresh index).

        Read as a find on ``{exp_key, updated_at}`` and filtered here rather than counted
        with the state in the query: SecantusDB plans the three-field count as a
        collection scan; MongoDB serves either from the index."""
        query = {**self._scope(), s.UPDATED_AT: {"$gte": since}}
        return [doc.get(s.STATE) for doc in self._jobs.find(query, {s.ID: 0, s.STATE: 1}, what="counting trials")]

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
            self._tid_pool.extend(self.runs.allocate_tids(self._exp_key, block))
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
        now = self.store.server_time()
        for doc in docs:
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
        taken = sorted((doc[s.TID] for doc in self.queue.insert_new(docs)), key=_bson_order)
        if taken:
            raise TrialIdTaken(
                f"run {self._exp_key!r} already has trials with ids {taken}; ask "
                "new_trial_ids() for the ids of new trials instead of reusing ids it gave before"
            )
        inserted = {doc[s.TID] for doc in docs}
        self._tid_pool = [tid for tid in self._tid_pool if tid not in inserted]
        self._recycle(inserted)
        return [doc[s.TID] for doc in docs]

    def _params(self, doc: Mapping[str, Any]) -> Any:
        vals = doc[s.MISC]["vals"]
        if self.space is None:
            return s.point_from_vals(vals)
        try:
            return s.bson_safe(s.params_from_vals(self.space, vals))
        except Exception as exc:  # noqa: BLE001 - params are a convenience copy
            log.warning("could not evaluate params of trial %s: %s", doc[s.TID], exc)
            return s.point_from_vals(vals)

    def delete_all(self, cond: Mapping[str, Any] | None = None) -> None:
        """Delete the run's jobs (those matching ``cond`` too) and its attachments.

        Trial ids are not reused afterwards: the run's counter keeps counting.
        """
        self.queue.delete({**(dict(cond) if cond else {}), **self._scope()})
        self._attachments.delete_all()
        self._docs.clear()
        self._problems.clear()
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
        self._use_labels(frozenset(domain.params))
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
        try:
            return space_eval(space, self.argmin)
        except AllTrialsFailed:
            return None

