"""The coordinator's background duties while fmin runs: keep the run's coordinator
lease alive and requeue jobs whose workers were lost.

:class:`RunKeeper` is a :class:`~jobstore.heartbeat.Heartbeat` (a context-managed
thread) whose beat also ticks a :class:`~jobstore.requeuer.Requeuer`.  If the lease is
taken by another coordinator (this one was cut off for longer than the lease), the
keeper interrupts the main thread: two coordinators must never feed one run.

The keeper rides out database outages (transient errors are logged and retried at the
next tick) and malformed job documents (the requeuer marks them as errors or skips
them; see :mod:`jobstore.queue`).  Any other error ends the thread, and a coordinator
without its keeper would run on without its lease: the heartbeat then takes the
process down with :func:`jobstore.fatal.die` (a CRITICAL log naming the "coordinator
keeper" thread, with the traceback; local workers stopped and the run released on the
way out, exit status 70).
"""

from __future__ import annotations

import _thread
import logging
import time

from jobstore.heartbeat import Heartbeat
from jobstore.requeuer import Requeuer
from jobstore.store import Store

log = logging.getLogger(__name__)


class RunKeeper(Heartbeat):
    """Every ``tick`` s: ticks a requeuer of ``store``'s queue (which looks for lost jobs
    at most every ``tick`` s), and renews ``token``'s lease on ``exp_key`` once
    ``lease_s / 3`` s have passed since the last successful renewal."""

    def __init__(self, store: Store, exp_key: str, token: str, *, lease_s: float, tick: float = 1.0) -> None:
        self._runs = store.runs
        self._exp_key = exp_key
        self._token = token
        self._lease_s = lease_s
        self._requeuer = Requeuer(store.queue, interval=tick, grace=lease_s)
        self._last_renewal = time.monotonic()
        super().__init__(self._keep, tick, name=f"coordinator lease of run {exp_key!r}",
                         thread="coordinator keeper", on_lost=self._taken_over)

    def _keep(self) -> bool:
        """One beat: the requeuer's tick, then the lease renewal when due; False when
        another coordinator holds the lease."""
        self._requeuer.tick()
        if time.monotonic() - self._last_renewal < self._lease_s / 3:
            return True
        held = self._runs.renew_coordinator(self._exp_key, self._token, self._lease_s)
        self._last_renewal = time.monotonic()
        return held

    def _taken_over(self) -> None:
        log.error("another coordinator took over run %r; stopping this one", self._exp_key)
        _thread.interrupt_main()
