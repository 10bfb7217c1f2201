"""``hpo-coord start`` end to end, with real coordinator and worker processes."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pytest
from pymongo.database import Database

from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.schema import State
from tests.support.processes import REPO, RECORDING, run_cli, start_coordinator, start_worker, stop, wait_for

FAST_WORKER = ["--heartbeat", "0.2", "--lease", "1", "--poll-max", "0.05"]


def test_two_workers_find_the_quadratic_minimum_and_no_job_runs_twice(db: Database, db_url: str) -> None:
    result = run_cli("coordinator", "start", "--exp", "recording", "--objective", RECORDING, "--mongo", db_url,
                     "--run", "q", "--max-evals", "100", "--local-workers", "2", "--seed", "1", "--queue", "2",
                     url=db_url, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert db.jobs.count_documents({s.EXP_KEY: "q", s.STATE: State.DONE}) == 100
    assert db.jobs.count_documents({s.EXP_KEY: "q"}) == 100
    assert db.jobs.count_documents({s.EXP_KEY: "q", s.ATTEMPTS: {"$ne": 1}}) == 0
    evaluated = [e["x"] for e in db.evaluations.find()]
    assert len(evaluated) == 100 and len(set(evaluated)) == 100
    assert len({e["pid"] for e in db.evaluations.find()}) == 2
    # How well the model converged depends on when each result reached it (two workers,
    # fmin's queue counting unclaimed jobs only), so these two checks are statistical.
    # Simulating this run (joint TPE, 100 evaluations, 1 to 4 trials pending, completions
    # in random order) 297 times: evaluations within 0.5 of the minimum x = 0.5 numbered
    # 36 to 44 (mean 39.9, sd 1.3), so 25 lies 11 sd below; a search that ignores the
    # losses puts Binomial(100, 0.1) there and reaches 25 with probability 1.3e-5.  The
    # best x was at most 0.029 from 0.5 (median 0.0032; an exponential tail gives
    # 2 ** -(0.1 / 0.0032), below 1e-9, of missing 0.1; of missing 0.05, the bound this
    # check had, 2e-5), and the best alone hardly tells a model from chance: a random
    # search gets within 0.05 with probability 1 - 0.99 ** 100 = 63%.
    near = db.jobs.count_documents({s.EXP_KEY: "q", s.PARAMS: {"$gt": 0.0, "$lt": 1.0}})
    assert near >= 25, near
    best = db.jobs.find({s.EXP_KEY: "q", s.STATE: State.DONE}).sort(s.LOSS, 1).limit(1)[0]
    assert abs(best[s.PARAMS] - 0.5) < 0.1
    assert best[s.RESULT]["loss"] == best[s.PARAMS] ** 2 - best[s.PARAMS] + 1
    assert "100 trial(s) done" in result.stdout
    assert f"{best[s.PARAMS]}" in result.stdout.replace("\n", "")


def test_a_second_coordinator_is_refused_while_the_first_lives_and_changes_nothing(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    first = start_coordinator(db_url, "--exp", "recording", "--objective", RECORDING, "--run", "r",
                              "--max-evals", "5", "--algo", "tpe", log=tmp_path / "first.log")
    try:
        wait_for(lambda: (db.runs.find_one({s.ID: "r"}) or {}).get(s.RUN_MAX_EVALS) == 5,
                 what="the first coordinator to hold and configure the run")
        before = {k: v for k, v in db.runs.find_one({s.ID: "r"}).items() if k != s.RUN_COORDINATOR}
        second = run_cli("coordinator", "start", "--exp", "recording", "--objective", RECORDING,
                         "--mongo", db_url, "--run", "r", "--max-evals", "50", "--algo", "rand",
                         "--set", "mode=slow", url=db_url)
        assert second.returncode == 2
        assert "is already being coordinated by" in second.stderr
        assert "Traceback" not in second.stderr
        after = {k: v for k, v in db.runs.find_one({s.ID: "r"}).items() if k != s.RUN_COORDINATOR}
        for field in (s.RUN_MAX_EVALS, s.RUN_ALGO, s.RUN_SETTINGS):
            assert after[field] == before[field], field
    finally:
        stop(first)


def test_interrupted_coordinator_says_how_to_resume_and_resume_completes(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    worker = start_worker(db_url, "--run", "r", *FAST_WORKER, log=tmp_path / "worker.log")
    coordinator = start_coordinator(db_url, "--exp", "recording", "--objective", RECORDING, "--run", "r",
                                    "--max-evals", "30", "--set", "mode=slow", "--set", "seconds=0.05",
                                    log=tmp_path / "c1.log")
    try:
        wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE}) >= 5,
                 what="some trials to finish")
        coordinator.send_signal(signal.SIGINT)
        assert coordinator.wait(30) == 130
        log = (tmp_path / "c1.log").read_text()
        assert "is resumable with:" in log and "hpo-coord start --exp recording --run r" in log
        assert (db.runs.find_one({s.ID: "r"}) or {}).get(s.RUN_COORDINATOR) is None
        resumed = run_cli("coordinator", "start", "--exp", "recording", "--objective", RECORDING,
                          "--mongo", db_url, "--run", "r", "--max-evals", "30", url=db_url, timeout=300)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "resuming run" in resumed.stdout
    finally:
        stop(worker)
    assert db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE}) == 30
    assert db.jobs.count_documents({s.EXP_KEY: "r"}) == 30
    tids = sorted(j[s.TID] for j in db.jobs.find({s.EXP_KEY: "r"}))
    assert len(set(tids)) == 30


@pytest.mark.slow(reason="the default run kills (-9) and replaces the coordinator, which waits for the lease and "
                  "ends the run at exactly max-evals, in tests/chaos/test_coordinator.py::"
                  "test_coordinator_killed_and_terminated_then_resumed[4]")
def test_killed_coordinator_is_replaced_and_the_run_ends_at_max_evals(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    workers = [start_worker(db_url, "--run", "r", *FAST_WORKER, log=tmp_path / f"w{i}.log") for i in range(2)]
    args = ["--exp", "recording", "--objective", RECORDING, "--run", "r", "--max-evals", "40",
            "--lease", "2", "--set", "mode=slow", "--set", "seconds=0.05", "--queue", "3"]
    try:
        first = start_coordinator(db_url, *args, log=tmp_path / "c1.log")
        wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE}) >= 8,
                 what="some trials to finish")
        first.kill()
        first.wait()
        # A killed coordinator's run is taken over once its lease lapses (2 s here); a
        # start before that is refused (test_runs), so wait for it by the server's clock.
        wait_for(lambda: db.runs.find_one({s.ID: "r"})[s.RUN_COORDINATOR]["expires"] < server_time(db),
                 what="the killed coordinator's lease to lapse")
        second = start_coordinator(db_url, *args, log=tmp_path / "c2.log")
        code = second.wait(300)
        assert code == 0, (tmp_path / "c2.log").read_text()
    finally:
        for worker in workers:
            stop(worker)
    assert db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE}) == 40
    assert db.jobs.count_documents({s.EXP_KEY: "r"}) == 40
    assert db.evaluations.count_documents({}) == 40


# The issue asks for an outage of a minute; the suite's default run uses 8 s (the retry
# loop is the same), and `pytest -m slow` runs the full minute.
@pytest.mark.parametrize("outage_s", [8, pytest.param(60, marks=pytest.mark.slow)])
def test_the_run_survives_a_database_restart(private_server, tmp_path: Path, outage_s: float) -> None:
    url = f"{private_server.url}/outage"
    db = pymongo.MongoClient(url).get_default_database()
    worker = start_worker(url, "--run", "r", "--heartbeat", "0.5", "--lease", "20", "--poll-max", "0.05",
                          "--connect-timeout", "1", log=tmp_path / "worker.log")
    coordinator = start_coordinator(url, "--exp", "recording", "--objective", RECORDING, "--run", "r",
                                    "--max-evals", "25", "--lease", "20", "--set", "mode=slow",
                                    "--set", "seconds=0.1", "--connect-timeout", "1", log=tmp_path / "c.log")
    try:
        wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE}) >= 5,
                 what="some trials to finish")
        private_server.stop()
        time.sleep(outage_s)
        private_server.start()
        assert coordinator.wait(300) == 0, (tmp_path / "c.log").read_text()
    finally:
        stop(coordinator)
        stop(worker)
    assert db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE}) == 25
    assert db.jobs.count_documents({s.EXP_KEY: "r"}) == 25
    assert db.jobs.count_documents({s.EXP_KEY: "r", s.ATTEMPTS: {"$ne": 1}}) == 0
    log = " ".join((tmp_path / "c.log").read_text().split())
    assert f"waiting for the database at mongodb://127.0.0.1:{private_server.port}/outage with no time limit" in log


def test_with_an_outage_limit_the_coordinator_stops_with_a_clear_message(private_server, tmp_path: Path) -> None:
    url = f"{private_server.url}/limit"
    db = pymongo.MongoClient(url).get_default_database()
    coordinator = start_coordinator(url, "--exp", "recording", "--objective", RECORDING, "--run", "r",
                                    "--max-evals", "5", "--queue", "2", "--outage-timeout", "2",
                                    "--connect-timeout", "1", log=tmp_path / "c.log")
    try:
        wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r"}) >= 2, what="suggestions in the queue")
        private_server.stop()
        code = coordinator.wait(120)
    finally:
        stop(coordinator)
    log = " ".join((tmp_path / "c.log").read_text().split())
    assert code == 2, log
    assert f"the database at mongodb://127.0.0.1:{private_server.port}/limit has been unreachable" in log
    assert "outage limit of 2 s" in log and "--outage-timeout" in log
    assert "Traceback" not in log


def test_best_params_are_printed_as_json(db: Database, db_url: str) -> None:
    result = run_cli("coordinator", "start", "--exp", "nested", "--mongo", db_url, "--max-evals", "12",
                     "--local-workers", "1", "--algo", "rand", "--seed", "3", url=db_url, timeout=300)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout[result.stdout.index("best params:") + len("best params:"):])
    best = db.jobs.find({s.EXP_KEY: "nested", s.STATE: State.DONE}).sort(s.LOSS, 1).limit(1)[0]
    assert printed == best[s.PARAMS]


@pytest.mark.slow
def test_digits_on_a_laptop_with_nothing_else_set(tmp_path: Path) -> None:
    """The README's demo: an embedded server, 2 local workers, a real CNN (minutes)."""
    result = run_cli("coordinator", "start", "--exp", "digits", "--local-workers", "2", "--seed", "0",
                     cwd=tmp_path, timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "local MongoDB-protocol server (SecantusDB) at mongodb://127.0.0.1:" in text
    assert "run digits: 30 trial(s) done" in text
    best = float(text.split("best loss ")[1].split()[0])
    worst = float(text.split("worst successful loss ")[1].split()[0])
    assert best < 0.1 and worst - best > 0.05
    assert (tmp_path / ".hpo" / "db").is_dir()


def test_the_resume_hint_masks_the_password_whatever_the_url_looks_like() -> None:
    from coordinator.start import resume_hint

    for url in ("MONGODB://coord:s3cret@h:1/db", "mongodb://:s3cret@h/db", "mongodb://u:s3c@ret@h1,h2/db?replicaSet=rs0",
                "mongodb+srv://u:s3cret@cluster.example.net/hpo"):
        hint = resume_hint("recording", "r", url)
        assert "s3c" not in hint and "***@" in hint and hint.startswith("hpo-coord start --exp recording --run r --mongo")


def test_the_resume_hint_of_a_local_run_names_its_objective_and_directory() -> None:
    from coordinator.start import resume_hint

    assert resume_hint("mine", "r", None, ["--objective", "pkg.mod:mine", "--local-dir", "my data"]) == (
        "hpo-coord start --exp mine --run r --objective pkg.mod:mine --local-dir 'my data'")


def test_a_coordinator_without_workers_says_so_and_the_command_it_prints_works(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "c.log"
    coordinator = start_coordinator(db_url, "--exp", "recording", "--objective", RECORDING, "--run", "w",
                                    "--max-evals", "3", log=log)
    try:
        wait_for(lambda: "waiting for workers" in log.read_text(), timeout=120,
                 what="the coordinator to say it waits for workers")
        line = next(line for line in log.read_text().splitlines() if "waiting for workers" in line)
        command = shlex.split(line.split("start one with: ")[1])
        assert command == ["hpo-worker", "--mongo", db_url, "--run", "w", "--objective", RECORDING]
        worker = subprocess.Popen([sys.executable, "-m", "worker", *command[1:], "--idle-exit", "5"],
                                  cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "HPO_TEST_DB_URL": db_url},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert coordinator.wait(120) == 0, log.read_text()
        finally:
            stop(worker)
    finally:
        stop(coordinator)
    assert db.jobs.count_documents({s.EXP_KEY: "w", s.STATE: State.DONE}) == 3
    assert log.read_text().count("waiting for workers") == 1


def test_a_run_where_no_trial_succeeded_exits_with_code_3(db: Database, db_url: str) -> None:
    result = run_cli("coordinator", "start", "--exp", "recording", "--objective", RECORDING, "--mongo", db_url,
                     "--run", "f", "--max-evals", "2", "--local-workers", "1", "--set", "mode=fail",
                     url=db_url, timeout=300)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "no best trial: no trial has finished with status ok yet" in result.stdout
    assert db.jobs.count_documents({s.EXP_KEY: "f", s.STATE: State.DONE}) == 2


def test_the_worker_command_keeps_the_password_off_the_command_line() -> None:
    from coordinator.start import worker_command

    assert worker_command("mongodb://alice:s3cret@h1:1,h2:2/db?replicaSet=rs0", "r", []) == (
        "hpo-worker --mongo 'mongodb://alice@h1:1,h2:2/db?replicaSet=rs0' --run r  "
        "(with the password in $HPO_MONGO_PASSWORD or a file given with --mongo-password-file)")
    assert worker_command("mongodb://h:1/db", "my run", ["--objective", "m:e"]) == (
        "hpo-worker --mongo mongodb://h:1/db --run 'my run' --objective m:e")


# -- one SIGTERM always stops the coordinator (issue 12, defect 11) ---------------------------

def _assert_stopped_resumably(db: Database, code: int, log: Path, run: str) -> None:
    text = log.read_text()
    assert code == 130, text
    assert "is resumable with:" in text and f"hpo-coord start --exp recording --run {run}" in text, text
    assert "Traceback" not in text, text
    assert (db.runs.find_one({s.ID: run}) or {}).get(s.RUN_COORDINATOR) is None


def test_a_sigterm_that_lands_inside_a_del_still_stops_the_coordinator(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """No workers: without the stop the coordinator would wait for its trials forever."""
    log = tmp_path / "c.log"
    with open(log, "ab") as out:
        coordinator = subprocess.Popen(
            [sys.executable, "-m", "tests.support.sigterm_in_del", "start", "--mongo", db_url,
             "--exp", "recording", "--objective", RECORDING, "--run", "d", "--max-evals", "5"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    try:
        code = coordinator.wait(60)
    except subprocess.TimeoutExpired:
        stop(coordinator)
        raise AssertionError("the SIGTERM was lost: the coordinator kept running\n" + log.read_text()) from None
    assert "signal delivered inside __del__" in log.read_text()
    _assert_stopped_resumably(db, code, log, "d")


def test_one_sigterm_at_a_random_moment_always_stops_the_coordinator(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    rng = random.Random(12)
    for attempt in range(5):
        run = f"t{attempt}"
        log = tmp_path / f"{run}.log"
        coordinator = start_coordinator(db_url, "--exp", "recording", "--objective", RECORDING, "--run", run,
                                        "--max-evals", "50", "--queue", "8", log=log)
        try:
            wait_for(lambda: (db.runs.find_one({s.ID: run}) or {}).get(s.RUN_COORDINATOR) is not None,
                     what="the coordinator to hold the run")
            time.sleep(rng.uniform(0, 1.5))
            coordinator.send_signal(signal.SIGTERM)
            code = coordinator.wait(60)
        except subprocess.TimeoutExpired:
            stop(coordinator)
            raise AssertionError(f"attempt {attempt}: one SIGTERM did not stop the coordinator\n"
                                 + log.read_text()) from None
        _assert_stopped_resumably(db, code, log, run)


def test_malformed_documents_in_the_run_are_skipped_with_a_warning_each(db: Database, db_url: str) -> None:
    """Issue 12 defect 9: one bad document used to crash `hpo-coord start` in MongoTrials.refresh."""
    misc = {"tid": 100, "cmd": None, "idxs": {"x": [100]}, "vals": {"x": [0.5]}}
    bad = [
        {s.STATE: State.DONE, s.TID: 100, s.SPEC: None, s.RESULT: {"status": "ok", "loss": 1.0}},  # no misc
        {s.STATE: State.DONE, s.TID: 101, s.SPEC: None, s.RESULT: "ok", s.MISC: {**misc, "tid": 101}},
        {s.STATE: "done", s.TID: 102, s.SPEC: None, s.RESULT: {"status": "ok", "loss": 1.0}, s.MISC: misc},
        {s.STATE: State.DONE, s.SPEC: None, s.RESULT: {"status": "ok", "loss": 1.0}, s.MISC: misc},  # no tid
    ]
    ids = db.jobs.insert_many([{**doc, s.EXP_KEY: "r"} for doc in bad]).inserted_ids
    result = run_cli("coordinator", "start", "--exp", "recording", "--objective", RECORDING, "--mongo", db_url,
                     "--run", "r", "--max-evals", "4", "--local-workers", "1", url=db_url, timeout=300)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, output
    assert db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE, s.ID: {"$nin": ids}}) == 4
    for oid in ids:
        assert output.count(f"skipping job document _id=ObjectId('{oid}')") == 1, output
    assert "Traceback" not in output


def test_the_summary_of_a_run_whose_best_trial_is_not_a_hyperopt_trial(db: Database) -> None:
    """The best ok trial may be a document hyperopt cannot use as a trial (here its
    ``misc`` has no ``tid``), which ``MongoTrials`` leaves out: the summary still names
    it, with no worst loss, instead of failing on an empty ``max()`` at the end of a run."""
    from hyperopt import hp

    from coordinator.start import summarize
    from jobstore.store import Store
    from jobstore.trials import MongoTrials
    from objectives.base import Experiment

    experiment = Experiment(name="summary", space={"x": hp.uniform("x", 0, 1)}, objective=lambda p, r: 0.0)
    db[s.JOBS].insert_one({s.EXP_KEY: "r", s.TID: 0, s.STATE: State.DONE, s.SPEC: None,
                           s.RESULT: {"status": "ok", "loss": 0.25},
                           s.MISC: {"vals": {"x": [0.5]}, "idxs": {"x": [0]}}})
    trials = MongoTrials(Store(db), exp_key="r")
    assert trials.trials == []  # left out: misc.tid is missing
    summary = summarize(trials, "r", experiment)
    assert summary.best is not None and summary.best["params"] == {"x": 0.5}
    assert summary.worst_loss is None


def test_local_workers_of_a_store_without_a_url_are_refused_before_the_run_is_written(db: Database) -> None:
    """A store made from a handle cannot hand its connection to child processes: that is
    found before the run is created or its coordinator lease taken (which nothing would
    release)."""
    from rich.console import Console

    from coordinator.start import StartOptions, start_run
    from jobstore.store import Store
    from objectives.digits import digits

    run = "no-url"
    options = StartOptions(run=run, max_evals=1, algo=None, local_workers=1)
    with pytest.raises(ValueError, match="child processes cannot open it"):
        start_run(Store(db), digits, options, Console())
    assert db[s.RUNS].find_one({s.ID: run}) is None
