"""The per-trial time limit (run setting ``trial_timeout``) with real worker processes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pymongo.database import Database

from jobstore import schema as s
from jobstore.schema import State
from objectives.registry import register
from tests.support.experiments import recording
from tests.support.jobs import enqueue
from tests.support.processes import FAST, start_worker

register(recording)

EXIT_TRIAL_HUNG = 76
ONE_GPU = {"HPO_FAKE_GPUS": "GPU-aaaa"}


def test_a_cooperative_trial_past_its_limit_is_a_timeout_error_and_the_worker_goes_on(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    enqueue(db, "t", 3, experiment="recording",
            settings={"mode": "slow", "seconds": 60, "only_first": True, "trial_timeout": 1})
    worker = start_worker(db_url, "--run", "t", "--idle-exit", "1", "--grace", "30", *FAST,
                          log=tmp_path / "w.log")
    assert worker.wait(120) == 0
    timed_out = db.jobs.find_one({s.EXP_KEY: "t", s.STATE: State.ERROR})
    assert timed_out is not None, (tmp_path / "w.log").read_text()[-3000:]
    assert timed_out[s.ERROR]["reason"] == "timeout" and timed_out[s.ERROR]["type"] == "TrialTimeout"
    assert "time limit of 1 s" in timed_out[s.ERROR]["message"]
    assert timed_out[s.RESULT] == {"status": "fail", "reason": "timeout"}
    assert timed_out[s.ATTEMPTS] == 1
    done = list(db.jobs.find({s.EXP_KEY: "t", s.STATE: State.DONE}))
    assert len(done) == 2 and all(j[s.OWNER].endswith(f":{worker.pid}") for j in done)
    assert db.evaluations.count_documents({}) == 3  # not retried


def test_a_hung_trial_is_recorded_as_a_timeout_and_its_worker_exits_freeing_the_gpu(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    enqueue(db, "t", 3, experiment="recording", settings={"mode": "hang", "only_first": True, "trial_timeout": 1})
    hung = start_worker(db_url, "--run", "t", "--grace", "1", *FAST, log=tmp_path / "hung.log", env=ONE_GPU)
    assert hung.wait(120) == EXIT_TRIAL_HUNG
    log = " ".join((tmp_path / "hung.log").read_text().split())
    assert "did not stop" in log and f"exiting with code {EXIT_TRIAL_HUNG}" in log
    timed_out = db.jobs.find_one({s.EXP_KEY: "t", s.STATE: State.ERROR})
    assert timed_out[s.ERROR]["reason"] == "timeout" and timed_out[s.ATTEMPTS] == 1
    gpu = db.gpu_leases.find_one({s.ID: "GPU-aaaa"})
    assert gpu["expires"] == datetime(1970, 1, 1)  # released, not left to lapse
    replacement = start_worker(db_url, "--run", "t", "--idle-exit", "1", *FAST, log=tmp_path / "next.log",
                               env=ONE_GPU)
    assert replacement.wait(120) == 0
    assert "waiting for a free GPU" not in (tmp_path / "next.log").read_text()
    assert db.jobs.count_documents({s.EXP_KEY: "t", s.STATE: State.DONE}) == 2
    assert db.evaluations.count_documents({}) == 3


def test_a_malformed_time_limit_is_ignored_with_a_warning(db: Database, db_url: str, tmp_path: Path) -> None:
    enqueue(db, "t", 2, experiment="recording", settings={"trial_timeout": "soon"})
    worker = start_worker(db_url, "--run", "t", "--idle-exit", "1", *FAST, log=tmp_path / "w.log")
    assert worker.wait(120) == 0
    assert db.jobs.count_documents({s.EXP_KEY: "t", s.STATE: State.DONE}) == 2
    log = " ".join((tmp_path / "w.log").read_text().split())
    assert log.count("trial_timeout") == 1 and "'soon'" in log
