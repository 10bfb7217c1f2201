"""``hpo-coord start``'s algorithm: the default for new runs, kept on resume, rebuilt from the store."""

from __future__ import annotations

from pymongo.database import Database

from jobstore import schema as s
from jobstore.schema import State
from tests.support.processes import RECORDING, run_cli


def _start(db_url: str, run: str, evals: int, *extra: str):
    return run_cli("coordinator", "start", "--exp", "recording", "--objective", RECORDING, "--mongo", db_url,
                   "--run", run, "--max-evals", str(evals), "--local-workers", "1", "--queue", "2", "--seed", "3",
                   *extra, url=db_url, timeout=300)


def test_a_new_run_uses_the_joint_tpe_and_a_resumed_run_carries_on_with_it(db: Database, db_url: str) -> None:
    first = _start(db_url, "j", 14)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (db.runs.find_one({s.ID: "j"}) or {}).get(s.RUN_ALGO) == "joint-tpe"
    resumed = _start(db_url, "j", 24)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming run j: 14 trial(s) already done (algorithm joint-tpe)" in resumed.stdout
    done = list(db.jobs.find({s.EXP_KEY: "j", s.STATE: State.DONE}))
    assert len(done) == 24 and len({d[s.TID] for d in done}) == 24
    later = [d for d in done if d[s.TID] >= 14]
    assert all(d[s.MISC]["idxs"]["x"] == [d[s.TID]] and -5 <= d[s.MISC]["vals"]["x"][0] <= 5 for d in later)
    # the resumed coordinator's model saw the first 14: its points cluster near the minimum at 0.5
    assert sorted(abs(d[s.PARAMS] - 0.5) for d in later)[len(later) // 2] < 1.5


def test_a_run_started_with_hyperopt_tpe_keeps_it_on_resume(db: Database, db_url: str) -> None:
    first = _start(db_url, "t", 6, "--algo", "tpe")
    assert first.returncode == 0, first.stdout + first.stderr
    resumed = _start(db_url, "t", 9)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "(algorithm tpe)" in resumed.stdout
    assert (db.runs.find_one({s.ID: "t"}) or {}).get(s.RUN_ALGO) == "tpe"
    switched = _start(db_url, "t", 12, "--algo", "joint-tpe")
    assert switched.returncode == 0, switched.stdout + switched.stderr
    assert "(algorithm joint-tpe)" in switched.stdout
    assert db.jobs.count_documents({s.EXP_KEY: "t", s.STATE: State.DONE}) == 12
