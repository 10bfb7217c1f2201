"""``hpo-coord start --local-workers`` and ``--trial-timeout`` with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pymongo
import pytest
from pymongo.database import Database

from cli_support.console import EXIT_TRIAL_HUNG
from coordinator.local_workers import MAX_RESTARTS, LocalWorkers
from jobstore import schema as s
from jobstore.embedded import SERVER_PROGRAM, EmbeddedServer
from jobstore.schema import State
from tests.support.processes import FAST, RECORDING, REPO, run_cli, start_coordinator, stop, wait_for


def test_a_local_worker_killed_mid_run_is_restarted_and_its_trial_requeued_at_once(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    """The worker is killed in its first trial (which hangs: only a kill ends it); the
    coordinator, which saw it die, returns that trial to the queue at once rather than
    when its 30 s lease lapses, and the replacement runs it (as an ordinary trial) and
    the rest."""
    coordinator = start_coordinator(db_url, "--exp", "recording", "--objective", RECORDING, "--run", "r",
                                    "--max-evals", "5", "--local-workers", "1", "--set", "mode=hang",
                                    "--set", "only_first=true", log=tmp_path / "c.log")
    try:
        wait_for(lambda: db.evaluations.count_documents({"mode": "hang"}) == 1, timeout=120,
                 what="the first trial to start")
        held = db.jobs.find_one({s.EXP_KEY: "r", s.STATE: State.RUNNING})
        first = db.workers.find_one()[s.WORKER_PID]
        assert held[s.OWNER].endswith(f":{first}")
        os.kill(first, signal.SIGKILL)
        assert coordinator.wait(240) == 0, (tmp_path / "c.log").read_text()[-3000:]
    finally:
        stop(coordinator)
    log = " ".join((tmp_path / "c.log").read_text().split())
    assert f"local worker {first} exited with code -9; restarting it" in log
    assert (f"run 'r' trial {held[s.TID]}: worker {held[s.OWNER]} exited with code -9; "
            "job requeued (attempt 1 of 3)") in log
    assert db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE}) == 5
    assert db.jobs.find_one({s.EXP_KEY: "r", s.TID: held[s.TID]})[s.ATTEMPTS] == 2
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
        super().__init__(1, {}, "r", extra_args=[], check_interval=0.01)
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


# -- credentials reach the local workers, never on a command line -------------------------

PASSWORD = "Zq9-local-secret"


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[str]:
    """A server that requires authentication, with user ``alice`` (password
    :data:`PASSWORD`, in ``admin`` as deploy/compose creates it, readWrite on ``hpo``);
    its URL without the password."""
    storage = tmp_path / "auth-db"
    with EmbeddedServer(storage) as open_server:  # provision the user while auth is off
        client: pymongo.MongoClient = pymongo.MongoClient(open_server.url)
        client["admin"].command("createUser", "alice", pwd=PASSWORD, roles=[{"role": "readWrite", "db": "hpo"}])
        client.close()
        port = open_server.port
    program = Path(sys.executable).with_name(SERVER_PROGRAM)
    with open(tmp_path / "auth-db.log", "ab") as log:
        server = subprocess.Popen([str(program if program.exists() else SERVER_PROGRAM), "--host", "127.0.0.1",
                                   "--port", str(port), "--storage-path", str(storage), "--auth"],
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        probe: pymongo.MongoClient = pymongo.MongoClient(
            f"mongodb://alice:{PASSWORD}@127.0.0.1:{port}/hpo?authSource=admin", serverSelectionTimeoutMS=500)
        wait_for(lambda: _answers(probe), timeout=60, what="the server with authentication to start")
        probe.close()
        yield f"mongodb://alice@127.0.0.1:{port}/hpo?authSource=admin"
    finally:
        server.terminate()
        server.wait(30)


def _answers(client: pymongo.MongoClient) -> bool:
    try:
        client["hpo"].command("ping")
        return True
    except pymongo.errors.PyMongoError:
        return False


def test_local_workers_use_the_password_file_of_the_coordinator(auth_server: str, tmp_path: Path) -> None:
    """Found in issue 13: children got only $HPO_MONGO_URL, not a --mongo-password-file."""
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    log = tmp_path / "c.log"
    coordinator = start_coordinator(auth_server, "--exp", "quadratic", "--run", "a", "--max-evals", "3",
                                    "--local-workers", "1", "--mongo-password-file", str(secret), log=log)
    try:
        code = coordinator.wait(240)
    finally:
        stop(coordinator)
    assert code == 0, log.read_text()[-3000:]
    client: pymongo.MongoClient = pymongo.MongoClient(auth_server.replace("alice@", f"alice:{PASSWORD}@"))
    try:
        assert client["hpo"].jobs.count_documents({s.EXP_KEY: "a", s.STATE: State.DONE}) == 3
        assert client["hpo"].workers.count_documents({}) == 1
    finally:
        client.close()
    assert PASSWORD not in log.read_text()


def test_a_local_workers_credentials_travel_in_its_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spawned: list[tuple[list[str], dict[str, str]]] = []

    def popen(command: list[str], *, env: dict[str, str], **options: Any) -> Any:
        spawned.append((command, env))
        return SimpleNamespace(pid=1)

    monkeypatch.setattr(subprocess, "Popen", popen)
    environment = {"HPO_MONGO_URL": f"mongodb://alice:{PASSWORD}@db.example/hpo",
                   "HPO_MONGO_PASSWORD_FILE": str(tmp_path / "password")}
    LocalWorkers(2, environment, "r", extra_args=["--objective", "pkg:exp"])._spawn()
    [(command, env)] = spawned
    assert not any(PASSWORD in arg or "password" in arg for arg in command), command
    assert {key: env[key] for key in environment} == environment


def test_local_workers_wait_for_the_database_as_long_as_the_coordinator(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """By default (``hpo-coord start`` waits for an outage however long) local workers are
    started with no outage limit: a worker that gave up would exit 2, which is not
    restarted, and the coordinator would be left without workers once the database is
    back.  With ``--outage-timeout`` they get the coordinator's limit."""
    spawned: list[list[str]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda command, **options: spawned.append(command))
    LocalWorkers(1, {}, "r", extra_args=[])._spawn()
    LocalWorkers(1, {}, "r", extra_args=[], outage_timeout=30)._spawn()
    limits = [command[command.index("--outage-timeout") + 1] for command in spawned]
    assert limits == ["inf", "30.0"]


def test_a_local_worker_gives_up_after_the_coordinators_outage_limit(
        private_server: EmbeddedServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    url = f"{private_server.url}/hpo"
    workers = LocalWorkers(1, {"HPO_MONGO_URL": url, "PYTHONPATH": str(REPO)}, "r", outage_timeout=2,
                           extra_args=["--objective", RECORDING, *FAST, "--connect-timeout", "1",
                                       "--gpus-per-worker", "0"])
    try:
        workers.start()
        # closed before the server stops: closing a client whose server is gone waits
        # out its server selection timeout (30 s) to end its sessions
        with pymongo.MongoClient(url) as client:
            wait_for(lambda: client.hpo.workers.count_documents({}) == 1, what="the worker to register")
        process = workers.processes[0]
        assert process is not None
        private_server.stop()
        assert process.wait(60) == 2
    finally:
        workers.stop()
    assert "longer than the outage limit of 2 s" in " ".join(capfd.readouterr().err.split())
