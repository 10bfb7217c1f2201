"""``hpo-coord start --local-workers`` and ``--trial-timeout`` with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from pymongo.database import Database

from cli_support.console import EXIT_TRIAL_HUNG
from coordinator.local_workers import MAX_RESTARTS, LocalWorkers
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


class _Exiting(LocalWorkers):
    """Local workers whose processes exit at once with the given codes, in turn."""

    def __init__(self, codes: list[int]) -> None:
        super().__init__(1, "mongodb://unused", "r", extra_args=[], check_interval=0.01)
        self.codes = codes
        self.spawned = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        code = self.codes[min(self.spawned, len(self.codes) - 1)]
        self.spawned += 1
        return subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])


def _settled(workers: _Exiting) -> None:
    wait_for(lambda: workers.processes[0] is None, timeout=60, what="the slot to stay down")


def test_a_crashing_local_worker_is_restarted_up_to_the_limit() -> None:
    workers = _Exiting([1])
    workers.start()
    try:
        _settled(workers)
    finally:
        workers.stop()
    assert workers.restarts == MAX_RESTARTS and workers.spawned == MAX_RESTARTS + 1


def test_hung_trial_exits_do_not_count_as_crashes_and_refusals_are_not_restarted() -> None:
    workers = _Exiting([EXIT_TRIAL_HUNG] * (MAX_RESTARTS + 3) + [2])
    workers.start()
    try:
        _settled(workers)
    finally:
        workers.stop()
    assert workers.restarts == MAX_RESTARTS + 3 and workers.spawned == MAX_RESTARTS + 4
