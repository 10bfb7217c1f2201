"""``hpo-coord start``'s algorithm: the default for new runs, kept on resume, rebuilt from the store."""

from __future__ import annotations

import numpy as np
from hyperopt import base, rand
from pymongo.database import Database

from coordinator import joint_tpe
from jobstore import schema as s
from jobstore.schema import State
from jobstore.trials import MongoTrials
from tests.support.experiments import recording
from tests.support.processes import RECORDING, run_cli


def _start(db_url: str, run: str, evals: int, *extra: str):
    return run_cli("coordinator", "start", "--exp", "recording", "--objective", RECORDING, "--mongo", db_url,
                   "--run", run, "--max-evals", str(evals), "--local-workers", "1", "--queue", "2", "--seed", "3",
                   *extra, url=db_url, timeout=300)


def _first_point(db: Database, run: str, tid: int, seed: int, algo) -> float:
    """The x that ``algo`` proposes for trial ``tid`` of ``run`` as the store holds it, with
    the seed a new coordinator's fmin passes to its first suggestion (``--seed``'s first
    draw).  Takes no trial id from the run's counter; the id does not change the point."""
    trials = MongoTrials(db, exp_key=run, experiment="recording")
    domain = base.Domain(lambda p: 0.0, recording.space)
    doc, = algo([tid], domain, trials, np.random.default_rng(seed).integers(2**31 - 1))
    return doc["misc"]["vals"]["x"][0]


def test_a_new_run_uses_the_joint_tpe_and_a_resumed_run_carries_on_with_it(db: Database, db_url: str) -> None:
    first = _start(db_url, "j", 14)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (db.runs.find_one({s.ID: "j"}) or {}).get(s.RUN_ALGO) == "joint-tpe"
    # what the model fitted on the 14 stored trials proposes first, and what a sampler
    # that had not seen them (the startup draws) would; they differ
    from_model = _first_point(db, "j", 14, 3, joint_tpe.suggest)
    unseen = _first_point(db, "j", 14, 3, rand.suggest)
    assert from_model != unseen
    resumed = _start(db_url, "j", 24)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming run j: 14 trial(s) already done (algorithm joint-tpe)" in resumed.stdout
    done = list(db.jobs.find({s.EXP_KEY: "j", s.STATE: State.DONE}))
    assert len(done) == 24 and len({d[s.TID] for d in done}) == 24
    later = [d for d in done if d[s.TID] >= 14]
    assert all(d[s.MISC]["idxs"]["x"] == [d[s.TID]] and -5 <= d[s.MISC]["vals"]["x"][0] <= 5 for d in later)
    # the resumed coordinator's model was rebuilt from the 14 stored trials: its first
    # proposal (ids go on after the first run's reserved block) is the model's, exactly;
    # the later ones depend on when each result arrives (fmin's --queue counts only jobs
    # no worker has claimed), so they are not compared
    resumed_first = min(later, key=lambda d: d[s.TID])
    assert resumed_first[s.MISC]["vals"]["x"][0] == from_model


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
