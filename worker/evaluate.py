"""Turning a claimed job into a result: which code runs, with which params, and what
the objective's return value means.

Every outcome built here can be stored: error messages and tracebacks are cut to a few
kilobytes (saying how much was cut), and :func:`storable` turns a result MongoDB cannot
hold (an integer beyond 64 bits, a key with a NUL byte, more than
:data:`MAX_RESULT_BYTES`) into an error that says why.  Job documents are read as
untrusted input: a field that is missing or of the wrong type raises
:class:`MalformedJob` with a message naming the field.

Nothing here touches the queue; :mod:`worker.loop` owns claims and writes.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
import numpy as np
from hyperopt import base
from hyperopt.pyll import as_apply, toposort

from jobstore import schema as s
from jobstore.schema import State

PICKLE_REFUSED = (
    "this job's objective is a pickled hyperopt Domain stored in the database (a plain "
    "hyperopt fmin script); running it executes code from the database, so this worker "
    "refuses. Start the worker with --allow-pickle to run such jobs, but only if you "
    "trust everyone who can write to this database."
)

# Reasons an error document gives (``error.reason``), besides the store's "lost worker".
EXCEPTION = "exception"
INVALID_RESULT = "invalid result"
UNSTORABLE = "unstorable result"
MALFORMED = "malformed job"
TIMEOUT = "timeout"

MESSAGE_LIMIT = 4_000
"""Characters of an error message that are stored; the rest is cut, and the message says so."""
TRACEBACK_LIMIT = 16_000
"""Characters of a traceback that are stored (its start and its end are kept)."""
LOG_LIMIT = 500
"""Characters of an objective's error message that go to the log."""
MAX_RESULT_BYTES = 8 * 1024 * 1024
"""Largest result (BSON) a job stores: half of MongoDB's 16 MiB document limit, leaving
room for the job's metrics and the rest of its document."""


class MalformedJob(ValueError):
    """A job document lacks a field the worker needs, or has it with the wrong type."""


def clip(text: str, limit: int, *, keep_tail: bool = False) -> str:
    """``text`` cut to about ``limit`` characters, saying how many were cut.

    With ``keep_tail`` the start and the end are kept (a quarter and three quarters of
    ``limit``), which suits tracebacks: the innermost frames are at the end.
    """
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if not keep_tail:
        return f"{text[:limit]} [... {cut} characters cut]"
    head = limit // 4
    return f"{text[:head]}\n[... {cut} characters cut ...]\n{text[len(text) - (limit - head):]}"


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or a note when the exception cannot be printed (its ``__str__`` raises)."""
    try:
        return str(exc)
    except Exception as problem:  # noqa: BLE001 - an objective's exception is untrusted
        return f"<str() of this {type(exc).__name__} failed: {type(problem).__name__}: {problem}>"


def exception_name(exc: BaseException) -> str:
    """``module.QualName`` of ``exc``'s type (``ValueError`` for builtins)."""
    return f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")


@dataclass
class Outcome:
    """The final state, result and error (if any) of one evaluation."""

    state: State
    result: dict[str, Any]
    error: dict[str, Any] | None = field(default=None)


def failure(reason: str, message: str, error_type: str, tb: str | None = None) -> Outcome:
    """An error outcome: the objective could not give a usable result.

    The message is cut to :data:`MESSAGE_LIMIT` characters and the traceback to
    :data:`TRACEBACK_LIMIT`, so the error document is small and quick to write.
    """
    error = {"type": error_type, "message": clip(message, MESSAGE_LIMIT), "reason": reason}
    if tb is not None:
        error["traceback"] = clip(tb, TRACEBACK_LIMIT, keep_tail=True)
    return Outcome(State.ERROR, {"status": base.STATUS_FAIL, "reason": reason}, error)


def from_exception(exc: BaseException) -> Outcome:
    """An exception raised by the objective, with its type, message and traceback.

    Each part of the traceback (a frame, the final ``Type: message`` line) is cut on its
    own first, so a megabyte-long message costs no more than a short one.
    """
    name = exception_name(exc)
    try:
        parts = traceback.TracebackException.from_exception(exc).format()
        text = "".join(clip(part, MESSAGE_LIMIT) for part in parts)
    except Exception as problem:  # noqa: BLE001 - an objective's exception is untrusted
        text = f"<the traceback could not be formatted: {type(problem).__name__}: {problem}>"
    return failure(EXCEPTION, exception_text(exc) or name, name, text)


def timed_out(limit_s: float) -> Outcome:
    """The outcome of a trial that ran past its time limit (not retried)."""
    return failure(TIMEOUT, f"the trial ran past its time limit of {limit_s:g} s (run setting "
                   "trial_timeout, hpo-coord start --trial-timeout) and was ended", "TrialTimeout")


PRUNED = "pruned"


def pruned(step: int, value: float, loss: Any) -> Outcome:
    """The outcome of a trial a pruner stopped at ``step``, where the run's pruning
    metric was ``value``.

    Done, with ``pruned: true``, ``pruned_step`` and ``pruned_value``.  Its loss is ``loss``, the loss the
    objective reported at that step (what it would return if it stopped there; see
    docs/objectives.md for why a pruned trial carries it); without a finite one the
    trial is a failure (``reason: "pruned"``), which hyperopt's samplers leave out.
    """
    result: dict[str, Any] = {s.RESULT_PRUNED: True, s.RESULT_PRUNED_STEP: step, s.RESULT_PRUNED_VALUE: value}
    if _loss_problem(loss) is None:
        return Outcome(State.DONE, s.bson_safe({"status": base.STATUS_OK, "loss": float(loss), **result}))
    return Outcome(State.DONE, s.bson_safe({"status": base.STATUS_FAIL, "reason": PRUNED, **result}))


def unstorable(problem: str) -> Outcome:
    """The outcome of a trial whose result MongoDB cannot hold."""
    return failure(UNSTORABLE, f"result cannot be stored: {problem}", "UnstorableResult")


def storable(outcome: Outcome) -> Outcome:
    """``outcome`` if MongoDB can store its result and error, else an error saying why.

    Catches what the driver would refuse (integers beyond 64 bits, keys with a NUL byte,
    unencodable strings) and results over :data:`MAX_RESULT_BYTES`.
    """
    try:
        size = len(bson.encode({"result": outcome.result, "error": outcome.error}))
    except Exception as exc:  # noqa: BLE001 - whatever the encoder refuses
        return unstorable(f"{type(exc).__name__}: {clip(exception_text(exc), 300)}")
    if size > MAX_RESULT_BYTES:
        return unstorable(
            f"it is {size} bytes as BSON, more than the {MAX_RESULT_BYTES} a result may take "
            "(MongoDB documents are limited to 16 MiB); save large outputs to files and "
            "return their paths"
        )
    return outcome


def interpret(value: Any) -> Outcome:
    """:func:`normalize`, then :func:`storable`; a result that cannot even be read (its
    ``items()`` raises, a self-containing dict) is an ``invalid result`` error."""
    try:
        outcome = normalize(value)
    except Exception as exc:  # noqa: BLE001 - the objective's return value is untrusted
        return failure(INVALID_RESULT, f"objective returned a result that cannot be read: "
                       f"{exception_name(exc)}: {exception_text(exc)}", "InvalidResult")
    return storable(outcome)


def normalize(value: Any) -> Outcome:
    """Interpret an objective's return value.

    * a finite number: an ok trial with that loss;
    * a dict with ``status`` "ok" (or no status) and a finite ``loss``: an ok trial;
    * a dict with ``status`` "fail": a failed trial as the objective reported it
      (state done; the optimizer sees the failure; e.g. ``reason: "oom"``);
    * anything else (NaN, inf, a string, a dict without a loss, an unknown status):
      an error whose message says what was wrong.
    """
    if isinstance(value, Mapping):
        result = {str(k): v for k, v in value.items()}
        result.pop("attachments", None)
        status = result.setdefault("status", base.STATUS_OK)
        if status == base.STATUS_FAIL:
            return Outcome(State.DONE, s.bson_safe(result))
        if status != base.STATUS_OK:
            return failure(
                INVALID_RESULT,
                f"objective returned status {status!r}; use 'ok' (with a loss) or 'fail'",
                "InvalidResult",
            )
        if "loss" not in result:
            return failure(
                INVALID_RESULT,
                f"objective returned a dict without 'loss' (keys: {sorted(result)})",
                "InvalidResult",
            )
        problem = _loss_problem(result["loss"])
        if problem:
            return failure(INVALID_RESULT, problem, "InvalidResult")
        result["loss"] = float(result["loss"])
        return Outcome(State.DONE, s.bson_safe(result))
    problem = _loss_problem(value)
    if problem:
        return failure(INVALID_RESULT, problem, "InvalidResult")
    return Outcome(State.DONE, {"status": base.STATUS_OK, "loss": float(value)})


def _loss_problem(loss: Any) -> str | None:
    if isinstance(loss, bool) or not isinstance(loss, (int, float, np.integer, np.floating)):
        return f"objective returned a loss of type {type(loss).__name__} ({loss!r:.60}); expected a number"
    try:
        as_float = float(loss)
    except OverflowError:
        return "objective returned an integer loss too large for a float; expected a finite number"
    if not math.isfinite(as_float):
        return f"objective returned a non-finite loss ({loss}); expected a finite number"
    return None


class PointOutsideSpace(ValueError):
    """A job's hyperparameter values are not a point of the experiment's space."""


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def job_vals(job: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The job's ``misc.vals`` (``{label: [value] or []}``), checked for shape.

    Raises:
        MalformedJob: ``misc`` or ``misc.vals`` missing or not documents, or a label
            whose entry is not a list.
    """
    misc = job.get(s.MISC)
    if misc is None:
        raise MalformedJob("the job has no 'misc' (hyperopt's tid, cmd, idxs and vals)")
    if not isinstance(misc, Mapping):
        raise MalformedJob(f"'misc' is of type {_kind(misc)}, expected a document")
    vals = misc.get("vals")
    if not isinstance(vals, Mapping):
        raise MalformedJob(f"'misc.vals' is of type {_kind(vals)}, expected a document of lists")
    for label, entry in vals.items():
        if not isinstance(entry, (list, tuple)):
            raise MalformedJob(f"'misc.vals.{label}' is of type {_kind(entry)}, expected a list")
    return {str(label): list(entry) for label, entry in vals.items()}


def job_experiment(job: Mapping[str, Any]) -> str | None:
    """The job's ``experiment`` name, or None for a job of a plain hyperopt script.

    Raises:
        MalformedJob: ``experiment`` is not a non-empty string.
    """
    name = job.get(s.EXPERIMENT)
    if name is not None and (not isinstance(name, str) or not name):
        raise MalformedJob(f"'experiment' is of type {_kind(name)}, expected the name of an experiment")
    return name


def job_command(job: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """hyperopt's ``misc.cmd`` of a job without an experiment (``(kind, argument)``), or
    None when it has none.

    Raises:
        MalformedJob: ``misc`` or ``misc.cmd`` of the wrong type.
    """
    misc = job.get(s.MISC)
    if misc is None:
        return None
    if not isinstance(misc, Mapping):
        raise MalformedJob(f"'misc' is of type {_kind(misc)}, expected a document")
    cmd = misc.get("cmd")
    if cmd is None:
        return None
    if not isinstance(cmd, (list, tuple)) or len(cmd) != 2:
        raise MalformedJob(f"'misc.cmd' is {_kind(cmd)} {cmd!r:.100}, expected [kind, argument]")
    return cmd[0], cmd[1]


def params_for(space: Any, vals: Mapping[str, list[Any]]) -> Any:
    """The objective's input for a job's ``misc.vals``, after checking it is in the space.

    Raises:
        PointOutsideSpace: a label the space does not have, a missing label, a choice
            index out of range, or a value outside a bounded distribution.
    """
    point = s.point_from_vals(vals)
    bounds = _bounds(space)
    unknown = sorted(set(point) - set(bounds))
    if unknown:
        raise PointOutsideSpace(f"the space has no hyperparameter(s) {unknown}")
    missing = sorted(set(bounds) - set(vals))
    if missing:
        raise PointOutsideSpace(f"the job has no value for hyperparameter(s) {missing} "
                                "(hyperopt lists every label in misc.vals, with [] when inactive)")
    for label, value in point.items():
        low, high, integral = bounds[label]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise PointOutsideSpace(f"{label}={value!r:.200} is not a number")
        try:
            finite = math.isfinite(float(value))
        except OverflowError:
            finite = False
        if not finite:
            raise PointOutsideSpace(f"{label}={value!r:.200} is not a finite number")
        if integral and float(value) != int(value):
            raise PointOutsideSpace(f"{label}={value!r} must be an integer index")
        if not low <= float(value) <= high:
            raise PointOutsideSpace(f"{label}={value!r} is outside [{low}, {high}]")
    try:
        return s.params_from_vals(space, vals)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise PointOutsideSpace(f"the values do not form a point of the space: {exc!r}") from None


def _bounds(space: Any) -> dict[str, tuple[float, float, bool]]:
    """``label -> (low, high, integer-valued)`` for every hyperparameter of ``space``."""
    bounds: dict[str, tuple[float, float, bool]] = {}
    for node in toposort(as_apply(space)):
        if node.name != "hyperopt_param":
            continue
        label = node.arg["label"].obj
        dist = node.arg["obj"]
        args = [a.obj if hasattr(a, "obj") else None for a in dist.pos_args]
        kwargs = {k: (v.obj if hasattr(v, "obj") else None) for k, v in dist.named_args}
        bounds[label] = _dist_bounds(dist.name, args, kwargs)
    return bounds


def _dist_bounds(name: str, args: list[Any], kwargs: dict[str, Any]) -> tuple[float, float, bool]:
    """Support of one hyperopt distribution; unbounded when its arguments are not literals."""
    unbounded = (-math.inf, math.inf, False)
    try:
        if name == "randint":
            low, high = (0, args[0]) if len(args) == 1 else args[:2]
            return float(low), float(high) - 1, True
        low, high = (args + [kwargs.get("low"), kwargs.get("high")])[:2]
        q = float(args[2] if len(args) > 2 else kwargs.get("q") or 0)
        if name in ("uniform", "quniform", "uniformint"):
            return float(low) - q, float(high) + q, False
        if name in ("loguniform", "qloguniform"):
            return math.exp(float(low)) - q, math.exp(float(high)) + q, False
    except (TypeError, ValueError, IndexError):
        return unbounded
    if name in ("lognormal", "qlognormal"):
        return 0.0, math.inf, False
    return unbounded
