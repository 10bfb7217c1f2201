"""The worker: claim a job, evaluate it under a heartbeat, write the result, repeat.

Behaviour a user can rely on:

* A job's lease is renewed by a heartbeat thread every ``heartbeat`` seconds,
  independently of the objective.  If the lease is lost anyway (the worker was cut
  off for longer than the lease), ``reporter.should_stop()`` turns true and the
  result write is refused: the job's next holder owns it.
* An exception in the objective, or a result that is not a usable loss, marks the job
  as an error (type, message, traceback) and the worker goes on with the next job.
* Jobs of runs this worker cannot evaluate (unknown experiment, a different
  fingerprint: the worker runs other code than the coordinator) are handed back
  untouched and the worker stops taking that run's jobs.  With ``--run`` it exits 2.
* Pickled hyperopt Domains are never loaded unless ``allow_pickle`` is set; without
  it, such a job is marked as an error with an explanation and not run.
* The first SIGTERM/SIGINT stops taking jobs and gives the current trial ``grace``
  seconds to finish; after that the trial is interrupted and its job returned to the
  queue (not failed), and the worker exits 0.  A second signal exits at once.
* While the database is away, every operation is retried with backoff; a result
  computed meanwhile is written once the database is back.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

from hyperopt import base
from pymongo.database import Database
from pymongo.errors import PyMongoError

from jobstore import schema as s
from jobstore.gpu_lease import GpuLease, visible_devices_env, wait_for_gpus
from jobstore.heartbeat import Heartbeat
from jobstore.queue import DEFAULT_LEASE_S, Claim, JobQueue
from jobstore.requeuer import Requeuer
from jobstore.retry import describe, retrying
from jobstore.workers import WorkerRegistry
from objectives.base import TrialInterrupted
from objectives.registry import UnknownExperiment, get_experiment
from worker.evaluate import (
    PICKLE_REFUSED,
    Outcome,
    PointOutsideSpace,
    failure,
    from_exception,
    normalize,
    params_for,
)

log = logging.getLogger(__name__)

RUN_INFO_TTL_S = 10.0
DEFAULT_POLL_MIN_S = 0.01
DEFAULT_POLL_MAX_S = 0.5
EXIT_REFUSED = 2
EXIT_GPU_LOST = 75


@dataclass
class WorkerConfig:
    """What ``hpo-worker``'s options set."""

    run: str | None = None
    max_jobs: int | None = None
    idle_exit: float | None = None
    poll_min: float = DEFAULT_POLL_MIN_S
    poll_max: float = DEFAULT_POLL_MAX_S
    heartbeat: float = 10.0
    lease: float = DEFAULT_LEASE_S
    grace: float = 60.0
    allow_pickle: bool = False
    gpus: int = 1
    version: str = "unknown"


def _disarm_grace_timer() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


class Refused(Exception):
    """This worker will not evaluate the run's jobs; the message says why."""


class JobReporter:
    """The :class:`objectives.base.Reporter` a worker hands to the objective."""

    def __init__(self, queue: JobQueue, claim: Claim, settings: Mapping[str, Any],
                 stop: threading.Event, lease_s: float) -> None:
        self.settings = dict(settings)
        self._queue = queue
        self._claim = claim
        self._stop = stop
        self._lease_s = lease_s
        self._lost = threading.Event()

    def report(self, step: int, **metrics: float) -> None:
        kept = retrying(
            lambda: self._queue.report(self._claim, step, metrics, self._lease_s),
            f"reporting metrics of trial {self._claim.tid}",
        )
        if not kept:
            self.lease_lost()

    def should_stop(self) -> bool:
        return self._stop.is_set() or self._lost.is_set()

    def lease_lost(self) -> None:
        self._lost.set()


class Worker:
    """One worker process's loop over the queue."""

    def __init__(self, db: Database, config: WorkerConfig, jobs_collection: str = s.JOBS) -> None:
        self.config = config
        self.db = db
        self.queue = JobQueue(db, jobs_collection)
        self.registry = WorkerRegistry(db)
        self.requeuer = Requeuer(self.queue, interval=max(1.0, config.heartbeat / 2), grace=config.lease)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.refused: set[str] = set()
        self.jobs_done = 0
        self._stop = threading.Event()
        self._current: Claim | None = None
        self._run_info: dict[str, tuple[float, dict[str, Any]]] = {}
        self._domains: dict[tuple[str, str], Any] = {}

    # -- signals --------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: drain gracefully; again: exit at once.  Main thread only."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_grace_over)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stop.is_set():
            log.warning("%s again: exiting at once", name)
            os._exit(128 + signum)
        self._stop.set()
        if self._current is None:
            log.info("%s: stopping", name)
            return
        log.warning(
            "%s: finishing trial %d of run %r for up to %.0f s, then returning it to the "
            "queue (send %s again to exit at once)",
            name, self._current.tid, self._current.exp_key, self.config.grace, name,
        )
        if self.config.grace <= 0:
            raise TrialInterrupted(f"{name} with no grace period")
        signal.setitimer(signal.ITIMER_REAL, self.config.grace)

    def _on_grace_over(self, signum: int, frame: FrameType | None) -> None:
        if self._current is not None:
            raise TrialInterrupted("the grace period after the stop signal is over")

    def request_stop(self) -> None:
        """Stop after the current job (for embedding the worker in other code)."""
        self._stop.set()

    # -- the loop -------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped, out of jobs (``idle_exit``) or ``max_jobs``; the exit code.

        First the worker leases ``gpus`` GPUs of its host (waiting while none is free)
        and pins itself to them; a host without GPUs, or ``gpus=0``, runs on the CPU.
        """
        cfg = self.config
        retrying(self.queue.ensure_indexes, "creating indexes")
        gpu_lease = GpuLease(self.db, self.worker_id, count=cfg.gpus, ttl=cfg.lease)
        leased = wait_for_gpus(gpu_lease, stop=self._stop)
        if leased is None:
            return 0
        os.environ.update(visible_devices_env(leased))
        device = ", ".join(f"{gpu.name} ({gpu.uuid})" for gpu in leased) or "cpu"
        try:
            return self._work(gpu_lease, device)
        finally:
            try:
                gpu_lease.release()
            except PyMongoError as exc:
                log.warning("could not release the GPU lease (%s); it lapses in %.0f s", describe(exc), cfg.lease)

    def _work(self, gpu_lease: GpuLease, device: str) -> int:
        cfg = self.config
        retrying(lambda: self.registry.register(
            self.worker_id, host=socket.gethostname(), pid=os.getpid(),
            device=device, version=cfg.version), "registering the worker")
        log.info("worker %s ready (run: %s, device: %s)", self.worker_id, cfg.run or "any", device)
        idle_since = time.monotonic()
        poll = cfg.poll_min
        code = 0

        def gpu_lost() -> None:
            nonlocal code
            code = EXIT_GPU_LOST
            log.error("this worker's GPU lease was taken over; stopping so a fresh process can lease one")
            self._stop.set()

        beat = Heartbeat(lambda: self.registry.update(self.worker_id, **self._record()) and gpu_lease.renew(),
                         cfg.heartbeat, name="worker record and GPU lease", on_lost=gpu_lost)
        with beat:
            while not self._stop.is_set():
                if cfg.max_jobs is not None and self.jobs_done >= cfg.max_jobs:
                    log.info("done %d job(s) (--max-jobs); exiting", self.jobs_done)
                    break
                claim = retrying(
                    lambda: self.queue.claim(self.worker_id, exp_key=cfg.run,
                                             exclude_runs=self.refused, lease_s=cfg.lease),
                    "claiming a job",
                )
                if claim is None:
                    self.requeuer.tick()
                    if cfg.idle_exit is not None and time.monotonic() - idle_since >= cfg.idle_exit:
                        log.info("no job for %.0f s (--idle-exit); exiting", cfg.idle_exit)
                        break
                    self._stop.wait(poll)
                    poll = min(poll * 2, cfg.poll_max)
                    continue
                poll = cfg.poll_min
                try:
                    self._process(claim)
                except Refused as exc:
                    retrying(lambda held=claim: self.queue.release(held), "returning a refused job")
                    self.refused.add(claim.exp_key)
                    log.error("refusing run %r: %s", claim.exp_key, exc)
                    if cfg.run is not None:
                        code = EXIT_REFUSED
                        break
                idle_since = time.monotonic()
            retrying(lambda: self.registry.update(self.worker_id, status="stopped", trials_done=self.jobs_done),
                     "deregistering")
        return code

    def _record(self) -> dict[str, Any]:
        """What the worker record says now (written by the heartbeat)."""
        current = self._current
        return {
            "status": "busy" if current is not None else "idle",
            "current": {"exp_key": current.exp_key, "tid": current.tid} if current is not None else None,
            "trials_done": self.jobs_done,
        }

    def _process(self, claim: Claim) -> None:
        task, settings = self._prepare(claim)
        if task is None:
            return
        reporter = JobReporter(self.queue, claim, settings, self._stop, self.config.lease)
        beat = Heartbeat(
            lambda: self.queue.heartbeat(claim, self.config.lease),
            self.config.heartbeat,
            name=f"run {claim.exp_key!r} trial {claim.tid}",
            on_lost=reporter.lease_lost,
        )
        outcome: Outcome | None
        started = time.monotonic()
        with beat:
            self._current = claim
            try:
                outcome = normalize(task(reporter))
            except TrialInterrupted as exc:
                log.warning("trial %d of run %r interrupted: %s", claim.tid, claim.exp_key, exc)
                outcome = None
            except Exception as exc:  # noqa: BLE001 - the objective's failure is data
                log.warning("trial %d of run %r raised %s: %s", claim.tid, claim.exp_key,
                            type(exc).__name__, exc)
                outcome = from_exception(exc)
            finally:
                self._current = None
                _disarm_grace_timer()
        if outcome is None:
            if retrying(lambda: self.queue.release(claim), "returning the job to the queue"):
                log.warning("trial %d of run %r returned to the queue", claim.tid, claim.exp_key)
            self._stop.set()
        else:
            self._write(claim, outcome, elapsed_s=time.monotonic() - started)

    def _write(self, claim: Claim, outcome: Outcome, elapsed_s: float | None = None) -> None:
        written = retrying(
            lambda: self.queue.finish(claim, outcome.state, outcome.result, outcome.error, elapsed_s),
            f"writing the result of trial {claim.tid}",
        )
        if written:
            self.jobs_done += 1
            loss = outcome.result.get("loss")
            log.info("run %r trial %d: %s%s", claim.exp_key, claim.tid,
                     outcome.state.name.lower(), f", loss {loss:.6g}" if isinstance(loss, float) else "")

    # -- what to run ----------------------------------------------------------------

    def _prepare(self, claim: Claim) -> tuple[Callable[[JobReporter], Any] | None, Mapping[str, Any]]:
        """The objective call for ``claim`` and its settings, or (None, {}) if the job was
        already finished as an error here.

        Raises:
            Refused: this worker must not evaluate the run's jobs.
        """
        job = claim.job
        name = job.get(s.EXPERIMENT)
        if name is None:
            return self._prepare_pickled(claim), {}
        try:
            experiment = get_experiment(name)
        except UnknownExperiment as exc:
            raise Refused(f"{exc}. Install the package that provides {name!r} on this "
                          "worker, or start it with --objective package.module:attribute") from None
        run = self._run(claim.exp_key)
        fingerprint = experiment.fingerprint()
        if run.get(s.RUN_FINGERPRINT) not in (None, fingerprint):
            raise Refused(
                f"version skew: run {claim.exp_key!r} was created for {name!r} with fingerprint "
                f"{run.get(s.RUN_FINGERPRINT)}, but this worker's code gives {fingerprint}; "
                "run the same version of the experiment on the coordinator and the workers"
            )
        try:
            params = params_for(experiment.space, job[s.MISC]["vals"])
        except PointOutsideSpace as exc:
            self._write(claim, failure("params outside space", f"trial {claim.tid}: {exc}", "PointOutsideSpace"))
            return None, {}
        settings = {**experiment.default_settings, **(run.get(s.RUN_SETTINGS) or {})}
        return (lambda reporter: experiment.objective(params, reporter)), settings

    def _prepare_pickled(self, claim: Claim) -> Callable[[JobReporter], Any] | None:
        job = claim.job
        cmd = (job.get(s.MISC) or {}).get("cmd") or [None, None]
        if cmd[0] != "domain_attachment":
            self._write(claim, failure("unsupported job", f"job has no experiment and an unsupported "
                                       f"hyperopt command {cmd[0]!r}", "UnsupportedJob"))
            return None
        if not self.config.allow_pickle:
            log.error("trial %d of run %r: %s", claim.tid, claim.exp_key, PICKLE_REFUSED)
            self._write(claim, failure("pickle refused", PICKLE_REFUSED, "PickleRefused"))
            return None
        from jobstore.trials import MongoTrials

        key = (claim.exp_key, str(cmd[1]))
        if key not in self._domains:
            import cloudpickle

            trials = MongoTrials(self.db, exp_key=claim.exp_key, refresh=False,
                                 jobs_collection=self.queue.jobs.name)
            self._domains[key] = (cloudpickle.loads(retrying(
                lambda: trials.attachments[str(cmd[1])], "loading the pickled Domain")), trials)
        domain, trials = self._domains[key]
        spec = base.spec_from_misc(job[s.MISC])
        ctrl = base.Ctrl(trials, current_trial=job)
        return lambda reporter: domain.evaluate(spec, ctrl)

    def _run(self, exp_key: str) -> dict[str, Any]:
        cached = self._run_info.get(exp_key)
        if cached is None or time.monotonic() - cached[0] > RUN_INFO_TTL_S:
            run = retrying(lambda: self.db[s.RUNS].find_one({s.ID: exp_key}), "reading the run") or {}
            cached = (time.monotonic(), run)
            self._run_info[exp_key] = cached
        return cached[1]
