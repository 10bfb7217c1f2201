"""Poison jobs against real ``hpo-worker`` processes: lost leases, unstorable results,
huge exception messages and malformed job documents end one trial, never the worker."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pymongo.database import Database

from jobstore import schema as s
from jobstore.schema import State
from objectives.registry import register
from tests.support.experiments import recording
from tests.support.jobs import enqueue, jobs
from tests.support.processes import FAST, start_worker, wait_for

register(recording)

def test_a_worker_that_loses_its_lease_drops_that_trial_and_goes_on(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    # The first trial cooperates (it stops at should_stop()), as digits and cifar100 do.
    enqueue(db, "r", 3, experiment="recording", settings={"mode": "slow", "seconds": 60, "only_first": True})
    worker = start_worker(db_url, "--run", "r", "--idle-exit", "2", *FAST, log=tmp_path / "w.log")
    wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", "metrics.1": {"$exists": True}}) == 1,
             what="the first trial to report")
    lost = db.jobs.find_one({s.EXP_KEY: "r", s.STATE: State.RUNNING})
    # As if the job had been requeued and claimed by another worker, which holds it still.
    db.jobs.update_one({s.ID: lost[s.ID]}, {"$set": {s.LEASE_TOKEN: "another-worker",
                                                     s.LEASE_EXPIRES: datetime(2100, 1, 1)}})
    assert worker.wait(120) == 0
    log = (tmp_path / "w.log").read_text()
    assert "lease lost" in log and "dropped" in log
    after = {j[s.ID]: j for j in jobs(db, "r")}
    assert after[lost[s.ID]][s.STATE] == State.RUNNING
    assert after[lost[s.ID]][s.LEASE]["token"] == "another-worker"  # nothing written over the new holder
    others = [j for i, j in after.items() if i != lost[s.ID]]
    assert [j[s.STATE] for j in others] == [State.DONE, State.DONE]
    assert all(j[s.OWNER].endswith(f":{worker.pid}") for j in others)


def test_results_that_cannot_be_stored_become_errors_and_the_worker_goes_on(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    for mode in ("bigint", "huge", "nulkey"):
        enqueue(db, mode, 2, experiment="recording", settings={"mode": mode, "only_first": True})
    worker = start_worker(db_url, "--idle-exit", "1", *FAST, log=tmp_path / "w.log")
    assert worker.wait(120) == 0, (tmp_path / "w.log").read_text()[-3000:]
    for mode in ("bigint", "huge", "nulkey"):
        states = sorted(j[s.STATE] for j in jobs(db, mode))
        assert states == [State.DONE, State.ERROR], mode
        error = db.jobs.find_one({s.EXP_KEY: mode, s.STATE: State.ERROR})
        assert error[s.ERROR]["reason"] == "unstorable result"
        assert error[s.ERROR]["message"].startswith("result cannot be stored: ")
        assert error[s.RESULT] == {"status": "fail", "reason": "unstorable result"}
        assert error[s.ATTEMPTS] == 1
    assert "17000" in db.jobs.find_one({s.EXP_KEY: "huge", s.STATE: State.ERROR})[s.ERROR]["message"]
    assert "8-byte ints" in db.jobs.find_one({s.EXP_KEY: "bigint", s.STATE: State.ERROR})[s.ERROR]["message"]
    assert db.workers.find_one()["trials_done"] == 6


def test_result_keys_that_look_like_operators_are_stored_as_data(db: Database, db_url: str, tmp_path: Path) -> None:
    enqueue(db, "dollar", 1, experiment="recording", settings={"mode": "dollar"})
    worker = start_worker(db_url, "--idle-exit", "1", *FAST, log=tmp_path / "w.log")
    assert worker.wait(120) == 0, (tmp_path / "w.log").read_text()[-3000:]
    job = db.jobs.find_one({s.EXP_KEY: "dollar"})
    assert job[s.STATE] == State.DONE
    assert job[s.RESULT]["$where"] == "sleep(1000)" and job[s.RESULT]["a.b"] == {"$gt": 1}


def test_objectives_that_exit_or_raise_unprintable_errors_become_errors(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    for mode in ("exit", "unprintable"):
        enqueue(db, mode, 2, experiment="recording", settings={"mode": mode, "only_first": True})
    worker = start_worker(db_url, "--idle-exit", "1", *FAST, log=tmp_path / "w.log")
    assert worker.wait(120) == 0, (tmp_path / "w.log").read_text()[-3000:]
    exited = db.jobs.find_one({s.EXP_KEY: "exit", s.STATE: State.ERROR})
    assert exited[s.ERROR]["type"] == "SystemExit" and exited[s.ERROR]["reason"] == "exception"
    unprintable = db.jobs.find_one({s.EXP_KEY: "unprintable", s.STATE: State.ERROR})
    assert unprintable[s.ERROR]["type"].endswith("_Unprintable")
    assert "cannot be printed" in unprintable[s.ERROR]["message"]
    assert db.jobs.count_documents({s.STATE: State.DONE}) == 2


def test_huge_exception_messages_are_cut_in_the_log_and_the_error(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    enqueue(db, "long", 3, experiment="recording", settings={"mode": "longmsg", "length": 2_000_000})
    worker = start_worker(db_url, "--run", "long", "--idle-exit", "1", *FAST, log=tmp_path / "w.log")
    assert worker.wait(120) == 0  # before the fix: minutes per trial in rich and mask()
    for job in jobs(db, "long"):
        error = job[s.ERROR]
        assert job[s.STATE] == State.ERROR and error["type"] == "ValueError"
        assert error["message"].startswith("boom xxx") and len(error["message"]) < 5_000
        assert "characters cut" in error["message"]
        assert len(error["traceback"]) < 20_000 and "characters cut" in error["traceback"]
        assert "Traceback" in error["traceback"] and "_objective" in error["traceback"]
    assert (tmp_path / "w.log").stat().st_size < 50_000


# Each malformation of a job document, and what the error should say.
MALFORMED = [
    ({"$unset": {s.MISC: ""}}, "no 'misc'"),
    ({"$set": {s.MISC: "text"}}, "'misc' is of type str"),
    ({"$set": {s.VALS: 5}}, "'misc.vals' is of type int"),
    ({"$set": {s.VALS: [1, 2]}}, "'misc.vals' is of type list"),
    ({"$set": {"misc.vals.x": 5}}, "'misc.vals.x' is of type int"),
    ({"$set": {"misc.vals.x": "abc"}}, "'misc.vals.x' is of type str"),
    ({"$set": {"misc.vals.x": [float("inf")]}}, "is not a finite number"),
    ({"$set": {"misc.vals.x": [[1.0]]}}, "is not a number"),
    ({"$set": {s.VALS: {}}}, "no value for hyperparameter(s) ['x']"),
    ({"$set": {s.EXPERIMENT: 123}}, "'experiment' is of type int"),
    ({"$set": {s.EXPERIMENT: None, "misc.cmd": 5}}, "'misc.cmd'"),
]


def test_malformed_job_documents_become_errors_and_the_worker_goes_on(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    enqueue(db, "m", len(MALFORMED) + 1, experiment="recording", seed=4)
    docs = jobs(db, "m")
    for doc, (update, _) in zip(docs, MALFORMED):
        db.jobs.update_one({s.ID: doc[s.ID]}, update)
    worker = start_worker(db_url, "--run", "m", "--idle-exit", "1", *FAST, log=tmp_path / "w.log")
    assert worker.wait(120) == 0, (tmp_path / "w.log").read_text()[-3000:]
    for doc, (_, text) in zip(docs, MALFORMED):
        after = db.jobs.find_one({s.ID: doc[s.ID]})
        assert after[s.STATE] == State.ERROR, text
        assert after[s.ERROR]["reason"] in ("malformed job", "params outside space"), text
        assert text in after[s.ERROR]["message"], (text, after[s.ERROR]["message"])
    assert db.jobs.find_one({s.ID: docs[-1][s.ID]})[s.STATE] == State.DONE


def test_a_malformed_run_document_refuses_that_run_and_leaves_its_jobs(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    enqueue(db, "bad", 1, experiment="recording")
    enqueue(db, "good", 1, experiment="recording")
    db.runs.update_one({s.ID: "bad"}, {"$set": {s.RUN_SETTINGS: "oops"}})
    worker = start_worker(db_url, "--idle-exit", "1", *FAST, log=tmp_path / "w.log")
    assert worker.wait(120) == 0
    assert db.jobs.find_one({s.EXP_KEY: "good"})[s.STATE] == State.DONE
    bad = db.jobs.find_one({s.EXP_KEY: "bad"})
    assert bad[s.STATE] == State.NEW and bad[s.ATTEMPTS] == 0
    log = " ".join((tmp_path / "w.log").read_text().split())
    assert "refusing run 'bad'" in log and "settings" in log
