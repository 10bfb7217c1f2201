"""Pruning rules: when a trial's intermediate value says it should stop early.

A run's pruner (``hpo-coord start --pruner``) is stored in its run document as
:class:`PrunerSettings`, so every worker applies the same rule.  After each
``reporter.report(step, ...)`` the worker asks :class:`Pruner` whether the trial should
stop; the rules read the other trials' values through a :class:`Population` (the store
answers it from each worker's copy of the run's scores, updated with what changed since
its last decision, see :mod:`jobstore.curves`), never the whole run.

The rules are Optuna's, on the same inputs, so that a decision here equals Optuna's
decision on the same learning curves (tests/objectives/test_pruning.py checks it):

* ``median`` is Optuna's ``MedianPruner``: after ``warmup_steps`` steps and once
  ``startup_trials`` trials have completed, a trial stops when its best value so far is
  worse than the median of the completed (not pruned) trials' values at the same step.
* ``asha`` is Optuna's ``SuccessiveHalvingPruner`` (asynchronous successive halving):
  rungs sit at steps ``min_resource * reduction_factor ** k``; at each rung a trial records
  its value and continues only while it is in the best ``1 / reduction_factor`` of all the
  values recorded at that rung so far (the first trials at a rung continue only if they
  are the best there).  No trial waits for another.
* ``hyperband`` is Optuna's ``HyperbandPruner``: several ASHA brackets, bracket ``b``
  starting its rungs at ``min_resource * reduction_factor ** b``; a trial belongs to the
  bracket its ``(run, tid)`` hashes to (CRC-32, weighted as Optuna weighs them) and
  competes only within it.

Two differences from Optuna.  No decision is taken at or past ``max_resource`` (the
trial's budget): a trial that reached it has spent its training, so pruning it would
only throw its result away.  And an infinite value is an ordinary value in the median:
Optuna takes the median with numpy's interpolation, which gives NaN when an infinity
sits at or next to the middle (the median of 0.1, 0.2 and inf is NaN there, 0.2 here),
and then prunes nothing; asha and hyperband treat infinities alike.

Values are *scores*: lower is better (a maximized metric's value is negated), so the
store keeps one ordering whatever the direction.  NaN is never recorded; as in Optuna,
asha and hyperband prune a trial whose value at a rung is NaN, and the median prunes
one whose values so far are all NaN (its best value so far ignores NaN).
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

KINDS = ("none", "median", "asha", "hyperband")
"""The ``--pruner`` choices."""
DIRECTIONS = ("minimize", "maximize")

DEFAULT_REDUCTION_FACTOR = 3
DEFAULT_MIN_RESOURCE = 1
DEFAULT_WARMUP_STEPS = 0
DEFAULT_STARTUP_TRIALS = 5


RULE_SETTINGS = {
    "median": ("warmup_steps", "startup_trials", "max_resource"),
    "asha": ("min_resource", "max_resource", "reduction_factor"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor"),
}
"""The :class:`PrunerSettings` fields each kind's rule reads, besides the metric and
its direction (what a display of a run's pruner shows)."""


def rule_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Of a stored pruner document, the settings its kind's rule reads besides the kind,
    metric and direction (:data:`RULE_SETTINGS`), in that order; every other one for an
    unknown kind: what a display of a run's pruner shows."""
    rule = ("kind", "metric", "direction")
    keys = RULE_SETTINGS.get(str(settings.get("kind")), tuple(k for k in settings if k not in rule))
    return {key: settings[key] for key in keys if key in settings}


class BadPrunerSettings(ValueError):
    """Pruner settings that cannot work; the message says which and why."""


@dataclass(frozen=True)
class PruningMetric:
    """What an experiment declares for pruning: the reported metric and its direction."""

    name: str
    direction: str = "minimize"


@dataclass(frozen=True)
class PrunerSettings:
    """A run's pruner, as stored in its run document (``settings.pruner``).

    ``min_resource`` and ``max_resource`` are in steps (the ``step`` of
    ``reporter.report``, usually epochs); ``max_resource`` is the trial's budget.
    ``warmup_steps`` and ``startup_trials`` apply to ``median``; ``min_resource``,
    ``reduction_factor`` to ``asha`` and ``hyperband`` (:data:`RULE_SETTINGS`).
    """

    kind: str
    metric: str
    direction: str
    max_resource: int
    min_resource: int = DEFAULT_MIN_RESOURCE
    reduction_factor: int = DEFAULT_REDUCTION_FACTOR
    warmup_steps: int = DEFAULT_WARMUP_STEPS
    startup_trials: int = DEFAULT_STARTUP_TRIALS

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise BadPrunerSettings("pruner settings: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(self.metric, str) or not self.metric:
            problems.append(f"metric {self.metric!r} is not the name of a reported metric")
        if self.direction not in DIRECTIONS:
            problems.append(f"direction {self.direction!r} is not one of {', '.join(DIRECTIONS)}")
        for name, low in (("max_resource", 1), ("min_resource", 1), ("reduction_factor", 2),
                          ("warmup_steps", 0), ("startup_trials", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{name} is {value!r}, not an integer >= {low}")
        if not problems and self.min_resource > self.max_resource:
            problems.append(f"min_resource ({self.min_resource}) is above max_resource "
                            f"({self.max_resource}), so no rung would ever be reached")
        return problems

    def never_prunes(self) -> str | None:
        """Why these settings can never prune a trial, or None when they can: no decision
        is taken at or past ``max_resource``, so a first rung (asha, hyperband) or the end
        of the warm-up (median) there leaves none.  ``hpo-coord start`` refuses such
        settings; a run that already stores them still runs (and prunes nothing)."""
        if self.kind in ("asha", "hyperband") and self.min_resource >= self.max_resource:
            return (f"min_resource ({self.min_resource}) is not below max_resource ({self.max_resource}); "
                    "no decision is taken at or past max_resource, so no trial would ever be pruned")
        if self.kind == "median" and self.warmup_steps >= self.max_resource:
            return (f"warmup_steps ({self.warmup_steps}) is not below max_resource ({self.max_resource}); "
                    "no decision is taken at or past max_resource, so no trial would ever be pruned")
        return None

    def incomparable_scores(self, earlier: "PrunerSettings") -> str | None:
        """What makes the scores recorded under ``earlier`` settings mean something else
        under these (None when they compare alike): another metric or direction; between
        asha and hyperband, rungs at other steps (another ``min_resource`` or
        ``reduction_factor``).  The median reads step scores, asha and hyperband rung
        scores, so a change of kind between them compares nothing of the other's."""
        changed = ["metric", "direction"]
        if self.kind in ("asha", "hyperband") and earlier.kind in ("asha", "hyperband"):
            changed += ["min_resource", "reduction_factor"]
        changes = [f"{name} {getattr(earlier, name)!r} -> {getattr(self, name)!r}" for name in changed
                   if getattr(self, name) != getattr(earlier, name)]
        return ", ".join(changes) or None

    def to_document(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_document(cls, document: Any) -> "PrunerSettings":
        """The settings a run document holds.

        Raises:
            BadPrunerSettings: not a document, a field missing, unknown or invalid.
        """
        if not isinstance(document, Mapping):
            raise BadPrunerSettings(f"pruner settings are {document!r:.80}, not a document")
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(set(document) - fields)
        if unknown:
            raise BadPrunerSettings(f"pruner settings have unknown field(s) {unknown}")
        values = {key: (int(v) if isinstance(v, float) and v.is_integer() else v)
                  for key, v in document.items()}
        try:
            return cls(**values)
        except TypeError as exc:
            raise BadPrunerSettings(f"pruner settings are incomplete: {exc}") from None

    def score(self, value: float) -> float:
        """``value`` as a score (lower is better)."""
        return float(value) if self.direction == "minimize" else -float(value)

    def brackets(self) -> int:
        """Hyperband's bracket count: ``floor(log_eta(max / min)) + 1`` (1 for asha)."""
        if self.kind != "hyperband":
            return 1
        return math.floor(math.log(self.max_resource / self.min_resource, self.reduction_factor)) + 1

    def bracket(self, exp_key: str, tid: int) -> int:
        """The Hyperband bracket of trial ``tid`` of run ``exp_key`` (0 for asha), as
        Optuna's ``HyperbandPruner`` assigns trial number ``tid`` of study ``exp_key``."""
        n = self.brackets()
        if n == 1:
            return 0
        budgets = [math.ceil(n * self.reduction_factor ** (n - 1 - b) / (n - b)) for b in range(n)]
        slot = binascii.crc32(f"{exp_key}_{tid}".encode()) % sum(budgets)
        for bracket, budget in enumerate(budgets):
            slot -= budget
            if slot < 0:
                return bracket
        raise AssertionError("unreachable: the slot is below the budgets' sum")


class Population(Protocol):
    """Scores other trials recorded, as the rules need them (lower is better).

    ``at_step`` is the median's population: completed, unpruned trials' scores at one
    step.  ``at_rung`` is ASHA's: every trial's score recorded at rung ``rung`` of
    ``bracket``, this trial's own included once recorded.
    """

    def completed_trials(self, at_least: int) -> int:
        """Completed (not pruned) trials of the run, counted up to ``at_least``."""

    def at_step(self, step: int) -> "Scores":
        """Completed trials' scores at ``step``."""

    def at_rung(self, bracket: int, rung: int) -> "Scores":
        """Scores recorded at ``rung`` of ``bracket``."""

    def record_step(self, step: int, score: float) -> None:
        """Record this trial's ``score`` at ``step`` (median runs; NaN is not recorded)."""

    def record_rung(self, bracket: int, rung: int, score: float) -> None:
        """Record this trial's ``score`` at ``rung`` of ``bracket`` (never NaN)."""


class Scores(Protocol):
    """A set of scores, asked in ways a sorted copy (or an index) answers at once."""

    def size(self) -> int:
        """How many scores."""

    def count_below(self, score: float, limit: int) -> int:
        """How many are strictly below ``score``, counted up to ``limit`` (> 0)."""

    def nearest(self, score: float) -> tuple[float, float]:
        """The greatest score strictly below ``score`` and the least at or above it
        (both exist when asked)."""


class Pruner:
    """One trial attempt's pruning decisions (a fresh one for every attempt)."""

    def __init__(self, settings: PrunerSettings, population: Population, exp_key: str, tid: int) -> None:
        self.settings = settings
        self._population = population
        self._bracket = settings.bracket(exp_key, tid)
        self._rung = 0
        self._best = math.inf
        self._nan_only = True

    def should_prune(self, step: int, value: float) -> bool:
        """Whether the trial that reported ``value`` of the run's metric at ``step``
        should stop now (see the module doc for each rule)."""
        cfg = self.settings
        score = cfg.score(value)
        if not math.isnan(score):
            self._nan_only = False
            self._best = min(self._best, score)
        if cfg.kind == "median":
            self._population.record_step(step, score)
        if cfg.kind == "none" or step >= cfg.max_resource:
            return False
        if cfg.kind == "median":
            return self._median(step)
        return self._successive_halving(step, score)

    def _median(self, step: int) -> bool:
        cfg = self.settings
        startup = max(cfg.startup_trials, 1)
        if self._population.completed_trials(startup) < startup or step < cfg.warmup_steps:
            return False
        if self._nan_only:
            return True
        return above_median(self._best, self._population.at_step(step))

    def _successive_halving(self, step: int, score: float) -> bool:
        cfg = self.settings
        while step >= cfg.min_resource * cfg.reduction_factor ** (self._bracket + self._rung):
            if math.isnan(score):
                return True
            self._population.record_rung(self._bracket, self._rung, score)
            if not promotable(score, self._population.at_rung(self._bracket, self._rung),
                              cfg.reduction_factor):
                return True
            self._rung += 1
        return False


def above_median(best: float, scores: Scores) -> bool:
    """True when ``best`` is above the median (numpy's linear percentile 50) of
    ``scores``; False when there are none."""
    n = scores.size()
    if n == 0:
        return False
    position = 0.5 * (n - 1)
    low, high = math.floor(position), math.ceil(position)
    below = scores.count_below(best, high + 1)
    if below > high:
        return True
    if below <= low:
        return False
    # n is even and best lies between the two middle scores: compare with their mean
    return best > float(np.percentile(np.array(scores.nearest(best)), 50))


def promotable(score: float, scores: Scores, reduction_factor: int) -> bool:
    """True when ``score`` (already among ``scores``) is in the best
    ``1 / reduction_factor`` of them, or the best of them while they are fewer than
    ``reduction_factor`` (Optuna's promotion rule)."""
    index = max(scores.size() // reduction_factor - 1, 0)
    return scores.count_below(score, index + 1) <= index


class ScoreList:
    """:class:`Scores` over a list in memory."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores

    def size(self) -> int:
        return len(self.scores)

    def count_below(self, score: float, limit: int) -> int:
        return min(sum(1 for s in self.scores if s < score), limit)

    def nearest(self, score: float) -> tuple[float, float]:
        return (max(s for s in self.scores if s < score), min(s for s in self.scores if s >= score))


class MemoryPopulation:
    """:class:`Population` of trials held in memory (for simulations and tests): each
    trial's scores by step, whether it completed, and the rung scores recorded."""

    def __init__(self) -> None:
        self.curves: dict[int, dict[int, float]] = {}
        self.completed: set[int] = set()
        self.rungs: dict[tuple[int, int], list[float]] = {}

    def for_trial(self, tid: int) -> "_TrialView":
        """The population as trial ``tid`` records into it."""
        return _TrialView(self, tid)

    def report(self, tid: int, step: int, score: float) -> None:
        self.curves.setdefault(tid, {})[step] = score

    def complete(self, tid: int) -> None:
        self.completed.add(tid)


class _TrialView:
    def __init__(self, population: MemoryPopulation, tid: int) -> None:
        self._population = population
        self._tid = tid

    def completed_trials(self, at_least: int) -> int:
        return min(len(self._population.completed), at_least)

    def at_step(self, step: int) -> ScoreList:
        p = self._population
        return ScoreList([p.curves[t][step] for t in sorted(p.completed)
                          if step in p.curves.get(t, {}) and not math.isnan(p.curves[t][step])])

    def at_rung(self, bracket: int, rung: int) -> ScoreList:
        return ScoreList(self._population.rungs.get((bracket, rung), []))

    def record_step(self, step: int, score: float) -> None:
        if not math.isnan(score):
            self._population.report(self._tid, step, score)

    def record_rung(self, bracket: int, rung: int, score: float) -> None:
        self._population.rungs.setdefault((bracket, rung), []).append(score)
