"""The ``curves`` collection: the scores pruning rules compare, and each process's copy of them.

A run with a pruner (``hpo-coord start --pruner``) records, for each trial attempt, the
score (the run's pruning metric, lower is better) of every reported step (median) or of
every rung it reached (asha, hyperband).  :class:`AttemptCurves` is the
``objectives.pruning.Population`` one attempt decides with.  Guarantees:

* **A decision's cost does not grow with the run.**  Each process keeps, for each run
  (the last :data:`CACHED_RUNS`), a copy of the populations its rules asked about (the
  completed trials' scores at one step; every score at one rung of one bracket) as
  sorted lists, and answers ``size``, ``count_below`` and ``nearest`` in memory
  (bisect).  Before each question it brings the copy up to date with one read of the
  score documents written since its previous read (the index ``run_changed``, ``{exp_key,
  changed}``), as ``MongoTrials.refresh`` follows jobs.  The first question about a
  step or rung in a process reads that step or rung whole, once (``run_complete_step_score``,
  ``run_bracket_rung_score``); after that a decision reads only the score documents the
  run's workers wrote since this process last asked, plus those of the last
  :data:`CHANGE_OVERLAP`, however many trials the run has.
* **The copy is exact**: each question is answered as a read of the collection made
  when it was asked would answer it (writes concurrent with that read may or may not
  count, as with any read), so decisions are the rules' decisions on the database's
  scores: Optuna's (tests/jobstore/test_curves.py).  Why:

  1. Every write of a score document (record, completion, removal) sets ``changed`` to
     the server's clock (``$$NOW``) in the same update, and nothing deletes score
     documents: a score that stops counting is marked ``removed``, so a removal reaches
     the copies as any other change does.
  2. Before each read (of a whole population, or of the changes) the process reads the
     server's clock, ``T``.  A read misses, or sees in an older state, only documents
     written while or after it ran (MongoDB returns every document that exists, unmodified,
     for the whole of a query), so written after ``T``; such a write took its ``$$NOW``
     at most ``LAG`` before it became visible, so it carries ``changed > T - LAG``.
  3. The next update reads every document with ``changed >= T - CHANGE_OVERLAP`` (in its
     latest state), so it sees that write if it is visible by then and
     ``LAG <= CHANGE_OVERLAP``; if it is not yet visible, step 2 applies to that read
     in turn.  Applying a document's latest state is idempotent, so reading a
     document again in the overlap changes nothing.

  This assumes that ``LAG`` (milliseconds on MongoDB; a loaded SecantusDB is slower)
  stays under :data:`CHANGE_OVERLAP`, and that the clock that stamps (``$$NOW``) and
  the one read (``hello.localTime``) are one server's (the primary's) and never go back
  by more than the overlap.  A replica-set election to a member whose clock is behind
  by more could hide writes from copies made before it; a clock seen going back drops
  the copy (it is read afresh), the rest is up to NTP, as MongoDB itself expects.
  Scores written by a version before this one carry no ``changed``: whole reads see
  them, updates do not, and every later write of them sets it.
* **Fencing**: a score is recorded only by the holder of the job's lease.  The worker
  records after its fenced metrics write succeeded; the record then checks the lease
  again and removes its own scores if it was lost meanwhile.  Whenever the queue gives
  a job back (requeued or released), or fails it because its last allowed attempt's
  worker was lost, it then removes the departing attempt's scores,
  those recorded under its lease token (:meth:`CurveStore.forget`), and no others: the
  job may already be held, and scored, by its next attempt, whose scores count.  So an
  attempt that lost its claim leaves nothing that counts (a record that lands before
  the removal is removed by it; one that lands after finds the lease gone and removes
  itself), and a requeued trial starts its history again.  (The one gap: a holder that
  dies between writing a score and checking its lease, after its job was requeued and
  its scores removed, leaves that score until the trial's next attempt records its
  first one, which removes scores of other attempts, :meth:`CurveStore.forget_others`.)
* Every operation is retried through the store's :class:`RetryPolicy` while the
  database is away; records are idempotent (an upsert keyed by attempt, step and
  rung), so a retried record counts once.

Removed scores stay in the collection (one per score of each requeued or lost attempt).
A process holds about 260-380 bytes per score it copied (``bench/pruning_cost.py``):
2.6 MB for a step of 10,000 trials, so a median run of 10,000 trials of 15 steps costs
each worker about 40 MB.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
from bisect import bisect_left, insort
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta
from typing import Any

import bson
from pymongo.collection import Collection
from pymongo.database import Database

from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.retry import RetryPolicy
from jobstore.schema import State

log = logging.getLogger(__name__)

CHANGE_OVERLAP = timedelta(seconds=5)
"""How far before its previous read's clock a process's update of its copy looks (see
the module doc): a write becomes visible within milliseconds of its ``$$NOW`` on
MongoDB; five seconds leave room for a loaded server, and cost only the re-reading of
the scores written in the last five seconds at each decision."""
CACHED_RUNS = 8
"""Runs whose scores one process keeps a copy of (the most recently asked)."""

PopulationKey = tuple[str, int] | tuple[str, int, int]
"""``("step", step)``: completed trials' scores at a step (median);
``("rung", bracket, rung)``: every score at a rung of a bracket (asha, hyperband)."""

_COPIED_FIELDS = {s.CURVE_STEP: 1, s.CURVE_RUNG: 1, s.CURVE_BRACKET: 1, s.CURVE_SCORE: 1,
                  s.CURVE_COMPLETE: 1, s.CURVE_REMOVED: 1}


def population_of(doc: dict[str, Any]) -> PopulationKey | None:
    """The population a score document counts in; None when it counts in none (removed;
    a median step score of a trial not completed; or malformed: a score that is not a
    number or is NaN, a step, rung or bracket that is not an integer)."""
    score = doc.get(s.CURVE_SCORE)
    if (doc.get(s.CURVE_REMOVED) is True or isinstance(score, bool) or not isinstance(score, numbers.Real)
            or math.isnan(score)):
        return None
    rung, bracket = s.as_int(doc.get(s.CURVE_RUNG)), s.as_int(doc.get(s.CURVE_BRACKET))
    if rung is not None and bracket is not None:
        return ("rung", bracket, rung)
    step = s.as_int(doc.get(s.CURVE_STEP))
    if step is not None and doc.get(s.CURVE_COMPLETE) is True:
        return ("step", step)
    return None


def population_query(exp_key: str, key: PopulationKey) -> dict[str, Any]:
    """The query that reads population ``key`` of run ``exp_key`` whole (on its index;
    removed scores, few, are left out by :func:`population_of`, not by the query, which
    SecantusDB would then answer with a collection scan)."""
    if len(key) == 2:
        return {s.CURVE_EXP_KEY: exp_key, s.CURVE_COMPLETE: True, s.CURVE_STEP: key[1]}
    _, bracket, rung = key
    return {s.CURVE_EXP_KEY: exp_key, s.CURVE_BRACKET: bracket, s.CURVE_RUNG: rung}


def changes_query(exp_key: str, since: datetime) -> dict[str, Any]:
    """The query that reads the score documents of ``exp_key`` written at or after ``since``."""
    return {s.CURVE_EXP_KEY: exp_key, s.CURVE_CHANGED: {"$gte": since}}


def _identity(doc_id: Any) -> Hashable:
    """A score document's ``_id`` as a dict key: a document ``_id`` (legal, if unusual)
    as its BSON encoding (what the server compares), any other as it is."""
    return doc_id if isinstance(doc_id, Hashable) else ("bson", bson.encode({"_id": doc_id}))


class CurveStore:
    """The ``curves`` collection of one database, and this process's copies of its runs."""

    def __init__(self, db: Database, jobs_collection: str, retry: RetryPolicy) -> None:
        self.db = db
        self.curves: Collection = db[s.CURVES]
        self.jobs: Collection = db[jobs_collection]
        self.retry = retry
        self._runs: dict[str, RunScores] = {}
        self._lock = threading.Lock()

    def ensure_indexes(self) -> None:
        """Create the indexes the rules' questions rely on (idempotent)."""
        self.retry(lambda: self.curves.create_indexes(s.CURVE_INDEXES), "creating the curves indexes")

    def attempt(self, exp_key: str, tid: int, token: str, holds: Callable[[], bool]) -> AttemptCurves:
        """The population one attempt (lease ``token``) of trial ``tid`` decides with;
        ``holds`` says whether the attempt still holds the job's lease."""
        return AttemptCurves(self, self.run(exp_key), tid, token, holds)

    def run(self, exp_key: str) -> RunScores:
        """This process's copy of run ``exp_key``'s scores (made on first use; the copies
        of the runs asked about least recently beyond :data:`CACHED_RUNS` are dropped)."""
        with self._lock:
            scores = self._runs.pop(exp_key, None) or RunScores(self, exp_key)
            self._runs[exp_key] = scores
            while len(self._runs) > CACHED_RUNS:
                del self._runs[next(iter(self._runs))]
            return scores

    def has_scores(self, exp_key: str) -> bool:
        """Whether run ``exp_key`` has a score that counts (recorded, not removed); the
        removed ones, few, are skipped here, not by the query (see :func:`population_query`)."""
        query = {s.CURVE_EXP_KEY: exp_key}
        return self.retry(lambda: any(doc.get(s.CURVE_REMOVED) is not True
                                      for doc in self.curves.find(query, {s.CURVE_REMOVED: 1})),
                          f"looking for pruning scores of run {exp_key!r}")

    def forget(self, exp_key: Any, tid: Any, token: Any) -> None:
        """Remove the scores attempt ``token`` of the trial recorded, and no other's: a
        job that went back to the queue may already be held, and scored, by its next
        attempt."""
        self._remove({s.CURVE_EXP_KEY: exp_key, s.CURVE_TID: tid, s.CURVE_TOKEN: token}, None,
                     f"removing the pruning scores of an attempt at trial {tid}")

    def forget_others(self, exp_key: Any, tid: Any, keep_token: str) -> None:
        """Remove the trial's scores recorded by other attempts than ``keep_token``'s."""
        self._remove({s.CURVE_EXP_KEY: exp_key, s.CURVE_TID: tid}, keep_token,
                     f"removing the pruning scores that earlier attempts at trial {tid} left")

    def complete(self, exp_key: Any, tid: Any, token: str) -> None:
        """Mark the attempt's scores as those of a completed trial."""
        query = {s.CURVE_EXP_KEY: exp_key, s.CURVE_TID: tid, s.CURVE_TOKEN: token}
        update = [{"$set": {s.CURVE_COMPLETE: True, s.CURVE_CHANGED: "$$NOW"}}]
        self.retry(lambda: self.curves.update_many(query, update),
                   f"marking the pruning scores of trial {tid} complete")

    def _remove(self, query: dict[str, Any], keep_token: str | None, what: str) -> None:
        """Mark the scores ``query`` matches removed, but those of ``keep_token`` (see the
        module doc: never deleted).  What is kept, or already removed, keeps its
        ``changed``; the condition sits in the update, so the query stays an index prefix
        (``run_tid_attempt``) for SecantusDB too."""
        removing: dict[str, Any] = {"$ne": ["$" + s.CURVE_REMOVED, True]}
        if keep_token is not None:
            removing = {"$and": [removing, {"$ne": ["$" + s.CURVE_TOKEN, s.literal(keep_token)]}]}
        update = [{"$set": {s.CURVE_REMOVED: {"$cond": [removing, True, "$" + s.CURVE_REMOVED]},
                            s.CURVE_CHANGED: {"$cond": [removing, "$$NOW", "$" + s.CURVE_CHANGED]}}}]
        self.retry(lambda: self.curves.update_many(query, update), what)

    def _read(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        return self.retry(lambda: list(self.curves.find(query, _COPIED_FIELDS)), "reading pruning scores")


class RunScores:
    """One process's copy of one run's scores (see the module doc); thread-safe."""

    def __init__(self, store: CurveStore, exp_key: str) -> None:
        self._store = store
        self.exp_key = exp_key
        self._lock = threading.Lock()
        self._read_at: datetime | None = None
        """The server's clock before the copy's last read."""
        self._populations: dict[PopulationKey, list[float]] = {}
        self._held: dict[Any, tuple[PopulationKey, float]] = {}
        """Where each copied score document's score sits in ``_populations``, by ``_id``."""
        self._completed = 0

    def scores(self, key: PopulationKey) -> SortedScores:
        """Population ``key`` as the collection holds it now (a snapshot: later changes
        do not reach the returned object)."""
        with self._lock:
            now = self._store.retry(lambda: server_time(self._store.db), "reading the server clock")
            if self._read_at is not None and now < self._read_at:
                log.warning("run %r: the server's clock went back from %s to %s; reading its pruning "
                            "scores afresh", self.exp_key, self._read_at, now)
                self._populations.clear()
                self._held.clear()
            if self._read_at is not None and self._populations:
                for doc in self._store._read(changes_query(self.exp_key, self._read_at - CHANGE_OVERLAP)):
                    self._apply(doc)
            if key not in self._populations:
                docs = self._store._read(population_query(self.exp_key, key))
                self._populations[key] = []
                for doc in docs:
                    self._apply(doc)
            self._read_at = now
            return SortedScores(list(self._populations[key]))

    def _apply(self, doc: dict[str, Any]) -> None:
        """Bring the copy to ``doc``'s state (idempotent)."""
        held = self._held.pop(_identity(doc[s.ID]), None)
        if held is not None:
            scores = self._populations[held[0]]
            del scores[bisect_left(scores, held[1])]
        key = population_of(doc)
        if key in self._populations:
            score = float(doc[s.CURVE_SCORE])
            insort(self._populations[key], score)
            self._held[_identity(doc[s.ID])] = (key, score)

    def completed_trials(self, at_least: int) -> int:
        """Completed (not pruned) trials of the run, counted by the server up to
        ``at_least`` until this process has seen that many (they only grow)."""
        if self._completed < at_least:
            query = {s.EXP_KEY: self.exp_key, s.STATE: State.DONE, s.STATUS: "ok", s.PRUNED: {"$ne": True}}
            self._completed = self._store.retry(lambda: self._store.jobs.count_documents(query, limit=at_least),
                                                "counting completed trials")
        return self._completed


class SortedScores:
    """``objectives.pruning.Scores`` over a sorted list in memory (bisect)."""

    def __init__(self, scores: list[float]) -> None:
        self._scores = scores

    def size(self) -> int:
        return len(self._scores)

    def count_below(self, score: float, limit: int) -> int:
        return min(bisect_left(self._scores, score), limit)

    def nearest(self, score: float) -> tuple[float, float]:
        at = bisect_left(self._scores, score)
        if at == 0 or at == len(self._scores):
            raise LookupError(f"no score on both sides of {score} among {len(self._scores)}")
        return self._scores[at - 1], self._scores[at]


class AttemptCurves:
    """One attempt's ``objectives.pruning.Population`` (see the module doc).

    ``lost`` turns true when a record found the lease gone (the record was undone).
    """

    def __init__(self, store: CurveStore, run: RunScores, tid: int, token: str, holds: Callable[[], bool]) -> None:
        self._store = store
        self._run = run
        self._exp_key = run.exp_key
        self._tid = tid
        self._token = token
        self._holds = holds
        self._first = True
        self.lost = False

    def completed_trials(self, at_least: int) -> int:
        return self._run.completed_trials(at_least)

    def at_step(self, step: int) -> SortedScores:
        return self._run.scores(("step", step))

    def at_rung(self, bracket: int, rung: int) -> SortedScores:
        return self._run.scores(("rung", bracket, rung))

    def record_step(self, step: int, score: float) -> None:
        self._record({s.CURVE_STEP: step, s.CURVE_RUNG: None, s.CURVE_BRACKET: None}, score)

    def record_rung(self, bracket: int, rung: int, score: float) -> None:
        self._record({s.CURVE_STEP: None, s.CURVE_RUNG: rung, s.CURVE_BRACKET: bracket}, score)

    def _record(self, where: dict[str, Any], score: float) -> None:
        if math.isnan(score):
            return
        if self._first:  # left behind by an earlier attempt that died mid-record
            self._store.forget_others(self._exp_key, self._tid, self._token)
            self._first = False
        key = {s.CURVE_EXP_KEY: self._exp_key, s.CURVE_TID: self._tid, s.CURVE_TOKEN: self._token, **where}
        update = [{"$set": {s.CURVE_SCORE: s.literal(score), s.CURVE_REMOVED: False, s.CURVE_CHANGED: "$$NOW",
                            s.CURVE_COMPLETE: {"$ifNull": ["$" + s.CURVE_COMPLETE, False]}}}]
        self._store.retry(lambda: self._store.curves.update_one(key, update, upsert=True),
                          "recording a pruning score")
        if not self._holds():
            self._store.forget(self._exp_key, self._tid, self._token)
            self.lost = True
