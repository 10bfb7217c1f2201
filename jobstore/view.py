"""The read-only view of the store: what monitoring reads through.

:class:`ReadOnlyView` (``store.view``) gives readers (``hpo-coord status``, ``runs``,
``best``, ``trials``, ``plot``, ``retrain``'s look-up, a dashboard) the collections
they may read and nothing that writes, in the spirit of Orion's
``ReadOnlyStorageProtocol``:

* :attr:`ReadOnlyView.jobs`, :attr:`ReadOnlyView.runs`, :attr:`ReadOnlyView.workers`
  and :attr:`ReadOnlyView.gpu_leases` are :class:`ReadOnlyCollection` objects: ``find``,
  ``find_one``, ``count``, ``distinct`` and ``aggregate``, nothing else (an
  aggregation pipeline with a ``$out`` or ``$merge`` stage is refused);
* :meth:`ReadOnlyView.best_trial` is the project's one best-trial query (pruned trials
  are never the best), and :meth:`ReadOnlyView.no_best_trial` says why there is none;
* :meth:`ReadOnlyView.server_time` is the server's clock, what leases and "ago" are
  measured against.

Every read runs under the store's :class:`jobstore.retry.RetryPolicy` (it waits out an
outage up to the store's limit) and returns plain lists and dicts, fully read, so a
retry never sees half a cursor.  Document fields are as docs/schema.md documents them
and :mod:`jobstore.schema` names them; documents may be malformed, and readers must
check the types of what they read.  Nothing here creates indexes: the coordinator and
the workers do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.gpu_lease import LEASES
from jobstore.retry import RetryPolicy, database_display
from jobstore.schema import State

Sort = Sequence[tuple[str, int]]

_WRITING_STAGES = ("$out", "$merge")

_BEST_BATCH = 8
"""Jobs :meth:`ReadOnlyView.best_trial` reads per round trip (the first is almost always it)."""

BEST_TRIAL_PROJECTION = {s.TID: 1, s.RESULT: 1, s.PARAMS: 1, s.VALS: 1, s.FINISHED_AT: 1}
"""What :meth:`ReadOnlyView.best_trial` reads of the best job."""


def _plain_best(job: Mapping[str, Any]) -> bool:
    """Whether a job the best-trial query found has a loss and a tid a reader can use:
    the query's ranges also match decimals, fractional tids and arrays holding numbers."""
    result = job.get(s.RESULT)
    return (isinstance(result, Mapping) and s.is_finite_number(result.get("loss"))
            and s.as_int(job.get(s.TID)) is not None)


class ReadOnlyCollection:
    """Reads of one collection, retried; no method writes."""

    def __init__(self, collection: Collection, retry: RetryPolicy) -> None:
        self._collection = collection
        self._retry = retry

    @property
    def name(self) -> str:
        """The collection's name."""
        return self._collection.name

    def find(self, query: Mapping[str, Any], projection: Mapping[str, Any] | None = None, *,
             sort: Sort | None = None, limit: int = 0, hint: Sort | None = None,
             what: str | None = None) -> list[dict[str, Any]]:
        """The documents matching ``query`` (``projection``'s fields, in ``sort`` order,
        at most ``limit`` of them when it is not 0; ``hint`` names the index).  ``what``
        names the read in the log lines of an outage (default: ``reading COLLECTION``)."""
        return self._retry(lambda: list(self._collection.find(dict(query), projection, sort=sort, limit=limit,
                                                              hint=hint)),
                           what or f"reading {self.name}")

    def find_one(self, query: Mapping[str, Any], projection: Mapping[str, Any] | None = None, *,
                 sort: Sort | None = None, hint: Sort | None = None,
                 what: str | None = None) -> dict[str, Any] | None:
        """The first document :meth:`find` would return, or None."""
        found = self.find(query, projection, sort=sort, limit=1, hint=hint, what=what)
        return found[0] if found else None

    def count(self, query: Mapping[str, Any], *, what: str | None = None) -> int:
        """How many documents match ``query`` (``what``: as for :meth:`find`)."""
        return self._retry(lambda: self._collection.count_documents(dict(query)), what or f"counting {self.name}")

    def distinct(self, field: str, query: Mapping[str, Any] | None = None) -> list[Any]:
        """The distinct values of ``field`` among the documents matching ``query``."""
        return self._retry(lambda: self._collection.distinct(field, dict(query or {})), f"reading {self.name}")

    def aggregate(self, pipeline: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The results of the aggregation ``pipeline``.

        Raises:
            ValueError: a stage writes (``$out``, ``$merge``).
        """
        writing = [name for stage in pipeline for name in stage if name in _WRITING_STAGES]
        if writing:
            raise ValueError(f"a read-only view cannot run {', '.join(writing)}")
        return self._retry(lambda: list(self._collection.aggregate([dict(stage) for stage in pipeline])),
                           f"aggregating {self.name}")


class ReadOnlyView:
    """Read-only access to the store's collections (see the module doc).

    Args:
        db: the database.
        jobs_collection: the jobs collection's name.
        retry: the policy reads run under (default: the default outage limit).
    """

    def __init__(self, db: Database, jobs_collection: str = s.JOBS, *, retry: RetryPolicy | None = None) -> None:
        self._db = db
        self._retry = retry or RetryPolicy(server=database_display(db))
        self._jobs = db[jobs_collection]
        self.jobs = ReadOnlyCollection(self._jobs, self._retry)
        """Job documents (one per trial; docs/schema.md)."""
        self.runs = ReadOnlyCollection(db[s.RUNS], self._retry)
        """Run documents (``_id`` is the run's name)."""
        self.workers = ReadOnlyCollection(db[s.WORKERS], self._retry)
        """Worker records (``_id`` is ``host:pid``)."""
        self.gpu_leases = ReadOnlyCollection(db[LEASES], self._retry)
        """GPU lease documents (see :mod:`jobstore.gpu_lease`)."""

    def server_time(self) -> datetime:
        """The database server's clock (naive UTC)."""
        return self._retry(lambda: server_time(self._db), "reading the server clock")

    def best_trial(self, run: str, usable: Callable[[Mapping[str, Any]], bool] | None = None) -> dict[str, Any] | None:
        """The run's best trial, with the fields of :data:`BEST_TRIAL_PROJECTION` (``tid``,
        ``result``, ``params``, ``misc.vals``, ``finished_at``); None when no trial that
        trained its whole budget succeeded (:meth:`no_best_trial` says why, for users).

        The best trial is the done job with status ok, a finite loss that is an int or
        a float (not a BSON decimal, which the server ranks as a number), an integral
        ``tid`` (:func:`jobstore.schema.as_int`) and no ``result.pruned: true`` that has
        the lowest loss, among those for which ``usable(job)`` is true when ``usable``
        is given (e.g.
        :func:`jobstore.schema.has_point`, for callers that decode the point from
        ``misc.vals``).  A pruned trial is never the best, whatever its loss: it carries
        the loss it reported where a pruner stopped it (docs/objectives.md), not the
        loss of a trial that trained its whole budget, and its configuration was judged
        hopeless.  One indexed query (``run_state_loss``), read in loss order up to the
        first such job, whatever the run's size (pruned trials with a lower loss than
        the best are read and skipped).
        """
        def first() -> dict[str, Any] | None:
            cursor = self._jobs.find(
                {s.EXP_KEY: run, s.STATE: State.DONE, s.STATUS: "ok", s.PRUNED: {"$ne": True},
                 s.LOSS: {"$gt": -math.inf, "$lt": math.inf}, s.TID: {"$type": "number"}},
                BEST_TRIAL_PROJECTION,
                sort=[(s.LOSS, ASCENDING)],
                # run_state_loss; named because SecantusDB's planner would otherwise pick another
                hint=[(s.EXP_KEY, ASCENDING), (s.STATE, ASCENDING), (s.LOSS, ASCENDING)],
                batch_size=_BEST_BATCH,
            )
            with cursor:
                return next((job for job in cursor if _plain_best(job) and (usable is None or usable(job))), None)

        return self._retry(first, "reading the best trial")

    def no_best_trial(self, run: str) -> str:
        """Why :meth:`best_trial` found no trial, as a clause for a user's message
        ("run 'r' has no best trial: ..."): no trial succeeded yet, or every trial that
        succeeded was pruned (how many), so none trained its whole budget.  One count on
        the ``run_pruned`` index."""
        pruned = self.jobs.count({s.EXP_KEY: run, s.PRUNED: True, s.STATE: State.DONE, s.STATUS: "ok"},
                                 what="counting the pruned trials")
        if not pruned:
            return "no trial has finished with status ok yet"
        return (f"no trial that trained its whole budget has finished with status ok; {pruned} trial(s) "
                "with status ok were pruned (stopped early by the run's pruner: a pruned trial is never "
                "the best). Let the run train more trials (hpo-coord start again with a larger "
                "--max-evals) or use a gentler pruner; the README's query 'Pruned trials and where they "
                "stopped' lists the pruned ones")
