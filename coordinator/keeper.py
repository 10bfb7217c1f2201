"""The coordinator's background duties while fmin runs: keep the run's coordinator
lease alive and requeue jobs whose workers were lost.

A context-managed thread.  If the lease is taken by another coordinator (this one was
cut off for longer than the lease), the keeper interrupts the main thread: two
coordinators must never feed one run.
"""

from __future__ import annotations

import _thread
import logging
import threading
import time
from types import TracebackType

from jobstore.queue import JobQueue
from jobstore.requeuer import Requeuer
from jobstore.retry import is_transient
from jobstore.runs import RunStore

log = logging.getLogger(__name__)


class RunKeeper:
    """Renews ``token``'s lease on ``exp_key`` and ticks a requeuer, every ``tick`` s."""

    def __init__(self, runs: RunStore, queue: JobQueue, exp_key: str, token: str, *,
                 lease_s: float, tick: float = 1.0) -> None:
        self._runs = runs
        self._exp_key = exp_key
        self._token = token
        self._lease_s = lease_s
        self._tick = tick
        self._requeuer = Requeuer(queue, interval=tick, grace=lease_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-keeper", daemon=True)
        self.lease_lost = False

    def _loop(self) -> None:
        last_renewal = time.monotonic()
        while not self._stop.wait(self._tick):
            if time.monotonic() - last_renewal >= self._lease_s / 3:
                try:
                    held = self._runs.renew_coordinator(self._exp_key, self._token, self._lease_s)
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    log.warning("could not renew the coordinator lease: database unavailable")
                    held = True
                else:
                    last_renewal = time.monotonic()
                if not held:
                    self.lease_lost = True
                    log.error("another coordinator took over run %r; stopping this one", self._exp_key)
                    _thread.interrupt_main()
                    return
            self._requeuer.tick()

    def __enter__(self) -> "RunKeeper":
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
