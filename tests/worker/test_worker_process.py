"""Real ``hpo-worker`` processes against the test server."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from pymongo.database import Database

from jobstore import schema as s
from jobstore.schema import State
from objectives.registry import register
from tests.support.experiments import recording, slow_loading
from tests.support.jobs import enqueue, jobs
from tests.support.processes import FAST, finish_lost_job, start_worker, stop, wait_for

register(recording)
register(slow_loading)
SLOW_LOADING = ["--objective", "tests.support.experiments:slow_loading"]

def test_exceptions_and_bad_results_become_errors_and_the_worker_goes_on(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    for mode in ("raise", "nan", "text", "noloss", "fail"):
        enqueue(db, mode, 4, experiment="recording", settings={"mode": mode}, seed=3)
    worker = start_worker(db_url, "--idle-exit", "1", *FAST, log=tmp_path / "w.log")
    assert worker.wait(120) == 0
    raised = jobs(db, "raise")
    assert {j[s.STATE] for j in raised} == {State.DONE, State.ERROR}
    for job in raised:
        if job[s.PARAMS] > 0:
            assert job[s.STATE] == State.ERROR
            assert job[s.ERROR]["type"] == "ValueError"
            assert job[s.ERROR]["message"].startswith("boom at x=")
            assert "Traceback" in job[s.ERROR]["traceback"] and "_objective" in job[s.ERROR]["traceback"]
        else:
            assert job[s.STATE] == State.DONE
    messages = {
        "nan": "non-finite loss (nan)",
        "text": "loss of type str",
        "noloss": "dict without 'loss'",
    }
    for mode, text in messages.items():
        for job in jobs(db, mode):
            assert job[s.STATE] == State.ERROR and text in job[s.ERROR]["message"]
            assert job[s.RESULT] == {"status": "fail", "reason": "invalid result"}
    for job in jobs(db, "fail"):
        assert job[s.STATE] == State.DONE and job[s.RESULT] == {"status": "fail", "reason": "oom"}
    record = db.workers.find_one()
    assert record["status"] == "stopped" and record["trials_done"] == 20


def test_sigterm_returns_the_running_job_and_another_worker_completes_it(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    enqueue(db, "r", 1, experiment="recording", settings={"mode": "slow", "seconds": 60, "cooperative": False})
    busy = start_worker(db_url, "--run", "r", "--grace", "0.5", *FAST, log=tmp_path / "busy.log")
    wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", "metrics.2": {"$exists": True}}) == 1,
             what="the trial to report metrics")
    busy.send_signal(signal.SIGTERM)
    assert busy.wait(30) == 0
    job = db.jobs.find_one({s.EXP_KEY: "r"})
    assert job[s.STATE] == State.NEW and job[s.ATTEMPTS] == 0 and job[s.METRICS] == []
    assert "returned to the queue" in (tmp_path / "busy.log").read_text()
    db.runs.update_one({s.ID: "r"}, {"$set": {"settings.seconds": 0.3}})
    time.sleep(0.1)
    other = start_worker(db_url, "--run", "r", "--idle-exit", "1", *FAST, log=tmp_path / "other.log")
    assert other.wait(60) == 0
    job = db.jobs.find_one({s.EXP_KEY: "r"})
    assert job[s.STATE] == State.DONE and job[s.OWNER].endswith(f":{other.pid}")


def test_a_cooperative_trial_stops_at_its_next_safe_point(db: Database, db_url: str, tmp_path: Path) -> None:
    enqueue(db, "r", 1, experiment="recording", settings={"mode": "slow", "seconds": 60})
    worker = start_worker(db_url, "--run", "r", "--grace", "60", *FAST, log=tmp_path / "w.log")
    wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", "metrics.0": {"$exists": True}}) == 1,
             what="the trial to start")
    worker.send_signal(signal.SIGINT)
    assert worker.wait(120) == 0  # a guard against hanging, not a speed claim
    assert db.jobs.find_one({s.EXP_KEY: "r"})[s.STATE] == State.NEW
    # the trial's own TrialInterrupted at its next report, not the one raised into it
    # when the 60 s grace ran out (no clock needed to tell them apart)
    log = (tmp_path / "w.log").read_text()
    assert "interrupted: asked to stop" in log and "grace period after the stop signal is over" not in log, log


def test_killed_worker_job_is_requeued_and_completed_by_another(db: Database, db_url: str, tmp_path: Path) -> None:
    enqueue(db, "r", 1, experiment="recording", settings={"mode": "slow", "seconds": 1.5})
    doomed = start_worker(db_url, "--run", "r", *FAST, log=tmp_path / "doomed.log")
    wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.RUNNING}) == 1,
             what="the trial to start")
    doomed.kill()
    doomed.wait()
    rescuer, job = finish_lost_job(db, db_url, *FAST, log=tmp_path / "rescuer.log")
    assert job[s.OWNER].endswith(f":{rescuer.pid}")
    assert "stopped heartbeating; job requeued" in (tmp_path / "rescuer.log").read_text()


def test_zombie_worker_result_is_refused_and_the_retry_stands(db: Database, db_url: str, tmp_path: Path) -> None:
    enqueue(db, "r", 1, experiment="recording", settings={"mode": "slow", "seconds": 2, "cooperative": False})
    zombie = start_worker(db_url, "--run", "r", *FAST, log=tmp_path / "zombie.log")
    wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.RUNNING}) == 1,
             what="the trial to start")
    zombie.send_signal(signal.SIGSTOP)  # frozen: no heartbeats, as if cut off
    # no --idle-exit (see test_killed_worker_job_is_requeued_and_completed_by_another)
    rescuer = start_worker(db_url, "--run", "r", *FAST, log=tmp_path / "rescuer.log")
    try:
        try:
            wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE}) == 1, timeout=120,
                     what="the retry to finish")
            retry_result = db.jobs.find_one({s.EXP_KEY: "r"})[s.RESULT]
        finally:
            zombie.send_signal(signal.SIGCONT)
        wait_for(lambda: "refused" in (tmp_path / "zombie.log").read_text() or "lease lost" in
                 (tmp_path / "zombie.log").read_text(), timeout=60, what="the zombie to notice")
        time.sleep(3)
        job = db.jobs.find_one({s.EXP_KEY: "r"})
        assert job[s.RESULT] == retry_result and job[s.OWNER].endswith(f":{rescuer.pid}")
        assert job[s.STATE] == State.DONE
    finally:
        stop(zombie)
        code = stop(rescuer)
    assert code == 0


def test_version_skew_is_refused_and_the_job_left_alone(db: Database, db_url: str, tmp_path: Path) -> None:
    enqueue(db, "r", 2, experiment="recording")
    db.runs.update_one({s.ID: "r"}, {"$set": {s.RUN_FINGERPRINT: "0123456789abcdef"}})
    worker = start_worker(db_url, "--run", "r", *FAST, log=tmp_path / "w.log")
    assert worker.wait(60) == 2
    log = (tmp_path / "w.log").read_text()
    assert "version skew" in log and "0123456789abcdef" in log
    assert db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.NEW, s.ATTEMPTS: 0}) == 2
    assert db.evaluations.count_documents({}) == 0


def test_unknown_experiment_is_refused_for_that_run_only(db: Database, db_url: str, tmp_path: Path) -> None:
    enqueue(db, "known", 1, experiment="recording")
    enqueue(db, "mystery", 1, experiment="recording")
    db.jobs.update_many({s.EXP_KEY: "mystery"}, {"$set": {s.EXPERIMENT: "not-installed"}})
    worker = start_worker(db_url, "--idle-exit", "1", *FAST, log=tmp_path / "w.log")
    assert worker.wait(60) == 0
    assert db.jobs.find_one({s.EXP_KEY: "known"})[s.STATE] == State.DONE
    mystery = db.jobs.find_one({s.EXP_KEY: "mystery"})
    assert mystery[s.STATE] == State.NEW and mystery[s.ATTEMPTS] == 0
    log = (tmp_path / "w.log").read_text()
    assert "unknown experiment 'not-installed'; known experiments:" in log


def test_params_outside_the_space_are_an_error(db: Database, db_url: str, tmp_path: Path) -> None:
    enqueue(db, "r", 1, experiment="recording")
    db.jobs.update_one({s.EXP_KEY: "r"}, {"$set": {"misc.vals.x": [17.0]}})
    worker = start_worker(db_url, "--run", "r", "--idle-exit", "1", *FAST, log=tmp_path / "w.log")
    assert worker.wait(60) == 0
    job = db.jobs.find_one({s.EXP_KEY: "r"})
    assert job[s.STATE] == State.ERROR and job[s.ERROR]["type"] == "PointOutsideSpace"
    assert "x=17.0 is outside [-5.0, 5.0]" in job[s.ERROR]["message"]
    assert db.evaluations.count_documents({}) == 0


# The issue asks for an outage of a minute; the suite's default run uses 8 s (the retry
# loop is the same), and `pytest -m slow` runs the full minute.
@pytest.mark.parametrize("outage_s", [8, pytest.param(60, marks=pytest.mark.slow)])
def test_worker_survives_a_database_restart(private_server, tmp_path: Path, outage_s: float) -> None:
    import pymongo

    url = f"{private_server.url}/outage"
    db = pymongo.MongoClient(url).get_default_database()
    enqueue(db, "r", 3, experiment="recording", settings={"mode": "slow", "seconds": 1.0})
    worker = start_worker(url, "--run", "r", "--idle-exit", "3", "--heartbeat", "0.5", "--lease", "30",
                          "--connect-timeout", "1", log=tmp_path / "w.log")
    wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", "metrics.0": {"$exists": True}}) == 1,
             what="the first trial to report")
    private_server.stop()
    time.sleep(outage_s)
    private_server.start()
    assert worker.wait(180) == 0
    done = list(db.jobs.find({s.EXP_KEY: "r"}))
    assert [j[s.STATE] for j in done] == [State.DONE] * 3
    assert all(j[s.ATTEMPTS] == 1 for j in done)
    log = (tmp_path / "w.log").read_text()
    assert "database unavailable during reporting metrics of trial 0" in log
    assert "database is back" in log


def test_a_trial_that_swallows_its_interruption_is_handed_back_and_the_worker_exits(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """The interruption raised after the grace period can be swallowed (an objective's
    bare ``except``, or the exception landing inside a ``__del__``): one SIGTERM must end
    the worker all the same, with the job back in the queue and no attempt charged."""
    enqueue(db, "r", 1, experiment="recording", settings={"mode": "swallow", "seconds": 120})
    worker = start_worker(db_url, "--run", "r", "--grace", "0.5", *FAST, log=tmp_path / "w.log")
    wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", "metrics.0": {"$exists": True}}) == 1,
             what="the trial to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 128 + signal.SIGTERM
    job = db.jobs.find_one({s.EXP_KEY: "r"})
    assert job[s.STATE] == State.NEW and job[s.ATTEMPTS] == 0
    log = (tmp_path / "w.log").read_text()
    assert "interruption was swallowed" in log and "returned to the queue" in log


def test_the_lease_is_kept_while_the_experiment_loads(db: Database, db_url: str, tmp_path: Path) -> None:
    """Found by the Docker test: importing torch under load took longer than the lease, the
    job was requeued while its worker still prepared it, and ran elsewhere."""
    enqueue(db, "r", 1, experiment="slow-loading")
    slow = start_worker(db_url, "--run", "r", "--max-jobs", "1", *SLOW_LOADING, *FAST, log=tmp_path / "slow.log",
                        env={"HPO_TEST_LOAD_S": "4"})
    wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.RUNNING}) == 1, what="the claim")
    idle = start_worker(db_url, "--run", "r", "--idle-exit", "8", *SLOW_LOADING, *FAST, log=tmp_path / "idle.log")
    try:
        assert slow.wait(60) == 0, (tmp_path / "slow.log").read_text()
        assert idle.wait(60) == 0
    finally:
        stop(slow), stop(idle)
    job = db.jobs.find_one({s.EXP_KEY: "r"})
    assert job[s.STATE] == State.DONE and job[s.OWNER].endswith(f":{slow.pid}"), job
    assert job[s.ATTEMPTS] == 1 and db.evaluations.count_documents({}) == 1


def test_a_stop_signal_while_the_experiment_loads_returns_the_job(db: Database, db_url: str, tmp_path: Path) -> None:
    """Before, the signal found no trial running, armed no grace timer, and the trial then
    ran to its end however long it took."""
    enqueue(db, "r", 1, experiment="slow-loading")
    worker = start_worker(db_url, "--run", "r", *SLOW_LOADING, *FAST, log=tmp_path / "w.log",
                          env={"HPO_TEST_LOAD_S": "4"})
    wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.RUNNING}) == 1, what="the claim")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    job = db.jobs.find_one({s.EXP_KEY: "r"})
    assert job[s.STATE] == State.NEW and job[s.ATTEMPTS] == 0, job
    assert db.evaluations.count_documents({}) == 0
    assert "returned to the queue before it started" in (tmp_path / "w.log").read_text()
