"""The curves store: indexed answers equal the in-memory ones, fencing, completion."""

from __future__ import annotations

import random
from datetime import timedelta

from pymongo.database import Database

from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.curves import CurveStore
from jobstore.queue import JobQueue
from jobstore.retry import RetryPolicy
from jobstore.schema import State
from objectives.pruning import ScoreList
from tests.support.jobs import enqueue


def _queue(db: Database, n: int = 2) -> JobQueue:
    enqueue(db, "r", n)
    queue = JobQueue(db)
    queue.ensure_indexes()
    return queue


def test_indexed_scores_answer_as_the_list_does(db: Database) -> None:
    store = CurveStore(db, s.JOBS, RetryPolicy())
    store.ensure_indexes()
    rng = random.Random(4)
    scores = [round(rng.uniform(0, 1), 2) for _ in range(40)]  # rounded: ties happen
    db[s.CURVES].insert_many([{s.CURVE_EXP_KEY: "r", s.CURVE_TID: tid, s.CURVE_TOKEN: "t", s.CURVE_STEP: None,
                               s.CURVE_BRACKET: 0, s.CURVE_RUNG: 1, s.CURVE_SCORE: score,
                               s.CURVE_COMPLETE: False} for tid, score in enumerate(scores)])
    db[s.CURVES].insert_one({s.CURVE_EXP_KEY: "other", s.CURVE_TID: 0, s.CURVE_TOKEN: "t", s.CURVE_STEP: None,
                             s.CURVE_BRACKET: 0, s.CURVE_RUNG: 1, s.CURVE_SCORE: 0.0, s.CURVE_COMPLETE: False})
    indexed = store.attempt("r", 99, "mine", holds=lambda: True).at_rung(0, 1)
    listed = ScoreList(scores)
    assert indexed.size() == listed.size() == 40
    for probe in (0.0, 0.3, 0.5, scores[7], 1.0):
        for limit in (1, 5, 100):
            assert indexed.count_below(probe, limit) == listed.count_below(probe, limit)
    for probe in (0.3, scores[7], 0.77):
        assert indexed.nearest(probe) == listed.nearest(probe)


def test_the_rules_questions_use_the_indexes(db: Database) -> None:
    store = CurveStore(db, s.JOBS, RetryPolicy())
    store.ensure_indexes()
    attempt = store.attempt("r", 1, "t", holds=lambda: True)
    for scores, index in ((attempt.at_step(3), "run_complete_step_score"),
                          (attempt.at_rung(0, 2), "run_bracket_rung_score")):
        plan = db[s.CURVES].find({**scores._query, s.CURVE_SCORE: {"$lt": 0.5}}).explain()["queryPlanner"]
        assert index in str(plan["winningPlan"]), plan


def test_an_attempt_that_lost_its_claim_leaves_no_score(db: Database) -> None:
    queue = _queue(db, 1)
    first = queue.claim("a", lease_s=30)
    assert first is not None
    mine = queue.curves.attempt("r", first.tid, first.token, holds=lambda: queue.holds(first))
    mine.record_rung(0, 0, 0.5)
    assert db[s.CURVES].count_documents({}) == 1
    # the lease runs out and the job is requeued: its scores go with it
    later = server_time(db) + timedelta(seconds=60)
    assert queue.requeue_expired(later).requeued == [("r", first.tid)]
    assert db[s.CURVES].count_documents({}) == 0
    second = queue.claim("b", lease_s=30)
    assert second is not None and second.tid == first.tid
    theirs = queue.curves.attempt("r", second.tid, second.token, holds=lambda: queue.holds(second))
    theirs.record_rung(0, 0, 0.9)
    # the first attempt, not knowing, records again: the record is undone and it learns it lost
    mine.record_rung(0, 1, 0.4)
    assert mine.lost and not theirs.lost
    assert [d[s.CURVE_TOKEN] for d in db[s.CURVES].find()] == [second.token]


def test_a_new_attempt_clears_scores_an_earlier_one_left(db: Database) -> None:
    queue = _queue(db, 1)
    claim = queue.claim("a", lease_s=30)
    assert claim is not None
    db[s.CURVES].insert_one({s.CURVE_EXP_KEY: "r", s.CURVE_TID: claim.tid, s.CURVE_TOKEN: "dead",
                             s.CURVE_STEP: 4, s.CURVE_RUNG: None, s.CURVE_BRACKET: None, s.CURVE_SCORE: 0.0,
                             s.CURVE_COMPLETE: False})
    attempt = queue.curves.attempt("r", claim.tid, claim.token, holds=lambda: queue.holds(claim))
    attempt.record_step(1, 0.7)
    attempt.record_step(1, 0.7)  # a retried record counts once
    assert [(d[s.CURVE_TOKEN], d[s.CURVE_STEP]) for d in db[s.CURVES].find()] == [(claim.token, 1)]


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
