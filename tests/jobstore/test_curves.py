"""The curves store: each process's copy answers as the collection does, follows other
processes' records, completions and removals, and keeps fencing and Optuna's decisions."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pymongo
import pytest
from pymongo.database import Database

from jobstore import curves as curves_module
from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.curves import (
    CHANGE_OVERLAP,
    CurveStore,
    SortedScores,
    changes_query,
    population_query,
)
from jobstore.queue import Claim, JobQueue
from jobstore.retry import RetryPolicy
from jobstore.schema import State
from objectives.pruning import Population, PrunerSettings, ScoreList
from tests.support.jobs import enqueue
from tests.support.pruning import decisions_both_ways, learning_curves

LIVE = {s.CURVE_REMOVED: {"$ne": True}}


def _queue(db: Database, n: int = 2) -> JobQueue:
    enqueue(db, "r", n)
    queue = JobQueue(db)
    queue.ensure_indexes()
    return queue


def _age(db: Database) -> None:
    """Date every score document's last write an hour back, so that a copy learns of
    the next change by that change's own ``changed``, not through the overlap."""
    db[s.CURVES].update_many({}, {"$set": {s.CURVE_CHANGED: server_time(db) - timedelta(hours=1)}})


@pytest.fixture
def other_db(db_url: str) -> Iterator[Database]:
    """The test's database through a client of its own: another worker process's view."""
    client: pymongo.MongoClient = pymongo.MongoClient(db_url)
    yield client.get_default_database()
    client.close()


def _rung_doc(tid: int, score: object, **fields: object) -> dict[str, object]:
    return {s.CURVE_EXP_KEY: "r", s.CURVE_TID: tid, s.CURVE_TOKEN: "t", s.CURVE_STEP: None, s.CURVE_BRACKET: 0,
            s.CURVE_RUNG: 1, s.CURVE_SCORE: score, s.CURVE_COMPLETE: False, **fields}


def test_the_copy_answers_as_the_list_does(db: Database) -> None:
    store = CurveStore(db, s.JOBS, RetryPolicy())
    store.ensure_indexes()
    rng = random.Random(4)
    scores = [round(rng.uniform(0, 1), 2) for _ in range(40)]  # rounded: ties happen
    db[s.CURVES].insert_many([_rung_doc(tid, score) for tid, score in enumerate(scores)])
    db[s.CURVES].insert_many([
        {**_rung_doc(0, 0.0), s.CURVE_EXP_KEY: "other"},  # another run
        _rung_doc(50, 0.0, **{s.CURVE_REMOVED: True}),  # removed
        _rung_doc(51, 0.0, **{s.CURVE_RUNG: 2}),  # another rung
        _rung_doc(52, "0.1"), _rung_doc(53, math.nan), _rung_doc(54, True),  # not scores
    ])
    copied = store.attempt("r", 99, "mine", holds=lambda: True).at_rung(0, 1)
    listed = ScoreList(scores)
    assert copied.size() == listed.size() == 40
    for probe in (0.0, 0.3, 0.5, scores[7], 1.0):
        for limit in (1, 5, 100):
            assert copied.count_below(probe, limit) == listed.count_below(probe, limit)
    for probe in (0.3, scores[7], 0.77):
        assert copied.nearest(probe) == listed.nearest(probe)
    with pytest.raises(LookupError):
        copied.nearest(min(scores))


def test_a_score_document_with_a_document_id_is_followed_like_any_other(db: Database) -> None:
    """An ``_id`` that is a document (legal in MongoDB, say from a hand-made copy) must not
    make every decision of the run raise (it was a dict key of the copy's index)."""
    store = CurveStore(db, s.JOBS, RetryPolicy())
    store.ensure_indexes()
    by_hand = {"copied": "by hand", "n": 1}
    db[s.CURVES].insert_many([_rung_doc(1, 0.5), {**_rung_doc(2, 0.2), s.ID: by_hand}])
    attempt = store.attempt("r", 99, "mine", holds=lambda: True)
    assert attempt.at_rung(0, 1).count_below(0.3, 10) == 1
    db[s.CURVES].update_one({s.ID: by_hand}, [{"$set": {s.CURVE_SCORE: 0.9, s.CURVE_CHANGED: "$$NOW"}}])
    rung = attempt.at_rung(0, 1)
    assert (rung.size(), rung.count_below(0.6, 10)) == (2, 1)


def test_every_query_uses_an_index(db: Database) -> None:
    store = CurveStore(db, s.JOBS, RetryPolicy())
    store.ensure_indexes()
    trial = {s.CURVE_EXP_KEY: "r", s.CURVE_TID: 1}  # forget_others
    attempt = {**trial, s.CURVE_TOKEN: "t"}  # complete, forget
    score = {**attempt, s.CURVE_STEP: None, s.CURVE_RUNG: 0, s.CURVE_BRACKET: 0}  # a record's upsert
    for query, index in ((population_query("r", ("step", 3)), "run_complete_step_score"),
                         (population_query("r", ("rung", 0, 2)), "run_bracket_rung_score"),
                         (changes_query("r", server_time(db)), "run_changed"),
                         (trial, "run_tid_attempt"), (attempt, "run_tid_attempt"), (score, "run_tid_attempt"),
                         ({s.CURVE_EXP_KEY: "r"}, "run_")):  # has_scores: any index on the run
        plan = db[s.CURVES].find(query).explain()["queryPlanner"]
        assert index in str(plan["winningPlan"]), plan


def test_a_copy_follows_another_process_s_records_completions_and_removals(db: Database,
                                                                           other_db: Database) -> None:
    """The worker deciding (``mine``, its own client and copy) and the others (``theirs``)."""
    theirs = _queue(db, 3)
    mine = JobQueue(other_db)
    a, b = theirs.claim("w1", lease_s=30), theirs.claim("w1", lease_s=30)
    assert a is not None and b is not None
    for claim, score in ((a, 0.2), (b, 0.4)):
        population = theirs.curves.attempt("r", claim.tid, claim.token, holds=lambda c=claim: theirs.holds(c))
        population.record_rung(0, 0, score)
        population.record_step(1, score)
    deciding = mine.curves.attempt("r", 9, "x", holds=lambda: True)
    # the first question about a rung or step reads it whole
    assert deciding.at_rung(0, 0).size() == 2
    assert deciding.at_step(1).size() == 0  # nothing completed yet
    # completing a trial elsewhere reaches the median's population
    _age(db)
    assert theirs.finish(a, State.DONE, {"status": "ok", "loss": 0.2}, scored=True)
    assert deciding.at_step(1).size() == 1
    # a score recorded elsewhere reaches the copy; a lost attempt's records do not count
    c = theirs.claim("w2", lease_s=30)
    assert c is not None
    late = theirs.curves.attempt("r", c.tid, c.token, holds=lambda: theirs.holds(c))
    late.record_rung(0, 0, 0.1)
    assert deciding.at_rung(0, 0).count_below(0.3, 10) == 2
    # the job of b is lost and requeued: its scores go from the copy too
    _age(db)
    assert theirs.requeue_expired(server_time(db) + timedelta(seconds=60)).requeued == [("r", b.tid), ("r", c.tid)]
    rung = deciding.at_rung(0, 0)
    assert (rung.size(), rung.count_below(1.0, 10)) == (1, 1)
    # c, not knowing, records again: undone at once, and the copy never keeps it
    _age(db)
    late.record_rung(0, 1, 0.05)
    assert late.lost
    assert deciding.at_rung(0, 1).size() == 0 and deciding.at_rung(0, 0).size() == 1
    # a graceful return to the queue removes the scores as well
    d = theirs.claim("w3", lease_s=30)
    assert d is not None
    theirs.curves.attempt("r", d.tid, d.token, holds=lambda: theirs.holds(d)).record_rung(0, 0, 0.3)
    assert deciding.at_rung(0, 0).size() == 2
    _age(db)
    assert theirs.release(d)
    assert deciding.at_rung(0, 0).size() == 1
    # and a later process's first read agrees with this one's copy
    fresh = CurveStore(db, s.JOBS, RetryPolicy()).attempt("r", 9, "y", holds=lambda: True)
    for population in (fresh, deciding):
        assert [population.at_rung(0, 0).size(), population.at_rung(0, 1).size(),
                population.at_step(1).size()] == [1, 0, 1]


def test_writes_made_visible_after_a_read_are_not_missed(db: Database, other_db: Database) -> None:
    """The commit-order race: a write takes its ``changed`` stamp (``$$NOW``) when it
    starts but becomes visible only when it commits, possibly after another process
    read the changes; that process must still see it at its next read."""
    mine = CurveStore(other_db, s.JOBS, RetryPolicy())
    mine.ensure_indexes()
    db[s.CURVES].insert_many([_rung_doc(tid, 0.5) for tid in range(3)])
    deciding = mine.attempt("r", 9, "x", holds=lambda: True)
    before = server_time(db)
    assert deciding.at_rung(0, 1).size() == 3
    # stamped just before that read, committed after it: a new score and a removal
    db[s.CURVES].insert_one(_rung_doc(3, 0.1, **{s.CURVE_CHANGED: before - CHANGE_OVERLAP / 2}))
    db[s.CURVES].update_one({s.CURVE_TID: 0}, {"$set": {s.CURVE_REMOVED: True,
                                                        s.CURVE_CHANGED: before - CHANGE_OVERLAP / 2}})
    rung = deciding.at_rung(0, 1)
    assert (rung.size(), rung.count_below(0.2, 10)) == (3, 1)
    # A read can see a write stamped after it began (it ran during the read) while an
    # earlier-stamped one becomes visible only later: the copy must follow the clock
    # read before each read, never the newest stamp it saw.
    before = server_time(db)
    db[s.CURVES].insert_one(_rung_doc(4, 0.9, **{s.CURVE_CHANGED: before + timedelta(minutes=10)}))
    assert deciding.at_rung(0, 1).size() == 4
    db[s.CURVES].insert_one(_rung_doc(5, 0.0, **{s.CURVE_CHANGED: before - CHANGE_OVERLAP / 2}))
    rung = deciding.at_rung(0, 1)
    assert (rung.size(), rung.count_below(0.05, 10)) == (5, 1)


def _contents(scores: SortedScores, probes: list[float]) -> list[int]:
    """How many of ``scores`` lie below each probe: with every score among the probes and
    +inf, this pins the multiset down."""
    return [scores.count_below(p, 10**9) for p in sorted(probes) + [math.inf]]


def test_a_copy_kept_through_concurrent_writes_ends_as_a_fresh_read(db: Database, db_url: str) -> None:
    """Two writer processes record, complete and remove scores at full speed while a
    third decides; then its copy holds what a first read holds."""
    enqueue(db, "r", 1)
    JobQueue(db).ensure_indexes()
    written: list[float] = []
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        rng = random.Random(worker)
        client: pymongo.MongoClient = pymongo.MongoClient(db_url)
        queue = JobQueue(client.get_default_database())
        try:
            for i in range(40):
                tid, token = 100 * worker + i, f"w{worker}-{i}"
                attempt = queue.curves.attempt("r", tid, token, holds=lambda: True)
                for step in (1, 2):
                    score = round(rng.random(), 3)
                    written.append(score)
                    attempt.record_step(step, score)
                    if step == 1:
                        attempt.record_rung(0, 0, score)
                if i % 3 == 0:
                    queue.curves.forget("r", tid, token)
                else:
                    queue.curves.complete("r", tid, token)
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            client.close()

    asks: list[Callable[[Population], Any]] = [lambda p: p.at_rung(0, 0), lambda p: p.at_step(1),
                                               lambda p: p.at_step(2)]
    mine = CurveStore(db, s.JOBS, RetryPolicy()).attempt("r", 999, "x", holds=lambda: True)
    writers = [threading.Thread(target=write, args=(w,)) for w in (1, 2)]
    for thread in writers:
        thread.start()
    while any(thread.is_alive() for thread in writers):
        for ask in asks:
            ask(mine)
    assert not errors
    fresh = CurveStore(db, s.JOBS, RetryPolicy()).attempt("r", 999, "y", holds=lambda: True)
    for ask in asks:
        assert _contents(ask(mine), written) == _contents(ask(fresh), written)
    assert fresh.at_step(2).size() == 2 * 26  # 40 trials a worker, 14 of them removed


def test_a_server_clock_that_goes_back_drops_the_copy(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CurveStore(db, s.JOBS, RetryPolicy())
    store.ensure_indexes()
    db[s.CURVES].insert_many([_rung_doc(tid, 0.5) for tid in range(3)])
    deciding = store.attempt("r", 9, "x", holds=lambda: True)
    assert deciding.at_rung(0, 1).size() == 3
    # a removal stamped by a primary whose clock is an hour behind the one read before
    behind = server_time(db) - timedelta(hours=1)
    db[s.CURVES].update_one({s.CURVE_TID: 0}, {"$set": {s.CURVE_REMOVED: True, s.CURVE_CHANGED: behind}})
    monkeypatch.setattr(curves_module, "server_time", lambda _db: behind)
    assert deciding.at_rung(0, 1).size() == 2


def test_an_attempt_that_lost_its_claim_leaves_no_score(db: Database) -> None:
    queue = _queue(db, 1)
    first = queue.claim("a", lease_s=30)
    assert first is not None
    mine = queue.curves.attempt("r", first.tid, first.token, holds=lambda: queue.holds(first))
    mine.record_rung(0, 0, 0.5)
    assert db[s.CURVES].count_documents(LIVE) == 1
    # the lease runs out and the job is requeued: its scores go with it
    later = server_time(db) + timedelta(seconds=60)
    assert queue.requeue_expired(later).requeued == [("r", first.tid)]
    assert db[s.CURVES].count_documents(LIVE) == 0
    second = queue.claim("b", lease_s=30)
    assert second is not None and second.tid == first.tid
    theirs = queue.curves.attempt("r", second.tid, second.token, holds=lambda: queue.holds(second))
    theirs.record_rung(0, 0, 0.9)
    # the first attempt, not knowing, records again: the record is undone and it learns it lost
    mine.record_rung(0, 1, 0.4)
    assert mine.lost and not theirs.lost
    assert [d[s.CURVE_TOKEN] for d in db[s.CURVES].find(LIVE)] == [second.token]
    assert theirs.at_rung(0, 0).size() == 1 and theirs.at_rung(0, 1).size() == 0


def test_an_attempt_whose_job_failed_as_lost_leaves_no_score(db: Database) -> None:
    """The last allowed attempt's worker is lost: the job ends as an error (lost worker),
    and that attempt's scores stop counting as when a job is requeued (a zombie holder
    would remove its own scores at its next record anyway: the outcome must not depend
    on whether it is still alive)."""
    enqueue(db, "r", 1, max_attempts=1)
    queue = JobQueue(db)
    queue.ensure_indexes()
    claim = queue.claim("a", lease_s=30)
    assert claim is not None
    queue.curves.attempt("r", claim.tid, claim.token, holds=lambda: queue.holds(claim)).record_rung(0, 0, 0.5)
    deciding = queue.curves.attempt("r", 9, "x", holds=lambda: True)
    assert deciding.at_rung(0, 0).size() == 1
    assert queue.requeue_expired(server_time(db) + timedelta(seconds=60)).failed == [("r", claim.tid)]
    assert db[s.CURVES].count_documents(LIVE) == 0
    assert deciding.at_rung(0, 0).size() == 0


def test_a_new_attempt_clears_scores_an_earlier_one_left(db: Database) -> None:
    queue = _queue(db, 1)
    claim = queue.claim("a", lease_s=30)
    assert claim is not None
    db[s.CURVES].insert_one({s.CURVE_EXP_KEY: "r", s.CURVE_TID: claim.tid, s.CURVE_TOKEN: "dead",
                             s.CURVE_STEP: 4, s.CURVE_RUNG: None, s.CURVE_BRACKET: None, s.CURVE_SCORE: 0.0,
                             s.CURVE_COMPLETE: True})
    attempt = queue.curves.attempt("r", claim.tid, claim.token, holds=lambda: queue.holds(claim))
    assert attempt.at_step(4).size() == 1
    attempt.record_step(1, 0.7)
    attempt.record_step(1, 0.7)  # a retried record counts once
    assert [(d[s.CURVE_TOKEN], d[s.CURVE_STEP]) for d in db[s.CURVES].find(LIVE)] == [(claim.token, 1)]
    assert attempt.at_step(4).size() == 0


def test_finishing_marks_completed_trials_only(db: Database) -> None:
    queue = _queue(db, 2)
    done = queue.claim("a", lease_s=30)
    cut = queue.claim("a", lease_s=30)
    assert done is not None and cut is not None
    for claim in (done, cut):
        queue.curves.attempt("r", claim.tid, claim.token, holds=lambda c=claim: queue.holds(c)).record_step(1, 0.5)
    assert queue.finish(done, State.DONE, {"status": "ok", "loss": 0.1}, scored=True)
    assert queue.finish(cut, State.DONE, {"status": "ok", "loss": 0.5, "pruned": True, "pruned_step": 1},
                        scored=True)
    complete = {d[s.CURVE_TID]: d[s.CURVE_COMPLETE] for d in db[s.CURVES].find()}
    assert complete == {done.tid: True, cut.tid: False}
    attempt = queue.curves.attempt("r", 9, "x", holds=lambda: True)
    assert attempt.completed_trials(5) == 1  # the pruned trial is not a completed one
    assert attempt.at_step(1).size() == 1


class _StoreTrials:
    """Trials of the Optuna comparison run as claims of real jobs by ``workers`` worker
    processes, each with its own client and copy of the scores."""

    def __init__(self, db: Database, url: str, workers: int) -> None:
        self._clients = [pymongo.MongoClient(url) for _ in range(workers)]
        self._queues = [JobQueue(client.get_default_database()) for client in self._clients]
        self._claims: dict[int, tuple[JobQueue, Claim]] = {}

    def for_trial(self, tid: int) -> Population:
        queue = self._queues[tid % len(self._queues)]
        claim = queue.claim(f"w{tid % len(self._queues)}", exp_key="run", lease_s=300)
        assert claim is not None and claim.tid == tid
        self._claims[tid] = (queue, claim)
        return queue.curves.attempt("run", tid, claim.token, holds=lambda: queue.holds(claim))

    def complete(self, tid: int) -> None:
        queue, claim = self._claims.pop(tid)
        assert queue.finish(claim, State.DONE, {"status": "ok", "loss": 0.0}, scored=True)

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.mark.parametrize("cfg", [
    PrunerSettings("median", "loss", "minimize", max_resource=30, startup_trials=5, warmup_steps=2),
    PrunerSettings("asha", "loss", "minimize", max_resource=30, min_resource=1, reduction_factor=3),
    PrunerSettings("hyperband", "loss", "maximize", max_resource=16, min_resource=1, reduction_factor=2),
], ids=lambda cfg: cfg.kind)
def test_decisions_through_the_store_equal_optuna_s(cfg: PrunerSettings, db: Database, db_url: str) -> None:
    curves = learning_curves(seed=1, n=24, length=9)
    if cfg.direction == "maximize":
        curves = [[1 - v for v in curve] for curve in curves]
    enqueue(db, "run", len(curves))
    JobQueue(db).ensure_indexes()
    trials = _StoreTrials(db, db_url, workers=3)
    try:
        theirs, ours = decisions_both_ways(cfg, curves, workers=3, seed=1, trials=trials)
    finally:
        trials.close()
    assert ours == theirs
    assert any(pruned for _, _, pruned in ours)  # the comparison did test some pruning


class _ThenClaimed:
    """``queue.jobs``, but each update that gives the job back to the queue lets another
    worker claim it and record a score before the queue goes on: the next attempt
    arriving between the requeue and the removal of the departing attempt's scores."""

    def __init__(self, queue: JobQueue, other: JobQueue) -> None:
        self._jobs = queue.jobs
        self._other = other
        self.next: Claim | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jobs, name)

    def update_one(self, *args: Any, **kwargs: Any) -> Any:
        done = self._jobs.update_one(*args, **kwargs)
        if self.next is None and self._jobs.count_documents({s.STATE: State.NEW}):
            self.next = self._other.claim("next", lease_s=30)
            assert self.next is not None
            claim = self.next
            self._other.curves.attempt("r", claim.tid, claim.token,
                                       holds=lambda: self._other.holds(claim)).record_rung(0, 0, 0.9)
        return done


@pytest.mark.parametrize("give_back", ["requeue", "release"])
def test_giving_a_job_back_keeps_the_next_attempt_s_scores(db: Database, other_db: Database,
                                                           give_back: str) -> None:
    queue = _queue(db, 1)
    first = queue.claim("a", lease_s=30)
    assert first is not None
    queue.curves.attempt("r", first.tid, first.token, holds=lambda: queue.holds(first)).record_rung(0, 0, 0.5)
    jobs = _ThenClaimed(queue, JobQueue(other_db))
    queue.jobs = jobs  # type: ignore[assignment]
    if give_back == "requeue":
        assert queue.requeue_expired(server_time(db) + timedelta(seconds=60)).requeued == [("r", first.tid)]
    else:
        assert queue.release(first)
    assert jobs.next is not None and jobs.next.tid == first.tid
    assert [(d[s.CURVE_TOKEN], d[s.CURVE_SCORE]) for d in db[s.CURVES].find(LIVE)] == [(jobs.next.token, 0.9)]
