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
  queue (not failed), and the worker exits 0.  A second signal exits at once.  An
  objective that swallows the interruption (a bare ``except``, or the exception landing
  in a ``__del__``) has :data:`INTERRUPT_BACKSTOP_S` more seconds; then its job is handed
  back all the same and the worker exits with 128 + the signal's number.
* While the database is away, every operation is retried with backoff; a result
  computed meanwhile is written once the database is back.  The heartbeat runs until
  the result write returns, so the lease is renewed as soon as the database answers
  again and the requeuer does not hand the finished trial to another worker while the
  write waits for its next retry.
* A lost lease ends only that trial: a cooperative objective stops (or a finished
  one's write is refused), nothing is written over the job's next holder, and the
  worker goes on claiming.  Only a stop signal (or :meth:`Worker.request_stop`) stops it.
* A poison job never kills the worker: a job document with a field missing or of the
  wrong type, or an objective whose result MongoDB cannot hold (an integer beyond 64
  bits, more than 8 MiB), ends as an error with the reason ``malformed job`` or
  ``unstorable result``; an objective that calls ``sys.exit`` is an ordinary error
  (but not the :class:`jobstore.fatal.ThreadDied` a dying heartbeat thread raises into
  it: that ends the worker at once, and the job is left to its lease).
  Error messages and tracebacks are cut to a few kilobytes (logged: 500 characters),
  so a megabyte-long exception message is written as quickly as a short one.  A
  malformed run document (its ``settings`` not a document) refuses that run.
* A trial that runs past its time limit (run setting ``trial_timeout``, from
  ``hpo-coord start --trial-timeout`` or the experiment's default) is asked to stop;
  it ends as an error with the reason ``timeout`` (not retried) and the worker goes on.
  If it has not stopped ``grace`` seconds later, the worker records the timeout,
  releases its GPU lease and exits with code 76 (:data:`EXIT_TRIAL_HUNG`) for its
  supervisor to replace it: a thread cannot be ended, and a GPU is freed only with
  its process.
* In a run with a pruner, a trial the pruner stops after one of its reports ends as done
  with ``pruned: true``, the step it reached and the loss it reported there, whatever
  the objective does after the decision: let :class:`TrialPruned` propagate, catch it
  and return (the value is ignored), or raise something else (logged).  A stop signal,
  a lost lease or the time limit before any such decision is never pruning: the job is
  handed back, dropped or timed out as above.
"""

from __future__ import annotations

import gc
import logging
import math
import numbers
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

from hyperopt import base
from pymongo.errors import OperationFailure, PyMongoError, WriteError

from cli_support.console import EXIT_TRIAL_HUNG, EXIT_USER_ERROR
from jobstore import schema as s
from jobstore.fatal import ThreadDied
from jobstore.gpu_lease import GpuLease, wait_for_gpus
from jobstore.heartbeat import Heartbeat
from jobstore.queue import DEFAULT_LEASE_S, Claim, JobQueue
from jobstore.requeuer import Requeuer
from jobstore.retry import DatabaseOutage, describe
from jobstore.store import Store
from jobstore.curves import AttemptCurves
from objectives.base import Experiment, TrialInterrupted, TrialPruned
from objectives.pruning import BadPrunerSettings, Pruner, PrunerSettings
from objectives.registry import get_experiment
from user_errors import BadObjectiveReference, UnknownExperiment
from worker.evaluate import (
    LOG_LIMIT,
    MALFORMED,
    PICKLE_REFUSED,
    MalformedJob,
    Outcome,
    PointOutsideSpace,
    clip,
    exception_name,
    exception_text,
    failure,
    from_exception,
    interpret,
    job_command,
    job_experiment,
    job_vals,
    params_for,
    pruned,
    timed_out,
    unstorable,
)
from worker.gpus import discover_gpus, visible_devices_env
from worker.timeout import TrialTimer

log = logging.getLogger(__name__)

RUN_INFO_TTL_S = 10.0
DEFAULT_POLL_MIN_S = 0.01
DEFAULT_POLL_MAX_S = 0.5
EXIT_REFUSED = EXIT_USER_ERROR
EXIT_GPU_LOST = 75
INTERRUPT_BACKSTOP_S = 5.0
"""Seconds a trial has to end after :class:`TrialInterrupted` was raised into it by a
stop signal (or its grace running out) before the worker hands its job back and exits."""


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
    """Seconds a trial may take to stop after a stop signal, or after its time limit."""
    allow_pickle: bool = False
    gpus: int = 1
    version: str = "unknown"


def _disarm_grace_timer() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


class Refused(Exception):
    """This worker will not evaluate the run's jobs; the message says why."""


def _label(claim: Claim) -> str:
    """``trial 7 of run 'r'`` for log lines, whatever types the job's fields have."""
    tid = claim.job.get(s.TID)
    return f"trial {tid if isinstance(tid, int) else repr(tid)[:40]} of run {claim.job.get(s.EXP_KEY)!r:.80}"


@dataclass(frozen=True)
class PrunedAt:
    """Where the run's pruner stopped a trial: the step, the metric's value there, and
    the loss the objective reported at that step (None if it reported none)."""

    step: int
    value: float
    loss: Any


class JobReporter:
    """The :class:`objectives.base.Reporter` a worker hands to the objective.

    With ``pruning`` (the run's :class:`PrunerSettings`), every kept report of the
    pruning metric is followed by the pruner's decision; a prune raises
    :class:`TrialPruned` (then and at every later report) and sets :attr:`pruned`, which
    decides the trial's outcome however the objective ends (see the module doc).
    """

    def __init__(self, queue: JobQueue, claim: Claim, settings: Mapping[str, Any],
                 stop: threading.Event, lease_s: float, pruning: PrunerSettings | None = None) -> None:
        self.settings = dict(settings)
        self._queue = queue
        self._claim = claim
        self._stop = stop
        self._lease_s = lease_s
        self._lost = threading.Event()
        self._time_up = threading.Event()
        self._curves: AttemptCurves | None = None
        self._pruner: Pruner | None = None
        if pruning is not None and pruning.kind != "none":
            self._curves = queue.curves.attempt(claim.exp_key, claim.tid, claim.token,
                                                holds=lambda: queue.holds(claim))
            self._pruner = Pruner(pruning, self._curves, claim.exp_key, claim.tid)
        self._unreported_warned = False
        self.pruned: PrunedAt | None = None

    def report(self, step: int, **metrics: float) -> None:
        if self._time_up.is_set():
            raise TrialInterrupted("the trial ran past its time limit")
        if self.pruned is not None:
            raise TrialPruned(f"the trial was pruned at step {self.pruned.step}")
        if not self._queue.report(self._claim, step, metrics, self._lease_s):
            self.lease_lost()
        elif self._pruner is not None:
            self._decide(step, metrics)

    def _decide(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Ask the pruner about this report; raise :class:`TrialPruned` if it prunes."""
        assert self._pruner is not None and self._curves is not None
        metric = self._pruner.settings.metric
        value = metrics.get(metric)
        at = s.as_int(step)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or at is None:
            if not self._unreported_warned:
                self._unreported_warned = True
                log.warning("%s: report(step=%r) has no number %r (the run's pruning metric; it "
                            "has %s), so pruning cannot judge it there", _label(self._claim), step,
                            metric, sorted(metrics))
            return
        prune = self._pruner.should_prune(at, float(value))  # the store retries its own operations
        if self._curves.lost:
            self.lease_lost()
        elif prune:
            self.pruned = PrunedAt(at, float(value), metrics.get("loss"))
            raise TrialPruned(f"pruned at step {at}: {metric}={float(value):.6g} ({self._pruner.settings.kind})")

    def should_stop(self) -> bool:
        return self._stop.is_set() or self._lost.is_set() or self._time_up.is_set()

    def lease_lost(self) -> None:
        self._lost.set()

    def time_up(self) -> None:
        self._time_up.set()

    @property
    def scored(self) -> bool:
        """True when the run prunes, so this attempt records scores in ``curves``."""
        return self._curves is not None

    @property
    def lost(self) -> bool:
        """True once the job's lease was found taken (by a heartbeat or a report)."""
        return self._lost.is_set()


class Worker:
    """One worker process's loop over the queue, through ``store`` (whose retry policy
    rides out database outages; see the module doc)."""

    def __init__(self, store: Store, config: WorkerConfig) -> None:
        self.config = config
        self.store = store
        self.queue = store.queue
        self.registry = store.workers
        self.requeuer = Requeuer(self.queue, interval=max(1.0, config.heartbeat / 2), grace=config.lease)
        self.worker_id = s.worker_id(socket.gethostname(), os.getpid())
        self.refused: set[Any] = set()
        self.jobs_done = 0
        self._stop = threading.Event()
        self._current: Claim | None = None
        self._run_info: dict[str, tuple[float, dict[str, Any]]] = {}
        self._domains: dict[tuple[str, str], Any] = {}
        self._gpu_lease: GpuLease | None = None
        self._warned_timeouts: set[str] = set()
        self._stop_signal = signal.SIGTERM

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
            "%s: asking %s to stop (a cooperative objective hands it back at its next "
            "report; the trial has up to %.0f s to finish), then returning it to the queue "
            "(send %s again to exit at once)",
            name, _label(self._current), self.config.grace, name,
        )
        self._stop_signal = signum
        if self.config.grace <= 0:
            self._interrupt(f"{name} with no grace period")
        signal.setitimer(signal.ITIMER_REAL, self.config.grace)

    def _on_grace_over(self, signum: int, frame: FrameType | None) -> None:
        if self._current is not None:
            self._interrupt("the grace period after the stop signal is over")

    def _interrupt(self, why: str) -> None:
        """Raise :class:`TrialInterrupted` into the running objective (we are in a signal
        handler on the main thread), with a backstop: the exception can be swallowed
        (raised inside a ``__del__``, or caught by the objective), so if the same trial
        still runs :data:`INTERRUPT_BACKSTOP_S` later, :meth:`_abandon` hands its job back
        and ends the process."""
        claim = self._current
        backstop = threading.Timer(INTERRUPT_BACKSTOP_S, self._abandon, args=(claim,))
        backstop.daemon = True
        backstop.start()
        raise TrialInterrupted(why)

    def _abandon(self, claim: Claim | None) -> None:
        """Return ``claim``'s job to the queue and exit, if that trial still runs after
        being interrupted (runs in the backstop thread)."""
        if claim is None or self._current is not claim:
            return
        code = 128 + self._stop_signal
        label = _label(claim)
        log.error("%s did not stop %.0f s after being interrupted (the interruption was swallowed); "
                  "returning its job to the queue and exiting with code %d", label,
                  INTERRUPT_BACKSTOP_S, code)
        try:
            # waiting longer than the lease for the database is pointless: the job lapses
            if self.store.with_outage_limit(self.config.lease).queue.release(claim):
                log.warning("%s returned to the queue", label)
            if self._gpu_lease is not None:
                self._gpu_lease.release()
        except Exception as exc:  # noqa: BLE001 - exit regardless; the lease then lapses
            log.error("could not return %s to the queue (%s); it is requeued when its lease lapses",
                      label, describe(exc))
        logging.shutdown()
        os._exit(code)

    def request_stop(self) -> None:
        """Stop after the current job (for embedding the worker in other code)."""
        self._stop.set()

    # -- the loop -------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped, out of jobs (``idle_exit``) or ``max_jobs``; the exit code.

        First the worker leases ``gpus`` GPUs of its host (waiting while none is free)
        and pins itself to them; a host without GPUs, or ``gpus=0``, runs on the CPU.  With
        ``gpus=0`` the host's GPUs are not even looked for, so nothing is logged about them.
        """
        cfg = self.config
        self.queue.ensure_indexes()
        self.registry.ensure_indexes()
        gpus = discover_gpus() if cfg.gpus else ()
        gpu_lease = self.store.gpu_lease(self.worker_id, gpus=gpus, count=cfg.gpus, ttl=cfg.lease)
        self._gpu_lease = gpu_lease
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

    def _register(self, device: str) -> None:
        """Write this worker's record afresh (idle, nothing done, seen now)."""
        self.registry.register(self.worker_id, host=socket.gethostname(), pid=os.getpid(),
                               device=device, version=self.config.version)

    def _beat(self, gpu_lease: GpuLease, device: str) -> bool:
        """The worker's heartbeat: its record, written again if it was deleted (someone
        cleaned up the ``workers`` collection: not a reason to stop), then the GPU lease;
        False only when the GPU lease was lost."""
        if not self.registry.beat(self.worker_id, **self._record()):
            log.warning("this worker's record in %r was deleted; writing it again", s.WORKERS)
            self._register(device)
            self.registry.beat(self.worker_id, **self._record())
        return gpu_lease.renew()

    def _work(self, gpu_lease: GpuLease, device: str) -> int:
        cfg = self.config
        self._register(device)
        log.info("worker %s ready (run: %s, device: %s)", self.worker_id, cfg.run or "any", device)
        idle_since = time.monotonic()
        poll = cfg.poll_min
        code = 0

        def gpu_lost() -> None:
            nonlocal code
            code = EXIT_GPU_LOST
            log.error("this worker's GPU lease was taken over; stopping so a fresh process can lease one")
            self._stop.set()

        beat = Heartbeat(lambda: self._beat(gpu_lease, device), cfg.heartbeat, name="worker record and GPU lease",
                         on_lost=gpu_lost)
        with beat:
            while not self._stop.is_set():
                if cfg.max_jobs is not None and self.jobs_done >= cfg.max_jobs:
                    log.info("done %d job(s) (--max-jobs); exiting", self.jobs_done)
                    break
                claim = self.queue.claim(self.worker_id, exp_key=cfg.run, exclude_runs=self.refused,
                                         lease_s=cfg.lease)
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
                    self.queue.release(claim)
                    run = claim.job.get(s.EXP_KEY)
                    self.refused.add(run)
                    log.error("refusing run %r: %s", run, exc)
                    if cfg.run is not None:
                        code = EXIT_REFUSED
                        break
                idle_since = time.monotonic()
            self.registry.update(self.worker_id, status="stopped", trials_done=self.jobs_done)
        return code

    def _record(self) -> dict[str, Any]:
        """What the worker record says now (written by the heartbeat)."""
        current = self._current
        return {
            "status": "busy" if current is not None else "idle",
            "current": ({"exp_key": current.job.get(s.EXP_KEY), "tid": current.job.get(s.TID)}
                    if current is not None else None),
            "trials_done": self.jobs_done,
        }

    def _holding(self, claim: Claim, name: str, on_lost: Callable[[], None] | None = None) -> Heartbeat:
        """The heartbeat that renews ``claim``'s lease (``name`` says whose in the log)."""
        return Heartbeat(lambda: self.queue.heartbeat(claim, self.config.lease), self.config.heartbeat,
                         name=name, on_lost=on_lost)

    def _process(self, claim: Claim) -> None:
        """Evaluate ``claim``'s job and write its outcome.  The job's lease is renewed from
        the claim to the end of the result write: loading the experiment can take longer
        than the lease (importing torch on a loaded host), and a result write retried
        through a database outage must not let the lease lapse, or the requeuer would hand
        a finished trial to another worker once the database is back (fencing would then
        refuse the result, and the trial would run again)."""
        label = _label(claim)
        with self._holding(claim, f"{label} (loading)"):
            try:
                task, settings, limit, pruning = self._prepare(claim)
            except Refused:
                raise
            except Exception as exc:  # noqa: BLE001 - a malformed job must not kill the worker
                if isinstance(exc, (PyMongoError, DatabaseOutage)):  # the database's trouble, not the job's
                    raise
                outcome = _unprepared(label, exc)
                log.error("%s: %s", label, clip(outcome.error["message"] if outcome.error else "", LOG_LIMIT))
                self._write(claim, outcome)
                return
        if task is None:
            return
        if self._stop.is_set():  # a stop signal came while the experiment loaded
            if self.queue.release(claim):
                log.warning("%s returned to the queue before it started (stop signal)", label)
            return
        reporter = JobReporter(self.queue, claim, settings, self._stop, self.config.lease, pruning)
        beat = self._holding(claim, label, on_lost=reporter.lease_lost)
        timer = TrialTimer(limit, self.config.grace, name=label,
                           on_expired=lambda: self._time_up(reporter, label, limit),
                           on_hung=lambda: self._end_hung_trial(claim, label, limit))
        interrupted: TrialInterrupted | None = None
        outcome: Outcome | None = None
        started = time.monotonic()
        hand_back = False
        with beat:  # until the outcome is written (see above)
            with timer:
                self._current = claim
                value: Any = None
                raised: BaseException | None = None
                try:
                    value = task(reporter)
                except ThreadDied:  # a heartbeat of this process died: not the trial's failure
                    raise
                except (Exception, SystemExit) as exc:  # noqa: BLE001 - the objective's failure is data
                    raised = exc
                finally:
                    self._current = None
                    _disarm_grace_timer()
            elapsed_s = time.monotonic() - started
            if reporter.pruned is not None:
                # The pruner's decision is final, however the objective ended after it: by
                # letting TrialPruned propagate, or by catching it and returning, raising
                # something else, or being interrupted (a stop signal or the time limit
                # that came after the decision).  The write is fenced by the lease as always.
                self._write(claim, _pruned_outcome(label, reporter.pruned, raised, value),
                            elapsed_s=elapsed_s, scored=reporter.scored)
                return
            if isinstance(raised, TrialInterrupted):
                interrupted = raised
            elif isinstance(raised, TrialPruned):  # raised by the objective: nothing pruned it
                log.warning("%s raised TrialPruned although the run's pruner did not prune it", label)
                outcome = from_exception(raised)
            elif raised is not None:
                log.warning("%s raised %s: %s", label, exception_name(raised), clip(exception_text(raised), LOG_LIMIT))
                outcome = from_exception(raised)
            else:
                outcome = interpret(value)
            if timer.expired:
                assert limit is not None
                log.warning("%s ran past its time limit of %g s; recorded as an error (timeout)", label, limit)
                _free_gpu_memory()
                self._write(claim, timed_out(limit), elapsed_s=elapsed_s)
            elif interrupted is not None and reporter.lost:
                log.warning("%s: lease lost, so the trial is dropped (the job's next holder owns it); it "
                            "stopped with: %s", label, clip(exception_text(interrupted), LOG_LIMIT))
            elif interrupted is not None and self._stop.is_set():
                log.warning("%s interrupted: %s", label, clip(exception_text(interrupted), LOG_LIMIT))
                hand_back = True  # after the heartbeat: a beat must not find the job gone and call it lost
            else:
                if interrupted is not None:  # raised although nothing asked the trial to stop
                    log.warning("%s raised TrialInterrupted although it was not asked to stop: %s",
                                label, clip(exception_text(interrupted), LOG_LIMIT))
                    outcome = from_exception(interrupted)
                assert outcome is not None
                self._write(claim, outcome, elapsed_s=elapsed_s, scored=reporter.scored)
        if hand_back and self.queue.release(claim):
            log.warning("%s returned to the queue", label)

    def _time_up(self, reporter: JobReporter, label: str, limit: float | None) -> None:
        log.warning("%s ran past its time limit of %g s; asking it to stop (it has %.0f s before "
                    "this worker exits to end it)", label, limit, self.config.grace)
        reporter.time_up()

    def _end_hung_trial(self, claim: Claim, label: str, limit: float | None) -> None:
        """Record the timeout of a trial that ignored the request to stop, free the GPU
        lease and exit :data:`EXIT_TRIAL_HUNG` (runs in the time-limit thread)."""
        assert limit is not None
        log.error("%s did not stop within %.0f s of passing its time limit of %g s; recording the "
                  "timeout and exiting with code %d so that a supervisor replaces this worker "
                  "(a running trial cannot be ended inside the process; its GPU memory is freed "
                  "with it)", label, self.config.grace, limit, EXIT_TRIAL_HUNG)
        try:
            # waiting longer than the lease for the database is pointless: the job lapses
            self._write(claim, timed_out(limit), queue=self.store.with_outage_limit(self.config.lease).queue)
        except Exception as exc:  # noqa: BLE001 - exit regardless; the lease then lapses
            log.error("could not record the timeout of %s (%s); the job is requeued when its lease "
                      "lapses", label, describe(exc))
        try:
            if self._gpu_lease is not None:
                self._gpu_lease.release()
            self.registry.beat(self.worker_id, status="stopped", trials_done=self.jobs_done)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not release the GPU lease (%s); it lapses in %.0f s",
                        describe(exc), self.config.lease)
        logging.shutdown()
        os._exit(EXIT_TRIAL_HUNG)

    def _write(self, claim: Claim, outcome: Outcome, elapsed_s: float | None = None,
               queue: JobQueue | None = None, scored: bool = False) -> None:
        """Store ``outcome`` through ``queue`` (default: this worker's); a result the
        database refuses (a document over its size limit, ...) is replaced by an
        ``unstorable result`` error.  ``scored``: the attempt recorded pruning scores
        (see :meth:`JobQueue.finish`)."""
        label = _label(claim)
        queue = queue or self.queue

        def finish(final: Outcome) -> bool:
            return queue.finish(claim, final.state, final.result, final.error, elapsed_s, scored)

        try:
            written = finish(outcome)
        except Exception as exc:
            if not _unstorable(exc):
                raise
            problem = f"{type(exc).__name__}: {clip(exception_text(exc), 300)}"
            log.error("%s: the database refused its result (%s); recording an error instead", label, problem)
            outcome = unstorable(problem)
            written = finish(outcome)
        if written:
            self.jobs_done += 1
            loss = outcome.result.get("loss")
            log.info("%s: %s%s", label, outcome.state.name.lower(),
                     f", loss {loss:.6g}" if isinstance(loss, float) else "")

    # -- what to run ----------------------------------------------------------------

    def _prepare(self, claim: Claim) -> tuple[Callable[[JobReporter], Any] | None, Mapping[str, Any],
                                              float | None, PrunerSettings | None]:
        """The objective call for ``claim``, its settings, its time limit and the run's
        pruner (None: none); the call is None if the job was already finished as an
        error here.

        Raises:
            Refused: this worker must not evaluate the run's jobs.
            MalformedJob, PointOutsideSpace: the job document cannot be evaluated.
        """
        job = claim.job
        name = job_experiment(job)
        if name is None:
            return self._prepare_pickled(claim), {}, None, None
        try:
            experiment = get_experiment(name)
        except UnknownExperiment as exc:
            raise Refused(f"{exc}. Install the package that provides {name!r} on this "
                          "worker, or start it with --objective package.module:attribute") from None
        except BadObjectiveReference as exc:
            raise Refused(f"this worker's experiment {name!r} cannot be loaded: {exc}") from None
        exp_key = claim.job.get(s.EXP_KEY)
        if not isinstance(exp_key, str):
            raise MalformedJob(f"'exp_key' is of type {type(exp_key).__name__}, expected the run's name")
        run = self._run(exp_key)
        fingerprint = experiment.fingerprint()
        if run.get(s.RUN_FINGERPRINT) not in (None, fingerprint):
            raise Refused(
                f"version skew: run {exp_key!r} was created for {name!r} with fingerprint "
                f"{run.get(s.RUN_FINGERPRINT)!r:.80}, but this worker's code gives {fingerprint}; "
                "run the same version of the experiment on the coordinator and the workers"
            )
        run_settings = run.get(s.RUN_SETTINGS) or {}
        if not isinstance(run_settings, Mapping):
            raise Refused(
                f"the run document's settings are of type {type(run_settings).__name__}, not a "
                "document; start the run again with hpo-coord start (its --set options) to rewrite them"
            )
        pruning = None
        if run_settings.get(s.RUN_PRUNER) is not None:
            try:
                pruning = PrunerSettings.from_document(run_settings[s.RUN_PRUNER])
            except BadPrunerSettings as exc:
                raise Refused(f"run {exp_key!r} has unusable {exc}; start the run again with "
                              "hpo-coord start --pruner ... to rewrite them") from None
        params = params_for(experiment.space, job_vals(job))
        settings = {**experiment.default_settings, **run_settings}
        limit = self._time_limit(exp_key, experiment, run_settings)
        return (lambda reporter: experiment.objective(params, reporter)), settings, limit, pruning

    def _time_limit(self, exp_key: str, experiment: Experiment, run_settings: Mapping[str, Any]) -> float | None:
        """The run's ``trial_timeout`` setting, else the experiment's; None (or 0): no limit.

        A value that is not a non-negative number is ignored, with one warning per run.
        """
        value = run_settings.get(s.RUN_TRIAL_TIMEOUT, experiment.trial_timeout)
        valid = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                  and math.isfinite(value) and value >= 0)
        if not valid:
            if exp_key not in self._warned_timeouts:
                self._warned_timeouts.add(exp_key)
                log.warning("run %r: the setting %s=%s is not a number of seconds >= 0; ignoring it "
                            "(the experiment's default applies: %s)", exp_key, s.RUN_TRIAL_TIMEOUT,
                            clip(repr(value), 80), experiment.trial_timeout)
            value = experiment.trial_timeout
        return float(value) if value else None

    def _prepare_pickled(self, claim: Claim) -> Callable[[JobReporter], Any] | None:
        job = claim.job
        cmd = job_command(job) or (None, None)
        if cmd[0] != "domain_attachment":
            self._write(claim, failure("unsupported job", f"job has no experiment and an unsupported "
                                       f"hyperopt command {cmd[0]!r:.100}", "UnsupportedJob"))
            return None
        if not self.config.allow_pickle:
            log.error("%s: %s", _label(claim), PICKLE_REFUSED)
            self._write(claim, failure("pickle refused", PICKLE_REFUSED, "PickleRefused"))
            return None
        from jobstore.trials import MongoTrials

        key = (claim.exp_key, str(cmd[1]))
        if key not in self._domains:
            import cloudpickle

            trials = MongoTrials(self.store, exp_key=claim.exp_key, refresh=False, outage_timeout=None)
            self._domains[key] = (cloudpickle.loads(trials.attachments[str(cmd[1])]), trials)
        domain, trials = self._domains[key]
        spec = base.spec_from_misc(job[s.MISC])
        ctrl = base.Ctrl(trials, current_trial=job)
        return lambda reporter: domain.evaluate(spec, ctrl)

    def _run(self, exp_key: str) -> dict[str, Any]:
        cached = self._run_info.get(exp_key)
        if cached is None or time.monotonic() - cached[0] > RUN_INFO_TTL_S:
            run = self.store.runs.get(exp_key) or {}
            cached = (time.monotonic(), run)
            self._run_info[exp_key] = cached
        return cached[1]


# Server errors for a document that grew too large (BSONObjectTooLarge, and the
# "resulting document after update is larger than 16 MiB" codes).
_TOO_LARGE_CODES = frozenset({10334, 17419, 17420})


def _pruned_outcome(label: str, at: PrunedAt, raised: BaseException | None, value: Any) -> Outcome:
    """The outcome of a trial the run's pruner stopped at ``at``, whatever the objective
    did after the decision (``raised``, or returned ``value``): done, ``pruned: true``,
    with the loss reported at that step (:func:`worker.evaluate.pruned`); what the
    objective returned or raised instead is logged and left out of the result."""
    if isinstance(raised, TrialPruned):
        log.info("%s %s", label, raised)
    elif raised is None:
        log.warning("%s caught TrialPruned and returned (a %s); it is recorded as pruned at step %d all "
                    "the same, with the loss it reported there (let TrialPruned propagate)", label,
                    type(value).__name__, at.step)
    else:
        log.warning("%s was pruned at step %d, then raised %s: %s; it is recorded as pruned there", label,
                    at.step, exception_name(raised), clip(exception_text(raised), LOG_LIMIT))
    return pruned(at.step, at.value, at.loss)


def _unstorable(exc: Exception) -> bool:
    """True when a failed result write means "this result cannot be stored": the driver
    could not encode it, or the server refused this document (a write error: too large,
    field names it does not accept, a validation rule), not a database problem (those
    are raised: retried while transient, fatal otherwise)."""
    if isinstance(exc, WriteError):
        return True
    if isinstance(exc, OperationFailure):
        return exc.code in _TOO_LARGE_CODES
    return not isinstance(exc, (PyMongoError, DatabaseOutage))


def _unprepared(label: str, exc: Exception) -> Outcome:
    """The error outcome of a job that could not be prepared for evaluation."""
    if isinstance(exc, PointOutsideSpace):
        return failure("params outside space", f"{label}: {exc}", "PointOutsideSpace")
    if isinstance(exc, MalformedJob):
        return failure(MALFORMED, f"{label}: {exc}", "MalformedJob")
    outcome = from_exception(exc)
    assert outcome.error is not None
    return failure(MALFORMED, f"{label}: the job could not be prepared: {exception_name(exc)}: "
                   f"{exception_text(exc)}", exception_name(exc), outcome.error.get("traceback"))


def _free_gpu_memory() -> None:
    """Hand the memory PyTorch cached for an ended trial back to the GPU (if torch runs)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()
