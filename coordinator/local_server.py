"""Local mode: the embedded server over a directory's data (``./.hpo`` by default).

``hpo-coord start`` without ``--mongo`` (and without ``$HPO_MONGO_URL``) starts an
:class:`~jobstore.embedded.EmbeddedServer` over ``LOCAL_DIR/db`` on port
:data:`DEFAULT_PORT` (``--local-port``), records it in ``LOCAL_DIR/server.json`` and
stops it when the run ends.  The monitoring commands, given no database either, read the
same directory: through the recorded server while it runs, else through a server of
their own on a free port, stopped when the command ends.

Guarantees: at most one process serves a directory's data (the storage engine allows
only one); a second ``start`` over a directory in use is refused in one line before
anything is written, naming the process that uses it, and so is a port that another
program listens on.  Whether the data is in use is read from the storage engine's lock
(:func:`~jobstore.embedded.storage_in_use`), not from the server, so a server too busy
to answer in time still gets a second ``start`` refused and a monitoring command
attached to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli_support.console import stderr
from jobstore.connection import url_from_environment
from jobstore.embedded import (EmbeddedServer, EmbeddedServerError, ServerRecord, free_port, port_is_free,
                               recorded_server, storage_in_use)
from user_errors import UserError

DEFAULT_LOCAL_DIR = Path(".hpo")
DEFAULT_PORT = 27018
"""The local server's port unless ``--local-port`` says otherwise: the same in every
run, so a worker started by hand with the printed URL finds the server again."""
DATABASE = "hpo"
RECORD = "server.json"

LocalDirOption = Annotated[Path, typer.Option(
    help="Where local mode (no --mongo, no $HPO_MONGO_URL) keeps its data and its server's log.")]


def _server(local_dir: Path, port: int) -> EmbeddedServer:
    return EmbeddedServer(local_dir / "db", port=port, log_file=local_dir / "server.log",
                          record=local_dir / RECORD)


def _start(server: EmbeddedServer) -> None:
    try:
        server.start()
    except EmbeddedServerError as exc:
        raise UserError(str(exc)) from None


def _serving(local_dir: Path) -> ServerRecord | None:
    """The recorded server of ``local_dir`` if a server serves its data, else None.

    Raises:
        UserError: a server serves the data but has not recorded itself (it is still
            starting, or another program started it).
    """
    if not storage_in_use(local_dir / "db"):
        return None
    found = recorded_server(local_dir / RECORD, check=False)  # the server may be too busy to answer
    if found is None or not found.server_alive:
        raise UserError(f"the local data in {local_dir} is in use by a server that has not recorded its "
                        f"address in {local_dir / RECORD} (it is still starting, or another program "
                        "started it); wait for it to end or give another --local-dir")
    return found


def serve_for_start(local_dir: Path, port: int) -> EmbeddedServer:
    """The started server over ``local_dir`` for ``hpo-coord start``; the caller stops it.

    Raises:
        UserError: another live process serves ``local_dir`` (or a server it left behind
            still does), or another program listens on ``port``; nothing was started.
    """
    found = _serving(local_dir)
    if found is not None:
        url = f"{found.url}/{DATABASE}"
        if found.owner_alive:
            raise UserError(
                f"the local data in {local_dir} is in use by process {found.owner} (server {url}); "
                f"wait for it to end or give another --local-dir (its run can be watched with "
                f"hpo-coord status --local-dir {local_dir}, and workers added with hpo-worker --mongo {url})"
            )
        raise UserError(f"a local server (pid {found.pid}) left running by a process that has ended still "
                        f"serves {local_dir}; stop it (kill {found.pid}) and start again")
    if not port_is_free(port):
        raise UserError(f"port {port} of 127.0.0.1 is taken by another program; give the local server "
                        "another with --local-port")
    local_dir.mkdir(parents=True, exist_ok=True)
    server = _server(local_dir, port)
    _start(server)
    return server


def open_for_reading(local_dir: Path, console: Console) -> tuple[str, EmbeddedServer | None] | None:
    """The URL of the local data in ``local_dir`` for a monitoring command, and the
    server started for it (the caller stops it when the command ends; None when the
    recorded server of a running ``start`` is used, however slow it is to answer).
    None when ``local_dir`` holds no data.  Says on ``console``, in one line, which it is.

    Raises:
        UserError: the server could not be started, or a server that has not recorded
            its address serves the data.
    """
    if not (local_dir / "db").is_dir():
        return None
    found = _serving(local_dir)
    if found is not None:
        url = f"{found.url}/{DATABASE}"
        console.print(f"reading the local data in {local_dir} through its running server {url}",
                      highlight=False)
        return url, None
    server = _server(local_dir, free_port())  # its own port: nothing attaches to it by hand
    _start(server)
    url = f"{server.url}/{DATABASE}"
    console.print(f"reading the local data in {local_dir} through a server started for this command "
                  f"({url})", highlight=False)
    return url, server


def database_url(mongo: str | None, local_dir: Path, what: str,
                 on_close: Callable[[Callable[[], None]], object]) -> str:
    """The database a monitoring command reads: ``--mongo``, else ``$HPO_MONGO_URL``,
    else the local data in ``local_dir`` (:func:`open_for_reading`, saying so on stderr;
    a server started for the command is handed to ``on_close``, the command's
    ``ctx.call_on_close``, to stop when the command ends).

    Raises:
        UserError: none of the three.
    """
    url = url_from_environment(mongo)
    if url is not None:
        return url
    local = open_for_reading(local_dir, stderr)
    if local is None:
        raise UserError(f"{what} needs a database: pass --mongo URL or set $HPO_MONGO_URL "
                        f"(no local data in {local_dir} either; --local-dir names another directory)")
    url, server = local
    if server is not None:
        on_close(server.stop)
    return url
