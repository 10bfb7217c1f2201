"""The coordinator's background duties while fmin runs: keep the run's coordinator
lease alive and requeue jobs whose workers were lost.

A context-managed thread.  If the lease is taken by another coordinator (this one was
cut off for longer than the lease), the keeper interrupts the main thread: two
coordinators must never feed one run.

The keeper rides out database outages (transient errors are logged and retried at the
next tick) and malformed job documents (the requeuer marks them as errors or skips
them; see :mod:`jobstore.queue`).  Any other error ends the thread, and a coordinator
without its keeper would run on without its lease: the keeper then takes the process
down with :func:`jobstore.fatal.die` (a CRITICAL log with the traceback, local workers
stopped and the run released on the way out, exit status 70).
"""

from __future__ import annotations

import _thread
import logging
import threading
import time
from types import TracebackType

from jobstore.fatal import die
from jobstore.requeuer import Requeuer
from jobstore.retry import is_transient
from jobstore.store import Store

log = logging.getLogger(__name__)


class RunKeeper:
    """Renews ``token``'s lease on ``exp_key`` and ticks a requeuer of ``store``'s queue,
    every ``tick`` s."""

    def __init__(self, store: Store, exp_key: str, token: str, *, lease_s: float, tick: float = 1.0) -> None:
        self._runs = store.runs
        self._exp_key = exp_key
        self._token = token
        self._lease_s = lease_s
        self._tick = tick
        self._requeuer = Requeuer(store.queue, interval=tick, grace=lease_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="run-keeper", daemon=True)
        self.lease_lost = False

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - the keeper must never die silently
            die("coordinator keeper", exc)

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
