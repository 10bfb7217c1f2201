"""The documents this project keeps in MongoDB, and the one place that names their fields.

Every other module builds queries and updates through the names and helpers here.
The full schema, with examples, is documented in ``docs/schema.md``.

``jobs`` — one document per trial, hyperopt's own layout plus readable extras:

==================  ====================================================================
field               meaning
==================  ====================================================================
``exp_key``         the run's name (hyperopt's experiment key)
``tid``             trial id, unique within the run, allocated atomically
``state``           hyperopt's JOB_STATE: 0 new, 1 running, 2 done, 3 error, 4 cancel
``spec``            hyperopt's spec (unused by this project's workers; kept for hyperopt)
``result``          ``{"status": "ok"|"fail"|"new", "loss": float, ...}`` from the objective
``misc``            hyperopt's ``{"tid", "cmd", "workdir", "idxs", "vals"}``
``owner``           ``"host:pid"`` of the worker holding or last holding the job
``book_time``       when the job was claimed (server time)
``refresh_time``    last write by the worker (server time)
``version``         incremented by every write (hyperopt compatibility)
``updated_at``      server time of the last write; what incremental refresh follows
``params``          the point as plain readable values (``hyperopt.space_eval``)
``experiment``      registered experiment name; absent for pickled-Domain jobs
``attempts``        claims that did not end in a graceful return to the queue
``max_attempts``    times the job's worker may be lost; the last makes it an error
``lease``           ``{"token", "expires", "seconds"}`` while running: the fencing token,
                    the server time after which the job counts as lost, and the lease
                    length the holder renews (what a requeuer waits for after an outage)
``metrics``         per-step metrics reported by the objective, in order
``error``           ``{"type", "message", "traceback", "reason"}`` when state is error
``result.pruned``   true when a pruner stopped the trial early (``hpo-coord start --pruner``);
                    ``result.pruned_step`` is the step it reached
``started_at``      when the objective started (the result's write time minus the
                    objective's running time); ``finished_at`` when the result was written
==================  ====================================================================

``runs`` — one document per run (``_id`` is the exp_key): experiment, fingerprint, run
settings, the next trial id, and the coordinator lease.

``workers`` — one document per worker process, for monitoring.

``curves`` — the scores pruning compares (runs with a pruner only): one document per
reported step (median) or reached rung (asha, hyperband) of a trial attempt, holding
the run's pruning metric as a *score* (lower is better: a maximized metric negated).
Written only while the attempt holds the job's lease; marked ``removed`` (never
deleted) when the job goes back to the queue, so a requeued trial starts its history
again; ``changed`` is the server time of each write, which workers' copies follow.

Guarantees the store keeps, whatever module writes:

* ``exp_key``, ``tid``, ``misc``, ``spec`` and ``params`` never change after insert.
* Every write to a job sets ``updated_at`` to the server's clock and bumps ``version``.
* A running job's result, metrics and heartbeats are written only by the holder of the
  current ``lease.token`` (fencing).
* A job in a final state (done, error, cancel) is never written again.
* Updates built here never fail on a field of the wrong type (a counter that is not a
  number counts from 0, a ``metrics`` that is not an array starts afresh), so one
  malformed document cannot make a write raise.  :func:`job_problems` says what is
  malformed in a job, for the readers that must not trust it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import IntEnum
from typing import Any

import numpy as np
from hyperopt.fmin import space_eval
from pymongo import ASCENDING, IndexModel

JOBS = "jobs"
RUNS = "runs"
WORKERS = "workers"
CURVES = "curves"


class State(IntEnum):
    """hyperopt's ``JOB_STATE_*`` numbers."""

    NEW = 0
    RUNNING = 1
    DONE = 2
    ERROR = 3
    CANCEL = 4


FINAL_STATES = frozenset({State.DONE, State.ERROR, State.CANCEL})
"""States a job never leaves: every job write is conditional on state new or running."""


# -- job fields ---------------------------------------------------------------------
ID = "_id"
EXP_KEY = "exp_key"
TID = "tid"
STATE = "state"
SPEC = "spec"
RESULT = "result"
LOSS = "result.loss"
STATUS = "result.status"
# keys this project adds to hyperopt's result (``status``, ``loss``) of a pruned trial
RESULT_PRUNED = "pruned"
RESULT_PRUNED_STEP = "pruned_step"
RESULT_PRUNED_VALUE = "pruned_value"
PRUNED = f"{RESULT}.{RESULT_PRUNED}"
PRUNED_STEP = f"{RESULT}.{RESULT_PRUNED_STEP}"
MISC = "misc"
VALS = "misc.vals"
OWNER = "owner"
BOOK_TIME = "book_time"
REFRESH_TIME = "refresh_time"
VERSION = "version"
UPDATED_AT = "updated_at"
PARAMS = "params"
EXPERIMENT = "experiment"
ATTEMPTS = "attempts"
MAX_ATTEMPTS = "max_attempts"
LEASE = "lease"
LEASE_TOKEN = "lease.token"
LEASE_EXPIRES = "lease.expires"
LEASE_SECONDS = "lease.seconds"
METRICS = "metrics"
ERROR = "error"
STARTED_AT = "started_at"
FINISHED_AT = "finished_at"

# -- run fields ---------------------------------------------------------------------
RUN_EXPERIMENT = "experiment"
RUN_FINGERPRINT = "fingerprint"
RUN_SETTINGS = "settings"
RUN_TRIAL_TIMEOUT = "trial_timeout"
"""Key in a run's ``settings``: each trial's time limit in seconds (absent, null or 0: none)."""
RUN_PRUNER = "pruner"
"""Key in a run's ``settings``: the pruner (``objectives.pruning.PrunerSettings`` as a
document); absent or null: no pruning."""
RUN_NEXT_TID = "next_tid"
RUN_CREATED_AT = "created_at"
RUN_MAX_EVALS = "max_evals"
RUN_ALGO = "algo"
RUN_COORDINATOR = "coordinator"
RUN_COORDINATOR_TOKEN = "coordinator.token"
RUN_COORDINATOR_EXPIRES = "coordinator.expires"

# -- worker fields ------------------------------------------------------------------
WORKER_HOST = "host"
WORKER_PID = "pid"
WORKER_DEVICE = "device"
WORKER_VERSION = "version"
WORKER_STARTED_AT = "started_at"
WORKER_LAST_SEEN = "last_seen"
WORKER_CURRENT = "current"
WORKER_DONE = "trials_done"
WORKER_STATUS = "status"

# The fields hyperopt's algorithms read; refresh fetches only these.
TRIAL_PROJECTION = {
    ID: 1, EXP_KEY: 1, TID: 1, STATE: 1, SPEC: 1, RESULT: 1, MISC: 1, OWNER: 1,
    BOOK_TIME: 1, REFRESH_TIME: 1, VERSION: 1, UPDATED_AT: 1,
}

JOB_INDEXES = [
    IndexModel([(EXP_KEY, ASCENDING), (TID, ASCENDING)], unique=True, name="run_tid"),
    # claim within one run, counts by state, and the best trial of a run
    IndexModel([(EXP_KEY, ASCENDING), (STATE, ASCENDING), (TID, ASCENDING)], name="run_state_tid"),
    # claim from any run
    IndexModel([(STATE, ASCENDING), (TID, ASCENDING)], name="state_tid"),
    # incremental refresh
    IndexModel([(EXP_KEY, ASCENDING), (UPDATED_AT, ASCENDING)], name="run_updated"),
    # finding expired leases
    IndexModel([(STATE, ASCENDING), (LEASE_EXPIRES, ASCENDING)], name="state_lease"),
    IndexModel([(EXP_KEY, ASCENDING), (STATE, ASCENDING), (LOSS, ASCENDING)], name="run_state_loss"),
    # throughput and "last finished" for monitoring, without fetching documents
    IndexModel([(EXP_KEY, ASCENDING), (FINISHED_AT, ASCENDING)], name="run_finished"),
    # a run's pruned trials (status, plain queries)
    IndexModel([(EXP_KEY, ASCENDING), (PRUNED, ASCENDING)], name="run_pruned"),
    # the dashboard's trial table sorted by loss, a page at a time (ties by tid)
    IndexModel([(EXP_KEY, ASCENDING), (LOSS, ASCENDING), (TID, ASCENDING)], name="run_loss_tid"),
]

# -- curve fields (collection ``curves``) ---------------------------------------------
CURVE_EXP_KEY = "exp_key"
CURVE_TID = "tid"
CURVE_TOKEN = "token"
"""The lease token of the attempt that recorded the score."""
CURVE_STEP = "step"
CURVE_RUNG = "rung"
"""The rung (0, 1, ...) for asha and hyperband; null for a median step score."""
CURVE_BRACKET = "bracket"
CURVE_SCORE = "score"
CURVE_COMPLETE = "complete"
"""True once the trial finished without being pruned (median compares with those only)."""
CURVE_REMOVED = "removed"
"""True once the score no longer counts (its attempt lost the job, or the job went back
to the queue): scores are marked, never deleted, so that workers' copies learn of it."""
CURVE_CHANGED = "changed"
"""Server time (``$$NOW``) of the score document's last write; what workers' copies follow."""

CURVE_INDEXES = [
    # the median's population, read whole once per process: completed trials' scores at one step
    IndexModel([(CURVE_EXP_KEY, ASCENDING), (CURVE_COMPLETE, ASCENDING), (CURVE_STEP, ASCENDING),
                (CURVE_SCORE, ASCENDING)], name="run_complete_step_score"),
    # ASHA's, read whole once per process: every score recorded at one rung of one bracket
    IndexModel([(CURVE_EXP_KEY, ASCENDING), (CURVE_BRACKET, ASCENDING), (CURVE_RUNG, ASCENDING),
                (CURVE_SCORE, ASCENDING)], name="run_bracket_rung_score"),
    # one trial's scores (removing them on requeue), one attempt's (marking them complete),
    # one score (a record's upsert): every write's query is a prefix of it
    IndexModel([(CURVE_EXP_KEY, ASCENDING), (CURVE_TID, ASCENDING), (CURVE_TOKEN, ASCENDING),
                (CURVE_STEP, ASCENDING), (CURVE_RUNG, ASCENDING), (CURVE_BRACKET, ASCENDING)],
               name="run_tid_attempt"),
    # the scores written since a worker last read the run (its copy's incremental update)
    IndexModel([(CURVE_EXP_KEY, ASCENDING), (CURVE_CHANGED, ASCENDING)], name="run_changed"),
]

WORKER_INDEXES = [IndexModel([(WORKER_LAST_SEEN, ASCENDING)], name="last_seen")]


def literal(value: Any) -> dict[str, Any]:
    """Wrap ``value`` so an update pipeline stores it as is (no ``$`` expansion)."""
    return {"$literal": value}


def stamped(fields: Mapping[str, Any], *, lease_ms: int | None = None) -> list[dict[str, Any]]:
    """An update pipeline that sets ``fields`` (taken literally) and stamps the write.

    ``updated_at`` becomes the server's clock and ``version`` goes up by one.  With
    ``lease_ms``, ``lease.expires`` becomes the server's clock plus that many ms.
    Field values that are already aggregation expressions must be passed through
    :class:`Expr`.
    """
    stage: dict[str, Any] = {
        key: value.expression if isinstance(value, Expr) else literal(value)
        for key, value in fields.items()
    }
    stage[UPDATED_AT] = "$$NOW"
    stage[VERSION] = Expr.add(VERSION, 1).expression
    if lease_ms is not None:
        stage[LEASE_EXPIRES] = {"$add": ["$$NOW", int(lease_ms)]}
        stage[LEASE_SECONDS] = literal(lease_ms / 1000)
    return [{"$set": stage}]


class Expr:
    """An aggregation expression for :func:`stamped` (as opposed to a literal value)."""

    def __init__(self, expression: Any) -> None:
        self.expression = expression

    @staticmethod
    def now() -> "Expr":
        return Expr("$$NOW")

    @staticmethod
    def add(field: str, amount: int) -> "Expr":
        """``field + amount``; a missing or non-numeric ``field`` counts as 0."""
        value = "$" + field
        return Expr({"$add": [{"$cond": [{"$isNumber": value}, value, 0]}, amount]})

    @staticmethod
    def lease(token: str, lease_s: float) -> "Expr":
        """A whole ``lease`` sub-document expiring ``lease_s`` after the server's now."""
        return Expr({"token": literal(token), "expires": {"$add": ["$$NOW", int(lease_s * 1000)]},
                     "seconds": literal(float(lease_s))})

    @staticmethod
    def append_once(field: str, item: Any) -> "Expr":
        """``field`` with ``item`` appended, unless its last element already is ``item``
        (so an append retried after its reply was lost appends once); a missing or
        non-array ``field`` starts afresh."""
        value = "$" + field
        array = {"$cond": [{"$isArray": value}, value, []]}
        last = {"$arrayElemAt": [array, -1]}  # missing for an empty array: equal to no item
        return Expr({"$cond": [{"$eq": [last, literal(item)]}, array,
                               {"$concatArrays": [array, [literal(item)]]}]})


def bson_safe(value: Any) -> Any:
    """``value`` converted to plain BSON-encodable Python (numpy scalars, tuples, ...).

    Non-finite floats are kept (BSON stores them); objects BSON cannot hold become
    their ``repr``.
    """
    if isinstance(value, Mapping):
        return {str(k): bson_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [bson_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return bson_safe(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if value is None or isinstance(value, (bool, int, float, str, bytes, datetime)):
        return value
    return repr(value)


def point_from_vals(vals: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """hyperopt's ``misc.vals`` (``{label: [value] or []}``) as ``{label: value}``."""
    return {label: bson_safe(v[0]) for label, v in vals.items() if len(v)}


def has_point(job: Mapping[str, Any]) -> bool:
    """True when ``job``'s ``misc.vals`` is hyperopt's ``{label: [] or [value]}``, so
    :func:`point_from_vals` can read its point."""
    misc = job.get(MISC)
    vals = misc.get("vals") if isinstance(misc, Mapping) else None
    return isinstance(vals, Mapping) and all(isinstance(v, list) and len(v) <= 1 for v in vals.values())


def params_from_vals(space: Any, vals: Mapping[str, Sequence[Any]]) -> Any:
    """What the objective receives for hyperopt's ``misc.vals`` in ``space``: the one
    decoder of a trial's point (``hyperopt.space_eval``), for the worker, the store's
    ``params`` field and the coordinator's summaries alike.

    Values are as the space makes them (a ``quniform`` gives floats, a ``choice`` its
    option, tuples stay tuples); apply :func:`bson_safe` to store or print them.  No
    check that ``vals`` fit ``space`` (the worker checks before it calls this).

    Raises:
        Exception: whatever ``space_eval`` raises for ``vals`` that are not a point of
            ``space`` (typically KeyError, IndexError, TypeError or ValueError).
    """
    return space_eval(space, point_from_vals(vals))


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    ) and math.isfinite(float(value))


# -- validation: documents read back may be malformed --------------------------------


def as_int(value: Any) -> int | None:
    """``value`` as an int if it is an integral number (not a bool), else None.

    mongosh writes numbers as doubles, so ``5.0`` counts as the integer 5."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_date(value: Any) -> datetime | None:
    """``value`` if it is a datetime, else None."""
    return value if isinstance(value, datetime) else None


def _shown(value: Any) -> str:
    text = repr(value)
    return (text[:60] + "...") if len(text) > 63 else text


def _check_exp_key(job: Mapping[str, Any]) -> str | None:
    value = job.get(EXP_KEY)
    # None is hyperopt's default exp_key (a plain hyperopt script without one)
    return None if value is None or isinstance(value, str) else f"exp_key is {_shown(value)}, not a string"


def _check_tid(job: Mapping[str, Any]) -> str | None:
    if TID not in job:
        return "tid is missing"
    return None if as_int(job[TID]) is not None else f"tid is {_shown(job[TID])}, not an integer"


def _check_counter(name: str, minimum: int) -> Any:
    def check(job: Mapping[str, Any]) -> str | None:
        value = job.get(name)
        if value is None:
            return None
        number = as_int(value)
        if number is None or number < minimum:
            return f"{name} is {_shown(value)}, not an integer >= {minimum}"
        return None
    return check


def _check_lease(job: Mapping[str, Any]) -> str | None:
    lease = job.get(LEASE)
    if lease is None:
        return "lease is missing"
    if not isinstance(lease, Mapping):
        return f"lease is {_shown(lease)}, not a document"
    if not isinstance(lease.get("token"), str):
        return f"lease.token is {_shown(lease.get('token'))}, not a string"
    if as_date(lease.get("expires")) is None:
        return f"lease.expires is {_shown(lease.get('expires'))}, not a date"
    return None


_CHECKS = {
    EXP_KEY: _check_exp_key,
    TID: _check_tid,
    ATTEMPTS: _check_counter(ATTEMPTS, 0),
    MAX_ATTEMPTS: _check_counter(MAX_ATTEMPTS, 1),
    LEASE: _check_lease,
}
QUEUE_FIELDS = (EXP_KEY, TID, ATTEMPTS, MAX_ATTEMPTS)
"""The fields the queue reads from a job it claims or requeues."""


def job_problems(job: Mapping[str, Any], fields: Sequence[str] = QUEUE_FIELDS) -> list[str]:
    """What is wrong with ``fields`` of the job document ``job``, one phrase each
    (``["tid is 'abc', not an integer"]``); empty when they are as documented.

    Checkable fields: ``exp_key`` (a string, or None as hyperopt allows), ``tid`` (an
    integer), ``attempts`` (absent, or an integer >= 0), ``max_attempts`` (absent, or
    an integer >= 1) and ``lease`` (``{token: string, expires: date, ...}``).
    """
    return [problem for name in fields if (problem := _CHECKS[name](job)) is not None]


def lease_seconds(job: Mapping[str, Any]) -> float | None:
    """The lease length its holder recorded in ``lease.seconds``, or None (absent or
    not a positive number: jobs claimed before it was recorded)."""
    lease = job.get(LEASE)
    value = lease.get("seconds") if isinstance(lease, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def worker_id(host: str, pid: int) -> str:
    """The name a worker process claims jobs under (``owner``, and its record's id):
    ``host:pid``."""
    return f"{host}:{pid}"
