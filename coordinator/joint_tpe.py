"""A joint, pending-aware TPE for hyperopt spaces: Optuna's multivariate TPE as a hyperopt algorithm.

Use it wherever hyperopt takes an ``algo``::

    from hyperopt import fmin, Trials
    from coordinator.joint_tpe import suggest

    best = fmin(objective, space, algo=suggest, max_evals=100, trials=Trials())

or ``hpo-coord start --algo joint-tpe``.  Options go through ``functools.partial``, as with
hyperopt's own ``tpe.suggest``: ``partial(suggest, n_startup_trials=20)``.

How it works (the contract):

- The model is Optuna's ``TPESampler(multivariate=True, group=True, constant_liar=True)``:
  one joint Parzen estimator per group of parameters that are active together, so
  conditional (nested ``hp.choice``) spaces are modelled jointly within each branch.  A
  space without conditional parameters is one group, so there ``group`` is left off
  (the same model; Optuna's group decomposition rescans every trial on each proposal).
- The space is walked define-by-run over hyperopt's pyll graph: a ``switch`` (``hp.choice``,
  ``hp.pchoice``) samples its index first and only the chosen branch is visited, so only the
  parameters the objective will see are sampled.  Each point is written back in hyperopt's
  own layout (``misc.vals`` / ``misc.idxs``: ``[value]`` and ``[tid]`` for an active
  parameter, ``[]`` for an inactive one), so ``space_eval``, monitoring, drop-in scripts
  and resume work as with hyperopt's algorithms.
- Pending-aware: every trial in state new or running is shown to the sampler as a running
  trial, which the constant liar treats as a bad result, so parallel workers are not sent
  to the same place.
- Incremental: the sampler's study is kept between calls (one per ``Trials`` object, for as
  long as that object lives); each finished trial is told once, and the sampler reads it
  once (``_CachedTPESampler``: Optuna's own re-reads the whole history on each proposal;
  this one proposes exactly the same points).  A new process (a resumed
  run) rebuilds the study from the trials it finds, including trials proposed by other
  algorithms on the same space; documents whose values do not fit the space are skipped
  with a warning.  A done trial with status ``ok`` and a finite loss is a complete
  observation; any other final trial is a failure, which TPE ignores (as hyperopt's does).
- No repeats (``avoid_duplicates``, on by default): a proposal equal to a point already
  evaluated, pending or proposed is drawn again, up to 10 times, the rejected draw shown to
  the constant liar as running meanwhile.  Only discrete spaces (choices, integers,
  q-rounded values) produce such repeats; on NAS-Bench-201's six choices about 17 of 100
  evaluations were repeats without this.
- Startup: until ``n_startup_trials`` trials are complete, points are drawn by hyperopt's
  own ``rand.suggest``, that is, exactly from the space's prior (``pchoice`` weights,
  q-rounding and unbounded normals included).

Mapping of hyperopt's distributions to the model (``to_model`` / ``from_model`` below):

======================  ================================================  ==================
hyperopt                model (Optuna distribution)                       exact?
======================  ================================================  ==================
uniform(a, b)           float in [a, b]                                   yes
loguniform(a, b)        float in [e^a, e^b], log scale                    yes
quniform(a, b, q)       integer k in [round(a/q), round(b/q)], value k*q  same values [1]_
uniformint(a, b)        as quniform with q=1                              same values [1]_
qloguniform(a, b, q)    integer k in [round(e^a/q), round(e^b/q)], log    same values [1]_ [2]_
randint(a, b)           integer in [a, b-1] (ordered)                     yes [3]_
choice(options)         categorical over the option indices               yes
pchoice(p, options)     categorical over the indices with p > 0           same values [4]_
normal(mu, s)           float u in [1e-12, 1-1e-12], value mu + s*Phi^-1(u)  yes [5]_
lognormal(mu, s)        as normal, value exp(mu + s*Phi^-1(u))            yes [5]_
qnormal, qlognormal     as normal / lognormal, value rounded to q         yes [5]_
======================  ================================================  ==================

.. [1] The same set of values; the startup draws give the endpoints hyperopt's half weight
   (they come from hyperopt), the model's prior component is uniform over the integers.
.. [2] Refused (``UnsupportedSpace``, naming the parameter) when 0 is a possible value
   (``e^a < q/2``): a log-scale integer cannot hold 0.  Use ``--algo tpe`` for such a space.
.. [3] Modelled as ordered integers; hyperopt's TPE models ``randint`` as unordered
   categories.  Use ``hp.choice(label, range(n))`` for unordered integers.
.. [4] The weights shape the startup draws; Optuna's categorical estimator has no prior
   weights, so after startup the model's prior component is uniform over the options.
.. [5] The model works on u = Phi((x - mu) / s), the normal's cumulative probability, so its
   uniform prior over u is exactly the normal.  Values beyond 7.03 standard deviations
   (probability 2e-12) are shown to the model at that bound.  For the q-variants the model
   is told u of the rounded value, on live and resumed trials alike.

Cost (docs/benchmarks.md, ``bench/algorithm_cost.py``): per suggestion at most hyperopt
TPE's at 1,000 and 10,000 trials, with or without conditional parameters; what grows with
the history is Optuna's Parzen estimators (numpy over every observation) and one pass over
the hyperopt documents.  The first call in a process (a resumed run) tells the sampler
every trial: 1-6 s at 10,000 on a shared 2-core machine.

Distributions whose bounds depend on other hyperparameters, and stochastic nodes other
than the ones above, are refused with :class:`UnsupportedSpace` naming the parameter.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from hyperopt import base, pyll, rand
from hyperopt.pyll import stochastic
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import TPESampler
from optuna.samplers._tpe.sampler import default_gamma
from optuna.search_space.group_decomposed import (
    _GroupDecomposedSearchSpace,
    _SearchSpaceGroup,
)
from optuna.storages import InMemoryStorage
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial
from scipy.special import ndtr, ndtri

log = logging.getLogger(__name__)

NAME = "joint-tpe"
"""The algorithm's name for ``hpo-coord start --algo``."""

DEFAULT_STARTUP_TRIALS = 10
DEFAULT_EI_CANDIDATES = 24
DUPLICATE_RETRIES = 10
_U_EPS = 1e-12


class UnsupportedSpace(ValueError):
    """The space holds a distribution the joint TPE cannot model faithfully."""


# -- the mapping of one hyperparameter ---------------------------------------------------

@dataclass(frozen=True)
class ParamMap:
    """One hyperparameter: its hyperopt distribution and the model's.

    Guarantees: ``from_model`` gives a value hyperopt's distribution can produce;
    ``to_model(from_model(x))`` is a value of ``model`` (the canonical one for ``x``'s
    hyperopt value); ``to_model`` raises ``ValueError`` for a value hyperopt's
    distribution cannot produce.
    """

    label: str
    kind: str
    args: Mapping[str, Any]
    model: BaseDistribution

    def from_model(self, x: Any) -> int | float:
        """The hyperopt value (as stored in ``misc.vals``) for the model's value ``x``."""
        kind, a = self.kind, self.args
        if kind in ("uniform", "loguniform"):
            return float(x)
        if kind in ("quniform", "qloguniform"):
            return float(x) * a["q"]
        if kind in ("randint", "choice"):
            return int(x)
        z = float(ndtri(min(max(float(x), _U_EPS), 1 - _U_EPS)))
        value = a["mu"] + a["sigma"] * z
        if kind in ("lognormal", "qlognormal"):
            value = math.exp(value)
        if kind in ("qnormal", "qlognormal"):
            value = float(np.round(value / a["q"]) * a["q"])
        return float(value)

    def to_model(self, value: Any) -> Any:
        """The model's (canonical) value for the hyperopt value ``value``.

        Raises:
            ValueError: ``value`` is not one hyperopt's distribution can produce.
        """
        kind, a, model = self.kind, self.args, self.model
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{self.label}: {value!r} is not a number")
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{self.label}: {value!r} is not finite")
        if kind in ("uniform", "loguniform"):
            assert isinstance(model, FloatDistribution)
            slack = 1e-9 * max(1.0, abs(model.high))
            if not model.low - slack <= v <= model.high + slack:
                raise ValueError(f"{self.label}: {v} is outside [{model.low}, {model.high}]")
            return min(max(v, model.low), model.high)
        if kind in ("quniform", "qloguniform", "randint", "choice"):
            k = v / a["q"] if kind in ("quniform", "qloguniform") else v
            whole = round(k)
            if abs(k - whole) > 1e-6:
                raise ValueError(f"{self.label}: {v} is not a multiple of {a.get('q', 1)}")
            if isinstance(model, CategoricalDistribution):
                if whole not in model.choices:
                    raise ValueError(f"{self.label}: option {whole} is not one of {list(model.choices)}")
                return int(whole)
            assert isinstance(model, IntDistribution)
            if not model.low <= whole <= model.high:
                raise ValueError(f"{self.label}: {v} is outside the values of {self.kind}{tuple(a.values())}")
            return int(whole)
        # the normal families: u = Phi(z)
        if kind in ("lognormal", "qlognormal"):
            if v < 0:
                raise ValueError(f"{self.label}: {v} is negative")
            with np.errstate(divide="ignore"):
                v = float(np.log(v))
        u = float(ndtr((v - a["mu"]) / a["sigma"]))
        return min(max(u, _U_EPS), 1 - _U_EPS)


def _bound_args(node: pyll.Apply, label: str) -> dict[str, Any]:
    for arg in [*node.pos_args, *(v for _, v in node.named_args)]:
        if any(n.name == "hyperopt_param" for n in pyll.dfs(arg)):
            raise UnsupportedSpace(
                f"hyperparameter {label!r}: the arguments of its {node.name} depend on other "
                "hyperparameters; the joint TPE needs constant bounds (use --algo tpe for this space)"
            )
    function = getattr(stochastic, node.name)
    pos = [pyll.rec_eval(a) for a in node.pos_args]
    named = {k: pyll.rec_eval(v) for k, v in node.named_args if k not in ("rng", "size")}
    bound = inspect.signature(function).bind_partial(*pos, **named)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k not in ("rng", "size")}


def _param_map(label: str, node: pyll.Apply, as_index: bool) -> ParamMap:
    kind = node.name
    known = ("uniform", "loguniform", "quniform", "qloguniform", "randint", "categorical",
             "normal", "qnormal", "lognormal", "qlognormal")
    if kind not in known:
        raise UnsupportedSpace(
            f"hyperparameter {label!r}: distribution {kind!r} is not one the joint TPE maps "
            f"({', '.join(known)}); use --algo tpe for this space"
        )
    a = _bound_args(node, label)
    model: BaseDistribution
    if kind == "uniform":
        model = FloatDistribution(float(a["low"]), float(a["high"]))
    elif kind == "loguniform":
        model = FloatDistribution(math.exp(a["low"]), math.exp(a["high"]), log=True)
    elif kind == "quniform":
        model = IntDistribution(int(np.round(a["low"] / a["q"])), int(np.round(a["high"] / a["q"])))
    elif kind == "qloguniform":
        low = int(np.round(math.exp(a["low"]) / a["q"]))
        if low < 1:
            raise UnsupportedSpace(
                f"hyperparameter {label!r}: qloguniform can yield 0 here (exp(low) < q/2), which the "
                "joint TPE's log-scale integer model cannot hold; raise low to at least log(q/2) "
                "or use --algo tpe for this space"
            )
        model = IntDistribution(low, int(np.round(math.exp(a["high"]) / a["q"])), log=True)
    elif kind == "randint":
        low, high = (0, a["low"]) if a["high"] is None else (a["low"], a["high"])
        low, high = int(low), int(high)
        if as_index:
            return ParamMap(label, "choice", {}, CategoricalDistribution(tuple(range(low, high))))
        model = IntDistribution(low, high - 1)
    elif kind == "categorical":
        p = np.asarray(a["p"], dtype=float).ravel()
        choices = tuple(int(i) for i in np.flatnonzero(p > 0))
        return ParamMap(label, "choice", {"p": tuple(p)}, CategoricalDistribution(choices))
    else:
        if not a["sigma"] > 0:
            raise UnsupportedSpace(f"hyperparameter {label!r}: {kind} needs sigma > 0, got {a['sigma']}")
        model = FloatDistribution(_U_EPS, 1 - _U_EPS)
    return ParamMap(label, kind, {k: v for k, v in a.items() if v is not None}, model)


@dataclass
class SpacePlan:
    """A hyperopt space compiled for define-by-run sampling.

    Guarantees: every ``hyperopt_param`` of the space has a :class:`ParamMap`; building a
    plan raises :class:`UnsupportedSpace` (naming the parameter) before anything is sampled.
    """

    expr: pyll.Apply
    params: dict[str, ParamMap]
    nodes: dict[str, pyll.Apply]
    conditional: bool
    """Whether some parameter is active only in some branches of a choice."""

    @classmethod
    def compile(cls, expr: pyll.Apply) -> SpacePlan:
        nodes: dict[str, pyll.Apply] = {}
        index_labels: set[str] = set()
        for node in pyll.dfs(expr):
            if node.name == "hyperopt_param":
                nodes[node.arg["label"].obj] = node
            elif node.name == "switch" and node.pos_args[0].name == "hyperopt_param":
                index_labels.add(node.pos_args[0].arg["label"].obj)
        params = {label: _param_map(label, node.arg["obj"], label in index_labels) for label, node in nodes.items()}
        return cls(expr, params, nodes, _always_active(expr) != set(nodes))

    def signature(self) -> tuple:
        """What identifies the space for the sampler (labels and their model distributions)."""
        return tuple(sorted((label, m.kind, repr(m.model)) for label, m in self.params.items()))

    def sample(self, draw: Callable[[ParamMap], Any]) -> dict[str, int | float]:
        """Walk the graph, drawing (``draw(param) -> model value``) only active parameters;
        returns ``{label: hyperopt value}`` for those."""
        values: dict[str, int | float] = {}
        seen: set[int] = set()

        def visit(node: pyll.Apply) -> None:
            if id(node) in seen:
                return
            seen.add(id(node))
            if node.name == "hyperopt_param":
                label = node.arg["label"].obj
                values[label] = self.params[label].from_model(draw(self.params[label]))
                return
            if node.name == "switch":
                index_node, options = node.pos_args[0], node.pos_args[1:]
                visit(index_node)
                if index_node.name == "hyperopt_param":
                    index = values[index_node.arg["label"].obj]
                else:
                    memo = {self.nodes[k]: v for k, v in values.items()}
                    index = pyll.rec_eval(index_node, memo=memo)
                visit(options[int(index)])
                return
            for child in node.inputs():
                visit(child)

        visit(self.expr)
        return values


def _always_active(expr: pyll.Apply) -> set[str]:
    """Labels reached without choosing a branch of any ``switch``."""
    labels: set[str] = set()
    seen: set[int] = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.name == "hyperopt_param":
            labels.add(node.arg["label"].obj)
        elif node.name == "switch":
            stack.append(node.pos_args[0])
        else:
            stack.extend(node.inputs())
    return labels


# -- Optuna's TPE with its history read once ---------------------------------------------

class _History:
    """The trials of one study, each complete one read once, as arrays.

    Guarantees: after :meth:`refresh` with the study's trials, ``trials`` holds every
    complete trial in the order first seen (those first seen by one refresh in trial
    order), :meth:`arrays` / :meth:`column` hold their numbers, values and each
    parameter's internal value (NaN where a trial lacks the parameter), row i for
    ``trials[i]``, and :meth:`unfinished` the trials not yet finished.  A refresh reads
    only the trials new since the last one and those then unfinished.  Every trial must
    give a parameter the same distribution (``ValueError`` otherwise, with nothing
    recorded): the internal values are computed with it once.
    """

    def __init__(self) -> None:
        self.trials: list[FrozenTrial] = []
        self._scanned = 0
        self._unfinished: list[FrozenTrial] = []
        self._distributions: dict[str, BaseDistribution] = {}
        # rows [0, len(trials)) hold the trials; the arrays double when full
        self._numbers = np.zeros(64, dtype=np.int64)
        self._values = np.zeros(64)
        self._columns: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.trials)

    def unfinished(self) -> list[FrozenTrial]:
        """The trials running or waiting at the last refresh, in trial order."""
        return self._unfinished

    def refresh(self, trials: Sequence[FrozenTrial]) -> None:
        """Catch up with ``trials``, all of the study's trials in trial order (``trials[i]``
        has number i, as ``Study._get_trials`` gives them).

        Raises:
            ValueError: a trial is pruned, or gives a parameter another distribution.
        """
        fresh = [trials[t.number] for t in self._unfinished]
        fresh.extend(trials[self._scanned:])
        self._scanned = len(trials)
        self._unfinished = []
        for trial in fresh:
            if trial.state == TrialState.COMPLETE:
                self._record(trial)
            elif trial.state == TrialState.PRUNED:
                raise ValueError(f"trial {trial.number} is pruned; this sampler takes complete, running "
                                 "and failed trials only")
            elif not trial.state.is_finished():
                self._unfinished.append(trial)

    def _record(self, trial: FrozenTrial) -> None:
        for name, distribution in trial.distributions.items():
            known = self._distributions.get(name, distribution)
            if known != distribution:
                raise ValueError(f"trial {trial.number} gives {name!r} the distribution {distribution}, "
                                 f"earlier trials {known}")
        row = len(self.trials)
        if row == len(self._numbers):
            self._numbers = np.concatenate([self._numbers, np.zeros(row, dtype=np.int64)])
            self._values = np.concatenate([self._values, np.zeros(row)])
            for name, column in self._columns.items():
                self._columns[name] = np.concatenate([column, np.full(row, math.nan)])
        for name, distribution in trial.distributions.items():
            self._distributions.setdefault(name, distribution)
            if name not in self._columns:
                self._columns[name] = np.full(len(self._numbers), math.nan)
            self._columns[name][row] = distribution.to_internal_repr(trial.params[name])
        self._numbers[row] = trial.number
        self._values[row] = trial.value
        self.trials.append(trial)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The trials' numbers and values."""
        return self._numbers[:len(self.trials)], self._values[:len(self.trials)]

    def column(self, name: str, distribution: BaseDistribution) -> np.ndarray:
        """Internal values of ``name`` (NaN where absent; all NaN for a parameter never seen).

        Raises:
            ValueError: the trials gave ``name`` another distribution.
        """
        known = self._distributions.get(name, distribution)
        if known != distribution:
            raise ValueError(f"{name!r} is sampled from {distribution}, the trials used {known}")
        if name not in self._columns:
            return np.full(len(self.trials), math.nan)
        return self._columns[name][:len(self.trials)]


class _IncrementalGroups(_GroupDecomposedSearchSpace):
    """Optuna's group decomposition, told each complete trial once.

    Optuna's ``calculate`` adds every complete trial's distributions on every call; adding
    a trial already added is a no-op (the groups only ever split, so its parameters stay a
    union of groups, in the same order), so adding only the trials completed since the
    last call, in trial order (as :class:`_History` records them), gives the same groups in
    the same order.
    """

    def __init__(self, history: _History) -> None:
        super().__init__(include_pruned=True)
        self._history = history
        self._added = 0

    def calculate(self, study: Study, use_cache: bool = False) -> _SearchSpaceGroup:
        self._history.refresh(study._get_trials(deepcopy=False))
        for trial in self._history.trials[self._added:]:
            self._search_space.add_distributions(trial.distributions)
        self._added = len(self._history)
        return copy.deepcopy(self._search_space)


class _CachedTPESampler(TPESampler):
    """``TPESampler(multivariate=True, group=group, constant_liar=True)`` proposing exactly
    what it proposes, without re-reading every trial on each proposal.

    Optuna's sampler, per proposal, re-adds every complete trial to its group decomposition
    and, per group, splits all trials by loss and converts each one's parameters: Python
    work over the whole history, several times per proposal.  Here each complete trial is
    read once into a :class:`_History`; a proposal reads the running trials (the pending
    few) through Optuna's own code and selects the rest from arrays, then builds Optuna's
    own Parzen estimators from the same observations in the same order and draws with the
    same random state.  Contract: one single-objective study to minimize, whose trials are
    complete (finite values), running or failed, without constraints, asked from one thread
    at a time (the studies :class:`_State` builds; Optuna's sampler reads a per-ask snapshot
    of the trials where this one reads them afresh, the same unless another thread changes
    them mid-ask); ``tests/coordinator/test_joint_tpe_sampler.py`` checks the proposals
    against ``TPESampler`` one by one.
    """

    def __init__(self, *, group: bool, seed: int, n_startup_trials: int, n_ei_candidates: int) -> None:
        super().__init__(multivariate=True, group=group, constant_liar=True, seed=seed,
                         n_startup_trials=n_startup_trials, n_ei_candidates=n_ei_candidates)
        self._history = _History()
        self._study: tuple[int, int] | None = None
        if group:
            self._group_decomposed_search_space = _IncrementalGroups(self._history)

    def _refresh(self, study: Study) -> _History:
        key = (id(study._storage), study._study_id)
        if self._study is not None and self._study != key or study._is_multi_objective() \
                or study.direction != StudyDirection.MINIMIZE:
            raise ValueError("this sampler serves one single-objective study to minimize")
        self._study = key
        self._history.refresh(study._get_trials(deepcopy=False))
        return self._history

    def _sample_relative(self, study: Study, trial: FrozenTrial,
                         search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if search_space == {}:
            return {}
        if len(self._refresh(study)) < self._n_startup_trials:
            return {}
        return self._sample(study, trial, search_space)

    def _sample(self, study: Study, trial: FrozenTrial,
                search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        history = self._refresh(study)
        running = [t for t in history.unfinished() if t.state == TrialState.RUNNING and t.number != trial.number]
        if self._gamma is None:
            self._gamma = default_gamma
        # Optuna's split: the gamma(n) best complete trials (ties in trial order) below,
        # the other complete and all running trials above; each side in trial order
        numbers, values = history.arrays()
        below = np.zeros(len(numbers), dtype=bool)
        below[np.lexsort((numbers, values))[:min(self._gamma(len(numbers)), len(numbers))]] = True
        columns = [history.column(name, distribution) for name, distribution in search_space.items()]
        has_all = np.ones(len(numbers), dtype=bool)
        for column in columns:
            has_all &= ~np.isnan(column)
        lied: list[tuple[int, list[float]]] = []
        for other in running:
            params = self._get_params(other, study)
            if search_space.keys() <= params.keys():
                lied.append((other.number, [d.to_internal_repr(params[n]) for n, d in search_space.items()]))
        mpe_below = self._parzen_estimator_cls(
            _observations(search_space, numbers, columns, has_all & below, []), search_space,
            self._parzen_estimator_parameters)
        mpe_above = self._parzen_estimator_cls(
            _observations(search_space, numbers, columns, has_all & ~below, lied), search_space,
            self._parzen_estimator_parameters)
        samples_below = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acq_func_vals = self._compute_acquisition_func(samples_below, mpe_below, mpe_above)
        ret = TPESampler._compare(samples_below, acq_func_vals)
        for param_name, dist in search_space.items():
            ret[param_name] = dist.to_external_repr(ret[param_name])
        return ret


def _observations(search_space: Mapping[str, BaseDistribution], numbers: np.ndarray, columns: Sequence[np.ndarray],
                  rows: np.ndarray, extra: Sequence[tuple[int, list[float]]]) -> dict[str, np.ndarray]:
    """The observations Optuna's ``_get_internal_repr`` gives for the trials in ``rows`` of
    the history plus ``extra`` (number, internal values), in trial order (as floats: its
    estimator casts categorical indices to int itself)."""
    index = np.flatnonzero(rows)
    order = np.argsort(np.concatenate([numbers[index], np.array([n for n, _ in extra], dtype=np.int64)]))
    return {name: np.concatenate([columns[i][index], np.array([v[i] for _, v in extra], dtype=float)])[order]
            for i, name in enumerate(search_space)}


# -- the sampler's state for one Trials object ------------------------------------------

@dataclass
class _State:
    plan: SpacePlan
    options: tuple
    seed: int
    n_startup_trials: int
    n_ei_candidates: int
    avoid_duplicates: bool
    study: optuna.Study = field(init=False)
    storage: InMemoryStorage = field(init=False)
    study_id: int = field(init=False)
    tracked: dict[int, int] = field(default_factory=dict)
    """hyperopt tid -> the sampler's trial id (-1: left out of the model)."""
    finished: set[int] = field(default_factory=set)
    """The tracked tids told as finished (or left out)."""
    complete: int = 0
    warned: set[int] = field(default_factory=set)
    points: set[tuple] = field(default_factory=set)

    def __post_init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # group decomposition only where parameters are conditional: without them it
            # gives the same single group
            sampler = _CachedTPESampler(
                group=self.plan.conditional, seed=self.seed,
                n_startup_trials=self.n_startup_trials, n_ei_candidates=self.n_ei_candidates,
            )
        self.storage = InMemoryStorage()
        quiet = logging.getLogger("optuna.storages._in_memory")  # its "new study created" line
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            self.study_id = self.storage.create_new_study([StudyDirection.MINIMIZE], "hyperopt")
        finally:
            quiet.setLevel(level)
        self.study = optuna.Study(study_name=self.storage.get_study_name_from_id(self.study_id),
                                  storage=self.storage, sampler=sampler)

    # -- telling what the trials hold

    def sync(self, docs: Sequence[Mapping[str, Any]]) -> bool:
        """Show the sampler every trial in ``docs``: pending as running, finished once.

        A trial that was pending and is gone (an error, a cancelled or deleted job) becomes
        a failure.  Returns False, telling nothing more, when a finished trial the sampler
        was told about is gone (trials were deleted): the state must then be rebuilt.
        """
        tids = [doc.get("tid") for doc in docs]
        seen = {tid for tid in tids if isinstance(tid, int)}
        if not self.finished <= seen:
            return False
        for doc, tid in zip(docs, tids):
            if not isinstance(tid, int) or tid in self.finished:
                continue
            trial_id = self.tracked.get(tid)
            state = doc.get("state")
            if trial_id is None and state in (base.JOB_STATE_NEW, base.JOB_STATE_RUNNING, base.JOB_STATE_DONE):
                self._remember(doc)
            if state in (base.JOB_STATE_NEW, base.JOB_STATE_RUNNING):
                if trial_id is None:
                    self._add(tid, doc, TrialState.RUNNING, None)
            elif state == base.JOB_STATE_DONE or state in (base.JOB_STATE_ERROR, base.JOB_STATE_CANCEL):
                loss = _ok_loss(doc) if state == base.JOB_STATE_DONE else None
                final = TrialState.COMPLETE if loss is not None else TrialState.FAIL
                if trial_id is None:
                    if final == TrialState.COMPLETE:
                        self._add(tid, doc, final, loss)
                    else:
                        self._leave_out(tid)
                else:
                    self._finish(tid, final, loss)
        for tid in self.tracked.keys() - self.finished - seen:
            self.storage.set_trial_state_values(self.tracked.pop(tid), TrialState.FAIL)
        return True

    def _finish(self, tid: int, state: TrialState, loss: float | None) -> None:
        self.storage.set_trial_state_values(self.tracked[tid], state, None if loss is None else [loss])
        self.finished.add(tid)
        self.complete += state == TrialState.COMPLETE

    def _leave_out(self, tid: int) -> None:
        self.tracked[tid] = -1
        self.finished.add(tid)

    def _add(self, tid: int, doc: Mapping[str, Any], state: TrialState, loss: float | None) -> None:
        try:
            params = self._params_of(doc)
        except ValueError as exc:
            if tid not in self.warned:
                self.warned.add(tid)
                log.warning("joint TPE: trial %s is left out of the model: %s", tid, exc)
            self._leave_out(tid)
            return
        frozen = create_trial(
            state=state, value=loss, params=params,
            distributions={label: self.plan.params[label].model for label in params},
        )
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=frozen)
        self.tracked[tid] = trial_id
        if state.is_finished():
            self.finished.add(tid)
        self.complete += state == TrialState.COMPLETE

    def _remember(self, doc: Mapping[str, Any]) -> None:
        misc = doc.get("misc")
        vals = misc.get("vals") if isinstance(misc, Mapping) else None
        if isinstance(vals, Mapping):
            try:
                self.points.add(_point_key({k: v[0] for k, v in vals.items() if v}))
            except (TypeError, ValueError, KeyError, IndexError):
                pass  # malformed: _add reports it

    def _params_of(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        misc = doc.get("misc")
        vals = misc.get("vals") if isinstance(misc, Mapping) else None
        if not isinstance(vals, Mapping):
            raise ValueError("it has no misc.vals")
        params: dict[str, Any] = {}
        for label, value in vals.items():
            if label not in self.plan.params:
                raise ValueError(f"{label!r} is not a hyperparameter of this space")
            if isinstance(value, (list, tuple)) and len(value) == 0:
                continue
            if not isinstance(value, (list, tuple)) or len(value) != 1:
                raise ValueError(f"misc.vals[{label!r}] is {value!r}, not a list of one value")
            params[label] = self.plan.params[label].to_model(value[0])
        if not params:
            raise ValueError("no hyperparameter is set")
        return params

    # -- proposing

    def propose(self, tid: int) -> dict[str, int | float]:
        """A new point (hyperopt values of the active parameters), kept as a running trial.

        With ``avoid_duplicates``, a point equal to one already evaluated, pending or
        proposed is drawn again (up to DUPLICATE_RETRIES times, after which it is kept):
        the rejected draw stays a running trial meanwhile, so the constant liar pushes the
        next draw away from it, and is then marked failed (which TPE ignores).
        """
        rejected: list[int] = []
        for attempt in range(DUPLICATE_RETRIES + 1):
            trial = self.study.ask()
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
            values = self.plan.sample(lambda param: _draw(trial, param))  # noqa: B023 - used at once
            for label, value in values.items():
                param = self.plan.params[label]
                canonical = param.to_model(value)
                if canonical != trial.params[label]:
                    self.storage.set_trial_param(trial_id, label, param.model.to_internal_repr(canonical),
                                                 param.model)
            key = _point_key(values)
            if not self.avoid_duplicates or key not in self.points or attempt == DUPLICATE_RETRIES:
                break
            rejected.append(trial_id)
        for rejected_id in rejected:
            self.storage.set_trial_state_values(rejected_id, TrialState.FAIL)
        self.points.add(key)
        self.tracked[tid] = trial_id
        return values


def _point_key(values: Mapping[str, Any]) -> tuple:
    return tuple(sorted((str(label), float(value)) for label, value in values.items()))


def _draw(trial: optuna.Trial, param: ParamMap) -> Any:
    model = param.model
    if isinstance(model, CategoricalDistribution):
        return trial.suggest_categorical(param.label, model.choices)
    if isinstance(model, IntDistribution):
        return trial.suggest_int(param.label, model.low, model.high, log=model.log)
    assert isinstance(model, FloatDistribution)
    return trial.suggest_float(param.label, model.low, model.high, log=model.log)


def _ok_loss(doc: Mapping[str, Any]) -> float | None:
    result = doc.get("result")
    if not isinstance(result, Mapping) or result.get("status") != base.STATUS_OK:
        return None
    loss = result.get("loss")
    if isinstance(loss, bool) or not isinstance(loss, (int, float, np.integer, np.floating)):
        return None
    loss = float(loss)
    return loss if math.isfinite(loss) else None


_states: weakref.WeakKeyDictionary[Any, _State] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


def _state_for(domain: base.Domain, trials: base.Trials, seed: int, n_startup_trials: int,
               n_ei_candidates: int, avoid_duplicates: bool) -> _State:
    options = (n_startup_trials, n_ei_candidates, avoid_duplicates)
    state = _states.get(trials)
    if state is not None and state.plan.expr is domain.expr and state.options == options:
        return state
    plan = SpacePlan.compile(domain.expr)
    if state is not None and state.plan.signature() == plan.signature() and state.options == options:
        state.plan = plan
        return state
    state = _State(plan, options, seed, n_startup_trials, n_ei_candidates, avoid_duplicates)
    _states[trials] = state
    return state


def suggest(
    new_ids: Sequence[int],
    domain: base.Domain,
    trials: base.Trials,
    seed: int,
    *,
    n_startup_trials: int = DEFAULT_STARTUP_TRIALS,
    n_ei_candidates: int = DEFAULT_EI_CANDIDATES,
    avoid_duplicates: bool = True,
) -> list[dict[str, Any]]:
    """hyperopt's ``algo`` contract: new trial documents for ``new_ids``.

    Args:
        new_ids: trial ids to fill.
        domain: fmin's domain (its ``expr`` is the space).
        trials: the trials so far (pending ones included); the sampler's state lives with
            this object.
        seed: fmin's per-call seed; seeds the sampler when its state is created and
            drives the startup draws.
        n_startup_trials: complete trials before the model is used (points come from the
            space's prior until then).
        n_ei_candidates: candidates the model scores per proposal.
        avoid_duplicates: draw again when the model proposes a point equal to one already
            evaluated, pending or proposed (see :meth:`_State.propose`); only discrete
            spaces (choices, integers, q-rounded values) produce such points.

    Raises:
        UnsupportedSpace: the space holds a distribution the model cannot map (the message
            names the parameter).
    """
    with _states_lock:
        state = _state_for(domain, trials, seed, n_startup_trials, n_ei_candidates, avoid_duplicates)
        if not state.sync(trials.trials):
            log.info("joint TPE: trials were deleted; rebuilding the sampler's state from those left")
            state = _states[trials] = _State(state.plan, state.options, seed, n_startup_trials, n_ei_candidates,
                                             avoid_duplicates)
            state.sync(trials.trials)
        if state.complete < n_startup_trials:
            return rand.suggest(new_ids, domain, trials, seed)
        docs = []
        for tid in new_ids:
            values = state.propose(tid)
            labels = state.plan.params
            misc = {
                "tid": tid, "cmd": domain.cmd, "workdir": domain.workdir,
                "idxs": {label: [tid] if label in values else [] for label in labels},
                "vals": {label: [values[label]] if label in values else [] for label in labels},
            }
            docs.extend(trials.new_trial_docs([tid], [None], [domain.new_result()], [misc]))
        return docs


def check_space(space: Any) -> SpacePlan:
    """Compile ``space`` (a hyperopt space) for the joint TPE, refusing what it cannot map.

    Raises:
        UnsupportedSpace: naming the first parameter that cannot be mapped.
    """
    return SpacePlan.compile(pyll.as_apply(space))
