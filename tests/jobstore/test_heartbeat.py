"""Background threads of a worker (jobstore/heartbeat.py, jobstore/fatal.py) and the
idle worker's requeuer, with real ``hpo-worker`` processes: a heartbeat thread that
dies takes the worker down loudly; malformed jobs never do."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from pymongo.database import Database

from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.fatal import EXIT_THREAD_DIED
from jobstore.schema import State
from objectives.registry import register
from tests.support.faults import sleeper
from tests.support.jobs import enqueue
from tests.support.processes import REPO, start_worker, stop, wait_for

register(sleeper)
FAULTS = "tests.support.faults:sleeper"


def _worker_with_fault(db: Database, db_url: str, tmp_path: Path, fault: str, *args: str) -> tuple[int, str]:
    worker = start_worker(db_url, "--objective", FAULTS, "--run", "r", "--heartbeat", "0.3", "--lease", "5",
                          "--poll-max", "0.05", *args, log=tmp_path / "w.log", env={"HPO_TEST_FAULT": fault})
    try:
        code = worker.wait(120)
    finally:
        stop(worker)
    return code, (tmp_path / "w.log").read_text()


def test_a_dying_job_heartbeat_takes_the_worker_down_loudly(db: Database, db_url: str, tmp_path: Path) -> None:
    """The exception raised into the trial ends the worker at once; before, the worker's
    catch of an objective's ``sys.exit`` took it for the trial's failure, recorded the
    job as an error and worked on until the watchdog's deadline (30 s)."""
    enqueue(db, "r", 1, experiment="sleeper", settings={"seconds": 120})
    code, log = _worker_with_fault(db, db_url, tmp_path, "job-heartbeat")
    assert code == EXIT_THREAD_DIED, log
    assert "the trial 0 of run 'r' heartbeat thread died" in log and "CRITICAL" in log
    assert "Traceback" in log and "RuntimeError: injected fault: job-heartbeat" in log
    assert "did not stop in time" not in log and "raised ThreadDied" not in log
    job = db.jobs.find_one({s.EXP_KEY: "r"})
    assert job[s.STATE] == State.RUNNING, job  # left to its lease: the requeuer hands it on


def test_a_dying_worker_record_heartbeat_takes_the_worker_down_loudly(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    code, log = _worker_with_fault(db, db_url, tmp_path, "worker-heartbeat")
    assert code == EXIT_THREAD_DIED, log
    assert "the worker record and GPU lease heartbeat thread died" in log
    assert "RuntimeError: injected fault: worker-heartbeat" in log


def test_a_failing_requeuer_stops_an_idle_worker_with_its_traceback(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    code, log = _worker_with_fault(db, db_url, tmp_path, "requeuer")
    assert code != 0 and "RuntimeError: injected fault: requeuer" in log, log


def test_malformed_jobs_never_stop_a_worker(db: Database, db_url: str, tmp_path: Path) -> None:
    """Defects 3 and 9: malformed new jobs (met by the claim) and malformed running jobs
    with expired or no leases (met by the idle worker's requeuer), in other runs."""
    past = server_time(db).replace(year=2020)
    lease = {"token": "t", "expires": past}
    bad = db.jobs.insert_many([
        {s.EXP_KEY: "new-a", s.STATE: State.NEW},
        {s.EXP_KEY: "new-b", s.TID: "abc", s.STATE: State.NEW},
        {s.EXP_KEY: "new-c", s.TID: 0, s.ATTEMPTS: "x", s.STATE: State.NEW},
        {s.EXP_KEY: "run-a", s.STATE: State.RUNNING, s.LEASE: lease},
        {s.EXP_KEY: "run-b", s.TID: "abc", s.STATE: State.RUNNING, s.LEASE: lease},
        {s.EXP_KEY: "run-c", s.TID: 0, s.ATTEMPTS: "x", s.STATE: State.RUNNING, s.LEASE: lease},
        {s.EXP_KEY: "run-d", s.TID: 0, s.STATE: State.RUNNING},
    ]).inserted_ids
    enqueue(db, "good", 3, experiment="sleeper", settings={"seconds": 0})
    # No --idle-exit: the requeuer marks an expired job only after a lease (1 s) of unbroken
    # contact, which a busy host can stretch past an idle limit short enough to keep this
    # quick; the worker is stopped once everything was handled, and must still be running.
    worker = start_worker(db_url, "--objective", FAULTS, "--heartbeat", "0.3", "--lease", "1",
                          "--poll-max", "0.05", log=tmp_path / "w.log")
    try:
        wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "good", s.STATE: State.DONE}) == 3
                 and db.jobs.count_documents({s.ID: {"$in": bad}, s.STATE: State.ERROR}) == len(bad),
                 timeout=120, what="the good jobs done and the malformed ones marked")
        assert worker.poll() is None, (tmp_path / "w.log").read_text()
    finally:
        code = stop(worker)
    assert code == 0, (tmp_path / "w.log").read_text()
    assert db.jobs.count_documents({s.EXP_KEY: "good", s.STATE: State.DONE}) == 3
    for doc in db.jobs.find({s.ID: {"$in": bad}}):
        assert doc[s.STATE] == State.ERROR and doc[s.ERROR]["reason"] == "malformed job", doc
    assert "Traceback" not in (tmp_path / "w.log").read_text()


def test_die_ends_a_process_whose_main_thread_is_stuck(tmp_path: Path) -> None:
    """The watchdog: a main thread blocked in native code cannot take the exception."""
    script = textwrap.dedent("""
        import logging, threading, time
        from jobstore.fatal import die
        logging.basicConfig(level=logging.INFO)
        sleeping = threading.Event()
        def background():
            sleeping.wait()
            time.sleep(0.5)  # the main thread is in its sleep by now
            try:
                raise RuntimeError("injected fault: background")
            except RuntimeError as exc:
                die("test", exc, deadline_s=1.0)
        threading.Thread(target=background).start()
        sleeping.set()
        time.sleep(60)  # one native call: the async exception waits for it
        print("main thread carried on")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert done.returncode == EXIT_THREAD_DIED, done.stderr
    assert "main thread carried on" not in done.stdout
    assert "the test thread died" in done.stderr and "did not stop in time" in done.stderr
