"""Finding lost trials: periodic requeue of jobs whose lease expired.

The coordinator ticks a :class:`Requeuer` in its keeper thread and idle workers tick
one between polls, so a job lost with its worker is back in the queue within about a
lease length plus one tick.

After the database was unreachable (for this process), nobody could heartbeat either:
leases that expired during the outage say nothing about the workers.  So the requeuer
counts how long it has been in contact with the database without a break, and a job
is lost only when its lease expired *and* that contact has lasted at least the lease
length its holder recorded (``lease.seconds``; ``grace`` for jobs claimed before that
was recorded).  A live worker with a long lease therefore gets its whole lease to
renew after an outage, whatever this requeuer's own lease is.

Malformed jobs never make a tick raise (the queue marks them as errors or skips them
with one warning).  Transient errors are logged and the tick counts as a break in
contact; other errors are raised to the caller (the coordinator's keeper then takes
its process down loudly).
"""

from __future__ import annotations

import logging
import time

from jobstore.queue import JobQueue, RequeueOutcome
from jobstore.retry import describe, is_transient

log = logging.getLogger(__name__)


class Requeuer:
    """Calls :meth:`JobQueue.requeue_expired` at most every ``interval`` seconds;
    ``grace`` is the lease assumed for jobs that did not record their holder's."""

    def __init__(self, queue: JobQueue, *, interval: float, grace: float) -> None:
        self.queue = queue
        self.interval = interval
        self.grace = grace
        self._last_attempt = float("-inf")
        self._last_ok: float | None = None
        self._reachable_since = 0.0

    def tick(self) -> RequeueOutcome | None:
        """Requeue lost jobs if it is time to; None when nothing was attempted (or the
        database was away)."""
        now = time.monotonic()
        if now - self._last_attempt < self.interval:
            return None
        self._last_attempt = now
        if self._last_ok is None or now - self._last_ok > 2 * self.interval + 1:
            self._reachable_since = now
        try:
            outcome = self.queue.requeue_expired(observed_s=now - self._reachable_since,
                                                 default_lease_s=self.grace)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("could not look for lost jobs: database unavailable (%s)", describe(exc))
            self._last_ok = None
            return None
        self._last_ok = time.monotonic()
        return outcome
