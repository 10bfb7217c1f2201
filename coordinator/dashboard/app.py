"""The dashboard's web application (Starlette, ASGI): three pages and the JSON API
behind them.

Pages are static HTML shells (``static/``) whose script reads the JSON API and draws
with Plotly; ``plotly.min.js`` is served from the ``plotly`` Python package, so the
pages work on a machine without internet access.

=====================================  ===============================================
``GET /``                              the runs page (or, with a fixed run, that run)
``GET /runs/{run}``                    one run
``GET /runs/{run}/trials/{tid}``       one trial
``GET /api/runs``                      every run (:meth:`DashboardData.runs`)
``GET /api/runs/{run}``                progress, best, workers (``summary``)
``GET /api/runs/{run}/figures``        chart data (``figures``)
``GET /api/runs/{run}/workers``        stale running trials and workers (``workers``)
``GET /api/runs/{run}/importance``     hyperparameter importance
``GET /api/runs/{run}/trials``         a page of the trial table: ``state`` (repeatable),
                                       ``worker``, ``pruned`` (true|false), ``sort``,
                                       ``order`` (asc|desc), ``offset``, ``limit``
``GET /api/runs/{run}/errors``         a page of error trials: ``offset``, ``limit``
``GET /api/runs/{run}/trials/{tid}``   one trial (a tid that is not an integer: 404 saying so,
                                       unless a run has the whole path as its name)
``GET /api/events?key=RUN``            server-sent events (404 for an unknown run): ``hello`` (the feed's mode),
                                       ``change`` (``{"key": RUN}``; ``""`` is the
                                       workers, ``*`` any run), ``tick`` every second
=====================================  ===============================================

Contracts: every endpoint only reads; errors are JSON ``{"error": ...}`` with 400
(bad query), 404 (unknown run or trial) or 503 (database unreachable; message masked).
With a token every request must carry it, as ``?token=`` (a page then sets an HttpOnly
same-site cookie and redirects to the address without it), the cookie, or an
``Authorization: Bearer`` header; otherwise 401.  ``local_only`` (``hpo-coord dashboard``
without a token) answers only requests addressed to a loopback name (their ``Host``:
``localhost``, ``127.0.0.1``, ``[::1]``, ...); otherwise 403: a page of another site could
point its own host name at 127.0.0.1 (DNS rebinding) and read the dashboard.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import math
import re
import threading
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pymongo.errors import PyMongoError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from coordinator.dashboard.data import BadQuery, DashboardData, UnknownTrial
from coordinator.dashboard.live import ANY_RUN_KEY, TICK_S, WORKERS_KEY, ChangeFeed
from coordinator.monitor import UnknownRun
from jobstore.connection import mask
from jobstore.errors import DatabaseUnreachable

STATIC = Path(__file__).with_name("static")
PLOTLY_JS = Path(str(files("plotly") / "package_data" / "plotly.min.js"))
COOKIE = "hpo_dashboard_token"
MAX_EVENT_KEYS = 64
"""Most runs one event stream follows."""
_PATH_CHARS = "/:@!$&'()*+,;="
"""What a path holds unescaped besides letters, digits and ``-._~`` (RFC 3986)."""
EVENT_CHECK_S = 0.25
"""How often an event stream looks at the feed's counters (in memory, no query)."""


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), separators=(",", ":")).encode()


def _page(name: str) -> Callable[[Request], Response]:
    def page(request: Request) -> Response:
        return FileResponse(STATIC / name, media_type="text/html")
    return page


def is_local(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The host of a ``Host`` header: without its port, an IPv6 address without brackets."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.partition(":")[0]


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be an integer, got {raw!r}") from None


def create_app(data: DashboardData, feed: ChangeFeed, *, run: str | None = None,
               token: str | None = None, local_only: bool = False,
               stopping: threading.Event | None = None) -> Starlette:
    """The application; ``run`` makes ``/`` open that run; ``token`` is required by
    every request when given; with ``local_only``, requests addressed to a host name that
    is not a loopback one are refused (see the module doc).  The feed is started and
    stopped with the app.  Once ``stopping`` is set (the server was asked to exit), the
    open event streams end within :data:`EVENT_CHECK_S`, so a graceful shutdown does not
    wait for the pages to be closed."""
    stopping = stopping if stopping is not None else threading.Event()

    def api(handler: Callable[[Request], Any]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            try:
                return _JSON(handler(request))
            except BadQuery as exc:
                return _JSON({"error": str(exc)}, status_code=400)
            except (UnknownRun, UnknownTrial) as exc:
                return _JSON({"error": str(exc)}, status_code=404)
            except (PyMongoError, DatabaseUnreachable) as exc:
                return _JSON({"error": f"database unavailable: {mask(str(exc))}"}, status_code=503)
        return endpoint

    def summary(request: Request) -> dict[str, Any]:
        """``/api/runs/{run}``, which also receives ``RUN/trials/TID`` paths whose TID the
        trial route does not take (run names may hold ``/``): when no run has the whole
        name but ``RUN`` exists, the answer is about the trial id, not an unknown run."""
        name = request.path_params["run"]
        try:
            return {**data.summary(name), "feed": {"mode": feed.mode, "note": feed.note}}
        except UnknownRun as unknown:
            run_name, trials, tid = name.rpartition("/trials/")
            if not (trials and run_name and tid) or "/" in tid:
                raise
            try:
                data.require_run(run_name)
            except UnknownRun:
                raise unknown from None
            if re.fullmatch(r"-[0-9]+", tid):  # an integer the trial route's {tid:int} does not take
                return data.trial(run_name, int(tid))
            raise UnknownTrial(f"run {run_name!r} has no trial {tid!r}: a trial id is an integer "
                               "(/api/runs/RUN/trials/TID)") from None

    def home(request: Request) -> Response:
        if run is not None:
            # each segment escaped, as the pages' runUrl does
            return RedirectResponse("/runs/" + quote(run, safe="/"))
        return FileResponse(STATIC / "runs.html", media_type="text/html")

    def trials(request: Request) -> dict[str, Any]:
        q = request.query_params
        order = q.get("order", "asc")
        if order not in ("asc", "desc"):
            raise BadQuery(f"order must be asc or desc, got {order!r}")
        pruned = q.get("pruned") or None
        if pruned not in (None, "true", "false"):
            raise BadQuery(f"pruned must be true or false, got {pruned!r}")
        return data.trial_page(
            request.path_params["run"], states=q.getlist("state") or None, worker=q.get("worker") or None,
            pruned=None if pruned is None else pruned == "true", sort=q.get("sort", "tid"), descending=order == "desc",
            offset=_int(request, "offset", 0), limit=_int(request, "limit", 50))

    async def events(request: Request) -> Response:
        keys = request.query_params.getlist("key")
        runs = [key for key in keys if key not in (WORKERS_KEY, ANY_RUN_KEY)]
        if len(keys) > MAX_EVENT_KEYS:
            return _JSON({"error": f"at most {MAX_EVENT_KEYS} keys per event stream"}, status_code=400)
        try:  # an unknown key would be polled for nothing
            for key in runs:
                await run_in_threadpool(data.require_run, key)
        except UnknownRun as exc:
            return _JSON({"error": str(exc)}, status_code=404)
        except (PyMongoError, DatabaseUnreachable) as exc:
            return _JSON({"error": f"database unavailable: {mask(str(exc))}"}, status_code=503)

        async def stream() -> AsyncIterator[str]:
            yield f"event: hello\ndata: {json.dumps({'mode': feed.mode, 'note': feed.note})}\n\n"
            last = {key: feed.version(key) for key in keys}
            ticks = 0.0
            while not stopping.is_set() and not await request.is_disconnected():
                await asyncio.sleep(EVENT_CHECK_S)
                for key in keys:
                    now = feed.version(key)
                    if now != last[key]:
                        last[key] = now
                        yield f"event: change\ndata: {json.dumps({'key': key})}\n\n"
                ticks += EVENT_CHECK_S
                if ticks >= TICK_S:
                    ticks = 0.0
                    yield f"event: tick\ndata: {json.dumps({'mode': feed.mode, 'note': feed.note})}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def check_token(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if local_only and not is_local(_host_name(request.headers.get("host", ""))):
            return PlainTextResponse("this dashboard answers only requests to this machine's loopback addresses "
                                     "(http://localhost:PORT/, http://127.0.0.1:PORT/); to serve it under other "
                                     "names, start it with --token", status_code=403)
        if token is None:
            return await call_next(request)
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            if request.url.path.startswith("/api/"):
                return await call_next(request)
            # to the path as sent (decoded, a run name's escaped % would escape what follows it),
            # on this server ("//host/" would be another host's address)
            raw = request.scope.get("raw_path")  # optional in ASGI; uvicorn sets it
            sent = quote(raw, safe=_PATH_CHARS + "%") if raw else quote(request.scope["path"], safe=_PATH_CHARS)
            path = "/" + sent.lstrip("/")
            query = request.url.remove_query_params("token").query
            response = RedirectResponse(path + (f"?{query}" if query else ""), 303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response
        scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
        bearer = credentials.strip() if scheme.lower() == "bearer" else ""  # schemes ignore case (RFC 9110)
        candidates = [request.cookies.get(COOKIE, ""), bearer]
        if any(c and hmac.compare_digest(c.encode(), token.encode()) for c in candidates):
            return await call_next(request)
        return PlainTextResponse("this dashboard needs its access token: open it as "
                                 "http://HOST:PORT/?token=TOKEN", status_code=401)

    routes = [
        Route("/", home),
        Route("/runs/{run:path}/trials/{tid:int}", _page("trial.html")),
        Route("/runs/{run:path}", _page("run.html")),
        Route("/static/plotly.min.js", lambda request: FileResponse(PLOTLY_JS, media_type="text/javascript")),
        Route("/static/{name}", lambda request: _static(request.path_params["name"])),
        Route("/api/runs", api(lambda request: {"runs": data.runs(), "fixed_run": run})),
        Route("/api/events", events),
        Route("/api/runs/{run:path}/trials/{tid:int}",
              api(lambda request: data.trial(request.path_params["run"], request.path_params["tid"]))),
        Route("/api/runs/{run:path}/figures", api(lambda request: data.figures(request.path_params["run"]))),
        Route("/api/runs/{run:path}/workers", api(lambda request: data.workers(request.path_params["run"]))),
        Route("/api/runs/{run:path}/importance", api(lambda request: data.importance(request.path_params["run"]))),
        Route("/api/runs/{run:path}/trials", api(trials)),
        Route("/api/runs/{run:path}/errors", api(lambda request: data.errors(
            request.path_params["run"], _int(request, "offset", 0), _int(request, "limit", 20)))),
        Route("/api/runs/{run:path}", api(summary)),
    ]
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        feed.start()
        try:
            yield
        finally:
            feed.stop()

    return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=check_token)],
                     lifespan=lifespan)


def _static(name: str) -> Response:
    path = STATIC / name
    if name not in {"dashboard.js", "dashboard.css"} or not path.is_file():
        return PlainTextResponse("not found", status_code=404)
    return FileResponse(path, media_type="text/javascript" if name.endswith(".js") else "text/css")
