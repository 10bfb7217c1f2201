"""Riding out database outages: the project's one retry policy.

The store (:class:`jobstore.store.Store` and the typed stores it holds) runs each
database operation under a :class:`RetryPolicy`, which calls :func:`retrying`: while
the server is unreachable it waits with exponential backoff, says so in the log
(naming the server and how long it will keep waiting), and tries again, so a MongoDB
restart of a minute or two costs time, not work.  Callers of the store make plain
calls.  Each program picks its outage limit when it opens the store: how long one
operation may keep failing before :class:`DatabaseOutage` is raised.  Workers give up
after ``DEFAULT_GIVE_UP_S`` (``hpo-worker --outage-timeout``); ``MongoTrials`` for
library use after ``jobstore.trials.DEFAULT_OUTAGE_TIMEOUT_S``; ``hpo-coord start`` and
its local workers never, unless given ``--outage-timeout``; the monitoring commands
after ``DEFAULT_GIVE_UP_S``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from pymongo.database import Database
from pymongo.errors import ConnectionFailure, OperationFailure

from jobstore.connection import mask
from jobstore.errors import DatabaseUnreachable

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


class DatabaseOutage(DatabaseUnreachable):
    """The database stayed unreachable for longer than the caller's outage limit.

    The message names the server (password masked), the operation, how long it was
    tried and the last error; the pymongo error is the ``__cause__``.
    """


def database_display(db: Database) -> str:
    """``mongodb://HOST:PORT[,HOST:PORT...]/DB`` for ``db``'s client, from its seed list
    (no credentials, no server contact): how messages name a server given as a handle."""
    seeds = db.client.topology_description.server_descriptions()
    hosts = ",".join(f"{host}:{port}" for host, port in seeds)
    return f"mongodb://{hosts}/{db.name}"


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
    server: str | None = None,
    longer: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation`` until it succeeds or fails with a non-transient error.

    ``what`` names the operation and ``server`` the database (a masked URL) in log lines
    and errors; ``longer`` tells the user how to allow a longer outage.  Transient errors
    (:func:`is_transient`) are retried with backoff; once they have lasted
    ``give_up_after`` seconds (None: no limit) :class:`DatabaseOutage` is raised instead
    of trying again.  The limit is checked after each failed attempt,
    and an attempt itself waits up to the client's server-selection timeout, so the
    error can come that much later than the limit.

    Raises:
        DatabaseOutage: the outage outlasted ``give_up_after``.
        Exception: a non-transient error of ``operation``, unchanged.
    """
    started = time.monotonic()
    wait = FIRST_WAIT_S
    failures = 0
    name = f"the database at {mask(server)}" if server else "the database"
    while True:
        try:
            result = operation()
        except Exception as exc:
            if not is_transient(exc):
                raise
            failures += 1
            elapsed = time.monotonic() - started
            if give_up_after is not None and elapsed >= give_up_after:
                raise DatabaseOutage(
                    f"{name} has been unreachable for {elapsed:.0f} s while {what}, longer than the "
                    f"outage limit of {give_up_after:g} s (last error: {describe(exc)}); check that the "
                    "server runs and is reachable" + (f", or allow a longer outage: {longer}" if longer else "")
                ) from exc
            if give_up_after is None:
                pause, patience = wait, f"waiting for {name} with no time limit"
            else:
                left = give_up_after - elapsed
                pause, patience = min(wait, left), f"waiting for {name} {left:.0f} s more"
            log.warning("database unavailable during %s (%s); retry %d in %.1f s, %s",
                        what, describe(exc), failures, pause, patience)
            sleep(pause)
            wait = min(wait * 2, MAX_WAIT_S)
            continue
        if failures:
            log.warning("database is back: %s succeeded after %.1f s (%s)", what, time.monotonic() - started, name)
        return result


@dataclass(frozen=True)
class RetryPolicy:
    """How the store rides out outages: :func:`retrying` with one outage limit.

    ``give_up_after`` is the outage limit (None: no limit), ``server`` the masked URL
    log lines and errors name, ``longer`` how the user allows a longer outage; ``sleep``
    waits between attempts (tests pass a no-op).  Calling the policy runs an operation
    under it.
    """

    give_up_after: float | None = DEFAULT_GIVE_UP_S
    server: str | None = None
    longer: str | None = None
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def __call__(self, operation: Callable[[], T], what: str) -> T:
        """``operation()`` retried while it fails transiently, up to the outage limit.

        Raises:
            DatabaseOutage: the outage outlasted ``give_up_after``.
            Exception: a non-transient error of ``operation``, unchanged.
        """
        return retrying(operation, what, give_up_after=self.give_up_after, server=self.server,
                        longer=self.longer, sleep=self.sleep)

    def with_limit(self, give_up_after: float | None, longer: str | None = None) -> "RetryPolicy":
        """This policy with another outage limit (and hint, when given)."""
        return replace(self, give_up_after=give_up_after, longer=longer if longer is not None else self.longer)
