"""The read-only queries behind ``hpo-coord``'s monitoring commands.

Every function reads through the store's read-only view
(:class:`jobstore.view.ReadOnlyView`, ``store.view``: its reads wait out an outage
under the store's retry policy) and returns plain dataclasses or dicts; nothing here
prints or plots.  Contracts:

* **Nothing here writes**: the view has no writing method.  The indexes it relies on
  (``jobstore.schema.JOB_INDEXES``) are created by the coordinator and the workers.
* **Counting never loads documents.**  Counts by state are one ``$match`` + ``$group``
  on ``{exp_key, state}`` (covered by the ``run_state_tid`` index on MongoDB); the best
  trial is the view's one ``find_one`` in ``run_state_loss`` order; throughput reads only
  ``finished_at`` through ``run_finished``; stale jobs and workers are small indexed
  reads.  On MongoDB 7/8 the cost of :func:`run_status` therefore grows with the index
  entries of a run, not with its documents' size.  (SecantusDB, the embedded server,
  decodes every document an index scan visits, so there it grows with both; see
  docs/benchmarks.md.)
* **Times are the server's.**  Leases, heartbeats and "ago" are measured against the
  database server's clock, as the queue measures them; datetimes are naive UTC, as
  pymongo returns them.
* :func:`trial_rows` and :func:`trial_points` read one projected document per trial
  (never ``metrics``, ``spec`` or tracebacks); :func:`learning_curves` reads ``metrics``
  of the trials asked for only.
* **Malformed documents never raise.**  A job or worker document whose fields have the
  wrong type is read as far as it can be: a field of the wrong type reads as missing
  (None), and a job without an integer ``tid`` is left out.  Each function logs one
  warning per call naming the documents it left out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from hyperopt import base
from pymongo import ASCENDING, DESCENDING

from coordinator.display import whole_floats_as_ints
from jobstore import schema as s
from jobstore.schema import State
from jobstore.view import ReadOnlyView
from user_errors import UserError

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(seconds=60)
"""A running job without a heartbeat (``refresh_time``) for this long is flagged, and
a worker not seen for this long is reported as lost."""
THROUGHPUT_WINDOW = timedelta(hours=1)
"""Throughput is measured over the trials finished in this window before the latest."""
WORKER_HORIZON = timedelta(hours=1)
"""Workers not seen for longer than this are left out of the status."""
EARLIEST = datetime(1, 1, 1)
"""Before every date a job holds: ``{field: {"$gte": EARLIEST}}`` selects the jobs
whose ``field`` is a date, as an index range."""

class UnknownRun(UserError):
    """No run of that name; the message lists the runs there are."""


# -- runs ---------------------------------------------------------------------------


def known_runs(view: ReadOnlyView) -> list[str]:
    """Every run name: those with a run document and those that only have jobs (a
    malformed name, not a string, as its text)."""
    names = view.runs.distinct(s.ID) + view.jobs.distinct(s.EXP_KEY)
    return sorted({str(name) for name in names if name is not None})


def require_run(view: ReadOnlyView, run: str | None) -> str:
    """``run`` if it exists; without ``run``, the only run in the database.

    Raises:
        UnknownRun: ``run`` does not exist, or it was not given and there is not
            exactly one run; the message lists the runs.
    """
    if run is not None and (
        view.runs.find_one({s.ID: run}, {s.ID: 1}) is not None
        or view.jobs.find_one({s.EXP_KEY: run}, {s.ID: 1}) is not None
    ):
        return run
    names = known_runs(view)
    if run is None and len(names) == 1:
        return names[0]
    listing = ", ".join(names) if names else "none yet"
    if run is None:
        raise UnknownRun(f"pass --run to choose a run; runs in this database: {listing}")
    raise UnknownRun(f"unknown run {run!r}; runs in this database: {listing}")


@dataclass
class StateCounts:
    """How many of a run's jobs are in each state."""

    new: int = 0
    running: int = 0
    done: int = 0
    error: int = 0
    cancel: int = 0

    @property
    def total(self) -> int:
        return self.new + self.running + self.done + self.error + self.cancel


def count_states(view: ReadOnlyView, run: str) -> StateCounts:
    """The run's jobs counted by state, in one aggregation that reads only index keys."""
    counts = StateCounts()
    pipeline = [
        {"$match": {s.EXP_KEY: run}},
        {"$group": {s.ID: "$" + s.STATE, "n": {"$sum": 1}}},
    ]
    for row in view.jobs.aggregate(pipeline):
        try:
            name = State(row[s.ID]).name.lower()
        except ValueError:
            log.warning("run %r has %d job(s) in unknown state %r", run, row["n"], row[s.ID])
            continue
        setattr(counts, name, int(row["n"]))
    return counts


@dataclass
class BestTrial:
    """The run's lowest-loss ok trial."""

    tid: int
    loss: float
    params: Any
    finished_at: datetime | None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def text(value: Any) -> str | None:
    """``value`` as a string; None stays None."""
    return None if value is None else str(value)


def _vals(job: Mapping[str, Any]) -> dict[str, Any]:
    """hyperopt's ``misc.vals`` of ``job``, keeping only well-formed entries."""
    vals = _mapping(_mapping(job.get(s.MISC)).get("vals"))
    return {str(label): v for label, v in vals.items() if isinstance(v, (list, tuple))}


def plain(value: Any) -> Any:
    """``value`` as JSON can write it (BSON types JSON lacks, as their text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


def _warn_left_out(what: str, run: str, left_out: list[str]) -> None:
    if left_out:
        shown = "; ".join(left_out[:5]) + ("; ..." if len(left_out) > 5 else "")
        log.warning("%s of run %r: left out %d malformed job document(s) (%s); see docs/schema.md",
                    what, run, len(left_out), shown)


def _tid(job: Mapping[str, Any], left_out: list[str]) -> int | None:
    """The job's tid, or None (and a note in ``left_out``) if it has no integer tid."""
    tid = s.as_int(job.get(s.TID))
    if tid is None:
        left_out.append(f"_id {job.get(s.ID)}: " + "; ".join(s.job_problems(job, (s.TID,))))
    return tid


def trial_params(job: Mapping[str, Any]) -> Any:
    """A job's point as plain values: its ``params``, else hyperopt's ``misc.vals``."""
    if job.get(s.PARAMS) is not None:
        return plain(job[s.PARAMS])
    return s.point_from_vals(_vals(job))


def best_trial(view: ReadOnlyView, run: str) -> BestTrial | None:
    """The done trial with status ok and the lowest finite loss
    (:meth:`jobstore.view.ReadOnlyView.best_trial`), or None."""
    job = view.best_trial(run)
    left_out: list[str] = []
    tid = None if job is None else _tid(job, left_out)
    _warn_left_out("the best trial", run, left_out)
    if job is None or tid is None:
        return None
    return BestTrial(tid, float(job[s.RESULT]["loss"]), trial_params(job), s.as_date(job.get(s.FINISHED_AT)))


@dataclass
class Throughput:
    """The run's recent rate of finished (done or error) trials."""

    per_hour: float | None
    window_trials: int
    """Trials finished in the window: the hour up to the latest finish."""
    window_start: datetime | None
    """The earliest finish in the window."""
    last_finish: datetime | None


def throughput(view: ReadOnlyView, run: str, now: datetime, window: timedelta = THROUGHPUT_WINDOW) -> Throughput:
    """Trials finished per hour between the earliest and the latest finish of the
    ``window`` that ends at the latest finish: ``(n - 1) / span`` for ``n`` finishes.

    Measuring from the earliest finish in the window (rather than from the window's
    start) gives the right rate for runs younger than the window and for runs that
    resumed within it.  Reads only ``finished_at`` through the ``run_finished`` index,
    and only recent finishes: those of the two windows before ``now`` (server time),
    which hold the whole window of a run that finished a trial within the last one; for
    a run idle for longer, the latest finish, then its window.  ``per_hour`` is None
    until two trials have finished at different times.
    """
    recent = _finishes(view, run, {"$gt": now - 2 * window})
    if recent:
        last = max(recent)
    else:
        latest = view.jobs.find_one({s.EXP_KEY: run, s.FINISHED_AT: {"$gte": EARLIEST}},
                                    {s.ID: 0, s.FINISHED_AT: 1}, sort=[(s.FINISHED_AT, DESCENDING)])
        if latest is None:
            return Throughput(None, 0, None, None)
        last = latest[s.FINISHED_AT]
    if last - window < now - 2 * window or not recent:
        recent = _finishes(view, run, {"$gt": last - window, "$lte": last})
    finishes = [at for at in recent if last - window < at <= last]
    start = min(finishes)
    span_h = (last - start).total_seconds() / 3600
    rate = (len(finishes) - 1) / span_h if span_h > 0 else None
    return Throughput(rate, len(finishes), start, last)


def _finishes(view: ReadOnlyView, run: str, when: Mapping[str, datetime]) -> list[datetime]:
    """The ``finished_at`` of the run's jobs in the range ``when`` (a date range, so
    only dates match, through ``run_finished``)."""
    return [job[s.FINISHED_AT] for job in view.jobs.find({s.EXP_KEY: run, s.FINISHED_AT: dict(when)},
                                                          {s.ID: 0, s.FINISHED_AT: 1})]


def eta(max_evals: int | None, counts: StateCounts, rate: Throughput) -> timedelta | None:
    """Time until ``max_evals`` trials are done, at the current throughput.

    Progress counts done trials (the objective returned, ``ok`` or ``fail``), as
    hyperopt's fmin does when a run starts or resumes: it queues trials until the done,
    new and running ones make ``max_evals``.  Error trials do not count: a session
    whose trials errored ends short of ``max_evals``, and a resume queues replacements.
    Zero once ``max_evals`` are done; None without ``max_evals`` or a throughput, or
    when the estimate is past what a timedelta holds (2.7 million years: a malformed
    ``max_evals``).  The throughput counts errors too, so with errors the estimate runs
    a little short.
    """
    if max_evals is None:
        return None
    remaining = max_evals - counts.done
    if remaining <= 0:
        return timedelta(0)
    if not rate.per_hour:
        return None
    try:
        return timedelta(hours=remaining / rate.per_hour)
    except OverflowError:
        return None


@dataclass
class StaleJob:
    """A running job that looks abandoned."""

    tid: int
    owner: str | None
    refresh_time: datetime | None
    lease_expires: datetime | None
    reasons: list[str]


def stale_jobs(view: ReadOnlyView, run: str, now: datetime,
               stale_after: timedelta = STALE_AFTER) -> list[StaleJob]:
    """Running jobs whose lease expired (server time ``now``) or whose last heartbeat is
    older than ``stale_after``, by tid.

    Reads the run's running jobs (a few per worker, through ``run_state_tid``) and
    judges them here: an ``$or`` on the lease and the heartbeat would make SecantusDB
    read every job of the run.
    """
    heartbeat_due = now - stale_after
    running = view.jobs.find(
        {s.EXP_KEY: run, s.STATE: State.RUNNING},
        {s.TID: 1, s.OWNER: 1, s.REFRESH_TIME: 1, s.LEASE_EXPIRES: 1},
        sort=[(s.TID, ASCENDING)],
    )
    stale = []
    left_out: list[str] = []
    for job in running:
        tid = _tid(job, left_out)
        if tid is None:
            continue
        expires = s.as_date(_mapping(job.get(s.LEASE)).get("expires"))
        refreshed = s.as_date(job.get(s.REFRESH_TIME))
        reasons = []
        if expires is not None and expires < now:
            reasons.append(f"lease expired {ago(now, expires)} ago")
        if refreshed is not None and refreshed < heartbeat_due:
            reasons.append(f"no heartbeat for {ago(now, refreshed)}")
        if expires is None:
            reasons.append("no valid lease")
        if reasons:
            stale.append(StaleJob(tid, text(job.get(s.OWNER)), refreshed, expires, reasons))
    _warn_left_out("stale jobs", run, left_out)
    return stale


@dataclass
class WorkerInfo:
    """One worker process as its record shows it."""

    id: str
    host: str | None
    device: str | None
    state: str
    """``busy``, ``idle``, ``stopped``, or ``lost`` (not seen for ``stale_after``)."""
    current: dict[str, Any] | None
    last_seen: datetime | None
    trials_done: int


def workers(view: ReadOnlyView, now: datetime, stale_after: timedelta = STALE_AFTER,
            horizon: timedelta = WORKER_HORIZON) -> list[WorkerInfo]:
    """Workers seen within ``horizon`` of ``now``, most recently seen first."""
    found = view.workers.find(
        {s.WORKER_LAST_SEEN: {"$gte": now - horizon}},
        {s.WORKER_HOST: 1, s.WORKER_DEVICE: 1, s.WORKER_STATUS: 1, s.WORKER_CURRENT: 1,
         s.WORKER_LAST_SEEN: 1, s.WORKER_DONE: 1},
        sort=[(s.WORKER_LAST_SEEN, DESCENDING)],
    )
    result = []
    for doc in found:
        last_seen = s.as_date(doc.get(s.WORKER_LAST_SEEN))
        state = str(doc.get(s.WORKER_STATUS) or "unknown")
        if state != "stopped" and (last_seen is None or last_seen < now - stale_after):
            state = "lost"
        current = doc.get(s.WORKER_CURRENT)
        result.append(WorkerInfo(
            id=str(doc[s.ID]), host=text(doc.get(s.WORKER_HOST)), device=text(doc.get(s.WORKER_DEVICE)),
            state=state, current=dict(current) if isinstance(current, Mapping) else None,
            last_seen=last_seen, trials_done=s.as_int(doc.get(s.WORKER_DONE)) or 0,
        ))
    return result


@dataclass
class PruningStatus:
    """The run's pruner and what it saved."""

    settings: dict[str, Any]
    """The run document's ``settings.pruner`` (see ``objectives.pruning.PrunerSettings``)."""
    pruned: int
    """Trials a pruner stopped."""
    steps_saved: int | None
    """Steps (epochs) the pruned trials did not train: ``max_resource`` less the step each
    stopped at, summed (a trial whose ``pruned_step`` is not a number (int or double)
    between 0 and ``max_resource`` counts as none); None when the settings have no usable ``max_resource``."""


def run_pruner(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """A run document's ``settings.pruner`` as plain values; None when the run has no
    pruner (absent, null, not a document, or kind ``none``)."""
    settings = _mapping(doc.get(s.RUN_SETTINGS)).get(s.RUN_PRUNER)
    if not isinstance(settings, Mapping) or settings.get("kind") in (None, "none"):
        return None
    return plain(settings)


def pruning_status(view: ReadOnlyView, run: str, settings: dict[str, Any] | None) -> PruningStatus | None:
    """The run's :class:`PruningStatus` under ``settings`` (see :func:`run_pruner`); None
    when it has no pruner.  One aggregation over the run's pruned trials only (index
    ``run_pruned``)."""
    if settings is None:
        return None
    budget = s.as_int(settings.get("max_resource"))
    if budget is not None and budget < 1:
        budget = None
    group: dict[str, Any] = {s.ID: None, "n": {"$sum": 1}}
    if budget is not None:
        # a trial saved the budget less the step it stopped at; a pruned_step that is
        # not a step within the budget (malformed: NaN, a string, a decimal, ...) saved
        # nothing (a decimal would make the sum one, which int() refuses)
        step = "$" + s.PRUNED_STEP
        within = {"$and": [{"$in": [{"$type": step}, ["int", "long", "double"]]}, {"$gte": [step, 0]},
                           {"$lte": [step, budget]}]}
        group["saved"] = {"$sum": {"$cond": [within, {"$subtract": [budget, step]}, 0]}}
    pipeline = [{"$match": {s.EXP_KEY: run, s.PRUNED: True}}, {"$group": group}]
    row = next(iter(view.jobs.aggregate(pipeline)), {"n": 0, "saved": 0})
    saved = None if budget is None else int(row["saved"])
    return PruningStatus(settings, int(row["n"]), saved)


@dataclass
class RunStatus:
    """Everything ``hpo-coord status`` shows about one run."""

    run: str
    experiment: str | None
    algo: str | None
    max_evals: int | None
    now: datetime
    counts: StateCounts
    best: BestTrial | None
    throughput: Throughput
    eta: timedelta | None
    stale: list[StaleJob]
    workers: list[WorkerInfo]
    pruning: PruningStatus | None = None


def run_status(view: ReadOnlyView, run: str, stale_after: timedelta = STALE_AFTER) -> RunStatus:
    """The status of ``run`` (which must exist; see :func:`require_run`)."""
    doc = view.runs.find_one({s.ID: run}, {s.RUN_EXPERIMENT: 1, s.RUN_MAX_EVALS: 1, s.RUN_ALGO: 1,
                                           s.RUN_SETTINGS: 1}) or {}
    now = view.server_time()
    counts = count_states(view, run)
    rate = throughput(view, run, now)
    max_evals = s.as_int(doc.get(s.RUN_MAX_EVALS))
    return RunStatus(
        run=run, experiment=text(doc.get(s.RUN_EXPERIMENT)), algo=text(doc.get(s.RUN_ALGO)), max_evals=max_evals, now=now,
        counts=counts, best=best_trial(view, run), throughput=rate,
        eta=eta(max_evals, counts, rate), stale=stale_jobs(view, run, now, stale_after),
        workers=workers(view, now, stale_after),
        pruning=pruning_status(view, run, run_pruner(doc)),
    )


@dataclass
class RunOverview:
    """One line of ``hpo-coord runs``."""

    run: str
    experiment: str | None
    algo: str | None
    created_at: datetime | None
    max_evals: int | None
    counts: StateCounts
    best_loss: float | None
    pruner: dict[str, Any] | None = None
    """The run document's ``settings.pruner`` (see ``objectives.pruning.PrunerSettings``);
    None when the run has no pruner (absent, null, not a document, or kind ``none``)."""


def list_runs(view: ReadOnlyView) -> list[RunOverview]:
    """Every run with its counts by state and best loss, by name."""
    docs = {  # a run named by an _id that is not a string is found by no query for its name
        doc[s.ID]: doc
        for doc in view.runs.find({}, {s.RUN_EXPERIMENT: 1, s.RUN_ALGO: 1, s.RUN_CREATED_AT: 1, s.RUN_MAX_EVALS: 1,
                                       f"{s.RUN_SETTINGS}.{s.RUN_PRUNER}": 1})
        if isinstance(doc[s.ID], str)
    }
    overview = []
    for run in known_runs(view):
        doc = docs.get(run, {})
        best = best_trial(view, run)
        overview.append(RunOverview(
            run=run, experiment=text(doc.get(s.RUN_EXPERIMENT)), algo=text(doc.get(s.RUN_ALGO)), created_at=s.as_date(doc.get(s.RUN_CREATED_AT)),
            max_evals=s.as_int(doc.get(s.RUN_MAX_EVALS)), counts=count_states(view, run),
            best_loss=None if best is None else best.loss,
            pruner=run_pruner(doc),
        ))
    return overview


# -- per-trial data -----------------------------------------------------------------

TRIAL_COLUMNS = [
    "tid", "state", "status", "loss", "attempts", "worker", "book_time", "started_at",
    "finished_at", "booked_to_finished_s", "started_to_finished_s", "error_type", "pruned_step",
]
"""The fixed columns of :func:`trial_rows`; ``params.<path>`` columns follow them."""
PARAM_PREFIX = "params."


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """Nested dicts as ``{"prefix.a.b": leaf}``; a non-dict value as ``{prefix: value}``."""
    if not isinstance(value, Mapping):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}"))
    return flat


def iso(value: datetime | None) -> str | None:
    """A naive-UTC datetime as ISO 8601 with an explicit UTC offset."""
    return None if value is None else value.replace(tzinfo=timezone.utc).isoformat()


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else (end - start).total_seconds()


def state_name(value: Any) -> str:
    """A job state's name (``new``, ``running``, ...); an unknown value as its text."""
    try:
        return State(value).name.lower()
    except ValueError:
        return str(value)


TRIAL_ROW_PROJECTION = {
    s.TID: 1, s.STATE: 1, s.STATUS: 1, s.LOSS: 1, s.ATTEMPTS: 1, s.OWNER: 1,
    s.BOOK_TIME: 1, s.STARTED_AT: 1, s.FINISHED_AT: 1, s.ERROR + ".type": 1,
    s.PRUNED: 1, s.PRUNED_STEP: 1, s.PARAMS: 1, s.VALS: 1,
}
"""The fields :func:`trial_row` reads: never ``metrics``, ``spec`` or tracebacks."""


def pruned_step(result: Mapping[str, Any]) -> int | None:
    """The step where a pruner stopped the trial of ``result`` (``result.pruned_step``
    when ``result.pruned`` is true); None if it was not pruned or the step is not an
    integer."""
    return s.as_int(result.get(s.RESULT_PRUNED_STEP)) if result.get(s.RESULT_PRUNED) is True else None


def trial_row(job: Mapping[str, Any], tid: int) -> dict[str, Any]:
    """One flat row of :func:`trial_rows` from a job read with :data:`TRIAL_ROW_PROJECTION`;
    whole-number ``params.*`` values as integers (``16``, not hyperopt's ``16.0``), as
    ``best`` and ``status`` show them (:func:`coordinator.display.whole_floats_as_ints`)."""
    result = _mapping(job.get(s.RESULT))
    loss = result.get("loss")
    params = job.get(s.PARAMS)
    if not isinstance(params, Mapping):
        params = s.point_from_vals(_vals(job))
    booked, started, finished = (s.as_date(job.get(f)) for f in (s.BOOK_TIME, s.STARTED_AT, s.FINISHED_AT))
    row: dict[str, Any] = {
        "tid": tid,
        "state": state_name(job.get(s.STATE)),
        "status": text(result.get("status")),
        "loss": float(loss) if s.is_finite_number(loss) else None,
        "attempts": s.as_int(job.get(s.ATTEMPTS)),
        "worker": text(job.get(s.OWNER)),
        "book_time": iso(booked),
        "started_at": iso(started),
        "finished_at": iso(finished),
        "booked_to_finished_s": _seconds(booked, finished),
        "started_to_finished_s": _seconds(started, finished),
        "error_type": text(_mapping(job.get(s.ERROR)).get("type")),
        "pruned_step": pruned_step(result),
    }
    for key, value in params.items():
        flat = flatten(value, PARAM_PREFIX + str(key))
        row.update({k: whole_floats_as_ints(plain(v)) for k, v in flat.items()})
    return row


def trial_rows(view: ReadOnlyView, run: str) -> list[dict[str, Any]]:
    """One flat row per trial of ``run``, by tid: :data:`TRIAL_COLUMNS`, then the
    point's values as ``params.<path>`` (dicts flattened with dots).

    ``loss`` is None unless finite; times are ISO 8601 strings in UTC; durations are
    seconds (book_time -> finished_at, started_at -> finished_at).  A space that is a
    single expression (not a dict) gives one ``params.<label>`` column per label.
    """
    rows = []
    left_out: list[str] = []
    for job in view.jobs.find({s.EXP_KEY: run}, TRIAL_ROW_PROJECTION, sort=[(s.TID, ASCENDING)]):
        tid = _tid(job, left_out)
        if tid is not None:
            rows.append(trial_row(job, tid))
    _warn_left_out("trials", run, left_out)
    return rows


def param_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ``params.*`` columns that occur in ``rows``, in order of first appearance."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.startswith(PARAM_PREFIX):
                seen.setdefault(key)
    return list(seen)


@dataclass
class TrialPoint:
    """What the plots need of one trial: hyperopt's labels and values, and the loss."""

    tid: int
    state: int
    loss: float | None
    """The loss of a done, ok trial (finite), else None."""
    vals: dict[str, float] = field(default_factory=dict)
    """hyperopt's ``misc.vals`` of the active labels (``hp.choice``: the option index)."""
    pruned_step: int | None = None
    """The step where a pruner stopped the trial (``result.pruned_step``); None if it was not pruned."""


TRIAL_POINT_PROJECTION = {s.TID: 1, s.STATE: 1, s.STATUS: 1, s.LOSS: 1, s.PRUNED: 1, s.PRUNED_STEP: 1,
                          s.VALS: 1}
"""The fields :func:`trial_points` reads: what the charts plot, nothing else of ``result``."""


def trial_points(view: ReadOnlyView, run: str, since: datetime | None = None) -> list[TrialPoint]:
    """Every trial of ``run`` as a :class:`TrialPoint`, by tid; with ``since``, only the
    trials written at or after that server time (``updated_at``, through ``run_updated``)."""
    points = []
    left_out: list[str] = []
    query: dict[str, Any] = {s.EXP_KEY: run}
    if since is not None:
        query[s.UPDATED_AT] = {"$gte": since}
    found = view.jobs.find(query, TRIAL_POINT_PROJECTION, sort=[(s.TID, ASCENDING)])
    for job in found:
        tid = _tid(job, left_out)
        if tid is None:
            continue
        result = _mapping(job.get(s.RESULT))
        loss = result.get("loss")
        state = s.as_int(job.get(s.STATE))
        ok = state == State.DONE and result.get("status") == base.STATUS_OK
        vals = {label: float(value) for label, value in s.point_from_vals(_vals(job)).items()
                if s.is_finite_number(value)}
        points.append(TrialPoint(tid, -1 if state is None else state,
                                 float(loss) if ok and s.is_finite_number(loss) else None, vals, pruned_step(result)))
    _warn_left_out("trial points", run, left_out)
    return points


def learning_curves(view: ReadOnlyView, run: str, tids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The ``metrics`` list of each trial in ``tids`` that has one (entries that are not
    documents left out)."""
    found = view.jobs.find({s.EXP_KEY: run, s.TID: {"$in": list(tids)}}, {s.TID: 1, s.METRICS: 1})
    curves = {}
    for job in found:
        tid = s.as_int(job.get(s.TID))
        metrics = job.get(s.METRICS)
        entries = [dict(e) for e in metrics if isinstance(e, Mapping)] if isinstance(metrics, list) else []
        if tid is not None and entries:
            curves[tid] = entries
    return curves


def ago(now: datetime, then: datetime) -> str:
    """``now - then`` as a short human duration: ``42s``, ``3m05s``, ``2h10m``, ``3d04h``."""
    return duration(now - then)


def duration(delta: timedelta) -> str:
    """A short human form of ``delta`` (see :func:`ago`)."""
    total = int(max(delta.total_seconds(), 0))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"

