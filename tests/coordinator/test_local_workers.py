"""``hpo-coord start --local-workers`` and ``--trial-timeout`` with real processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from pymongo.database import Database

from jobstore import schema as s
from jobstore.schema import State
from tests.support.processes import RECORDING, run_cli, start_coordinator, stop, wait_for


def test_a_local_worker_killed_mid_run_is_restarted_and_the_run_completes(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    coordinator = start_coordinator(db_url, "--exp", "recording", "--objective", RECORDING, "--run", "r",
                                    "--max-evals", "8", "--local-workers", "1", "--set", "mode=slow",
                                    "--set", "seconds=0.2", log=tmp_path / "c.log")
    try:
        wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE}) >= 2,
                 what="some trials to finish")
        first = db.workers.find_one()[s.WORKER_PID]
        os.kill(first, signal.SIGKILL)
        assert coordinator.wait(240) == 0, (tmp_path / "c.log").read_text()[-3000:]
    finally:
        stop(coordinator)
    log = " ".join((tmp_path / "c.log").read_text().split())
    assert f"local worker {first} exited with code -9; restarting it" in log
    assert db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE}) == 8
    assert db.workers.count_documents({}) == 2


def test_trial_timeout_is_stored_in_the_run_kept_on_resume_and_a_hung_worker_replaced(
    db: Database, db_url: str
) -> None:
    args = ["coordinator", "start", "--exp", "recording", "--objective", RECORDING, "--mongo", db_url,
            "--run", "t", "--local-workers", "1", "--set", "mode=hang", "--set", "only_first=true"]
    result = run_cli(*args, "--max-evals", "3", "--trial-timeout", "1", url=db_url, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert db.runs.find_one({s.ID: "t"})[s.RUN_SETTINGS]["trial_timeout"] == 1
    timed_out = list(db.jobs.find({s.EXP_KEY: "t", s.STATE: State.ERROR}))
    assert len(timed_out) == 1 and timed_out[0][s.ERROR]["reason"] == "timeout"
    done = db.jobs.count_documents({s.EXP_KEY: "t", s.STATE: State.DONE})
    assert 2 <= done <= 3  # whether fmin counts the error trial towards --max-evals is hyperopt's business
    assert "restarting it" in " ".join(result.stderr.split())
    resumed = run_cli(*args, "--max-evals", str(done + 1), url=db_url, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert db.runs.find_one({s.ID: "t"})[s.RUN_SETTINGS]["trial_timeout"] == 1
    assert db.jobs.count_documents({s.EXP_KEY: "t", s.STATE: State.DONE}) == done + 1
    assert db.jobs.count_documents({s.EXP_KEY: "t", s.STATE: State.ERROR}) == 1


def test_trial_timeout_rejects_a_negative_value(db_url: str) -> None:
    result = run_cli("coordinator", "start", "--exp", "recording", "--objective", RECORDING, "--mongo", db_url,
                     "--trial-timeout", "-1", url=db_url)
    assert result.returncode == 2 and "--trial-timeout" in result.stderr
