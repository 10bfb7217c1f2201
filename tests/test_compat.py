"""A script written for hyperopt.mongoexp works after changing only its import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from pymongo.database import Database

from jobstore import schema as s
from jobstore.schema import State
from tests.support.processes import REPO, start_worker, stop, wait_for

ORIGINAL = REPO / "tests" / "support" / "hyperopt_mongoexp_script.py"
OLD_IMPORT = "from hyperopt.mongoexp import MongoTrials"
NEW_IMPORT = "from jobstore.trials import MongoTrials"


def converted_script(tmp_path: Path) -> Path:
    text = ORIGINAL.read_text()
    assert text.count(OLD_IMPORT) == 1
    script = tmp_path / "script.py"
    script.write_text(text.replace(OLD_IMPORT, NEW_IMPORT))
    return script


def hyperopt_url(db_url: str) -> str:
    parts = urlsplit(db_url)
    return f"mongo://{parts.netloc}{parts.path}/jobs"


def run_script(script: Path, db_url: str, evaluations: Path, evals: int, log: Path) -> subprocess.Popen[bytes]:
    env = {"EVALUATIONS_FILE": str(evaluations), "PYTHONPATH": str(REPO), "PATH": ""}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, str(script), hyperopt_url(db_url), str(evals)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=script.parent)


def test_script_completes_with_allow_pickle(db: Database, db_url: str, tmp_path: Path) -> None:
    evaluations = tmp_path / "evaluations.txt"
    script = run_script(converted_script(tmp_path), db_url, evaluations, 12, tmp_path / "script.log")
    worker = start_worker(db_url, "--allow-pickle", "--poll-max", "0.05", log=tmp_path / "worker.log",
                          env={"EVALUATIONS_FILE": str(evaluations)})
    try:
        assert script.wait(180) == 0, (tmp_path / "script.log").read_text()
    finally:
        stop(worker)
    assert "BEST {'x':" in (tmp_path / "script.log").read_text()
    assert db.jobs.count_documents({s.EXP_KEY: "stock_script", s.STATE: State.DONE}) == 12
    assert len(evaluations.read_text().split()) == 12
    doc = db.jobs.find_one({s.EXP_KEY: "stock_script"})
    assert doc[s.MISC]["cmd"] == ["domain_attachment", "FMinIter_Domain"]
    assert isinstance(doc[s.PARAMS], float)


def test_without_allow_pickle_the_job_is_marked_error_and_not_run(db: Database, db_url: str, tmp_path: Path) -> None:
    evaluations = tmp_path / "evaluations.txt"
    script = run_script(converted_script(tmp_path), db_url, evaluations, 1, tmp_path / "script.log")
    try:
        wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "stock_script"}) == 1, what="the job")
        worker = start_worker(db_url, "--max-jobs", "1", "--poll-max", "0.05", log=tmp_path / "worker.log",
                              env={"EVALUATIONS_FILE": str(evaluations)})
        assert worker.wait(60) == 0
    finally:
        stop(script)
    job = db.jobs.find_one({s.EXP_KEY: "stock_script"})
    assert job[s.STATE] == State.ERROR
    assert job[s.ERROR]["type"] == "PickleRefused"
    assert "--allow-pickle" in job[s.ERROR]["message"]
    assert not evaluations.exists()
    assert "refuses" in (tmp_path / "worker.log").read_text()
