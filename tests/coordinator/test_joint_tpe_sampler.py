"""coordinator.joint_tpe._CachedTPESampler: Optuna's TPE with each trial read once.

It must propose exactly what ``TPESampler(multivariate=True, group=..., constant_liar=True)``
proposes: same seed, same asks and tells, same points, one by one.  And its history must
read each complete trial once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, Trial, TrialState, create_trial

from coordinator.joint_tpe import _CachedTPESampler, _History

STARTUP = 5


def _conditional(trial: Trial) -> dict[str, Any]:
    """A define-by-run space with nested branches and, from trial 40, a new parameter
    (which Optuna samples independently until it has complete trials with it)."""
    params: dict[str, Any] = {"x": trial.suggest_float("x", -5, 5)}
    model = trial.suggest_categorical("model", [0, 1, 2])
    if model == 0:
        params["lr"] = trial.suggest_float("lr", 1e-4, 1.0, log=True)
    elif model == 1:
        params["n"] = trial.suggest_int("n", 1, 64)
        params["w"] = trial.suggest_float("w", 0, 1)
        if trial.suggest_categorical("sub", [0, 1]) == 1:
            params["k"] = trial.suggest_int("k", 2, 200, log=True)
    if trial.number >= 40:
        params["late"] = trial.suggest_float("late", 0, 1)
    return params


def _flat(trial: Trial) -> dict[str, Any]:
    return {"x": trial.suggest_float("x", -5, 5), "lr": trial.suggest_float("lr", 1e-4, 1.0, log=True),
            "n": trial.suggest_int("n", 1, 64), "c": trial.suggest_categorical("c", [0, 1, 2, 3])}


def _loss(params: dict[str, Any]) -> float:
    value = (params["x"] - 1) ** 2 + sum(float(v) % 1.3 for k, v in params.items() if k != "x")
    return round(value, 1)  # rounded: ties in loss, which Optuna breaks by trial order


def _run(sampler: BaseSampler, space: Callable[[Trial], dict[str, Any]], seed: int, n: int = 80) -> list[dict]:
    """Asynchronous ask/tell: up to 3 trials pending, finished in a random order, some
    failed, and a few complete trials added from outside (as a resumed run does)."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(sampler=sampler)
    pending: list[tuple[Trial, dict[str, Any]]] = []
    proposed = []
    for i in range(n):
        if i % 17 == 16:
            last = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))[-1]
            study.add_trial(create_trial(value=0.5, params=last.params, distributions=last.distributions))
        trial = study.ask()
        params = space(trial)
        proposed.append(params)
        pending.append((trial, params))
        while len(pending) > 3:
            done, done_params = pending.pop(int(rng.integers(len(pending))))
            if rng.random() < 0.1:
                study.tell(done, state=TrialState.FAIL)
            else:
                study.tell(done, _loss(done_params))
    return proposed


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
    optuna.logging.set_verbosity(level)


@pytest.mark.parametrize(("space", "group"), [(_conditional, True), (_flat, False), (_flat, True)])
@pytest.mark.parametrize("seed", [0, 1])
def test_proposals_are_optunas_one_by_one(space: Callable[[Trial], dict[str, Any]], group: bool,
                                          seed: int) -> None:
    ours = _run(_CachedTPESampler(group=group, seed=seed, n_startup_trials=STARTUP, n_ei_candidates=24),
                space, seed)
    optunas = _run(TPESampler(multivariate=True, group=group, constant_liar=True, seed=seed,
                              n_startup_trials=STARTUP, n_ei_candidates=24), space, seed)
    assert len({tuple(sorted(p.items())) for p in ours}) > 60  # the model did propose (not one point)
    assert ours == optunas


class _Counting(Sequence[FrozenTrial]):
    """A study's trial list that counts the trials read from it."""

    def __init__(self, trials: list[FrozenTrial]) -> None:
        self.trials = trials
        self.reads = 0

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, index: Any) -> Any:
        got = self.trials[index]
        self.reads += len(got) if isinstance(got, list) else 1
        return got


def _trial(number: int, state: TrialState, x: float | None = None) -> FrozenTrial:
    trial = create_trial(state=state, value=x if state == TrialState.COMPLETE else None,
                         params={} if x is None else {"x": x},
                         distributions={} if x is None else {"x": FloatDistribution(0, 10)})
    trial.number = number
    return trial


def test_history_reads_each_trial_once_and_then_only_new_and_unfinished_ones() -> None:
    trials = [_trial(0, TrialState.COMPLETE, 1.0), _trial(1, TrialState.RUNNING, 2.0),
              _trial(2, TrialState.FAIL), _trial(3, TrialState.COMPLETE, 3.0), _trial(4, TrialState.WAITING)]
    history = _History()
    first = _Counting(trials)
    history.refresh(first)
    assert first.reads == 5 and len(history) == 2
    assert [t.number for t in history.unfinished()] == [1, 4]

    trials[1] = _trial(1, TrialState.COMPLETE, 2.0)  # finishes
    trials.append(_trial(5, TrialState.COMPLETE, 0.5))
    second = _Counting(trials)
    history.refresh(second)
    assert second.reads == 3  # trials 1 and 4 (unfinished before) and 5 (new)
    numbers, values = history.arrays()
    assert numbers.tolist() == [0, 3, 1, 5] and values.tolist() == [1.0, 3.0, 2.0, 0.5]
    assert history.column("x", FloatDistribution(0, 10)).tolist() == [1.0, 3.0, 2.0, 0.5]
    assert [t.number for t in history.unfinished()] == [4]


def test_history_refuses_pruned_trials_and_changed_distributions() -> None:
    with pytest.raises(ValueError, match="trial 0 is pruned"):
        _History().refresh([_trial(0, TrialState.PRUNED)])
    other = create_trial(value=1.0, params={"x": 1.0}, distributions={"x": FloatDistribution(0, 2)})
    other.number = 1
    with pytest.raises(ValueError, match="'x' the distribution"):
        _History().refresh([_trial(0, TrialState.COMPLETE, 1.0), other])
    history = _History()
    history.refresh([_trial(0, TrialState.COMPLETE, 1.0)])
    with pytest.raises(ValueError, match="'x' is sampled from"):
        history.column("x", FloatDistribution(0, 2))
    assert np.isnan(history.column("y", FloatDistribution(0, 2))).all()  # never seen: absent everywhere


def test_the_sampler_serves_one_study_to_minimize() -> None:
    sampler = _CachedTPESampler(group=False, seed=0, n_startup_trials=1, n_ei_candidates=4)
    first = optuna.create_study(sampler=sampler)
    first.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    second = optuna.create_study(sampler=sampler)
    second.add_trial(create_trial(value=1.0, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}))
    with pytest.raises(ValueError, match="one single-objective study to minimize"):
        second.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    maximize = optuna.create_study(
        direction="maximize",
        sampler=_CachedTPESampler(group=False, seed=0, n_startup_trials=1, n_ei_candidates=4))
    maximize.add_trial(create_trial(value=1.0, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}))
    with pytest.raises(ValueError, match="one single-objective study to minimize"):
        maximize.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
