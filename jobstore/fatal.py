"""Background threads that die take their process down, loudly.

A worker's heartbeat and the coordinator's keeper hold leases for their process.  If
such a thread died quietly, the process would carry on without its lease: a second
coordinator would be let in, a worker's job handed to another worker while it still
trains.  So a background thread that meets an error it cannot ride out calls
:func:`die`, which

* logs the error at CRITICAL with its traceback, naming the thread;
* raises :class:`ThreadDied` (a ``SystemExit`` with code :data:`EXIT_THREAD_DIED`) in
  the main thread, at the next Python instruction it runs, so ``finally`` blocks and
  context managers clean up (local workers are stopped, the run is released) and
  ``except Exception`` in the main program cannot swallow it;
* and, should the main thread not have ended the process ``deadline_s`` seconds later
  (it may be blocked in native code), ends it with ``os._exit(EXIT_THREAD_DIED)``.

Only the first call acts; later ones (other threads dying of the same cause) only log.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

log = logging.getLogger(__name__)

EXIT_THREAD_DIED = 70
"""The exit status of a process whose background thread died (EX_SOFTWARE)."""
DEFAULT_DEADLINE_S = 30.0

_lock = threading.Lock()
_dying = False


class ThreadDied(SystemExit):
    """Raised in the main thread when a background thread of the process died."""

    def __init__(self, *args: object) -> None:
        super().__init__(EXIT_THREAD_DIED)


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - flushing is best effort on the way out
            pass


def _exit_now() -> None:
    log.critical("the main thread did not stop in time; exiting now (status %d)", EXIT_THREAD_DIED)
    _flush_logs()
    os._exit(EXIT_THREAD_DIED)


LEASE_LOST = "this process cannot keep its lease without it"


def die(thread: str, exc: BaseException, *, deadline_s: float = DEFAULT_DEADLINE_S,
        consequence: str = LEASE_LOST) -> None:
    """Take the process down because the background thread ``thread`` died of ``exc``;
    ``consequence`` says in the log why the process cannot carry on without it.

    Returns (the calling thread should then end); see the module doc.
    """
    global _dying
    log.critical("the %s thread died; %s and stops (exit status %d)", thread, consequence, EXIT_THREAD_DIED,
                 exc_info=(type(exc), exc, exc.__traceback__))
    _flush_logs()
    with _lock:
        if _dying:
            return
        _dying = True
    watchdog = threading.Timer(deadline_s, _exit_now)
    watchdog.daemon = True
    watchdog.start()
    main = threading.main_thread()
    if threading.current_thread() is main or main.ident is None or not main.is_alive():
        _exit_now()
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(main.ident), ctypes.py_object(ThreadDied))
