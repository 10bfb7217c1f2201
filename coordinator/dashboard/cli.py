"""``hpo-coord dashboard``: serve the live web dashboard of the runs in a database."""

from __future__ import annotations

import logging
import os
import re
import threading
from datetime import timedelta
from types import FrameType
from typing import Annotated, Optional

import typer
import uvicorn
from rich.console import Console

from coordinator import monitor
from coordinator.dashboard.app import create_app, is_local
from coordinator.dashboard.data import DashboardData
from coordinator.dashboard.live import ChangeFeed
from coordinator.local_server import DEFAULT_LOCAL_DIR, LocalDirOption, database_url
from jobstore.connection import DEFAULT_TIMEOUT_S
from jobstore.store import Store
from cli_support.console import (
    ConnectTimeoutOption,
    LogLevelHelp,
    MongoOption,
    ObjectiveOption,
    PasswordFileOption,
    fail,
    not_empty,
    register_objectives,
    setup_logging,
    user_errors,
)

TOKEN_ENV = "HPO_DASHBOARD_TOKEN"
DEFAULT_PORT = 8080
SHUTDOWN_S = 2
"""Seconds open connections (the pages' event streams) get to close on Ctrl-C / SIGTERM."""


class _Server(uvicorn.Server):
    """uvicorn's server that, when asked to exit (Ctrl-C, SIGTERM), also sets ``stopping``,
    which ends the pages' event streams; without it the shutdown waited :data:`SHUTDOWN_S`
    for them, then cancelled them with an ERROR and a traceback per open page."""

    def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
        super().__init__(config)
        self.stopping = stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stopping.set()
        super().handle_exit(sig, frame)


class HideToken(logging.Filter):
    """Shows the ``token`` query parameter as ``***`` in uvicorn's access log lines
    (``--log-level debug`` logs each request's path with its query)."""

    QUERY = re.compile(r"([?&]token=)[^&]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 5:  # uvicorn's: client, method, path, ...
            client, method, path, version, status = record.args
            record.args = (client, method, self.QUERY.sub(r"\1***", str(path)), version, status)
        return True


def register(app: typer.Typer, console: Console) -> None:
    """Add ``dashboard`` to ``app``."""

    @app.command()
    def dashboard(
        ctx: typer.Context,
        run: Annotated[Optional[str], typer.Option(
            help="Open this run at / (every run stays reachable). Default: the list of runs.",
            callback=not_empty("--run"))] = None,
        host: Annotated[str, typer.Option(help="Address to listen on. Anything but a loopback "
                                          f"address needs --token (or ${TOKEN_ENV}); without a token, "
                                          "only requests to localhost or a loopback address are "
                                          "answered.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = DEFAULT_PORT,
        token: Annotated[Optional[str], typer.Option(
            help=f"Access token every request must carry (open the page once as "
            f"http://HOST:PORT/?token=TOKEN). Default: ${TOKEN_ENV}.", show_default=False)] = None,
        polling: Annotated[bool, typer.Option(
            "--polling", help="Poll the database every second instead of following its change stream.")] = False,
        stale_after: Annotated[float, typer.Option(
            min=1, help="Flag running trials without a heartbeat for this many seconds, "
            "and workers not seen for as long.")] = monitor.STALE_AFTER.total_seconds(),
        objective: ObjectiveOption = None,
        mongo: MongoOption = None,
        mongo_password_file: PasswordFileOption = None,
        local_dir: LocalDirOption = DEFAULT_LOCAL_DIR,
        connect_timeout: ConnectTimeoutOption = DEFAULT_TIMEOUT_S,
        log_level: Annotated[str, typer.Option(help=LogLevelHelp)] = "warning",
    ) -> None:
        """Serve a live web dashboard of the database's runs (read-only): progress, best
        trial, charts, trial table, errors and workers, updated as trials finish."""
        setup_logging(log_level)
        secret = token or os.environ.get(TOKEN_ENV) or None
        if not is_local(host) and secret is None:
            fail(f"--host {host} is not a loopback address: anyone who can reach it could read "
                 f"your runs. Pass --token TOKEN (or set ${TOKEN_ENV}) to require an access "
                 "token, or keep the default --host 127.0.0.1")
        with user_errors():
            register_objectives(objective)
            url = database_url(mongo, local_dir, "hpo-coord dashboard", ctx.call_on_close)
            store = Store.open(url, mongo_password_file, timeout_s=connect_timeout)
            if run is not None:
                monitor.require_run(store.view, run)
        stale = timedelta(seconds=stale_after)
        data = DashboardData(store.view, stale)
        # the change stream is a read too; the view has no watch of its own
        feed = ChangeFeed(store.db, store.jobs_collection, use_stream=not polling, stale_after=stale)
        # without a token, a page from another site must not reach it through a rebound host name
        stopping = threading.Event()
        web = create_app(data, feed, run=run, token=secret, local_only=secret is None, stopping=stopping)
        shown = f"[{host}]" if ":" in host else host
        console.print(f"dashboard of {store.server} at [bold]http://{shown}:{port}/[/]"
                      + (" (append ?token=TOKEN once)" if secret else ""), highlight=False)
        if secret:
            logging.getLogger("uvicorn.access").addFilter(HideToken())  # uvicorn's logging config keeps it
        # open pages hold event streams: they end once ``stopping`` is set, and the limit
        # bounds the wait for anything else still open
        server = _Server(uvicorn.Config(web, host=host, port=port, log_level=log_level,
                                        access_log=log_level == "debug", timeout_graceful_shutdown=SHUTDOWN_S),
                         stopping)
        try:
            server.run()
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down for; as uvicorn.run, exit 0
            pass
