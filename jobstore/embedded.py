"""A local MongoDB-protocol server for laptop runs and tests.

Starts SecantusDB's ``secantusd-py`` (installed with this project) on a free loopback
port.  Production uses a real MongoDB; this exists so that ``hpo-coord start`` works
with nothing else installed, and so the test suite has a real server to talk to.

The server runs with ``--sync-on-commit`` (its log is flushed to disk at every commit)
unless asked not to: together with the store's journaled write concern, a result the
store acknowledged survives a crash of the server.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pymongo
from pymongo.errors import OperationFailure, PyMongoError

log = logging.getLogger(__name__)

SERVER_PROGRAM = "secantusd-py"
STORAGE_LOCK = "WiredTiger.lock"
"""The file in a server's storage directory that the running server holds locked."""


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether the server could listen on ``127.0.0.1:port`` now.

    Probed as the server binds, with ``SO_REUSEADDR``: a port whose last connections
    linger in TIME_WAIT is free, one that a process listens on is not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class ServerRecord:
    """What a running :class:`EmbeddedServer` writes to its ``record`` file."""

    port: int
    pid: int
    """The server process."""
    owner: int
    """The process that started the server and stops it when it ends."""

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    @property
    def owner_alive(self) -> bool:
        return _alive(self.owner)

    @property
    def server_alive(self) -> bool:
        return _alive(self.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def recorded_server(record: Path, timeout: float = 2.0, *, check: bool = True) -> ServerRecord | None:
    """The server that ``record`` names, if that file is readable and (with ``check``)
    that server answers on the recorded port within ``timeout`` seconds, as the recorded
    process (its ``serverStatus`` pid; one that requires authentication tells only that
    it answers); None otherwise (no file, a malformed one, a server that has gone, or
    another program answering on a stale record's port)."""
    try:
        data = json.loads(record.read_text())
        found = ServerRecord(port=int(data["port"]), pid=int(data["pid"]), owner=int(data["owner"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not check:
        return found
    client: pymongo.MongoClient = pymongo.MongoClient(found.url, serverSelectionTimeoutMS=int(timeout * 1000),
                                                      directConnection=True)
    try:
        ours = _answers_as(client, found.pid)
    except PyMongoError:
        return None
    finally:
        client.close()
    return found if ours else None


def _answers_as(client: pymongo.MongoClient, pid: int) -> bool:
    """Whether the server ``client`` reaches answers, as process ``pid`` (its
    ``serverStatus``; one that requires authentication tells only that it answers)."""
    try:
        status = client.admin.command("serverStatus")
    except OperationFailure:
        client.admin.command("ping")
        return True
    return status.get("pid") in (None, pid)


def storage_in_use(storage: Path) -> bool:
    """Whether a running server serves ``storage``: the storage engine's lock file
    (:data:`STORAGE_LOCK`), which the server holds locked from opening its data until it
    exits, is locked.  Asked of the operating system (a non-blocking POSIX record lock,
    released at once when it is granted), not of the server, so a server that is too
    busy to answer, or still starting, counts as running."""
    try:
        with open(storage / STORAGE_LOCK, "r+b") as handle:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return True
        raise
    return False


def _program() -> str:
    beside_python = Path(sys.executable).with_name(SERVER_PROGRAM)
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(SERVER_PROGRAM)
    if found is None:
        raise EmbeddedServerError(
            f"{SERVER_PROGRAM} was not found; install this project with pip "
            "(it depends on secantusdb) or pass --mongo / set HPO_MONGO_URL"
        )
    return found


class EmbeddedServer:
    """A ``secantusd-py`` child process serving ``storage`` on ``127.0.0.1:port``.

    Data under ``storage`` survives :meth:`stop` and :meth:`start`, so a run can be
    resumed and a test can restart the server mid-run.  With ``sync_on_commit`` (the
    default) every acknowledged write also survives ``kill -9`` of the server.  With
    ``auth`` it requires SCRAM authentication (users are created while it runs without).
    With ``record``, a running server is described in that JSON file (a
    :class:`ServerRecord`, see :func:`recorded_server`), written once it answers and
    removed when it stops (unless the file names another server by then), so other
    processes can find it; :func:`storage_in_use` tells whether some server serves
    ``storage``.
    """

    def __init__(self, storage: Path, port: int | None = None, log_file: Path | None = None,
                 *, sync_on_commit: bool = True, auth: bool = False, record: Path | None = None):
        self.storage = Path(storage)
        self.port = port or free_port()
        self.log_file = log_file or self.storage.parent / f"{self.storage.name}.log"
        self.sync_on_commit = sync_on_commit
        self.auth = auth
        self.record = record
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers (itself: another server that
        listens on the port meanwhile does not count, and this one then fails).

        Raises:
            EmbeddedServerError: the server exited (see its log), or did not answer
                within ``timeout`` seconds.
        """
        self.storage.mkdir(parents=True, exist_ok=True)
        command = [
            _program(),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--storage-path", str(self.storage),
            "--log-level", "WARNING",
            *(["--sync-on-commit"] if self.sync_on_commit else []),
            *(["--auth"] if self.auth else []),
        ]
        with open(self.log_file, "ab") as out:
            self._process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        client: pymongo.MongoClient = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=500)
        try:
            while True:
                if self._process.poll() is not None:
                    raise EmbeddedServerError(
                        f"{SERVER_PROGRAM} exited with code {self._process.returncode}; "
                        f"see {self.log_file}"
                    )
                try:
                    # another server on the port (it was taken meanwhile) answers too:
                    # wait for this one, which then exits, unable to listen
                    ours = _answers_as(client, self._process.pid)
                except PyMongoError:
                    ours = False
                if ours:
                    if self.record is not None:
                        self.record.write_text(json.dumps(
                            {"port": self.port, "pid": self._process.pid, "owner": os.getpid()}))
                    return
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedServerError(
                        f"{SERVER_PROGRAM} did not answer within {timeout:.0f} s; see {self.log_file}")
                time.sleep(0.1)
        finally:
            client.close()

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would (no shutdown, no final flush)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``)."""
        process, self._process = self._process, None
        if process is None:
            return
        found = recorded_server(self.record, check=False) if self.record is not None else None
        if found is not None and found.pid == process.pid:  # another server's record stays
            self.record.unlink(missing_ok=True)  # type: ignore[union-attr]
        if process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (the benchmarks read its CPU time)."""
        return self._process.pid if self.running else None  # type: ignore[union-attr]

    def __enter__(self) -> "EmbeddedServer":
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
