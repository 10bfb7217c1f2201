"""``--local-workers K``: worker processes started, restarted and stopped by the coordinator."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from types import TracebackType

from pymongo.errors import PyMongoError

from cli_support.console import EXIT_TRIAL_HUNG, EXIT_USER_ERROR
from jobstore import schema as s
from jobstore.fatal import die
from jobstore.queue import JobQueue
from jobstore.retry import describe

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
"""Crashes of one worker slot within :data:`RESTART_WINDOW_S` after which it stays down."""
RESTART_WINDOW_S = 600.0
CHECK_INTERVAL_S = 0.5
WATCHER = "local-workers"
"""The watcher thread's name (in the log line of its death)."""
WATCHER_LOST = "the coordinator cannot restart its workers or return their trials without it"


class LocalWorkers:
    """K ``hpo-worker`` child processes working on one run.

    Each opens the coordinator's store from ``environment``
    (:meth:`jobstore.store.Store.child_environment`: the URL and, when the password came
    from a file, that file; a password from the environment is inherited), added to
    this process's environment, so credentials never appear on a command line.  They
    wait for an unreachable database as long as the coordinator does (``outage_timeout``,
    None: however long; otherwise a long outage would end them all with exit code 2, which
    is not restarted, and leave the coordinator without workers once the database is back).  Each
    gets ``OMP_NUM_THREADS`` = cores / K so K workers share the CPU instead of
    fighting over it.  A watcher thread restarts a worker that exits on its own, with a
    log line: after a crash, a kill, or exit code 76 (a trial ignored its time limit;
    such exits do not count as crashes).  A slot whose worker crashed
    :data:`MAX_RESTARTS` times within :data:`RESTART_WINDOW_S` seconds stays down, with
    an error.  Exit 0 (the worker was stopped) and exit 2 (it refused the run: other
    code, bad options) are not restarted.  Given the run's ``queue``, the watcher first
    returns the trials an exited worker still held to the queue (or fails them past
    ``--max-attempts``), as their lapsed lease would about a lease length later; if the
    database does not answer, the lease does it.  A watcher that meets an error it cannot
    ride out takes the coordinator down (:func:`jobstore.fatal.die`: exit status 70, the
    workers stopped and the run released on the way out).  On exit the workers get SIGTERM (they return
    unfinished jobs to the queue) and are killed if they do not exit within ``grace``
    seconds.
    """

    def __init__(self, count: int, environment: Mapping[str, str], run: str, *, extra_args: list[str],
                 outage_timeout: float | None = None, grace: float = 10.0,
                 check_interval: float = CHECK_INTERVAL_S, queue: JobQueue | None = None) -> None:
        self.count = count
        self.queue = queue
        self.outage_timeout = outage_timeout
        self.environment = dict(environment)
        self.run = run
        self.extra_args = extra_args
        self.grace = grace
        self.check_interval = check_interval
        self.processes: list[subprocess.Popen[bytes] | None] = []
        self.restarts = 0
        self._crashes: list[deque[float]] = []
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        threads = max(1, (os.cpu_count() or 1) // max(1, self.count))
        env = {**os.environ, **self.environment, "OMP_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads)}
        outage = "inf" if self.outage_timeout is None else repr(float(self.outage_timeout))
        command = [sys.executable, "-m", "worker", "--run", self.run, "--grace", str(self.grace),
                   "--outage-timeout", outage, "--log-level", "warning",
                   *self.extra_args]
        # A session of their own: a Ctrl-C in the terminal reaches the coordinator only,
        # which then drains them once (a second signal would make them exit at once).
        return subprocess.Popen(command, env=env, start_new_session=True)

    def start(self) -> None:
        self.processes = [self._spawn() for _ in range(self.count)]
        self._crashes = [deque() for _ in range(self.count)]
        log.info("started %d local worker(s) (pids %s)", self.count,
                 ", ".join(str(p.pid) for p in self.processes if p is not None))
        self._stopping.clear()
        self._watcher = threading.Thread(target=self._watch, name=WATCHER, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        try:
            while not self._stopping.wait(self.check_interval):
                for slot in range(len(self.processes)):
                    self._check(slot)
        except BaseException as exc:  # noqa: BLE001 - this thread must not die quietly
            die(WATCHER, exc, consequence=WATCHER_LOST)

    def _check(self, slot: int) -> None:
        process = self.processes[slot]
        if process is None:
            return
        code = process.poll()
        if code is None or self._stopping.is_set():
            return
        self._requeue_trials_of(process.pid, code)
        if code in (0, EXIT_USER_ERROR):
            log.error("local worker %d exited with code %d; not restarting it%s", process.pid, code,
                      " (it refused the run: see its message above)" if code else "")
            self.processes[slot] = None
            return
        now = time.monotonic()
        crashes = self._crashes[slot]
        if code != EXIT_TRIAL_HUNG:
            crashes.append(now)
            while crashes and now - crashes[0] > RESTART_WINDOW_S:
                crashes.popleft()
            if len(crashes) > MAX_RESTARTS:
                log.error("local worker %d exited with code %d; its slot crashed %d times within %.0f s, "
                          "so it is not restarted again (see the workers' messages above)",
                          process.pid, code, len(crashes), RESTART_WINDOW_S)
                self.processes[slot] = None
                return
        why = "its trial ignored the time limit" if code == EXIT_TRIAL_HUNG else "crashed or was killed"
        replacement = self._spawn()
        self.processes[slot] = replacement
        self.restarts += 1
        log.warning("local worker %d exited with code %d; restarting it (%s) as pid %d",
                    process.pid, code, why, replacement.pid)

    def _requeue_trials_of(self, pid: int, code: int) -> None:
        """Return the trials the exited worker ``pid`` still held to the queue (see the class doc)."""
        if self.queue is None:
            return
        try:
            self.queue.requeue_abandoned(s.worker_id(socket.gethostname(), pid), f"exited with code {code}")
        except PyMongoError as exc:
            log.warning("could not return the trials of local worker %d to the queue (%s); they are "
                        "requeued when their lease lapses", pid, describe(exc))

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        running = [p for p in self.processes if p is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(self.grace + 5)
            except subprocess.TimeoutExpired:
                log.warning("local worker %d did not stop; killing it", process.pid)
                process.kill()
                process.wait()
        self.processes.clear()

    def __enter__(self) -> "LocalWorkers":
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

