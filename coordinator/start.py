"""``hpo-coord start``: create or resume a run and drive hyperopt's fmin over the queue.

The sequence: resolve the experiment; work out the run's settings (pruner settings that
cannot work are refused here, before anything is written); check or create the run
document (same experiment and fingerprint on resume); take the run's coordinator lease (a second
coordinator refuses while this one lives); only then write the run's settings,
``max_evals`` and algorithm, so a refused start changes nothing; start the keeper thread (lease renewal,
requeue of lost jobs) and any local workers; then call ``hyperopt.fmin`` with a
:class:`~jobstore.trials.MongoTrials` bound to the experiment.  fmin counts the run's
existing new, running and done trials towards ``max_evals``, so a resumed run never
exceeds it, and trial ids come from the run's counter, so none is reused.
"""

from __future__ import annotations

import logging
import shlex
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

import hyperopt
import numpy as np
from pymongo.errors import PyMongoError
from rich.console import Console

from coordinator.algorithms import DEFAULT_ALGORITHM, suggest_function
from coordinator.keeper import RunKeeper
from coordinator.local_workers import LocalWorkers
from coordinator.progress import rich_progress
from jobstore import schema as s
from jobstore.connection import PASSWORD_ENV, mask
from jobstore.curves import CurveStore
from jobstore.queue import DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS
from jobstore.retry import describe
from jobstore.runs import RunStore
from jobstore.store import Store
from jobstore.trials import DEFAULT_POLL_INTERVAL_S, MongoTrials
from objectives.base import BadSetting, Experiment, Setting
from objectives.pruning import (
    DEFAULT_MIN_RESOURCE,
    DEFAULT_REDUCTION_FACTOR,
    DEFAULT_STARTUP_TRIALS,
    DEFAULT_WARMUP_STEPS,
    RULE_SETTINGS,
    BadPrunerSettings,
    PrunerSettings,
)
from user_errors import UserError

log = logging.getLogger(__name__)

DEFAULT_QUEUE = 4
"""Suggestions kept waiting in the queue when ``--queue`` is not given (or
``--local-workers``, if more)."""


@dataclass
class PrunerChoice:
    """What ``hpo-coord start``'s pruner options set; None: the default."""

    kind: str
    metric: str | None = None
    direction: str | None = None
    min_resource: int | None = None
    max_resource: int | None = None
    reduction_factor: int | None = None
    warmup_steps: int | None = None
    startup_trials: int | None = None


@dataclass
class StartOptions:
    """What ``hpo-coord start``'s options set."""

    run: str
    max_evals: int | None
    """Trials in the run, counting those done before; None: a resumed run keeps its own, a
    new one takes the experiment's (see :func:`run_max_evals`)."""
    algo: str | None
    """None: a resumed run keeps its algorithm; a new one takes the experiment's, else
    ``coordinator.algorithms.DEFAULT_ALGORITHM``."""
    queue: int = DEFAULT_QUEUE
    seed: int | None = None
    local_workers: int = 0
    poll_interval: float = DEFAULT_POLL_INTERVAL_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    lease: float = DEFAULT_LEASE_S
    trial_timeout: float | None = None
    outage_timeout: float | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    worker_args: list[str] = field(default_factory=list)
    pruner: PrunerChoice | None = None
    """None: a resumed run keeps its pruner; a new run has none."""


@dataclass
class RunSummary:
    """What a finished (or stopped) start reports."""

    run: str
    done: int
    best: dict[str, Any] | None
    """The best trial (:meth:`jobstore.view.ReadOnlyView.best_trial`); None: see ``no_best``."""
    worst_loss: float | None = None
    no_best: str | None = None
    """Why ``best`` is None (:meth:`jobstore.view.ReadOnlyView.no_best_trial`)."""


class StopOnSignals:
    """SIGTERM and SIGINT ask the coordinator to stop; it stops at the next safe point.

    The handler only records the request.  An exception raised from a signal handler
    lands wherever the main thread happens to be, and inside a ``__del__`` (pymongo has
    several) Python prints "Exception ignored" and drops it, so a single SIGTERM, all
    that ``docker stop`` and Kubernetes send before the kill, could be lost.  Instead
    :meth:`check` raises ``KeyboardInterrupt`` where the coordinator can stop cleanly:
    before fmin starts and at each of fmin's polls (as its ``early_stop_fn``), that is
    within one poll interval or one suggestion.  A second signal while the stop is
    pending raises at once: the way out when the first cannot be honoured soon, e.g.
    while an operation waits for the database to come back.  The keeper's
    ``_thread.interrupt_main()`` (lease lost) arrives as a SIGINT and takes the same path.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._requested.is_set():
            raise KeyboardInterrupt
        self._requested.set()

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a stop was asked for."""
        if self._requested.is_set():
            raise KeyboardInterrupt

    def early_stop(self, trials: Any, *args: Any) -> tuple[bool, tuple[Any, ...]]:
        """hyperopt's ``early_stop_fn``: fmin calls it after every poll of the queue."""
        self.check()
        return False, args

    def __enter__(self) -> "StopOnSignals":
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


TRIAL_TIMEOUT_SETTING = Setting(s.RUN_TRIAL_TIMEOUT, float, help="time limit of one trial in seconds, 0: none "
                                "(also --trial-timeout)", minimum=0)
"""The run setting every experiment takes besides its own (see :func:`run_settings`)."""

WAITING_FOR_WORKERS_S = 10.0
"""Seconds after fmin starts without any worker taking a trial of the run before the
coordinator says that it waits for workers, and how to start one."""

_JOB_TAKEN_STATES = (hyperopt.JOB_STATE_RUNNING, hyperopt.JOB_STATE_DONE, hyperopt.JOB_STATE_ERROR)


class WorkerWait:
    """Prints one line when no worker took a trial of the run within ``delay`` seconds
    (used without ``--local-workers``).

    Checked at each of fmin's polls; once ``delay`` has passed it counts the run's
    running and finished trials once, and prints the line (with the ``hpo-worker``
    command) if that count has not grown since fmin started.
    """

    def __init__(self, console: Console, trials: MongoTrials, command: str,
                 delay: float = WAITING_FOR_WORKERS_S) -> None:
        self._console = console
        self._trials = trials
        self._command = command
        self._baseline = trials.count_by_state_unsynced(_JOB_TAKEN_STATES)
        self._due = time.monotonic() + delay
        self._settled = False

    def check(self) -> None:
        if self._settled or time.monotonic() < self._due:
            return
        self._settled = True
        if self._trials.count_by_state_unsynced(_JOB_TAKEN_STATES) > self._baseline:
            return
        self._console.print(f"waiting for workers: none has taken a trial yet; start one with: "
                            f"{self._command}", highlight=False, soft_wrap=True)


def worker_command(url: str, run: str, worker_args: list[str]) -> str:
    """The ``hpo-worker`` command that works on ``run``: its URL without a password (a
    password belongs in a file or the environment, never on a command line)."""
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    user = userinfo.partition(":")[0]
    shown = mask(f"{scheme}{sep}{user}{at}{hosts}{slash}{tail}")
    command = shlex.join(["hpo-worker", "--mongo", shown, "--run", run, *worker_args])
    if not at:
        return command
    return (f"{command}  (with the password in ${PASSWORD_ENV} or a file given with "
            "--mongo-password-file)")


def start_run(store: Store, experiment: Experiment, options: StartOptions, console: Console) -> RunSummary:
    """Run fmin until the run holds :func:`run_max_evals` trials, through ``store`` (local
    workers open the same store: :meth:`jobstore.store.Store.child_environment`); see
    the module docstring.

    Raises:
        KeyboardInterrupt: on SIGINT/SIGTERM (see :class:`StopOnSignals`), after leaving
            the run resumable.
        jobstore.retry.DatabaseOutage: the database stayed away longer than
            ``options.outage_timeout`` (None, the default: the coordinator waits).
        user_errors.UserError: run mismatch, busy run, bad algorithm.
    """
    with StopOnSignals() as stop:
        return _start_run(store, experiment, options, console, stop)


def _start_run(store: Store, experiment: Experiment, options: StartOptions, console: Console,
               stop: StopOnSignals) -> RunSummary:
    trials = MongoTrials(
        store, exp_key=options.run, refresh=False, experiment=experiment.name,
        max_attempts=options.max_attempts, poll_interval=options.poll_interval,
        outage_timeout=options.outage_timeout,
    )
    runs = trials.runs
    algo_name = choose_algorithm(runs, options.run, options.algo, experiment)
    algo = suggest_function(algo_name)
    # Refuse bad settings (the pruner's, local workers of a store that cannot hand its
    # connection to a child) before writing anything; then check (or create)
    # the run and take its lease before changing it: a refused start (another experiment
    # or code version, a live coordinator) leaves the run as it was.
    stored = runs.get(options.run)
    max_evals = run_max_evals(experiment, options, stored)
    if options.max_evals is not None:
        refuse_max_evals_below_done(options.run, options.max_evals, stored,
                                    trials.count_by_state_unsynced(hyperopt.JOB_STATE_DONE))
    settings = run_settings(experiment, options, stored)
    refuse_incomparable_pruner(store.queue.curves, options.run, stored, settings)
    workers = LocalWorkers(options.local_workers, store.child_environment(), options.run,
                           extra_args=options.worker_args,
                           outage_timeout=options.outage_timeout,
                           queue=store.queue) if options.local_workers else None
    runs.ensure(options.run, experiment=experiment.name, fingerprint=experiment.fingerprint())
    token = runs.acquire_coordinator(options.run, options.lease)
    rstate = np.random.default_rng(options.seed)
    try:
        runs.ensure(
            options.run, experiment=experiment.name, fingerprint=experiment.fingerprint(),
            settings=settings,
            max_evals=max_evals, algo=algo_name,
        )
        with RunKeeper(trials.store, options.run, token, lease_s=options.lease):
            trials.refresh()
            already = trials.count_by_state_unsynced(hyperopt.JOB_STATE_DONE)
            if already:
                console.print(f"resuming run [bold]{options.run}[/]: {already} trial(s) already done "
                              f"(algorithm {algo_name})")
            if workers is not None:
                workers.start()
            try:
                stop.check()
                # local workers say for themselves when they cannot start
                waiting = None if workers is not None else WorkerWait(
                    console, trials, worker_command(store.url or store.server, options.run, options.worker_args))

                def early_stop(trials: Any, *args: Any) -> tuple[bool, tuple[Any, ...]]:
                    if waiting is not None:
                        waiting.check()
                    return stop.early_stop(trials, *args)

                hyperopt.fmin(
                    experiment.objective, experiment.space, algo=algo, max_evals=max_evals,
                    trials=trials, rstate=rstate, max_queue_len=options.queue,
                    show_progressbar=rich_progress(console, options.run), verbose=True,
                    return_argmin=False, early_stop_fn=early_stop,
                )
            finally:
                if workers is not None:
                    workers.stop()
    finally:
        try:
            runs.release_coordinator(options.run, token)
        except PyMongoError as exc:  # the database may be what stopped the run
            log.warning("could not release the coordinator lease of run %r (%s); it lapses within %.0f s",
                        options.run, describe(exc), options.lease)
    return summarize(trials, options.run, experiment)


def run_max_evals(experiment: Experiment, options: StartOptions, run: Mapping[str, Any] | None) -> int:
    """The trials the run is to hold, counting those done before: ``--max-evals``; else a
    resumed run's own (the resume command the Ctrl-C hint prints names none); else the
    experiment's.  A stored value that is not a positive integer is passed over, with a
    warning."""
    if options.max_evals is not None:
        return options.max_evals
    stored = (run or {}).get(s.RUN_MAX_EVALS)
    kept = s.as_int(stored)
    if kept is not None and kept >= 1:
        return kept
    if stored is not None:
        log.warning("the run's stored max_evals %r is not a positive integer; using the experiment's, %d",
                    stored, experiment.max_evals)
    return experiment.max_evals


def refuse_max_evals_below_done(run: str, max_evals: int, stored: Mapping[str, Any] | None, done: int) -> None:
    """Refuse a ``--max-evals`` below the trials the run has done: it counts them, so the run
    would end at once and read "D of M done" with D > M.

    Raises:
        UserError: naming both counts and what to pass instead.
    """
    if max_evals < done:
        kept = s.as_int((stored or {}).get(s.RUN_MAX_EVALS))
        keep = f", or leave --max-evals out to keep the run's {kept}" if kept is not None and kept > done else ""
        raise UserError(f"run {run!r} has {done} trials done, and --max-evals counts them: {max_evals} would "
                        f"end it at once. Pass more than {done} to run more trials{keep}")


def run_settings(experiment: Experiment, options: StartOptions, run: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings a (re)started run stores: the experiment's defaults, then the run's
    stored settings (a resume keeps them, e.g. its ``epochs``), then ``--set``; the
    pruner (``--pruner``; else the one the run already has), and the trial time limit (``--trial-timeout``; else the one the run already has, so a
    resume keeps it; else the experiment's default)."""
    stored = (run or {}).get(s.RUN_SETTINGS)
    settings = {**experiment.default_settings, **kept_settings(experiment, stored, options.settings),
                **options.settings}
    if options.pruner is not None:
        settings[s.RUN_PRUNER] = pruner_settings(experiment, options.pruner, settings)
    elif isinstance(stored, Mapping) and s.RUN_PRUNER in stored:
        settings[s.RUN_PRUNER] = usable_stored_pruner(stored[s.RUN_PRUNER])
        refuse_a_budget_the_pruner_missed(stored, settings)
    if options.trial_timeout is not None:
        settings[s.RUN_TRIAL_TIMEOUT] = options.trial_timeout
    elif s.RUN_TRIAL_TIMEOUT not in settings:  # not given with --set either
        if isinstance(stored, Mapping) and s.RUN_TRIAL_TIMEOUT in stored:
            settings[s.RUN_TRIAL_TIMEOUT] = stored[s.RUN_TRIAL_TIMEOUT]
        elif experiment.trial_timeout is not None:
            settings[s.RUN_TRIAL_TIMEOUT] = experiment.trial_timeout
    return settings


def kept_settings(experiment: Experiment, stored: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """The run's stored settings a resume keeps: those the experiment declares and ``--set``
    (``given``) does not replace, each checked as ``--set`` checks it (the run document may
    have been edited, or written by another version of the experiment).  A stored setting
    the experiment no longer declares is dropped with a warning (no objective reads it).

    Raises:
        UserError: a stored value its declaration refuses; the message names it and the
            ``--set`` that replaces it.
    """
    if not isinstance(stored, Mapping):
        return {}
    declared = {setting.name for setting in experiment.settings}
    kept: dict[str, Any] = {}
    for name, value in stored.items():
        if name in (s.RUN_PRUNER, s.RUN_TRIAL_TIMEOUT) or name in given:
            continue
        if name not in declared:
            log.warning("the run's stored setting %r is not one experiment %r declares; not kept", name,
                        experiment.name)
            continue
        try:
            kept.update(experiment.check_settings({name: value}))
        except BadSetting as exc:
            raise UserError(f"the run's stored settings: {exc}; replace it with --set {name}=VALUE") from None
    return kept


_TUNING = ("metric", "direction", "max_resource", "min_resource", "reduction_factor", "warmup_steps",
           "startup_trials")
"""The :class:`PrunerChoice` fields of ``hpo-coord start``'s pruner options."""
_EVERY_RULE = ("metric", "direction", "max_resource")
"""Those every rule reads (the others: :data:`objectives.pruning.RULE_SETTINGS`)."""


def usable_stored_pruner(stored: Any) -> Any:
    """``stored``, the pruner a resumed run keeps, if workers can use it (None: no pruner).

    Raises:
        UserError: workers would refuse the run's jobs for these settings; the message
            says why and to replace them with ``--pruner``.
    """
    if stored is not None:
        try:
            PrunerSettings.from_document(stored)
        except BadPrunerSettings as exc:
            raise UserError(f"the run's stored pruner settings are unusable ({exc}), so every worker would "
                            "refuse its trials; pass --pruner median|asha|hyperband (with its options) or "
                            "--pruner none to replace them") from None
    return stored


def refuse_a_budget_the_pruner_missed(stored: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
    """Refuse a resume that keeps the run's pruner, sized from its ``epochs``
    (``max_resource`` equal to them), while ``--set`` changes the epochs: the rule would
    compare at another budget than the trials train (a ``max_resource`` given apart from
    the epochs is kept as given).

    Raises:
        UserError: naming both budgets and the ``--pruner`` that sizes the pruner anew.
    """
    pruner, before, after = settings.get(s.RUN_PRUNER), stored.get("epochs"), settings.get("epochs")
    if isinstance(pruner, Mapping) and after != before and pruner.get("max_resource") == before:
        kind = pruner.get("kind")
        raise UserError(f"the run's {kind} pruner is sized for its {before} epochs (max_resource {before}), "
                        f"and --set epochs={after} changes them: pass --pruner {kind} (with the options the "
                        f"run was started with) to size it for {after} epochs, or leave epochs as they are")


def refuse_incomparable_pruner(curves: CurveStore, run: str, stored: Mapping[str, Any] | None,
                               settings: Mapping[str, Any]) -> None:
    """Refuse a resume whose new pruner would compare the run's trials with the scores
    its stored pruner had them record on another scale (another metric or direction) or
    at other steps (another asha/hyperband rung layout), when such scores exist.

    Raises:
        UserError: saying what changed and what to do instead.
    """
    old = (stored or {}).get(s.RUN_SETTINGS)
    old = old.get(s.RUN_PRUNER) if isinstance(old, Mapping) else None
    new = settings.get(s.RUN_PRUNER)
    if old is None or new is None or old == new:
        return
    try:
        earlier = PrunerSettings.from_document(old)
    except BadPrunerSettings:  # unusable: no worker recorded scores under it
        return
    changed = PrunerSettings.from_document(new).incomparable_scores(earlier)
    if changed is not None and curves.has_scores(run):
        raise UserError(f"run {run!r} has pruning scores recorded under its pruner's settings, and the new "
                        f"ones change {changed}: its trials would be compared with scores of another kind. "
                        "Start a new run (--run NAME) to prune with these settings, or resume this one "
                        "without --pruner (or with --pruner none)")


def pruner_choice_metric(experiment: Experiment, choice: PrunerChoice) -> tuple[str, str] | None:
    """The metric and direction ``choice`` prunes by (None for ``--pruner none``), from the
    options and the experiment alone: what can be refused before the run is read (and, in
    local mode, before the local server starts).

    The metric and direction default to what the experiment declares
    (:attr:`Experiment.pruning`).

    Raises:
        UserError: an option the chosen pruner does not read; no metric to default to.
    """
    for option in _TUNING:
        readers = [kind for kind in RULE_SETTINGS if option in (*_EVERY_RULE, *RULE_SETTINGS[kind])]
        if getattr(choice, option) is not None and choice.kind not in readers:
            flag = f"--pruner-{option}" if option in ("metric", "direction") else f"--{option.replace('_', '-')}"
            kinds = " and ".join([", ".join(readers[:-1]), readers[-1]] if len(readers) > 1 else readers)
            raise UserError(f"{flag} applies to {kinds} only, not {choice.kind}; drop it, or choose a "
                            "pruner that reads it")
    if choice.kind == "none":
        return None
    declared = experiment.pruning
    metric = choice.metric or (declared.name if declared else None)
    if metric is None:
        raise UserError(f"experiment {experiment.name!r} declares no pruning metric; name the reported "
                        "metric to compare with --pruner-metric (and --pruner-direction)")
    direction = choice.direction or (declared.direction if declared and declared.name == metric else "minimize")
    return metric, direction


def pruner_settings(experiment: Experiment, choice: PrunerChoice, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run document's pruner for ``choice`` (None for ``--pruner none``).

    The metric and direction are :func:`pruner_choice_metric`'s, the maximum resource
    defaults to the run's ``epochs`` setting.

    Raises:
        UserError: :func:`pruner_choice_metric`'s refusals; no maximum resource to default
            to; settings that cannot work or could never prune (the message names the
            option to change).
    """
    chosen = pruner_choice_metric(experiment, choice)
    if chosen is None:
        return None
    metric, direction = chosen
    epochs = settings.get("epochs")
    max_resource = choice.max_resource or (epochs if s.as_int(epochs) is not None else None)
    if max_resource is None:
        raise UserError("--pruner needs the trial's budget in steps: pass --max-resource (the last step "
                        f"a trial reports), or set epochs (--set epochs=N); the run's epochs is {epochs!r}")
    try:
        pruner = PrunerSettings(
            kind=choice.kind, metric=metric, direction=direction, max_resource=int(max_resource),
            min_resource=choice.min_resource or DEFAULT_MIN_RESOURCE,
            reduction_factor=choice.reduction_factor or DEFAULT_REDUCTION_FACTOR,
            warmup_steps=choice.warmup_steps if choice.warmup_steps is not None else DEFAULT_WARMUP_STEPS,
            startup_trials=choice.startup_trials if choice.startup_trials is not None else DEFAULT_STARTUP_TRIALS,
        )
    except BadPrunerSettings as exc:
        raise UserError(f"{exc}; change the --pruner options (hpo-coord start --help)") from None
    useless = pruner.never_prunes()
    if useless is not None:
        raise UserError(f"pruner settings: {useless}; change the --pruner options (hpo-coord start --help)")
    return pruner.to_document()


def choose_algorithm(runs: RunStore, run: str, requested: str | None, experiment: Experiment) -> str:
    """``requested`` if given; else the algorithm an existing run was started with (a resumed
    run keeps it, and its sampler state is rebuilt from the run's trials); else the
    experiment's; else :data:`~coordinator.algorithms.DEFAULT_ALGORITHM`."""
    if requested:
        return requested
    existing = runs.get(run)
    recorded = existing.get(s.RUN_ALGO) if existing else None
    if isinstance(recorded, str) and recorded:
        return recorded
    return experiment.algo or DEFAULT_ALGORITHM


def summarize(trials: MongoTrials, run: str, experiment: Experiment) -> RunSummary:
    """The run's done count and best trial (params as the objective saw them)."""
    trials.refresh()
    best = trials.store.view.best_trial(run, s.has_point)
    done = trials.count_by_state_unsynced(hyperopt.JOB_STATE_DONE)
    if best is None:
        return RunSummary(run, done, None, no_best=trials.store.view.no_best_trial(run))
    # None when no trial hyperopt can use has a finite loss: the best may be a document
    # MongoTrials leaves out (malformed for hyperopt, see jobstore.trials.trial_problem)
    worst = max((loss for loss in trials.losses() if s.is_finite_number(loss)), default=None)
    return RunSummary(
        run, done,
        {"tid": best[s.TID], "loss": best[s.RESULT]["loss"],
         "params": s.bson_safe(s.params_from_vals(experiment.space, best[s.MISC]["vals"])),
         "result": best[s.RESULT]},
        worst_loss=worst,
    )


@dataclass
class BestConfiguration:
    """The best finished trial of a run, ready to train again."""

    experiment: str
    tid: int
    loss: float
    params: Any
    settings: dict[str, Any]


def best_configuration(store: Store, run: str) -> BestConfiguration:
    """The run's best ok trial (:meth:`jobstore.view.ReadOnlyView.best_trial`, in the
    store's jobs collection), with its params as the objective saw them.

    Raises:
        UserError: unknown run, or no best trial yet (no successful trial, or every
            successful one was pruned; the message says which).
    """
    from objectives.registry import get_experiment

    doc = store.runs.get(run)
    if doc is None or doc.get(s.RUN_EXPERIMENT) is None:
        known = store.runs.started_runs()
        raise UserError(f"no run {run!r} started by hpo-coord in this database; runs: {', '.join(known) or 'none'}")
    best = store.view.best_trial(run, s.has_point)
    if best is None:
        raise UserError(f"run {run!r} has no best trial: {store.view.no_best_trial(run)}")
    experiment = get_experiment(doc[s.RUN_EXPERIMENT])
    params = s.params_from_vals(experiment.space, best[s.MISC]["vals"])
    return BestConfiguration(experiment.name, best[s.TID], best[s.RESULT]["loss"], params,
                             dict(doc.get(s.RUN_SETTINGS) or {}))


def resume_hint(experiment: str, run: str, url: str | None, extra_args: Sequence[str] = ()) -> str:
    """The command that resumes this run: ``url`` (None in local mode) with its password
    masked, and ``extra_args`` (``--objective``, a local mode's ``--local-dir``)."""
    mongo = f" --mongo '{mask(url)}'" if url else ""
    extra = f" {shlex.join(extra_args)}" if extra_args else ""
    return f"hpo-coord start --exp {experiment} --run {run}{mongo}{extra}"
