"""A heartbeat: a daemon thread that renews a lease while a block of code runs.

Used for a worker's job lease (independent of the objective: a trial that trains for
an hour without reporting keeps its lease), for its GPU lease and worker record, and
for the coordinator's run lease::

    with Heartbeat(lambda: queue.heartbeat(claim), interval=10, name="job", on_lost=stop):
        run_the_trial()

``beat`` returns False when the lease is no longer ours; ``on_lost`` is then called
once and the thread stops.  A beat that fails because the database is away (a
transient error, :func:`jobstore.retry.is_transient`) is logged and tried again at the
next interval; the lease may expire meanwhile, and fencing makes sure a worker that
lost it cannot overwrite anyone's work.

Any other error (a write the server refuses for good, a bug in ``beat`` or ``on_lost``)
means the lease can no longer be kept: the thread does not die quietly but takes its
process down with :func:`jobstore.fatal.die` (a CRITICAL log with the traceback, then
exit status 70), so no process keeps working without the lease it relies on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from jobstore.fatal import die
from jobstore.retry import describe, is_transient

log = logging.getLogger(__name__)


class Heartbeat:
    """Calls ``beat()`` every ``interval`` seconds between ``__enter__`` and ``__exit__``.

    ``name`` says whose lease it is in the log; ``thread`` names the thread (in the
    fatal message if it dies), by default ``"<name> heartbeat"``.
    """

    def __init__(
        self,
        beat: Callable[[], bool],
        interval: float,
        *,
        name: str,
        on_lost: Callable[[], None] | None = None,
        thread: str | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"heartbeat interval must be positive, not {interval}")
        self._beat = beat
        self._interval = interval
        self._name = name
        self._on_lost = on_lost
        self._label = thread or f"{name} heartbeat"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self._label, daemon=True)
        self.lost = False

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a heartbeat must never die silently
            die(self._label, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                alive = self._beat()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("%s heartbeat: database unavailable (%s); retrying in %.1f s",
                            self._name, describe(exc), self._interval)
                continue
            if not alive:
                self.lost = True
                log.warning("%s lease lost", self._name)
                if self._on_lost is not None:
                    self._on_lost()
                return

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
