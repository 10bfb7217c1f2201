"""Real worker processes pruning a run, and pruning under requeue and stop signals."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from pymongo.database import Database

from jobstore import schema as s
from jobstore.schema import State
from objectives.pruning import PrunerSettings
from objectives.registry import register
from tests.support.experiments import curve
from tests.support.jobs import enqueue, jobs
from tests.support.processes import FAST, finish_lost_job, start_worker, wait_for

register(curve)
CURVE = ["--objective", "tests.support.experiments:curve"]
LIVE = {s.CURVE_REMOVED: {"$ne": True}}
"""Scores that count (removed ones stay in the collection, marked)."""


def asha(max_resource: int = 9) -> dict[str, Any]:
    return PrunerSettings("asha", "loss", "minimize", max_resource=max_resource, min_resource=1,
                          reduction_factor=3).to_document()


def test_two_workers_prune_a_run_with_asha(db: Database, db_url: str, tmp_path: Path) -> None:
    enqueue(db, "r", 12, experiment="curve", settings={"epochs": 9, s.RUN_PRUNER: asha()}, seed=1)
    workers = [start_worker(db_url, "--run", "r", "--idle-exit", "1.5", *CURVE, *FAST, log=tmp_path / f"w{i}.log")
               for i in range(2)]
    for worker in workers:
        assert worker.wait(180) == 0
    done = jobs(db, "r")
    assert {job[s.STATE] for job in done} == {State.DONE}
    pruned = [job for job in done if job[s.RESULT].get("pruned")]
    complete = [job for job in done if not job[s.RESULT].get("pruned")]
    assert pruned and complete
    best = min(done, key=lambda job: job[s.PARAMS])
    assert best in complete  # the best curve is the best at every rung: never pruned
    for job in pruned:
        step = job[s.RESULT]["pruned_step"]
        assert step in (1, 3)  # the rungs below the budget of 9
        assert [m["step"] for m in job[s.METRICS]] == list(range(1, step + 1))
        # the loss it carries is the one it reported where it stopped
        assert job[s.RESULT]["loss"] == job[s.METRICS][-1]["loss"] == job[s.RESULT]["pruned_value"]
        assert job[s.RESULT]["status"] == "ok"
    for job in complete:
        assert len(job[s.METRICS]) == 9 and "pruned" not in job[s.RESULT]
    # every trial recorded its rung-0 score once, and only trials that passed rung 0 one at rung 1
    rung0 = db[s.CURVES].count_documents({s.CURVE_EXP_KEY: "r", s.CURVE_RUNG: 0})
    passed = sum(1 for job in done if len(job[s.METRICS]) > 1)
    assert rung0 == 12
    assert db[s.CURVES].count_documents({s.CURVE_EXP_KEY: "r", s.CURVE_RUNG: 1}) == passed


def test_an_objective_that_catches_trial_pruned_is_still_recorded_as_pruned(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    for mode in ("return", "raise"):
        enqueue(db, mode, 8, experiment="curve",
                settings={"epochs": 9, "caught_pruned": mode, s.RUN_PRUNER: asha()}, seed=3)
    log = tmp_path / "w.log"
    worker = start_worker(db_url, "--idle-exit", "1.5", *CURVE, *FAST, log=log)
    assert worker.wait(180) == 0
    text = log.read_text()
    for mode in ("return", "raise"):
        done = jobs(db, mode)
        assert {job[s.STATE] for job in done} == {State.DONE}
        stopped = [job for job in done if len(job[s.METRICS]) < 9]
        assert stopped, "asha pruned nothing: the test would test nothing"
        for job in stopped:
            # the worker's decision, not what the objective did after it: pruned where it
            # stopped, with the loss it reported there (not the -1 it returned, not an error)
            last = job[s.METRICS][-1]
            assert job[s.RESULT] == {"status": "ok", "loss": last["loss"], "pruned": True,
                                     "pruned_step": last["step"], "pruned_value": last["loss"]}
            assert s.ERROR not in job
        for job in done:
            if job not in stopped:
                assert len(job[s.METRICS]) == 9 and "pruned" not in job[s.RESULT]
        # only trials that trained their whole budget count as complete for the median
        complete = {d[s.CURVE_TID] for d in db[s.CURVES].find({s.CURVE_EXP_KEY: mode, s.CURVE_COMPLETE: True})}
        assert complete == {job[s.TID] for job in done if job not in stopped}
    assert text.count("caught TrialPruned and returned (a float); it is recorded as pruned") == len(
        [job for job in jobs(db, "return") if len(job[s.METRICS]) < 9])
    assert text.count("then raised RuntimeError: the objective's own error after being pruned") == len(
        [job for job in jobs(db, "raise") if len(job[s.METRICS]) < 9])


def test_sigterm_mid_trial_is_not_pruning_and_the_requeued_trial_starts_afresh(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    pruner = PrunerSettings("median", "loss", "minimize", max_resource=50, startup_trials=0).to_document()
    enqueue(db, "r", 1, experiment="curve", settings={"epochs": 50, "step_s": 0.1, s.RUN_PRUNER: pruner})
    busy = start_worker(db_url, "--run", "r", "--grace", "0.5", *CURVE, *FAST, log=tmp_path / "busy.log")
    wait_for(lambda: db[s.CURVES].count_documents({s.CURVE_EXP_KEY: "r"}) >= 3, what="scores to be recorded")
    busy.send_signal(signal.SIGTERM)
    assert busy.wait(30) == 0
    job = db.jobs.find_one({s.EXP_KEY: "r"})
    assert job[s.STATE] == State.NEW and job[s.METRICS] == []
    assert "pruned" not in (job.get(s.RESULT) or {})
    assert db[s.CURVES].count_documents({s.CURVE_EXP_KEY: "r", **LIVE}) == 0  # its history went with it
    db.runs.update_one({s.ID: "r"}, {"$set": {"settings.step_s": 0}})
    other = start_worker(db_url, "--run", "r", "--idle-exit", "1", *CURVE, *FAST, log=tmp_path / "other.log")
    assert other.wait(60) == 0
    job = db.jobs.find_one({s.EXP_KEY: "r"})
    assert job[s.STATE] == State.DONE and "pruned" not in job[s.RESULT]
    assert [m["step"] for m in job[s.METRICS]] == list(range(1, 51))
    scores = list(db[s.CURVES].find({s.CURVE_EXP_KEY: "r", **LIVE}))
    assert sorted(d[s.CURVE_STEP] for d in scores) == list(range(1, 51))
    assert all(d[s.CURVE_COMPLETE] for d in scores)  # the median now compares with it
    assert {d[s.CURVE_TOKEN] for d in scores} == {job[s.LEASE]["token"]}


def test_a_trial_requeued_after_its_worker_died_keeps_only_its_new_history(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    enqueue(db, "r", 1, experiment="curve", settings={"epochs": 9, "step_s": 0.3, s.RUN_PRUNER: asha()})
    doomed = start_worker(db_url, "--run", "r", *CURVE, *FAST, log=tmp_path / "doomed.log")
    wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", "metrics.3": {"$exists": True}}) == 1,
             what="the trial to pass rung 1")
    first_token = db.jobs.find_one({s.EXP_KEY: "r"})[s.LEASE]["token"]
    assert db[s.CURVES].count_documents({s.CURVE_TOKEN: first_token}) == 2  # rungs 0 and 1
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(30)
    _, job = finish_lost_job(db, db_url, *CURVE, *FAST, log=tmp_path / "heir.log")
    assert [m["step"] for m in job[s.METRICS]] == list(range(1, 10))
    # the dead attempt's scores went when its job was requeued; the new attempt's rungs are there
    assert db[s.CURVES].count_documents({s.CURVE_TOKEN: first_token, **LIVE}) == 0
    assert sorted(d[s.CURVE_RUNG] for d in db[s.CURVES].find({s.CURVE_EXP_KEY: "r", **LIVE})) == [0, 1]


def test_what_pruning_cannot_judge_is_not_pruned(db: Database, db_url: str, tmp_path: Path) -> None:
    median = PrunerSettings("median", "loss", "minimize", max_resource=9, startup_trials=0).to_document()
    enqueue(db, "bad", 1, experiment="curve", settings={s.RUN_PRUNER: {**median, "kind": "sometimes"}})
    enqueue(db, "self", 1, experiment="curve", settings={"raise_pruned": True, s.RUN_PRUNER: median})
    enqueue(db, "unreported", 2, experiment="curve", settings={"metric": "val_loss", s.RUN_PRUNER: median})
    log = tmp_path / "w.log"
    worker = start_worker(db_url, "--idle-exit", "1", *CURVE, *FAST, log=log)
    assert worker.wait(120) == 0
    text = log.read_text()
    # a pruner setting no worker can apply: the run is refused, its job left for a fixed run
    assert jobs(db, "bad")[0][s.STATE] == State.NEW
    assert "refusing run 'bad'" in text and "kind 'sometimes' is not one of" in text
    # TrialPruned from the objective, with no pruner decision behind it, is an error
    raised = jobs(db, "self")[0]
    assert raised[s.STATE] == State.ERROR and raised[s.ERROR]["type"] == "objectives.base.TrialPruned"
    # reports without the metric are not judged: the trials complete, with one warning each
    for job in jobs(db, "unreported"):
        assert job[s.STATE] == State.DONE and "pruned" not in job[s.RESULT] and len(job[s.METRICS]) == 9
    assert text.count("has no number 'loss' (the run's pruning metric") == 2
