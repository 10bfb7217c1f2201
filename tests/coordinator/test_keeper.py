"""The coordinator's background threads with real processes: its keeper
(coordinator/keeper.py) survives malformed jobs, a failure the keeper or the thread
watching the local workers (coordinator/local_workers.py) cannot ride out takes the
coordinator down loudly, and after an outage the keeper leaves a live worker with a long
lease its job."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pymongo
import pytest
from pymongo.database import Database

from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.fatal import EXIT_THREAD_DIED
from jobstore.schema import State
from tests.support.processes import RECORDING, start_coordinator, start_worker, stop, wait_for

FAULTS = "tests.support.faults:sleeper"
FAST_WORKER = ["--heartbeat", "0.2", "--lease", "1", "--poll-max", "0.05"]


def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return process.wait(timeout)
    finally:
        stop(process)


def _assert_died_loudly(log: str, thread: str, fault: str) -> None:
    assert f"the {thread} thread died" in log, log
    assert "CRITICAL" in log and "Traceback" in log and f"injected fault: {fault}" in log, log


def test_malformed_running_jobs_in_another_run_do_not_stop_the_keeper(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    past = server_time(db).replace(year=2020)
    db.jobs.insert_many([
        {s.EXP_KEY: "junk-a", s.STATE: State.RUNNING, s.LEASE: {"token": "t", "expires": past}},
        {s.EXP_KEY: "junk-b", s.TID: "abc", s.STATE: State.RUNNING, s.LEASE: {"token": "t", "expires": past}},
        {s.EXP_KEY: "junk-c", s.TID: 0, s.ATTEMPTS: "x", s.STATE: State.RUNNING,
         s.LEASE: {"token": "t", "expires": past}},
    ])
    coordinator = start_coordinator(db_url, "--exp", "recording", "--objective", RECORDING, "--run", "r",
                                    "--max-evals", "6", "--lease", "3", "--set", "mode=slow",
                                    "--set", "seconds=1", "--local-workers", "1", log=tmp_path / "c.log")
    wait_for(lambda: (db.runs.find_one({s.ID: "r"}) or {}).get(s.RUN_COORDINATOR) is not None,
             what="the coordinator to hold the run")
    first = db.runs.find_one({s.ID: "r"})[s.RUN_COORDINATOR]["expires"]
    wait_for(lambda: db.runs.find_one({s.ID: "r"})[s.RUN_COORDINATOR]["expires"] > first, timeout=30,
             what="a renewal of the coordinator lease after the requeuer met the malformed jobs")
    assert _wait_exit(coordinator, 300) == 0, (tmp_path / "c.log").read_text()
    assert db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE}) == 6
    assert db.jobs.count_documents({s.EXP_KEY: "r"}) == 6
    junk = list(db.jobs.find({s.EXP_KEY: {"$in": ["junk-a", "junk-b", "junk-c"]}}))
    assert [j[s.STATE] for j in junk] == [State.ERROR] * 3
    assert all(j[s.ERROR]["reason"] == "malformed job" for j in junk)
    assert "Traceback" not in (tmp_path / "c.log").read_text()


def _coordinator_with_fault(db: Database, db_url: str, tmp_path: Path, fault: str,
                            then: Callable[[], None] = lambda: None) -> tuple[int, str]:
    """Exit code and log of a coordinator whose ``fault`` strikes once its local worker
    is running a trial (and ``then`` has run)."""
    trigger = tmp_path / "strike"
    coordinator = start_coordinator(db_url, "--exp", "sleeper", "--objective", FAULTS, "--run", "r",
                                    "--max-evals", "2", "--lease", "3", "--local-workers", "1",
                                    "--set", "seconds=120", log=tmp_path / "c.log",
                                    env={"HPO_TEST_FAULT": fault, "HPO_TEST_FAULT_WHEN": str(trigger)})
    try:
        wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.RUNNING}) == 1,
                 timeout=120, what="the local worker to run a trial")
        trigger.touch()
        then()
    finally:
        code = _wait_exit(coordinator, 120)
    return code, (tmp_path / "c.log").read_text()


def test_a_dying_keeper_takes_the_coordinator_down_loudly(db: Database, db_url: str, tmp_path: Path) -> None:
    code, log = _coordinator_with_fault(db, db_url, tmp_path, "keeper")
    assert code == EXIT_THREAD_DIED, log
    _assert_died_loudly(log, "coordinator keeper", "keeper")
    # on the way out the local worker was stopped (its trial handed back) and the run released
    assert [w["status"] for w in db.workers.find()] == ["stopped"]
    assert db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.RUNNING}) == 0
    assert db.runs.find_one({s.ID: "r"})[s.RUN_COORDINATOR] is None


def test_a_dying_requeuer_takes_the_coordinator_down_loudly(db: Database, db_url: str, tmp_path: Path) -> None:
    code, log = _coordinator_with_fault(db, db_url, tmp_path, "requeuer")
    assert code == EXIT_THREAD_DIED, log
    _assert_died_loudly(log, "coordinator keeper", "requeuer")


def test_a_dying_local_workers_watcher_takes_the_coordinator_down_loudly(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """The local worker is killed; returning its trial to the queue fails, which kills the
    thread that watches the local workers: the coordinator must not run on without it."""
    def kill_the_worker() -> None:
        os.kill(db.workers.find_one()[s.WORKER_PID], signal.SIGKILL)

    code, log = _coordinator_with_fault(db, db_url, tmp_path, "local-workers", then=kill_the_worker)
    assert code == EXIT_THREAD_DIED, log
    _assert_died_loudly(log, "local-workers", "local-workers")
    assert db.runs.find_one({s.ID: "r"})[s.RUN_COORDINATOR] is None


@pytest.mark.slow(reason="the default run has the same guarantee with real processes in tests/chaos/test_database.py::"
                  "test_long_database_outage[20] (coordinator --lease 2, workers --lease 30: no job claimed twice) "
                  "and in tests/jobstore/test_queue.py::test_an_expired_job_is_lost_only_after_its_holders_lease_was_observed")
def test_after_an_outage_a_live_worker_with_a_longer_lease_keeps_its_job(private_server, tmp_path: Path) -> None:
    """Defect 6: the coordinator's requeuer (--lease 2) must give the job's holder (its
    own --lease 12, heartbeat every 10 s) its whole lease after the database returns.

    The outage starts right after a heartbeat and lasts 11.5 s, so the lease has expired
    when the server is back and the worker's next heartbeat is due about 21 s after the
    outage began (its beat at 10 s fails), some 8 s after the server is back."""
    url = f"{private_server.url}/lease"
    db = pymongo.MongoClient(url).get_default_database()
    coordinator = start_coordinator(url, "--exp", "sleeper", "--objective", FAULTS, "--run", "r",
                                    "--max-evals", "1", "--lease", "2", "--set", "seconds=300",
                                    "--connect-timeout", "1", log=tmp_path / "c.log")
    holder = start_worker(url, "--objective", FAULTS, "--run", "r", "--heartbeat", "10", "--lease", "12",
                          "--connect-timeout", "1", log=tmp_path / "w.log")
    try:
        wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.RUNNING}) == 1,
                 what="the worker to claim the job")
        booked = db.jobs.find_one({s.EXP_KEY: "r"})[s.REFRESH_TIME]
        wait_for(lambda: db.jobs.find_one({s.EXP_KEY: "r"})[s.REFRESH_TIME] > booked, timeout=30,
                 what="the worker's first heartbeat")
        owner = db.jobs.find_one({s.EXP_KEY: "r"})[s.OWNER]
        private_server.stop()
        time.sleep(11.5)
        private_server.start()
        assert db.jobs.find_one({s.EXP_KEY: "r"})[s.LEASE]["expires"] < server_time(db)
        deadline = time.monotonic() + 16
        while time.monotonic() < deadline:
            stored = db.jobs.find_one({s.EXP_KEY: "r"})
            assert (stored[s.STATE], stored[s.OWNER], stored[s.ATTEMPTS]) == (State.RUNNING, owner, 1), (
                (tmp_path / "c.log").read_text())
            time.sleep(0.2)
        assert stored[s.LEASE]["expires"] > server_time(db), "the worker renewed its lease"
        assert holder.poll() is None and coordinator.poll() is None
    finally:
        stop(coordinator)
        stop(holder)
    assert "requeued" not in (tmp_path / "c.log").read_text()
