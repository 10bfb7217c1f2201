"""The contract between the worker and an objective.

An :class:`Experiment` bundles what a run needs: the hyperopt search space, the
objective, and defaults for the coordinator.  The worker calls::

    result = experiment.objective(params, reporter)

``params`` is the point as plain values (what ``hyperopt.space_eval`` gives for the
trial).  ``reporter`` is a :class:`Reporter`: the objective calls
``reporter.report(epoch, **metrics)`` for intermediate metrics (they are stored on the
job document as they arrive), reads run settings such as an epoch budget from
``reporter.settings`` (the experiment declares them, :class:`Setting`, and the
coordinator checks ``--set`` against them), and should end early, by raising :class:`TrialInterrupted`, once
``reporter.should_stop()`` is true: the worker is shutting down (the job is then
returned to the queue, not failed), the worker lost the job's lease (the trial is
dropped; the job's next holder owns it), or the trial ran past its time limit (it is
recorded as an error with the reason ``timeout``; after the limit ``report`` raises
:class:`TrialInterrupted` itself).

The objective returns either a number (the loss) or a hyperopt result dict with at
least ``status`` and, when the status is ``"ok"``, a finite ``loss``.  Raising an
exception marks the trial as an error (the optimizer learns that this point failed);
it is never retried blindly.

**Pruning.**  In a run with a pruner (``hpo-coord start --pruner median|asha|hyperband``)
the worker decides after every ``report`` whether the trial is hopeless (see
:mod:`objectives.pruning`); if so ``report`` raises :class:`TrialPruned`, which the
objective need not catch: the trial ends as done with ``pruned: true``.  An experiment
declares the metric pruning compares (:attr:`Experiment.pruning`); an objective that also
reports ``loss`` (the loss it would return if it stopped at that step) gives its pruned
trials that loss, otherwise they are recorded as failed (``reason: "pruned"``).

**Time limit.**  A run may give each trial a time limit in seconds (``hpo-coord start
--trial-timeout``, stored as the run setting ``trial_timeout``; otherwise
:attr:`Experiment.trial_timeout`).  Past it the worker asks the trial to stop as above
and waits the worker's ``--grace``; an objective that still has not returned (stuck in
a C call, a deadlock, ``time.sleep``) cannot be ended inside the process, so the worker
records the timeout, releases its GPU lease and exits with code 76 for its supervisor
(Docker's restart policy, Kubernetes, ``hpo-coord start --local-workers``) to replace it
with a fresh process.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from objectives.pruning import PruningMetric
from user_errors import UserError


class Reporter(Protocol):
    """What an objective may use while it runs."""

    settings: Mapping[str, Any]
    """Run settings chosen by the coordinator (``hpo-coord start --set KEY=VALUE``)."""

    def report(self, step: int, **metrics: float) -> None:
        """Record intermediate metrics for ``step`` (usually the epoch, from 1)."""

    def should_stop(self) -> bool:
        """True once the trial should end: the worker is shutting down, lost the job's
        lease, or the trial ran past its time limit.  Raise :class:`TrialInterrupted` at
        the next safe point."""


Objective = Callable[[Any, Reporter], "float | Mapping[str, Any]"]


class TrialPruned(Exception):
    """Raised by ``reporter.report`` when the run's pruner stops the trial early.

    The objective need not catch it (cleanup in ``finally`` blocks runs as usual).  It is
    a final outcome, not an interruption: the trial is recorded as done, with
    ``pruned: true``, the step it reached and the loss it reported there, and is not
    evaluated again.  The decision is the worker's: an objective that catches it (a broad
    ``except Exception``) and returns, or raises something else, is recorded as pruned
    all the same, and what it returned is ignored.  Raised by the objective itself, when
    the pruner decided nothing, it is an ordinary exception (an error).  Once a trial is
    pruned, every later ``report`` raises it again.
    """


class TrialInterrupted(Exception):
    """Raised by an objective (or by the worker) to abandon a trial that was asked to stop.

    An objective raises it once ``reporter.should_stop()`` is true, at its next safe
    point.  It is not a failure of the point being evaluated: on shutdown the worker
    returns the job to the queue, where another worker evaluates it from the start; after
    a lost lease it drops the trial; past the time limit it records a ``timeout`` error.
    Raised when nothing asked the trial to stop, it is an ordinary exception (an error).
    """


class BadSetting(UserError, ValueError):
    """A run setting (``--set KEY=VALUE``) that the experiment does not declare, or a
    value its declaration refuses; the message says what is allowed."""


_SETTING_TYPES: dict[type, str] = {int: "an integer", float: "a number", bool: "true or false",
                                   str: "a string", dict: "a JSON object", list: "a JSON list"}


@dataclass(frozen=True)
class Setting:
    """A run setting an experiment declares (``hpo-coord start --set NAME=VALUE``).

    ``hpo-coord start`` checks every ``--set`` against the declarations before anything
    is queued: an undeclared name, a value of another type (a ``float`` that is NaN or
    infinite too), outside ``[minimum, maximum]`` or not among ``choices`` is refused
    with a message saying what is allowed.  A setting with a ``default`` (not None) is stored in every run that does
    not set it, so the objective always finds it in ``reporter.settings``; one without
    is left out, and the objective (or the worker's machine) decides.
    """

    name: str
    type: type
    """``int``, ``float``, ``bool``, ``str``, ``dict`` or ``list``."""
    default: Any = None
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.type not in _SETTING_TYPES:
            raise TypeError(f"setting {self.name!r}: type must be one of "
                            f"{', '.join(t.__name__ for t in _SETTING_TYPES)}, not {self.type!r}")

    def parse(self, value: Any) -> Any:
        """``value`` (as ``--set`` decoded it: JSON if it parses, else the text) as this
        setting's type.

        Raises:
            BadSetting: a value of another type, out of range or not among the choices.
        """
        converted = self._converted(value)
        if converted is None:
            raise BadSetting(f"setting {self.name!r} must be {_SETTING_TYPES[self.type]}, not {value!r}")
        if self.type is float and not math.isfinite(converted):
            # --set decodes NaN and Infinity as JSON; no setting means them
            raise BadSetting(f"setting {self.name!r} must be a finite number, not {value!r}")
        if self.minimum is not None and converted < self.minimum or (
                self.maximum is not None and converted > self.maximum):
            raise BadSetting(f"setting {self.name!r} must be {self._range()}, not {converted!r}")
        if self.choices is not None and converted not in self.choices:
            raise BadSetting(f"setting {self.name!r} must be one of "
                             f"{', '.join(map(repr, self.choices))}, not {converted!r}")
        return converted

    def _converted(self, value: Any) -> Any:
        if self.type is bool:
            return value if isinstance(value, bool) else None
        if isinstance(value, bool):
            return str(value).lower() if self.type is str else None
        if self.type is int:
            return value if isinstance(value, int) else None
        if self.type is float:
            return float(value) if isinstance(value, (int, float)) else None
        if self.type is str:
            return value if isinstance(value, str) else (
                json.dumps(value) if isinstance(value, (int, float)) else None)
        return value if isinstance(value, self.type) else None

    def _range(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"between {self.minimum:g} and {self.maximum:g}"
        if self.minimum is not None:
            return f"at least {self.minimum:g}"
        return f"at most {self.maximum:g}"

    def describe(self) -> str:
        """``name`` with its type, range or choices, default and help, on one line."""
        kind = self.type.__name__
        if self.choices is not None:
            kind = "|".join(map(str, self.choices))
        elif self.minimum is not None or self.maximum is not None:
            kind += f", {self._range()}"
        default = f", default {self.default!r}" if self.default is not None else ""
        return f"{self.name} ({kind}{default})" + (f": {self.help}" if self.help else "")


@dataclass(frozen=True)
class Experiment:
    """A named, registered experiment.

    ``version`` is part of the run's fingerprint: bump it whenever the objective's
    meaning changes, so that workers running older code refuse the run's jobs instead
    of evaluating something else.
    """

    name: str
    space: Any
    objective: Objective
    max_evals: int = 100
    algo: str | None = None
    """The search algorithm new runs use (an ``hpo-coord start --algo`` name); None: the
    coordinator's default (``joint-tpe``)."""
    version: str = "1"
    description: str = ""
    settings: tuple[Setting, ...] = ()
    """The run settings the objective reads (see :class:`Setting`); ``--set`` accepts
    these names only (and ``trial_timeout``, which every run has)."""
    pruning: PruningMetric | None = None
    """The reported metric a pruner compares, and its direction (the default of
    ``hpo-coord start --pruner-metric``); None: runs of this experiment must name one."""
    trial_timeout: float | None = None
    """Default time limit of one trial in seconds (None: no limit); a run's
    ``hpo-coord start --trial-timeout`` overrides it.  See the module docstring."""
    retrain: Callable[[Mapping[str, Any], Mapping[str, Any], Path], Mapping[str, Any]] | None = None
    """Optional: ``retrain(params, settings, out_dir)`` trains a final model on all the
    training data (``hpo-coord retrain``), saves it under ``out_dir`` and returns a
    summary such as test accuracy."""

    @property
    def default_settings(self) -> dict[str, Any]:
        """The declared settings that have a default, with it: what a run stores for a
        setting that ``--set`` does not give."""
        return {s.name: s.default for s in self.settings if s.default is not None}

    def check_settings(self, given: Mapping[str, Any], *, also: tuple[Setting, ...] = ()) -> dict[str, Any]:
        """``given`` with each value parsed by its declaration (:meth:`Setting.parse`);
        ``also`` declares settings every experiment takes.

        Raises:
            BadSetting: an undeclared name (the message lists the declared ones) or a
                refused value.
        """
        declared = {s.name: s for s in (*self.settings, *also)}
        checked = {}
        for name, value in given.items():
            if name not in declared:
                known = "; ".join(s.describe() for s in declared.values())
                raise BadSetting(f"experiment {self.name!r} has no setting {name!r}; its settings: {known}")
            checked[name] = declared[name].parse(value)
        return checked

    def fingerprint(self) -> str:
        """A stable hash of the space's structure, the name and the version.

        Two processes that built the same space from the same code get the same value.
        """
        from hyperopt import pyll

        text = f"{self.name}\n{self.version}\n{pyll.as_apply(self.space)}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class NullReporter:
    """A reporter for calling an objective outside a worker (tests, notebooks)."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings: Mapping[str, Any] = dict(settings or {})
        self.metrics: list[dict[str, float]] = []

    def report(self, step: int, **metrics: float) -> None:
        self.metrics.append({"step": step, **metrics})

    def should_stop(self) -> bool:
        return False
