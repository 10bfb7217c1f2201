"""Every database read of the dashboard, as JSON-ready dicts.

The dashboard reads through this module only, and this module reads through
:mod:`coordinator.monitor` (the queries of ``hpo-coord status``/``runs``/``trials``)
and prepares figures with :mod:`coordinator.plots` (the data behind the PNG figures of
``hpo-coord plot``), so the web pages and the PNG files show the same numbers.
Contracts:

* **Read-only.**  Nothing here writes to the database.
* **No whole-history read per update.**  A run's trial points are read once, then
  kept in memory and refreshed with the trials written since the last read (through
  the ``run_updated`` index; read again in full only after trials were deleted); the
  trial table and the error list are pages of at most :data:`MAX_PAGE` trials, sorted
  and filtered by the server.
* **No secrets.**  Error messages and tracebacks, and a trial's result, pass through
  :func:`jobstore.connection.mask`, so a password that leaked into an objective's
  exception or result is shown as ``***``.
* **Unknown runs and trials** raise :class:`coordinator.monitor.UnknownRun` and
  :class:`UnknownTrial`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING

from coordinator import monitor, plots
from coordinator.monitor import TrialPoint, iso
from jobstore import schema as s
from jobstore.connection import mask
from user_errors import UserError
from jobstore.schema import State
from jobstore.view import ReadOnlyView
from objectives.pruning import rule_settings

MAX_PAGE = 200
"""Most trials one page of the trial table or the error list holds."""
BSON_INT_LIMIT = 2**63
"""Offsets and tids are sent as 64-bit BSON integers: below this."""
IMPORTANCE_EVERY_S = 30.0
"""Hyperparameter importance is refitted at most this often per run."""
TOP_CURVES = 10
"""Learning curves of this many best trials are shown."""
REREAD_MARGIN = timedelta(seconds=5)
"""An incremental refresh re-reads the trials written this long before the last read
started, so that a write committed while that read ran is not missed."""
NUMBER = {"$gte": -math.inf, "$lte": math.inf}
"""A number (not NaN), as an index range."""
TEXT = {"$gte": ""}
"""A string, as an index range (MongoDB compares values of one type only)."""


@dataclass(frozen=True)
class SortKey:
    """How the trial table sorts on one column.

    A page is read in two parts: the trials that have a value (``has_value``, a query
    fragment), in ``order``, then the others (``lacks_value``, its complement) in the
    same order, so trials without a value come last in either direction.  Where
    ``index`` names a job index, it serves both parts on MongoDB: a page costs the
    index entries and documents up to its end, whatever the run's size.  Without one,
    the server sorts the run's matching trials in memory on every page.
    """

    order: tuple[str, ...]
    """The fields sorted on, each in the page's direction (``duration`` is computed)."""
    has_value: dict[str, Any] | None
    """None: every trial has a value (no second part)."""
    lacks_value: dict[str, Any] | None
    """The trials ``has_value`` leaves out (no value, or one of another type)."""
    index: str | None
    """The job index (:data:`jobstore.schema.JOB_INDEXES`) that serves the sort, if any."""


def _sort_key(field: str, kind: dict[str, Any], index: str | None, *, tid_ties: bool = True) -> SortKey:
    return SortKey((field, s.TID) if tid_ties else (field,), {field: kind}, {field: {"$not": kind}}, index)


_DATES = {"$gte": monitor.EARLIEST}
TRIAL_SORTS = {
    "tid": SortKey((s.TID,), None, None, "run_tid"),
    "state": SortKey((s.STATE, s.TID), None, None, "run_state_tid"),
    "loss": _sort_key(s.LOSS, NUMBER, "run_loss_tid"),
    "finished_at": _sort_key(s.FINISHED_AT, _DATES, "run_finished", tid_ties=False),
    "attempts": _sort_key(s.ATTEMPTS, NUMBER, None),
    "worker": _sort_key(s.OWNER, TEXT, None),
    "duration": SortKey(("duration", s.TID), {s.STARTED_AT: _DATES, s.FINISHED_AT: _DATES},
                        {"$or": [{s.STARTED_AT: {"$not": _DATES}}, {s.FINISHED_AT: {"$not": _DATES}}]}, None),
    "pruned_step": _sort_key(s.PRUNED_STEP, NUMBER, None),
}
"""The trial table's sort keys.  ``tid``, ``state``, ``loss`` and ``finished_at`` are
served by an index (``finished_at`` ties, and the unfinished trials, in that index's
order; the others' ties by tid in the page's direction); ``attempts``, ``worker``,
``duration`` (started_at -> finished_at) and ``pruned_step`` are sorted in the server's
memory, a cost that grows with the run (see docs/monitoring.md)."""
STATE_NAMES = {state.name.lower(): state for state in State}


class UnknownTrial(UserError):
    """No trial of that tid in the run."""


class BadQuery(UserError):
    """A query parameter of the trial table is not one the table knows."""


@dataclass
class _Points:
    """A run's trial points as last read, and the server time that read started."""

    by_tid: dict[int, TrialPoint] = field(default_factory=dict)
    read_at: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else delta.total_seconds()


class DashboardData:
    """The dashboard's reads, through the store's read-only view (retried reads of
    the jobs, runs and workers, nothing that writes).

    Thread-safe: the web server calls it from its worker threads.  ``stale_after`` is
    how long a running job or worker may go without a heartbeat before it is flagged.
    """

    def __init__(self, view: ReadOnlyView, stale_after: timedelta = monitor.STALE_AFTER) -> None:
        self.view = view
        self.stale_after = stale_after
        self._points: dict[str, _Points] = {}
        self._points_lock = threading.Lock()
        self._infos: dict[str | None, dict[str, plots.ParamInfo]] = {}
        self._importance: dict[str, tuple[float, int, dict[str, Any]]] = {}

    # -- runs ---------------------------------------------------------------------------

    def require_run(self, run: str) -> str:
        """``run`` if the database has it (see :func:`coordinator.monitor.require_run`)."""
        return monitor.require_run(self.view, run)

    def runs(self) -> list[dict[str, Any]]:
        """Every run: name, experiment, algorithm, counts by state, best loss,
        max_evals (progress is done trials against it, as ``hpo-coord status`` counts),
        throughput, ETA, and the pruner (``pruner``: the run's ``settings.pruner``, None
        without one; ``pruner_text``: see :func:`pruner_text`)."""
        result = []
        now = self.view.server_time()
        for overview in monitor.list_runs(self.view):
            rate = monitor.throughput(self.view, overview.run, now)
            eta = monitor.eta(overview.max_evals, overview.counts, rate)
            result.append({
                "run": overview.run, "experiment": overview.experiment, "algo": overview.algo,
                "created_at": iso(overview.created_at), "max_evals": overview.max_evals,
                "counts": {**asdict(overview.counts), "total": overview.counts.total},
                "best_loss": overview.best_loss, "per_hour": rate.per_hour, "eta_s": _seconds(eta),
                "pruner": overview.pruner, "pruner_text": pruner_text(overview.pruner),
            })
        return result

    def summary(self, run: str) -> dict[str, Any]:
        """What ``hpo-coord status`` shows of ``run``: counts, progress, best trial with
        its parameters, throughput, ETA, the pruner (as in :meth:`runs`) with ``pruning``
        (trials pruned and steps saved, None without a pruner), stale jobs and the
        workers (stale ones have state ``lost``)."""
        st = monitor.run_status(self.view, self.require_run(run), self.stale_after)
        best = None if st.best is None else {
            "tid": st.best.tid, "loss": st.best.loss, "params": st.best.params,
            "finished_at": iso(st.best.finished_at)}
        return {
            "run": st.run, "experiment": st.experiment, "algo": st.algo, "max_evals": st.max_evals,
            "now": iso(st.now),
            "counts": {**asdict(st.counts), "total": st.counts.total},
            "best": best,
            "throughput": {"per_hour": st.throughput.per_hour, "window_trials": st.throughput.window_trials,
                           "last_finish": iso(st.throughput.last_finish)},
            "eta_s": _seconds(st.eta),
            "pruner": None if st.pruning is None else st.pruning.settings,
            "pruner_text": pruner_text(None if st.pruning is None else st.pruning.settings),
            "pruning": None if st.pruning is None else {"pruned": st.pruning.pruned,
                                                        "steps_saved": st.pruning.steps_saved},
            **_liveness(st.now, st.stale, st.workers),
        }

    def workers(self, run: str) -> dict[str, Any]:
        """The part of :meth:`summary` that changes with time alone: the stale running
        trials of ``run`` and the workers (small indexed reads, for the pages' ticks)."""
        name = self.require_run(run)
        now = self.view.server_time()
        return {"now": iso(now), **_liveness(now, monitor.stale_jobs(self.view, name, now, self.stale_after),
                                             monitor.workers(self.view, now, self.stale_after))}

    # -- figures ------------------------------------------------------------------------

    def points(self, run: str) -> list[TrialPoint]:
        """The run's trial points, by tid: read in full the first time, then refreshed
        with the trials written since the previous read; read in full again when the run
        has fewer jobs than points kept (trials were deleted, which no write shows)."""
        with self._points_lock:
            cache = self._points.setdefault(run, _Points())
        with cache.lock:
            started = self.view.server_time()
            since = None if cache.read_at is None else cache.read_at - REREAD_MARGIN
            if since is not None and len(cache.by_tid) > self.view.jobs.count({s.EXP_KEY: run}):
                cache.by_tid.clear()
                since = None
            for point in monitor.trial_points(self.view, run, since):
                cache.by_tid[point.tid] = point
            cache.read_at = started
            return [cache.by_tid[tid] for tid in sorted(cache.by_tid)]

    def _space(self, experiment: str | None) -> dict[str, plots.ParamInfo]:
        if experiment not in self._infos:
            self._infos[experiment] = plots.space_infos(experiment)
        return self._infos[experiment]

    def figures(self, run: str) -> dict[str, Any]:
        """The data of the run page's charts, prepared by :mod:`coordinator.plots`:
        ``loss`` (:class:`coordinator.plots.LossSeries`: per trial, where pruned trials
        stopped, best so far, error tids), ``parallel`` and ``matrix`` (hyperparameter
        columns of the ok trials with their losses; choices by option name), ``curves``
        (:class:`coordinator.plots.LearningCurves`: metrics per step of the
        :data:`TOP_CURVES` best trials, each with the step where it was pruned).
        A chart that cannot be drawn is None, with the reason in ``skipped``."""
        name = self.require_run(run)
        experiment = (self.view.runs.find_one({s.ID: name}, {s.RUN_EXPERIMENT: 1}) or {}).get(s.RUN_EXPERIMENT)
        infos = self._space(experiment if isinstance(experiment, str) else None)
        points = self.points(name)
        ok = plots.ok_points(points)
        skipped: dict[str, str] = {}
        figures: dict[str, Any] = {"trials": len(points), "ok": len(ok), "skipped": skipped}
        try:
            figures["loss"] = asdict(plots.loss_series(points))
        except plots.Skipped as exc:
            figures["loss"], skipped["loss"] = None, str(exc)
        labels = sorted({label for p in ok for label in p.vals})
        if ok and labels:
            figures["parallel"] = {"losses": [p.loss for p in ok],
                                   "dimensions": [self._dimension(ok, label, infos) for label in labels]}
        else:
            figures["parallel"], skipped["parallel"] = None, "no ok trial with hyperparameters"
        try:
            matrix = plots.matrix_labels(points, infos)
            figures["matrix"] = {"losses": [p.loss for p in ok],
                                 "dimensions": [self._dimension(ok, label, infos) for label in matrix]}
        except plots.Skipped as exc:
            figures["matrix"], skipped["matrix"] = None, str(exc)
        curves = monitor.learning_curves(self.view, name, plots.top_trials(points, TOP_CURVES))
        try:
            figures["curves"] = asdict(plots.curve_series(
                curves, {p.tid: p.loss for p in ok if p.loss is not None},
                {p.tid: p.pruned_step for p in ok if p.pruned_step is not None}))
        except plots.Skipped as exc:
            figures["curves"], skipped["curves"] = None, str(exc)
        return figures

    @staticmethod
    def _dimension(ok: list[TrialPoint], label: str, infos: Mapping[str, plots.ParamInfo]) -> dict[str, Any]:
        """One hyperparameter's values over ``ok`` (None where inactive), with its
        distribution and, for a choice, the options' names."""
        info = infos.get(label) or plots.ParamInfo(label, "unknown")
        return {"label": label, "distribution": info.distribution, "log": info.log,
                "options": list(info.options), "values": [p.vals.get(label) for p in ok]}

    def importance(self, run: str) -> dict[str, Any]:
        """Hyperparameter importance (see :func:`coordinator.plots.importances`), or the
        reason there is none; ``ok`` is the run's number of ok trials (the forest is fitted
        to at most :data:`coordinator.plots.IMPORTANCE_SAMPLE` of them).  A fit costs
        about a second, so it is refitted at most every :data:`IMPORTANCE_EVERY_S`
        seconds, and only when the run has new ok trials."""
        name = self.require_run(run)
        points = self.points(name)
        ok = len(plots.ok_points(points))
        with self._points_lock:
            cached = self._importance.get(name)
        if cached is not None and (cached[1] == ok or time.monotonic() - cached[0] < IMPORTANCE_EVERY_S):
            return cached[2]
        try:
            ranked = plots.importances(points)
            result: dict[str, Any] = {"importance": [{"label": label, "value": value}
                                                     for label, value in reversed(ranked)], "ok": ok}
        except plots.Skipped as exc:
            result = {"importance": None, "skipped": str(exc), "ok": ok}
        with self._points_lock:
            self._importance[name] = (time.monotonic(), ok, result)
        return result

    # -- trials -------------------------------------------------------------------------

    def trial_page(self, run: str, *, states: list[str] | None = None, worker: str | None = None,
                   pruned: bool | None = None, sort: str = "tid", descending: bool = False, offset: int = 0,
                   limit: int = 50) -> dict[str, Any]:
        """One page of the trial table: rows as ``hpo-coord trials`` writes them
        (:func:`coordinator.monitor.trial_row`; ``pruned_step`` set for the trials a
        pruner stopped), filtered by state names, worker and whether a pruner stopped
        the trial (``pruned``: True only those, False all others), sorted by a key of
        :data:`TRIAL_SORTS` (trials without the value last), with the number of trials
        that match.

        Raises:
            BadQuery: an unknown state or sort key, an offset outside
                0..:data:`BSON_INT_LIMIT` - 1, or a limit outside 1..:data:`MAX_PAGE`.
        """
        name = self.require_run(run)
        if sort not in TRIAL_SORTS:
            raise BadQuery(f"unknown sort key {sort!r}; use one of {', '.join(TRIAL_SORTS)}")
        _check_page(offset, limit)
        match: dict[str, Any] = {s.EXP_KEY: name}
        if states:
            unknown = [state for state in states if state not in STATE_NAMES]
            if unknown:
                raise BadQuery(f"unknown state {unknown[0]!r}; use one of {', '.join(STATE_NAMES)}")
            match[s.STATE] = {"$in": [int(STATE_NAMES[state]) for state in states]}
        if worker:
            match[s.OWNER] = worker
        if pruned is not None:
            match[s.PRUNED] = True if pruned else {"$ne": True}
        key = TRIAL_SORTS[sort]
        direction = DESCENDING if descending else ASCENDING
        order = {field: direction for field in key.order}
        if key.has_value is None or key.lacks_value is None:
            jobs = self._page(match, order, offset, limit)
        else:
            has_value = _both(match, key.has_value)
            jobs = self._page(has_value, order, offset, limit)
            if len(jobs) < limit:
                valued = offset + len(jobs) if jobs else self.view.jobs.count(has_value)
                jobs += self._page(_both(match, key.lacks_value), order, max(offset - valued, 0), limit - len(jobs))
        rows = [monitor.trial_row(job, tid) for job in jobs if (tid := s.as_int(job.get(s.TID))) is not None]
        return {"total": self.view.jobs.count(match), "offset": offset, "limit": limit,
                "sort": sort, "descending": descending, "rows": rows}

    def _page(self, match: dict[str, Any], order: dict[str, int], skip: int, limit: int) -> list[dict[str, Any]]:
        """Jobs ``skip`` to ``skip + limit`` of those matching ``match`` in ``order``,
        projected to what a row shows."""
        pipeline: list[dict[str, Any]] = [{"$match": match}]
        if "duration" in order:
            # only between two dates: the server refuses to subtract a malformed value (a string)
            dates = [{"$eq": [{"$type": "$" + f}, "date"]} for f in (s.STARTED_AT, s.FINISHED_AT)]
            duration = {"$subtract": ["$" + s.FINISHED_AT, "$" + s.STARTED_AT]}
            pipeline.append({"$addFields": {"duration": {"$cond": [{"$and": dates}, duration, None]}}})
        pipeline += [{"$sort": order}, {"$skip": skip}, {"$limit": limit},
                     {"$project": monitor.TRIAL_ROW_PROJECTION}]
        return self.view.jobs.aggregate(pipeline)

    def errors(self, run: str, offset: int = 0, limit: int = 20) -> dict[str, Any]:
        """A page of the run's error trials, latest tid first, with type, reason,
        message and traceback (masked); ``offset`` and ``limit`` as for :meth:`trial_page`."""
        name = self.require_run(run)
        _check_page(offset, limit)
        match = {s.EXP_KEY: name, s.STATE: State.ERROR}
        found = self.view.jobs.aggregate([{"$match": match}, {"$sort": {s.TID: DESCENDING}}, {"$skip": offset},
                                     {"$limit": limit},
                                     {"$project": {s.TID: 1, s.OWNER: 1, s.FINISHED_AT: 1, s.ERROR: 1}}])
        rows = []
        for job in found:
            tid = s.as_int(job.get(s.TID))
            if tid is not None:
                rows.append({"tid": tid, "worker": monitor.text(job.get(s.OWNER)),
                             "finished_at": iso(s.as_date(job.get(s.FINISHED_AT))), **_error(job)})
        return {"total": self.view.jobs.count(match), "offset": offset, "limit": limit, "rows": rows}

    def trial(self, run: str, tid: int) -> dict[str, Any]:
        """One trial: state, result (its strings masked), the step where a pruner stopped it (``pruned_step``,
        None if it was not pruned), parameters, metrics per step, timeline (queued,
        claimed, started, last heartbeat, finished; ``attempts`` claims, so
        ``attempts - 1`` requeues after lost workers) and its error, if any.

        Raises:
            UnknownTrial: the run has no trial ``tid``.
        """
        name = self.require_run(run)
        fits = -BSON_INT_LIMIT <= tid < BSON_INT_LIMIT  # a tid BSON cannot hold is in no job
        job = self.view.jobs.find_one({s.EXP_KEY: name, s.TID: tid}, {s.SPEC: 0, s.LEASE_TOKEN: 0}) if fits else None
        if job is None:
            raise UnknownTrial(f"run {name!r} has no trial {tid}")
        result = job.get(s.RESULT) if isinstance(job.get(s.RESULT), Mapping) else {}
        metrics = job.get(s.METRICS)
        entries = [monitor.plain(e) for e in metrics if isinstance(e, Mapping)] if isinstance(metrics, list) else []
        queued = job[s.ID].generation_time.replace(tzinfo=None) if hasattr(job.get(s.ID), "generation_time") else None
        attempts = s.as_int(job.get(s.ATTEMPTS))
        lease = job.get(s.LEASE) if isinstance(job.get(s.LEASE), Mapping) else {}
        timeline = [
            ("queued", queued), ("claimed", s.as_date(job.get(s.BOOK_TIME))),
            ("started", s.as_date(job.get(s.STARTED_AT))),
            ("last heartbeat", s.as_date(job.get(s.REFRESH_TIME))),
            ("lease expires", s.as_date(lease.get("expires"))),
            ("finished", s.as_date(job.get(s.FINISHED_AT))),
        ]
        return {
            "run": name, "tid": tid, "state": monitor.state_name(job.get(s.STATE)),
            "result": _masked(monitor.plain(result)), "pruned_step": monitor.pruned_step(result),
            "params": monitor.trial_params(job),
            "worker": monitor.text(job.get(s.OWNER)), "attempts": attempts,
            "max_attempts": s.as_int(job.get(s.MAX_ATTEMPTS)),
            "requeues": None if attempts is None else max(attempts - 1, 0),
            "timeline": [{"event": event, "at": iso(at)} for event, at in timeline if at is not None],
            "metrics": entries, "error": _error(job) if job.get(s.ERROR) is not None else None,
        }


def _check_page(offset: int, limit: int) -> None:
    """Raise :class:`BadQuery` unless ``offset`` and ``limit`` make a page the server can read."""
    if not 0 <= offset < BSON_INT_LIMIT or not 1 <= limit <= MAX_PAGE:
        raise BadQuery(f"offset must be >= 0 and below 2**63, and limit between 1 and {MAX_PAGE}")


def _both(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """A query matching both ``a`` and ``b``: one document where their fields differ
    (what every server turns into index bounds), else ``$and``."""
    return {**a, **b} if not a.keys() & b.keys() else {"$and": [a, b]}


def pruner_text(settings: Mapping[str, Any] | None) -> str:
    """A run's pruner in one line: its kind, metric and direction, and the settings
    :func:`objectives.pruning.rule_settings` names for that kind (every other one for an unknown
    kind), e.g. ``asha on val_loss (minimize): min_resource 1, max_resource 15,
    reduction_factor 3``; ``none`` without a pruner."""
    if settings is None:
        return "none"
    shown = ", ".join(f"{key} {value}" for key, value in rule_settings(settings).items())
    return (f"{settings.get('kind')} on {settings.get('metric', '?')} ({settings.get('direction', '?')})"
            + (f": {shown}" if shown else ""))


def _liveness(now: datetime, stale: list[monitor.StaleJob], workers: list[monitor.WorkerInfo]) -> dict[str, Any]:
    """Stale running trials and workers as JSON-ready dicts (lost workers ``stale``)."""
    return {
        "stale": [{"tid": j.tid, "owner": j.owner, "refresh_time": iso(j.refresh_time), "reasons": j.reasons}
                  for j in stale],
        "workers": [{"id": w.id, "host": w.host, "device": w.device, "state": w.state,
                     "stale": w.state == "lost", "current": monitor.plain(w.current),
                     "last_seen": iso(w.last_seen),
                     "seen_ago_s": None if w.last_seen is None else (now - w.last_seen).total_seconds(),
                     "trials_done": w.trials_done} for w in workers],
    }


def _masked(value: Any) -> Any:
    """A plain value (:func:`coordinator.monitor.plain`) with every string masked."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value


def _error(job: Mapping[str, Any]) -> dict[str, Any]:
    """A job's ``error`` document as text fields, passwords masked."""
    error = job.get(s.ERROR) if isinstance(job.get(s.ERROR), Mapping) else {}
    return {key: None if error.get(key) is None else mask(str(error[key]))
            for key in ("type", "reason", "message", "traceback")}
