"""The Docker Compose stack, run for real: build, ``up --scale worker=4``, a run, a killed
worker, a drain, scaling down and up, ``down -v``.

Marked ``docker`` and left out of the default ``python -m pytest``; ``.ci/run`` runs it
after ``deploy/test-docker/setup-host.sh`` (Docker, compose v2, local base images, the
wheel server):

    python -m pytest -m docker tests/deploy/test_compose_stack.py -o log_cli=true --log-cli-level=INFO

It uses the production docker-compose.yml with deploy/compose/cpu.yml and
deploy/test-docker/compose.test.yml (SecantusDB for mongo:8.0, a local torch base), as
project ``hpo-test`` so that a stack named ``hpo`` on the same host is not touched.
The host reaches the stack only through MongoDB's port published on 127.0.0.1; the
containers talk to each other on the network compose creates.  Each step's time is
logged.  Where Docker cannot run the tests skip, saying why; with
HPO_DOCKER_TEST_REQUIRED=1 (set by .ci/run after a successful set-up) they fail instead.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo.errors import OperationFailure

from jobstore import schema as s
from jobstore.embedded import free_port
from jobstore.schema import State

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "hpo-test"
COMPOSE_FILES = ("docker-compose.yml", "deploy/compose/cpu.yml", "deploy/test-docker/compose.test.yml")
LOCAL_IMAGES = ("local/pytorch:test", "local/secantusdb:test")
WORKERS = 4
QUADRATIC_EVALS = 60
DIGITS_RUN = "digits-docker"
COORDINATOR = f"{PROJECT}-coordinator-digits"
DIGITS_EVALS = 16
# Long enough that trials are still in training once the stack is scaled back up to 4
# (with 3 epochs, a quiet host's 2 workers finished the run first and the kill found
# nothing to kill).
DIGITS_EPOCHS = 10
MIN_COMPOSE = (2, 24)


def docker_unavailable() -> str | None:
    """Why this host cannot run the stack, or None."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed (deploy/test-docker/setup-host.sh installs it)"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return f"dockerd does not answer (`docker info`: {info.stderr.strip()[-300:]})"
    version = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True,
                             text=True, timeout=60)
    found = re.match(r"v?(\d+)\.(\d+)", version.stdout.strip())
    if version.returncode != 0 or not found or tuple(map(int, found.groups())) < MIN_COMPOSE:
        return (f"docker compose {'.'.join(map(str, MIN_COMPOSE))}+ is needed, found "
                f"{version.stdout.strip() or version.stderr.strip()[-200:]!r}")
    for image in LOCAL_IMAGES:
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            return f"image {image} is missing: run deploy/test-docker/setup-host.sh"
    port = os.environ.get("HPO_WHEEL_PORT", "3141")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).close()
    except OSError as error:
        return (f"the wheel server on 127.0.0.1:{port} does not answer ({error}): "
                "run deploy/test-docker/setup-host.sh")
    return None


@contextmanager
def step(name: str) -> Iterator[None]:
    """Logs how long the step took."""
    log.info("step: %s ...", name)
    start = time.monotonic()
    try:
        yield
    except BaseException:
        log.info("step: %s FAILED after %.1f s", name, time.monotonic() - start)
        raise
    log.info("step: %s: %.1f s", name, time.monotonic() - start)


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """``check()``'s first truthy value; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Stack:
    """`docker compose` for project hpo-test, and the run's database seen from the host."""

    def __init__(self, env_file: Path, mongo_port: int, app_user: str, app_password: str):
        self.env_file = env_file
        self.mongo_port = mongo_port
        self.app_user = app_user
        self.app_password = app_password
        # Only what docker needs: HPO_* variables of the caller would override .env.
        self.env = {key: value for key, value in os.environ.items()
                    if key in ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "TMPDIR")}
        self.env["DOCKER_BUILDKIT"] = "0"  # the classic builder: no frontend image to pull
        self._app_client: pymongo.MongoClient | None = None

    def command(self, *args: str) -> list[str]:
        files = [arg for name in COMPOSE_FILES for arg in ("-f", str(ROOT / name))]
        return ["docker", "compose", "-p", PROJECT, "--project-directory", str(ROOT),
                "--env-file", str(self.env_file), *files, *args]

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.command(*args), capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        if check and done.returncode != 0:
            pytest.fail(f"docker compose {' '.join(args)} exited {done.returncode}:\n"
                        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def popen(self, *args: str, log_file: Path) -> subprocess.Popen[bytes]:
        with open(log_file, "wb") as out:
            return subprocess.Popen(self.command(*args), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.env)

    def containers(self, service: str, *, running: bool = True) -> list[dict[str, str]]:
        """Containers of ``service``: id, hostname (what the worker's owner names), state, exit code."""
        args = ["ps", "-q"] + ([] if running else ["-a"]) + [service]
        ids = self.compose(*args).stdout.split()
        if not ids:
            return []
        fmt = "{{.Id}} {{.Config.Hostname}} {{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}"
        out = subprocess.run(["docker", "inspect", "--format", fmt, *ids], capture_output=True,
                             text=True, check=True).stdout
        keys = ("id", "hostname", "status", "exit_code", "restarts")
        return [dict(zip(keys, line.split())) for line in out.splitlines()]

    def project_resources(self) -> dict[str, list[str]]:
        """Everything Docker still holds for the project: containers, volumes, networks."""
        label = f"label=com.docker.compose.project={PROJECT}"
        listings = {
            "containers": ["docker", "ps", "-a", "-q", "--filter", label],
            "volumes": ["docker", "volume", "ls", "-q", "--filter", label],
            "networks": ["docker", "network", "ls", "-q", "--filter", label],
        }
        return {kind: subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
                for kind, cmd in listings.items()}

    def remove_everything(self) -> None:
        """``down -v``, after removing any container of the project that is left
        (``down`` keeps a one-off ``run`` container that is still running, and with it
        the network and the volumes it uses)."""
        for container in self.project_resources()["containers"]:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        self.compose("down", "-v", "--remove-orphans", check=False)

    def client(self, **auth: str) -> pymongo.MongoClient:
        return pymongo.MongoClient(host="127.0.0.1", port=self.mongo_port, authSource="admin",
                                   serverSelectionTimeoutMS=10_000, **auth)

    @property
    def db(self) -> pymongo.database.Database:
        """The hpo database, as the application user."""
        if self._app_client is None:
            self._app_client = self.client(username=self.app_user, password=self.app_password)
        return self._app_client["hpo"]

    def close(self) -> None:
        if self._app_client is not None:
            self._app_client.close()

    def jobs(self, run: str) -> list[dict[str, Any]]:
        return list(self.db[s.JOBS].find(
            {s.EXP_KEY: run}, {s.TID: 1, s.STATE: 1, s.OWNER: 1, s.ATTEMPTS: 1, s.METRICS: 1}))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = docker_unavailable()
    if reason:
        if os.environ.get("HPO_DOCKER_TEST_REQUIRED") == "1":
            pytest.fail(f"HPO_DOCKER_TEST_REQUIRED=1 but {reason}")
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("compose")
    app_password = secrets.token_hex(16)
    port = free_port()
    env_file = directory / "test.env"
    env_file.write_text(
        f"MONGO_ROOT_USERNAME=admin\nMONGO_ROOT_PASSWORD={secrets.token_hex(16)}\n"
        f"HPO_MONGO_USER=hpo\nHPO_MONGO_PASSWORD={app_password}\nHPO_MONGO_DB=hpo\n"
        f"HPO_GPUS_PER_WORKER=1\nHPO_TEST_MONGO_PORT={port}\n"
        f"HPO_DASHBOARD_TOKEN={secrets.token_hex(16)}\n"  # required by the (unstarted) dashboard service
    )
    stack = Stack(env_file, port, "hpo", app_password)
    stack.remove_everything()  # what an interrupted earlier run left
    try:
        with step("docker compose build (worker and coordinator, same Dockerfile)"):
            stack.compose("build", timeout=1800)
        with step(f"docker compose up -d --scale worker={WORKERS}"):
            stack.compose("up", "-d", "--scale", f"worker={WORKERS}")
        yield stack
    finally:
        for service in ("mongo", "worker"):
            logs = stack.compose("logs", "--no-color", "--tail", "200", service, check=False)
            (directory / f"{service}.log").write_text(logs.stdout + logs.stderr)
        stack.close()
        stack.remove_everything()
        log.info("container logs kept in %s", directory)


def test_up_starts_workers_and_mongo_with_auth(stack: Stack) -> None:
    workers = stack.containers("worker")
    assert len(workers) == WORKERS and {w["status"] for w in workers} == {"running"}, workers
    anonymous = stack.client()
    with pytest.raises(OperationFailure):  # the mongo service requires authentication
        anonymous["hpo"][s.JOBS].insert_one({"written": "without credentials"})
    anonymous.close()
    assert stack.db.command("ping")["ok"] == 1


def test_quadratic_run_does_every_trial_once(stack: Stack) -> None:
    """A 60-trial run of microsecond trials through the coordinator container.  Which
    workers take them is a race (a worker waiting between polls may get none), so the
    spread is only logged here; that every worker takes trials is checked on the digits
    run, whose trials last seconds."""
    hosts = {w["hostname"] for w in stack.containers("worker")}
    with step(f"wait until the {len(hosts)} workers have registered"):
        wait_for("every worker container's worker record", lambda: hosts <= {
            w[s.WORKER_HOST] for w in stack.db[s.WORKERS].find({s.WORKER_STATUS: {"$ne": "stopped"}})
        }, timeout=300)
    with step(f"docker compose run --rm coordinator start --exp quadratic --max-evals {QUADRATIC_EVALS}"):
        stack.compose("run", "--rm", "coordinator", "start", "--exp", "quadratic",
                      "--max-evals", str(QUADRATIC_EVALS), timeout=600)
    jobs = stack.jobs("quadratic")
    assert sorted(job[s.TID] for job in jobs) == list(range(QUADRATIC_EVALS)), "each tid exactly once"
    assert {job[s.STATE] for job in jobs} == {State.DONE}
    owners = Counter(job[s.OWNER].rsplit(":", 1)[0] for job in jobs)
    log.info("quadratic trials per worker container: %s", dict(owners))
    assert set(owners) <= hosts, f"trials by {dict(owners)}; worker containers {sorted(hosts)}"


def test_drain_scale_and_kill_lose_nothing(stack: Stack, tmp_path: Path) -> None:
    """A digits run (torch in every worker) while the workers are stopped (drain), scaled
    to 2 and back to 4, and one of them is killed mid-trial: every trial ends done once."""
    coordinator_log = tmp_path / "coordinator.log"
    with step(f"start a {DIGITS_EVALS}-trial digits run ({DIGITS_EPOCHS} epochs) in the background"):
        coordinator = stack.popen(
            "run", "--rm", "--name", COORDINATOR, "coordinator", "start", "--exp", "digits", "--run", DIGITS_RUN,
            "--max-evals", str(DIGITS_EVALS), "--set", f"epochs={DIGITS_EPOCHS}",
            log_file=coordinator_log,
        )
    try:
        drain(stack)
        with step("docker compose up -d --scale worker=2: the run goes on"):
            stack.compose("up", "-d", "--scale", "worker=2")
            assert len(stack.containers("worker")) == 2
            done_before = done_count(stack)
            wait_for("a trial finished by the 2 workers",
                     lambda: done_count(stack) > done_before, timeout=300)
        with step(f"docker compose up -d --scale worker={WORKERS}"):
            stack.compose("up", "-d", "--scale", f"worker={WORKERS}")
            assert len(stack.containers("worker")) == WORKERS
        killed_tid, killed_owner = kill_a_worker_mid_trial(stack)
        with step(f"trial {killed_tid} requeued and finished by another worker"):
            finished = wait_for(f"trial {killed_tid} to be done", lambda: next(
                (j for j in stack.jobs(DIGITS_RUN) if j[s.TID] == killed_tid and j[s.STATE] == State.DONE),
                None), timeout=300)
        log.info("trial %s: killed on %s, done by %s after %s claims",
                 killed_tid, killed_owner, finished[s.OWNER], finished[s.ATTEMPTS])
        assert finished[s.OWNER] != killed_owner
        assert finished[s.ATTEMPTS] >= 2, "the lost claim counts as an attempt"
        with step("the digits run finishes"):
            code = coordinator.wait(timeout=900)
        assert code == 0, coordinator_log.read_text()[-3000:]
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            subprocess.run(["docker", "rm", "-f", COORDINATOR], capture_output=True)
    jobs = stack.jobs(DIGITS_RUN)
    assert sorted(job[s.TID] for job in jobs) == list(range(DIGITS_EVALS)), "each tid exactly once"
    assert {job[s.STATE] for job in jobs} == {State.DONE}, jobs


def training(job: dict[str, Any]) -> bool:
    """Whether ``job`` is running and its objective has reported an epoch (the worker has
    claimed it, loaded the experiment and is training)."""
    return job[s.STATE] == State.RUNNING and bool(job.get(s.METRICS))


def drain(stack: Stack) -> None:
    """``docker compose stop worker`` while every worker trains: each exits 0 and every
    trial it held is either finished or back in the queue."""
    hosts = {w["hostname"] for w in stack.containers("worker")}

    def trained_by() -> set[str]:
        return {j[s.OWNER].rsplit(":", 1)[0] for j in stack.jobs(DIGITS_RUN) if j.get(s.METRICS)}

    def all_training() -> bool:
        return trained_by() >= hosts and any(training(j) for j in stack.jobs(DIGITS_RUN))

    with step(f"wait until all {len(hosts)} workers train (each took a digits trial)"):
        deadline = time.monotonic() + 600
        while not all_training() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert trained_by() >= hosts, (
            f"within 600 s only {sorted(trained_by())} of the worker containers {sorted(hosts)} "
            "trained a trial")
        wait_for("a trial in training", all_training, timeout=300)
    with step("docker compose stop worker (drain)"):
        stack.compose("stop", "worker", timeout=300)
    stopped = stack.containers("worker", running=False)
    assert len(stopped) == WORKERS, stopped
    assert all(w["status"] == "exited" and w["exit_code"] == "0" for w in stopped), stopped
    states = Counter(job[s.STATE] for job in stack.jobs(DIGITS_RUN))
    log.info("after the drain: %s", {State(k).name: v for k, v in states.items()})
    assert State.RUNNING not in states, "a stopped worker left a trial running"
    assert set(states) <= {State.NEW, State.DONE}, states


def kill_a_worker_mid_trial(stack: Stack) -> tuple[int, str]:
    """``docker kill``s the container of a worker that holds a running trial, and checks
    that the trial was still running when the worker died.  Docker does not restart a
    killed container (restart: unless-stopped), so no later claim can be that worker's."""
    containers = {w["hostname"]: w["id"] for w in stack.containers("worker")}

    def a_trial_in_training() -> dict[str, Any] | None:
        jobs = stack.jobs(DIGITS_RUN)
        if len(jobs) == DIGITS_EVALS and all(j[s.STATE] == State.DONE for j in jobs):
            pytest.fail(f"the digits run finished before a worker could be killed mid-trial: "
                        f"its trials are too short for this host (raise DIGITS_EPOCHS, now {DIGITS_EPOCHS})")
        return next((j for j in jobs if training(j) and j[s.OWNER].rsplit(":", 1)[0] in containers), None)

    for _ in range(5):
        job = wait_for("a digits trial in training", a_trial_in_training, timeout=300, interval=0.2)
        container = containers[job[s.OWNER].rsplit(":", 1)[0]]
        with step(f"docker kill the worker running trial {job[s.TID]} ({job[s.OWNER]})"):
            subprocess.run(["docker", "kill", container], check=True, capture_output=True)
        after = next(j for j in stack.jobs(DIGITS_RUN) if j[s.TID] == job[s.TID])
        if after[s.STATE] == State.RUNNING and after[s.OWNER] == job[s.OWNER]:
            return job[s.TID], job[s.OWNER]
        log.info("trial %s finished before the kill landed; killing another worker", job[s.TID])
        del containers[job[s.OWNER].rsplit(":", 1)[0]]
    pytest.fail("no worker could be killed mid-trial in 5 tries")


def done_count(stack: Stack) -> int:
    return sum(job[s.STATE] == State.DONE for job in stack.jobs(DIGITS_RUN))


def test_down_v_leaves_nothing(stack: Stack) -> None:
    with step("docker compose down -v"):
        stack.compose("down", "-v")
    assert stack.project_resources() == {"containers": [], "volumes": [], "networks": []}
