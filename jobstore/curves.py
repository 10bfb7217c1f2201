"""The ``curves`` collection: the scores pruning rules compare, read through indexes.

A run with a pruner (``hpo-coord start --pruner``) records, for each trial attempt, the
score (the run's pruning metric, lower is better) of every reported step (median) or of
every rung it reached (asha, hyperband).  :class:`AttemptCurves` is the
``objectives.pruning.Population`` one attempt decides with.  Guarantees:

* **One decision reads no documents**: every question is a count or a one-document
  lookup on an index range (``run_complete_step_score``, ``run_bracket_rung_score``);
  counts the rules only compare with a bound stop at that bound.
* **Fencing**: a score is recorded only by the holder of the job's lease.  The worker
  records after its fenced metrics write succeeded; the record then checks the lease
  again and removes its own scores if it was lost meanwhile, and the queue removes a
  job's scores whenever the job goes back to the queue (:meth:`CurveStore.forget`), so
  an attempt that lost its claim leaves nothing behind, and a requeued trial starts
  its history again.  (The one gap: a holder that dies between writing a score and
  checking its lease, after its job was requeued, leaves that score until the trial's
  next attempt records its first one, which removes scores of other attempts.)
* Every operation is retried through the store's :class:`RetryPolicy` while the
  database is away; records are idempotent (an upsert keyed by attempt, step and
  rung), so a retried record counts once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database

from jobstore import schema as s
from jobstore.retry import RetryPolicy
from jobstore.schema import State


class CurveStore:
    """The ``curves`` collection of one database."""

    def __init__(self, db: Database, jobs_collection: str, retry: RetryPolicy) -> None:
        self.curves: Collection = db[s.CURVES]
        self.jobs: Collection = db[jobs_collection]
        self.retry = retry

    def ensure_indexes(self) -> None:
        """Create the indexes the rules' questions rely on (idempotent)."""
        self.retry(lambda: self.curves.create_indexes(s.CURVE_INDEXES), "creating the curves indexes")

    def attempt(self, exp_key: str, tid: int, token: str, holds: Callable[[], bool]) -> "AttemptCurves":
        """The population one attempt (lease ``token``) of trial ``tid`` decides with;
        ``holds`` says whether the attempt still holds the job's lease."""
        return AttemptCurves(self, exp_key, tid, token, holds)

    def forget(self, exp_key: Any, tid: Any, *, keep_token: str | None = None) -> None:
        """Remove the trial's scores (those of other attempts than ``keep_token``'s)."""
        query: dict[str, Any] = {s.CURVE_EXP_KEY: exp_key, s.CURVE_TID: tid}
        if keep_token is not None:
            query[s.CURVE_TOKEN] = {"$ne": keep_token}
        self.retry(lambda: self.curves.delete_many(query), f"removing the pruning scores of trial {tid}")

    def complete(self, exp_key: Any, tid: Any, token: str) -> None:
        """Mark the attempt's scores as those of a completed trial."""
        self.retry(lambda: self.curves.update_many({s.CURVE_EXP_KEY: exp_key, s.CURVE_TID: tid,
                                                    s.CURVE_TOKEN: token}, {"$set": {s.CURVE_COMPLETE: True}}),
                   f"marking the pruning scores of trial {tid} complete")


class IndexedScores:
    """``objectives.pruning.Scores`` answered from an index range of ``curves``."""

    def __init__(self, store: CurveStore, query: dict[str, Any]) -> None:
        self._curves = store.curves
        self._retry = store.retry
        self._query = query

    def size(self) -> int:
        return self._retry(lambda: self._curves.count_documents(self._query), "counting pruning scores")

    def count_below(self, score: float, limit: int) -> int:
        query = {**self._query, s.CURVE_SCORE: {"$lt": score}}
        return self._retry(lambda: self._curves.count_documents(query, limit=limit), "counting pruning scores")

    def nearest(self, score: float) -> tuple[float, float]:
        below = self._retry(lambda: self._curves.find_one(
            {**self._query, s.CURVE_SCORE: {"$lt": score}}, {s.CURVE_SCORE: 1}, sort=[(s.CURVE_SCORE, -1)]),
            "reading pruning scores")
        above = self._retry(lambda: self._curves.find_one(
            {**self._query, s.CURVE_SCORE: {"$gte": score}}, {s.CURVE_SCORE: 1}, sort=[(s.CURVE_SCORE, 1)]),
            "reading pruning scores")
        if below is None or above is None:
            raise LookupError(f"no score on both sides of {score} in {self._query}")
        return float(below[s.CURVE_SCORE]), float(above[s.CURVE_SCORE])


class AttemptCurves:
    """One attempt's ``objectives.pruning.Population`` (see the module doc).

    ``lost`` turns true when a record found the lease gone (the record was undone).
    """

    def __init__(self, store: CurveStore, exp_key: str, tid: int, token: str, holds: Callable[[], bool]) -> None:
        self._store = store
        self._exp_key = exp_key
        self._tid = tid
        self._token = token
        self._holds = holds
        self._completed = 0
        self._first = True
        self.lost = False

    def completed_trials(self, at_least: int) -> int:
        if self._completed < at_least:  # completions only grow: stop asking once enough
            query = {s.EXP_KEY: self._exp_key, s.STATE: State.DONE, s.STATUS: "ok", s.PRUNED: {"$ne": True}}
            self._completed = self._store.retry(lambda: self._store.jobs.count_documents(query, limit=at_least),
                                                "counting completed trials")
        return self._completed

    def at_step(self, step: int) -> IndexedScores:
        return IndexedScores(self._store, {s.CURVE_EXP_KEY: self._exp_key, s.CURVE_COMPLETE: True,
                                           s.CURVE_STEP: step})

    def at_rung(self, bracket: int, rung: int) -> IndexedScores:
        return IndexedScores(self._store, {s.CURVE_EXP_KEY: self._exp_key, s.CURVE_BRACKET: bracket,
                                           s.CURVE_RUNG: rung})

    def record_step(self, step: int, score: float) -> None:
        self._record({s.CURVE_STEP: step, s.CURVE_RUNG: None, s.CURVE_BRACKET: None}, score)

    def record_rung(self, bracket: int, rung: int, score: float) -> None:
        self._record({s.CURVE_STEP: None, s.CURVE_RUNG: rung, s.CURVE_BRACKET: bracket}, score)

    def _record(self, where: dict[str, Any], score: float) -> None:
        if math.isnan(score):
            return
        if self._first:  # left behind by an earlier attempt that died mid-record
            self._store.forget(self._exp_key, self._tid, keep_token=self._token)
            self._first = False
        key = {s.CURVE_EXP_KEY: self._exp_key, s.CURVE_TID: self._tid, s.CURVE_TOKEN: self._token, **where}
        self._store.retry(lambda: self._store.curves.update_one(
            key, {"$set": {s.CURVE_SCORE: score}, "$setOnInsert": {s.CURVE_COMPLETE: False}}, upsert=True),
            "recording a pruning score")
        if not self._holds():
            mine = {s.CURVE_EXP_KEY: self._exp_key, s.CURVE_TID: self._tid, s.CURVE_TOKEN: self._token}
            self._store.retry(lambda: self._store.curves.delete_many(mine), "removing a lost attempt's scores")
            self.lost = True
