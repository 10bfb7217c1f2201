"""``--local-workers K``: worker processes started and stopped by the coordinator."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from types import TracebackType

log = logging.getLogger(__name__)


class LocalWorkers:
    """K ``hpo-worker`` child processes working on one run.

    Each gets ``OMP_NUM_THREADS`` = cores / K so K workers share the CPU instead of
    fighting over it.  On exit they get SIGTERM (they return unfinished jobs to the
    queue) and are killed if they do not exit within ``grace`` seconds.
    """

    def __init__(self, count: int, url: str, run: str, *, extra_args: list[str], grace: float = 10.0) -> None:
        self.count = count
        self.url = url
        self.run = run
        self.extra_args = extra_args
        self.grace = grace
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        threads = max(1, (os.cpu_count() or 1) // max(1, self.count))
        env = {**os.environ, "HPO_MONGO_URL": self.url, "OMP_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads)}
        command = [sys.executable, "-m", "worker", "--run", self.run, "--grace", str(self.grace),
                   "--log-level", "warning",
                   *self.extra_args]
        for _ in range(self.count):
            # A session of their own: a Ctrl-C in the terminal reaches the coordinator only,
            # which then drains them once (a second signal would make them exit at once).
            self.processes.append(subprocess.Popen(command, env=env, start_new_session=True))
        log.info("started %d local worker(s) (pids %s)", self.count, ", ".join(str(p.pid) for p in self.processes))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
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
