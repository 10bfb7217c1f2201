"""Finding lost trials: periodic requeue of jobs whose lease expired.

The coordinator ticks a :class:`Requeuer` in its keeper thread and idle workers tick
one between polls, so a job lost with its worker is back in the queue within about a
lease length plus one tick.

After the database was unreachable (for this process), nobody could heartbeat either:
leases that expired during the outage say nothing about the workers.  So a requeuer
that has just (re)gained contact waits one full ``grace`` (the lease length) before
it requeues anything, which gives every live worker the time to renew its lease.
"""

from __future__ import annotations

import logging
import time

from jobstore.connection import server_time
from jobstore.queue import JobQueue, RequeueOutcome
from jobstore.retry import describe, is_transient

log = logging.getLogger(__name__)


class Requeuer:
    """Calls :meth:`JobQueue.requeue_expired` at most every ``interval`` seconds."""

    def __init__(self, queue: JobQueue, *, interval: float, grace: float) -> None:
        self.queue = queue
        self.interval = interval
        self.grace = grace
        self._last_attempt = float("-inf")
        self._last_ok: float | None = None
        self._reachable_since = 0.0

    def tick(self) -> RequeueOutcome | None:
        """Requeue expired jobs if it is time to; None when nothing was attempted."""
        now = time.monotonic()
        if now - self._last_attempt < self.interval:
            return None
        self._last_attempt = now
        if self._last_ok is None or now - self._last_ok > 2 * self.interval + 1:
            self._reachable_since = now
        try:
            if now - self._reachable_since < self.grace:
                server_time(self.queue.db)
                outcome = None
            else:
                outcome = self.queue.requeue_expired()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("could not look for lost jobs: database unavailable (%s)", describe(exc))
            self._last_ok = None
            return None
        self._last_ok = time.monotonic()
        return outcome
