"""Plumbing that runs hyperopt's own MongoTrials tests against this project.

The tests are the installed ``hyperopt/tests/integration/test_mongoexp.py``, imported
unchanged (see ``test_hyperopt_mongoexp.py`` and docs/conformance.md).  They reach a
database and workers only through a few names of their module; :func:`install` swaps
exactly those, as the tests' own comments describe them:

* ``TempMongo`` ("context manager for tests requiring a live database": it launches a
  fresh ``mongod`` on port 22334) becomes :class:`ServerTempMongo`: fresh databases on
  the test session's server (SecantusDB, or ``HPO_TEST_MONGO_URL``), dropped on entry
  and exit, so each ``with TempMongo()`` starts as empty as a new ``mongod``.
* ``MongoTrials`` becomes ``jobstore.trials.MongoTrials``: the one-import switch the
  README promises.
* ``MongoWorker`` (hyperopt's in-process worker) becomes :class:`HpoWorker`, whose
  ``run_one`` runs one ``hpo-worker --allow-pickle --max-jobs 1`` process, the way a
  user of this project runs workers for a plain hyperopt script.

The module also probes for ``mongod`` when it is imported, to skip itself when there is
none: :func:`mongod_on_path` puts ``bin/mongod`` (which starts the test server in
mongod's place) first on PATH for that import, and the worker processes get the same
PATH, since they import the module too to unpickle its objectives.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pymongo
import pytest
from hyperopt.mongoexp import ReserveTimeout

from jobstore import schema as s
from jobstore.embedded import _program as server_program
from jobstore.trials import MongoTrials
from tests.conftest import with_database
from tests.support.processes import REPO

SHIM_DIR = Path(__file__).resolve().parent / "bin"
WORKER_TIMEOUT_S = 300.0
"""How long one ``run_one`` worker process may take beyond its reserve timeout before
it is killed and the call fails (its job is a quick function)."""


def shim_environment() -> dict[str, str]:
    """Environment variables under which ``mongod`` is ``bin/mongod``."""
    return {
        "PATH": f"{SHIM_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        "HPO_CONFORMANCE_SERVER": server_program(),
    }


@contextmanager
def mongod_on_path() -> Iterator[None]:
    """Run the block (the import of hyperopt's test module) with ``bin/mongod`` on PATH."""
    saved = {name: os.environ.get(name) for name in ("PATH", "HPO_CONFORMANCE_SERVER")}
    os.environ.update(shim_environment())
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class ServerTempMongo:
    """hyperopt's ``TempMongo`` over the session's server (see the module docstring).

    ``connection_string(dbname)`` gives hyperopt's ``mongo://HOST:PORT/DB/jobs`` form,
    with the database name prefixed by the session's ``prefix``; ``mongo_jobs`` gives
    hyperopt's own ``MongoJobs``, as the original does.
    """

    server_url: ClassVar[str]
    prefix: ClassVar[str]

    def __init__(self, workdir: str | None = None) -> None:
        self.workdir = workdir

    def __enter__(self) -> "ServerTempMongo":
        self._drop_databases()
        return self

    def __exit__(self, *args: object) -> None:
        self._drop_databases()

    @classmethod
    def _drop_databases(cls) -> None:
        client: pymongo.MongoClient = pymongo.MongoClient(cls.server_url)
        try:
            for name in client.list_database_names():
                if name.startswith(cls.prefix):
                    client.drop_database(name)
        finally:
            client.close()

    @classmethod
    def database_url(cls, database: str) -> str:
        """``mongodb://HOST:PORT/database`` on the server (what ``hpo-worker --mongo`` takes)."""
        return with_database(cls.server_url, database)

    @staticmethod
    def connection_string(dbname: str) -> str:
        parts = urlsplit(ServerTempMongo.database_url(ServerTempMongo.prefix + dbname))
        query = f"?{parts.query}" if parts.query else ""
        return f"mongo://{parts.netloc}{parts.path}/jobs{query}"

    @staticmethod
    def mongo_jobs(dbname: str) -> Any:
        from hyperopt.mongoexp import MongoJobs

        return MongoJobs.new_from_connection_str(ServerTempMongo.connection_string(dbname))


class HpoWorker:
    """hyperopt's ``MongoWorker`` as ``hpo-worker`` processes (see the module docstring).

    ``workdir`` (relative, as the tests give it) is made under ``root``, and each process
    runs there, as hyperopt's worker runs the objective in its workdir.  The created
    workdir is left for the test's temporary directory to clean up: the tests run
    workers side by side in one workdir, so none may erase it under another.
    """

    root: ClassVar[Path]

    def __init__(self, mj: Any, poll_interval: float = 3.0, workdir: str | None = None,
                 exp_key: str | None = None, logfilename: str | None = "logfile.txt") -> None:
        self.mj = mj
        self.poll_interval = poll_interval
        self.workdir = workdir
        self.exp_key = exp_key
        self.logfilename = logfilename

    def run_one(self, host_id: Any = None, reserve_timeout: float | None = None,
                erase_created_workdir: bool = False) -> None:
        """Run one job in an ``hpo-worker`` process.

        Raises:
            ReserveTimeout: no job came within ``reserve_timeout`` seconds, as hyperopt's does.
            RuntimeError: the worker failed or hung; the message has its output.
        """
        workdir = self.root / (self.workdir or "hpo-worker")
        workdir.mkdir(parents=True, exist_ok=True)
        url = ServerTempMongo.database_url(self.mj.db.name)
        command = [sys.executable, "-m", "worker", "--mongo", url, "--allow-pickle", "--max-jobs", "1",
                   "--poll-max", "0.05", "--log-level", "info"]
        if reserve_timeout:
            command += ["--idle-exit", str(reserve_timeout)]
        if self.exp_key is not None:
            command += ["--run", self.exp_key]
        env = {**os.environ, **shim_environment(), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        env.pop("HPO_MONGO_URL", None)
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            output, _ = process.communicate(timeout=(reserve_timeout or 0) + WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            raise RuntimeError(f"hpo-worker (host {host_id}) hung; its output:\n{output}") from None
        print(f"hpo-worker (host {host_id}) exited with {process.returncode}:\n{output}")
        if process.returncode != 0:
            raise RuntimeError(f"hpo-worker (host {host_id}) exited with {process.returncode}:\n{output}")
        if not self._jobs_done(url, process.pid):
            raise ReserveTimeout()

    @staticmethod
    def _jobs_done(url: str, pid: int) -> int:
        """What the worker recorded in ``workers`` (docs/schema.md) as its jobs done."""
        client: pymongo.MongoClient = pymongo.MongoClient(url)
        try:
            record = client.get_default_database()[s.WORKERS].find_one(
                {s.WORKER_PID: pid, s.WORKER_HOST: socket.gethostname()}, sort=[(s.WORKER_STARTED_AT, -1)])
        finally:
            client.close()
        return int((record or {}).get(s.WORKER_DONE, 0))


def install(module: ModuleType, monkeypatch: pytest.MonkeyPatch, server_url: str, prefix: str,
            root: Path) -> None:
    """Swap ``module``'s seams (see the module docstring) for one test."""
    monkeypatch.setattr(ServerTempMongo, "server_url", server_url, raising=False)
    monkeypatch.setattr(ServerTempMongo, "prefix", prefix, raising=False)
    monkeypatch.setattr(HpoWorker, "root", root, raising=False)
    monkeypatch.setattr(module, "TempMongo", ServerTempMongo)
    monkeypatch.setattr(module, "MongoTrials", MongoTrials)
    monkeypatch.setattr(module, "MongoWorker", HpoWorker)
