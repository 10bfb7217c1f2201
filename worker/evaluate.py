"""Turning a claimed job into a result: which code runs, with which params, and what
the objective's return value means.

Nothing here touches the queue; :mod:`worker.loop` owns claims and writes.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hyperopt import base
from hyperopt.fmin import space_eval
from hyperopt.pyll import as_apply, toposort

from jobstore import schema as s
from jobstore.schema import State

PICKLE_REFUSED = (
    "this job's objective is a pickled hyperopt Domain stored in the database (a plain "
    "hyperopt fmin script); running it executes code from the database, so this worker "
    "refuses. Start the worker with --allow-pickle to run such jobs, but only if you "
    "trust everyone who can write to this database."
)


@dataclass
class Outcome:
    """The final state, result and error (if any) of one evaluation."""

    state: State
    result: dict[str, Any]
    error: dict[str, Any] | None = field(default=None)


def failure(reason: str, message: str, error_type: str, tb: str | None = None) -> Outcome:
    """An error outcome: the objective could not give a usable result."""
    error = {"type": error_type, "message": message, "reason": reason}
    if tb is not None:
        error["traceback"] = tb
    return Outcome(State.ERROR, {"status": base.STATUS_FAIL, "reason": reason}, error)


def from_exception(exc: BaseException) -> Outcome:
    """An exception raised by the objective, with its type, message and traceback."""
    name = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return failure("exception", str(exc) or name, name, text)


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
                "invalid result",
                f"objective returned status {status!r}; use 'ok' (with a loss) or 'fail'",
                "InvalidResult",
            )
        if "loss" not in result:
            return failure(
                "invalid result",
                f"objective returned a dict without 'loss' (keys: {sorted(result)})",
                "InvalidResult",
            )
        problem = _loss_problem(result["loss"])
        if problem:
            return failure("invalid result", problem, "InvalidResult")
        result["loss"] = float(result["loss"])
        return Outcome(State.DONE, s.bson_safe(result))
    problem = _loss_problem(value)
    if problem:
        return failure("invalid result", problem, "InvalidResult")
    return Outcome(State.DONE, {"status": base.STATUS_OK, "loss": float(value)})


def _loss_problem(loss: Any) -> str | None:
    if isinstance(loss, bool) or not isinstance(loss, (int, float, np.integer, np.floating)):
        return f"objective returned a loss of type {type(loss).__name__} ({loss!r:.60}); expected a number"
    if not math.isfinite(float(loss)):
        return f"objective returned a non-finite loss ({loss}); expected a finite number"
    return None


class PointOutsideSpace(ValueError):
    """A job's hyperparameter values are not a point of the experiment's space."""


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
    for label, value in point.items():
        low, high, integral = bounds[label]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise PointOutsideSpace(f"{label}={value!r} is not a number")
        if integral and float(value) != int(value):
            raise PointOutsideSpace(f"{label}={value!r} must be an integer index")
        if not low <= float(value) <= high:
            raise PointOutsideSpace(f"{label}={value!r} is outside [{low}, {high}]")
    try:
        return space_eval(space, point)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
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
