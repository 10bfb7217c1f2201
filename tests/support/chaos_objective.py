"""The chaos suite's experiment, and its records of what happened in each worker.

``chaos`` is the tutorial's quadratic with a short, reported sleep.  Loaded in a worker
(``hpo-worker --objective tests.support.chaos_objective:chaos``) with
``HPO_CHAOS_RECORDS`` set to a directory, it appends JSON lines to
``<dir>/<pid>.jsonl`` (one file per process, each line written and closed at once, so
a ``kill -9`` loses at most the line being written):

* ``{"event": "eval", "x": ...}`` when the objective starts evaluating a point;
* ``{"event": "ack", "exp_key", "tid", "token", "state", "loss"}`` right after the store
  *acknowledged* a result: :meth:`jobstore.queue.JobQueue.finish` returned true, i.e.
  the fenced update matched (or its retry found its own write).  This is the moment the
  worker counts the trial as recorded; a result acknowledged there and missing from the
  database later was lost.

Run settings (``hpo-coord start --set``):

* ``sleep`` (s, default 0.1): the evaluation's length, in steps of about 0.05 s, each
  reported as metrics (like epochs: a process frozen mid-trial resumes at its next
  step); the objective stops at the next step when ``should_stop()``.
* ``poison`` (default none), e.g. ``{"int": [2], "text": [4]}``: the worker process's
  2nd evaluation returns a result BSON cannot hold, an integer of 2**64, and its 4th
  one a 17 MB string (MongoDB's documents are limited to 16 MB).  Counted per process,
  so every worker that evaluates that many points poisons exactly those; the ``eval``
  record names the poison.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from hyperopt import hp

from jobstore.queue import JobQueue
from objectives.base import Experiment, Reporter, Setting, TrialInterrupted

RECORDS_ENV = "HPO_CHAOS_RECORDS"
HUGE_INT = 2**64
HUGE_TEXT_BYTES = 17 * 2**20
STEP_S = 0.05


def record(event: str, **fields: Any) -> None:
    """Append one line to this process's record file (no-op without HPO_CHAOS_RECORDS)."""
    folder = os.environ.get(RECORDS_ENV)
    if not folder:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), "t": time.time(), **fields}, default=repr)
    with open(Path(folder) / f"{os.getpid()}.jsonl", "a") as out:
        out.write(line + "\n")


_evaluations = 0


def poison_kind(ordinal: int, plan: Any) -> str | None:
    """Which unstorable result this process's ``ordinal``-th evaluation returns."""
    if not isinstance(plan, dict):
        return None
    for kind in ("int", "text"):
        if ordinal in (plan.get(kind) or []):
            return kind
    return None


def loss_of(x: float) -> float:
    return x**2 - x + 1


def _objective(x: float, reporter: Reporter) -> Any:
    global _evaluations
    _evaluations += 1
    poison = poison_kind(_evaluations, reporter.settings.get("poison"))
    record("eval", x=x, poison=poison)
    seconds = float(reporter.settings.get("sleep", 0.1))
    steps = max(1, round(seconds / STEP_S))
    for step in range(1, steps + 1):  # like epochs: a frozen process resumes where it was
        reporter.report(step, elapsed=step)
        if reporter.should_stop():
            raise TrialInterrupted("asked to stop")
        time.sleep(seconds / steps)
    if poison == "int":
        return {"status": "ok", "loss": loss_of(x), "count": HUGE_INT}
    if poison == "text":
        return {"status": "ok", "loss": loss_of(x), "log": "x" * HUGE_TEXT_BYTES}
    return loss_of(x)


chaos = Experiment(
    name="chaos",
    space=hp.uniform("x", -5, 5),
    objective=_objective,
    max_evals=40,
    description="quadratic with a short sleep that records evaluations and acknowledged results (tests only)",
    settings=(Setting("sleep", float, help="the evaluation's length", minimum=0),
              Setting("poison", dict, help="ordinals of the evaluations whose results are unstorable")),
)


def _record_acknowledged_results() -> None:
    """Wrap ``JobQueue.finish`` in this process so each acknowledged result is recorded."""
    finish = JobQueue.finish
    if getattr(finish, "chaos_recorded", False):
        return

    def recorded_finish(self: JobQueue, claim: Any, state: Any, result: Any, *args: Any, **kwargs: Any) -> Any:
        written = finish(self, claim, state, result, *args, **kwargs)
        if written:
            loss = result.get("loss") if isinstance(result, dict) else None
            record("ack", exp_key=claim.job.get("exp_key"), tid=claim.job.get("tid"), token=claim.token,
                   state=int(state), loss=loss if isinstance(loss, float) else None)
        return written

    recorded_finish.chaos_recorded = True  # type: ignore[attr-defined]
    JobQueue.finish = recorded_finish  # type: ignore[method-assign]


if os.environ.get(RECORDS_ENV):
    _record_acknowledged_results()
