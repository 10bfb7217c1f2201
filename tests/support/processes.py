"""Starting real ``hpo-worker`` and ``hpo-coord`` processes for tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobstore import schema as s
from jobstore.schema import State

RECORDING = "tests.support.experiments:recording"
REPO = Path(__file__).resolve().parents[2]
FAST = ["--heartbeat", "0.2", "--lease", "1", "--poll-max", "0.05"]
"""``hpo-worker`` options for tests: a short lease, renewed often, and quick polls."""


def _env(url: str, extra: dict[str, str] | None) -> dict[str, str]:
    env = {**os.environ, "HPO_TEST_DB_URL": url, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
           "COLUMNS": "200"}
    env.pop("HPO_MONGO_URL", None)
    return {**env, **(extra or {})}


def start_worker(url: str, *args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``hpo-worker --mongo URL ARGS`` with its output in ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "--mongo", url, "--objective", RECORDING, *args],
            stdout=out, stderr=subprocess.STDOUT, env=_env(url, env), cwd=REPO,
        )


def start_coordinator(url: str | None, *args: str, log: Path, env: dict[str, str] | None = None,
                      cwd: Path = REPO) -> subprocess.Popen[bytes]:
    """``hpo-coord start [--mongo URL] ARGS`` with its output in ``log``."""
    mongo = ["--mongo", url] if url else []
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "coordinator", "start", *mongo, *args],
            stdout=out, stderr=subprocess.STDOUT, env=_env(url or "", env), cwd=cwd,
        )


def start_cli(module: str, *args: str, url: str = "", env: dict[str, str] | None = None,
              cwd: Path = REPO) -> subprocess.Popen[str]:
    """Start ``python -m MODULE ARGS`` with its output captured; :func:`finish_cli` waits for it."""
    return subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(url, env), cwd=cwd)


def finish_cli(process: subprocess.Popen[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Wait for a process of :func:`start_cli` and return its output; after ``timeout``
    seconds it is killed and :class:`subprocess.TimeoutExpired` raised."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_cli(module: str, *args: str, url: str = "", env: dict[str, str] | None = None,
            timeout: float = 120, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run ``python -m MODULE ARGS`` to completion and capture its output."""
    return finish_cli(start_cli(module, *args, url=url, env=env, cwd=cwd), timeout)


def wait_for(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """Terminate ``process`` if it still runs; its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def finish_lost_job(db: Any, url: str, *args: str, log: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start a worker (``hpo-worker --mongo URL ARGS``) to take over run ``r``'s one job,
    lost by a worker the test killed; wait until the job is done, stop the worker (it must
    exit 0) and return it with the job, which must be done on its second attempt.

    No --idle-exit: finding the lost job takes the lease plus a requeue tick or two, which
    a busy host can stretch past any idle limit short enough to keep a test quick."""
    worker = start_worker(url, "--run", "r", *args, log=log)
    try:
        wait_for(lambda: db.jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE}) == 1, timeout=120,
                 what="a new worker to finish the requeued job")
    finally:
        code = stop(worker)
    assert code == 0
    job = db.jobs.find_one({s.EXP_KEY: "r"})
    assert job[s.STATE] == State.DONE and job[s.ATTEMPTS] == 2
    return worker, job


def start_dashboard(url: str, port: int, *args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``hpo-coord dashboard --mongo URL --port PORT ARGS`` with its output in ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "coordinator", "dashboard", "--mongo", url, "--port", str(port), *args],
            stdout=out, stderr=subprocess.STDOUT, env=_env(url, env), cwd=REPO,
        )
