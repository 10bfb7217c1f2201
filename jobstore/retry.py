"""Riding out database outages.

Workers and the coordinator wrap each database operation in :func:`retrying`: while
the server is unreachable it waits with exponential backoff, says so in the log, and
tries again, so a MongoDB restart of a minute or two costs time, not work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from pymongo.errors import ConnectionFailure, OperationFailure

from jobstore.connection import mask

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_WAIT_S = 0.5
MAX_WAIT_S = 10.0
DEFAULT_GIVE_UP_S = 900.0

# Server errors that a restart or election produces; retrying them is safe for the
# idempotent, state-conditioned operations this project issues.
_TRANSIENT_CODES = {
    6,  # HostUnreachable
    7,  # HostNotFound
    89,  # NetworkTimeout
    91,  # ShutdownInProgress
    189,  # PrimarySteppedDown
    10107,  # NotWritablePrimary
    11600,  # InterruptedAtShutdown
    11602,  # InterruptedDueToReplStateChange
    13435,  # NotPrimaryNoSecondaryOk
}


def describe(exc: BaseException) -> str:
    """A one-line account of a database error, without pymongo's topology dump."""
    text = str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0]
    return mask(f"{type(exc).__name__}: {text}")


def is_transient(exc: BaseException) -> bool:
    """True for errors that mean "the server is away for now", not "the request is wrong"."""
    if isinstance(exc, ConnectionFailure):
        return True
    return isinstance(exc, OperationFailure) and exc.code in _TRANSIENT_CODES


def retrying(
    operation: Callable[[], T],
    what: str,
    *,
    give_up_after: float | None = DEFAULT_GIVE_UP_S,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation`` until it succeeds or fails with a non-transient error.

    ``what`` names the operation in log lines.  After ``give_up_after`` seconds of
    failures (None: never) the last transient error is raised.
    """
    started = time.monotonic()
    wait = FIRST_WAIT_S
    failures = 0
    while True:
        try:
            result = operation()
        except Exception as exc:
            if not is_transient(exc):
                raise
            failures += 1
            elapsed = time.monotonic() - started
            if give_up_after is not None and elapsed >= give_up_after:
                log.error("database still unavailable after %.0f s during %s; giving up", elapsed, what)
                raise
            log.warning("database unavailable during %s (%s); retry %d in %.1f s",
                        what, describe(exc), failures, wait)
            sleep(wait)
            wait = min(wait * 2, MAX_WAIT_S)
            continue
        if failures:
            log.warning("database is back: %s succeeded after %.1f s", what, time.monotonic() - started)
        return result
