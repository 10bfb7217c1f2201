"""Experiments for the process-level tests, registered with ``--objective``.

``recording`` is the tutorial's quadratic; every evaluation is also recorded in the
``evaluations`` collection of the worker's database, so tests can check that no point
was evaluated twice.  ``curve`` reports a learning curve per step, for pruning.  The run setting ``mode`` makes it misbehave on purpose; with the
setting ``only_first`` only the first evaluation of that mode misbehaves (the others
return the quadratic), so one worker can meet a poison trial and then ordinary ones.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import pymongo
from hyperopt import hp

from objectives.base import Experiment, Reporter, Setting, TrialInterrupted, TrialPruned
from objectives.pruning import PruningMetric

_client: pymongo.MongoClient | None = None


def _evaluations() -> pymongo.collection.Collection:
    global _client
    if _client is None:
        _client = pymongo.MongoClient(os.environ["HPO_TEST_DB_URL"])
    return _client.get_default_database()["evaluations"]


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be printed")


def _objective(x: float, reporter: Reporter) -> Any:
    mode = reporter.settings.get("mode", "quadratic")
    first = _evaluations().count_documents({"mode": mode}, limit=1) == 0
    _evaluations().insert_one({"x": x, "pid": os.getpid(), "mode": mode})
    if reporter.settings.get("only_first") and not first:
        mode = "quadratic"
    if mode == "slow":
        deadline = time.monotonic() + float(reporter.settings.get("seconds", 30))
        step = 0
        while time.monotonic() < deadline:
            step += 1
            reporter.report(step, elapsed=step * 0.1)
            if reporter.should_stop() and reporter.settings.get("cooperative", True):
                raise TrialInterrupted("asked to stop")
            time.sleep(0.1)
    if mode == "swallow":  # catches the interruption and carries on, as a bare except would
        deadline = time.monotonic() + float(reporter.settings.get("seconds", 60))
        while time.monotonic() < deadline:
            try:
                reporter.report(1, elapsed=0.0)
                time.sleep(0.1)
            except TrialInterrupted:
                pass
    if mode == "hang":  # ignores should_stop() and never reports: only a kill ends it
        while True:
            time.sleep(1)
    if mode == "bigint":
        return {"loss": x**2, "count": 2**70}
    if mode == "huge":
        return {"loss": x**2, "blob": "x" * 17_000_000}
    if mode == "dollar":
        return {"loss": x**2, "$where": "sleep(1000)", "a.b": {"$gt": 1}}
    if mode == "nulkey":
        return {"loss": x**2, "a\x00b": 1}
    if mode == "longmsg":
        raise ValueError("boom " + "x" * int(reporter.settings.get("length", 2_000_000)))
    if mode == "exit":
        sys.exit(3)
    if mode == "unprintable":
        raise _Unprintable()
    if mode == "raise" and x > 0:
        raise ValueError(f"boom at x={x:.3f}")
    if mode == "nan":
        return float("nan")
    if mode == "text":
        return "not a loss"
    if mode == "noloss":
        return {"status": "ok", "accuracy": 0.5}
    if mode == "fail":
        return {"status": "fail", "reason": "oom"}
    return x**2 - x + 1


SETTINGS = (
    Setting("mode", str, help="how the evaluation misbehaves", choices=(
        "quadratic", "slow", "swallow", "hang", "bigint", "huge", "dollar", "nulkey", "longmsg", "exit",
        "unprintable", "raise", "nan", "text", "noloss", "fail")),
    Setting("only_first", bool, help="misbehave in the first evaluation of the mode only"),
    Setting("seconds", float, help="length of slow and swallow", minimum=0),
    Setting("cooperative", bool, help="slow stops when asked to"),
    Setting("length", int, help="length of longmsg's message", minimum=0),
)

recording = Experiment(
    name="recording",
    space=hp.uniform("x", -5, 5),
    objective=_objective,
    max_evals=20,
    description="quadratic that records each evaluation (tests only)",
    settings=SETTINGS,
)

recording_v2 = Experiment(
    name="recording",
    space=hp.uniform("x", -5, 5),
    objective=_objective,
    version="2",
    description="the same with another version: a worker running other code",
    settings=SETTINGS,
)


class _SlowLoading(Experiment):
    """Takes ``$HPO_TEST_LOAD_S`` seconds to load in a worker (its fingerprint is computed
    when a job is prepared), as an experiment importing torch on a busy host does."""

    def fingerprint(self) -> str:
        time.sleep(float(os.environ.get("HPO_TEST_LOAD_S", "0")))
        return super().fingerprint()


slow_loading = _SlowLoading(
    name="slow-loading",
    space=hp.uniform("x", -5, 5),
    objective=_objective,
    description="the recording quadratic, slow to load (tests only)",
    settings=SETTINGS,
)


def _curve(x: float, reporter: Reporter) -> Any:
    """Reports ``loss = x + 1 / step`` (under the name of the setting ``metric``, default
    ``loss``) for ``epochs`` steps, ``step_s`` seconds apart; with the setting
    ``raise_pruned`` it raises :class:`TrialPruned` itself after the first step.  With
    ``caught_pruned`` it catches the :class:`TrialPruned` of a report, as a broad
    ``except Exception`` would, and then returns a loss of -1 (``"return"``, better than
    any it reported) or raises a ``RuntimeError`` (``"raise"``)."""
    epochs = int(reporter.settings.get("epochs", 9))
    for step in range(1, epochs + 1):
        time.sleep(float(reporter.settings.get("step_s", 0)))
        try:
            reporter.report(step, **{reporter.settings.get("metric", "loss"): x + 1 / step})
        except TrialPruned:
            caught = reporter.settings.get("caught_pruned")
            if caught == "return":
                return -1.0
            if caught == "raise":
                raise RuntimeError("the objective's own error after being pruned") from None
            raise
        if reporter.settings.get("raise_pruned"):
            raise TrialPruned("pruned by the objective itself")
        if reporter.should_stop():
            raise TrialInterrupted("asked to stop")
    return x + 1 / epochs


curve = Experiment(
    name="curve",
    space=hp.uniform("x", 0, 1),
    objective=_curve,
    description="learning curves x + 1/step, for pruning (tests only)",
    pruning=PruningMetric("loss"),
)


def _whole_numbers_objective(params: dict[str, Any], reporter: Reporter) -> dict[str, Any]:
    channels = params["channels"]
    return {"status": "ok", "loss": abs(channels - 16) / 10 + 0.25, "n_params": int(channels) * 764 + 16,
            "channels_type": type(channels).__name__}


whole_numbers = Experiment(
    name="whole-numbers",
    space={"channels": hp.quniform("channels", 8, 32, 8)},
    objective=_whole_numbers_objective,
    description="a quniform (floats holding whole numbers) and an integer result field (tests only)",
)
