"""The per-trial time limit: a thread that ends a trial which runs too long.

A Python thread cannot be killed, so ending a trial takes two steps.  At the limit the
trial is asked to stop (``on_expired``: ``reporter.should_stop()`` turns true and
``reporter.report`` raises :class:`~objectives.base.TrialInterrupted`); a cooperative
objective stops at its next epoch and the worker records a ``timeout`` error and goes on.
If the trial still runs ``grace`` seconds later (stuck in a C call, a deadlock, a sleep),
``on_hung`` records the timeout and ends the process; its supervisor starts a fresh one,
and the GPU's memory is freed with the old one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)

EXIT_INTERNAL = 70
"""Exit code when this thread itself fails (a bug): the process must not go on without it."""


class TrialTimer:
    """Watches one trial while the ``with`` block runs; does nothing when ``limit`` is None.

    Guarantees: ``on_expired`` runs at most once, ``limit`` seconds after entry, and only
    while the block still runs; ``on_hung`` runs at most once, ``grace`` seconds after
    that, only if the block still runs, and must not return (it ends the process): the
    block cannot leave meanwhile, so a trial that ends at that moment is not written
    twice.  After the block :attr:`expired` says whether the limit was reached.
    """

    def __init__(self, limit: float | None, grace: float, *, name: str,
                 on_expired: Callable[[], None], on_hung: Callable[[], None]) -> None:
        self.limit = limit
        self.grace = grace
        self._name = name
        self._on_expired = on_expired
        self._on_hung = on_hung
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._expired = False
        self._thread = threading.Thread(target=self._run, name=f"time-limit-{name}", daemon=True)

    @property
    def expired(self) -> bool:
        """True once the trial ran past its limit (final after the ``with`` block)."""
        return self._expired

    def _run(self) -> None:
        try:
            assert self.limit is not None
            if self._ended.wait(self.limit):
                return
            with self._lock:
                if self._ended.is_set():
                    return
                self._expired = True
                self._on_expired()
            if self._ended.wait(self.grace):
                return
            with self._lock:  # never released when the trial is hung: on_hung ends the process
                if not self._ended.is_set():
                    self._on_hung()
                    raise RuntimeError("on_hung returned")
        except BaseException:  # noqa: BLE001 - this thread must not die quietly
            log.critical("the time-limit thread of %s failed; exiting with code %d",
                         self._name, EXIT_INTERNAL, exc_info=True)
            os._exit(EXIT_INTERNAL)

    def __enter__(self) -> "TrialTimer":
        if self.limit is not None:
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self._ended.set()
        if self._thread.is_alive():
            self._thread.join()
