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
``max_attempts``    lost-worker claims allowed before the job becomes an error
``lease``           ``{"token", "expires"}`` while running: the fencing token and the
                    server time after which the job counts as lost
``metrics``         per-step metrics reported by the objective, in order
``error``           ``{"type", "message", "traceback"}`` when state is error
``started_at``      when the objective started (the result's write time minus the
                    objective's running time); ``finished_at`` when the result was written
==================  ====================================================================

``runs`` — one document per run (``_id`` is the exp_key): experiment, fingerprint, run
settings, the next trial id, and the coordinator lease.

``workers`` — one document per worker process, for monitoring.

Guarantees the store keeps, whatever module writes:

* ``exp_key``, ``tid``, ``misc``, ``spec`` and ``params`` never change after insert.
* Every write to a job sets ``updated_at`` to the server's clock and bumps ``version``.
* A running job's result, metrics and heartbeats are written only by the holder of the
  current ``lease.token`` (fencing).
* A job in a final state (done, error, cancel) is never written again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import IntEnum
from typing import Any

import numpy as np
from pymongo import ASCENDING, IndexModel

JOBS = "jobs"
RUNS = "runs"
WORKERS = "workers"


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
    stage[VERSION] = {"$add": [{"$ifNull": ["$" + VERSION, 0]}, 1]}
    if lease_ms is not None:
        stage[LEASE_EXPIRES] = {"$add": ["$$NOW", int(lease_ms)]}
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
        return Expr({"$add": [{"$ifNull": ["$" + field, 0]}, amount]})

    @staticmethod
    def lease(token: str, lease_s: float) -> "Expr":
        """A whole ``lease`` sub-document expiring ``lease_s`` after the server's now."""
        return Expr({"token": literal(token), "expires": {"$add": ["$$NOW", int(lease_s * 1000)]}})

    @staticmethod
    def append(field: str, item: Any) -> "Expr":
        return Expr({"$concatArrays": [{"$ifNull": ["$" + field, []]}, [literal(item)]]})


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


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    ) and math.isfinite(float(value))


def active_states() -> list[int]:
    """States that count towards ``max_evals`` (hyperopt's JOB_VALID_STATES)."""
    return [State.NEW, State.RUNNING, State.DONE]
