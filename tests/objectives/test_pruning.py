"""The pruning rules: hand-computed cases, and the same decisions as Optuna's own pruners
on the same learning curves, reported by trials that run concurrently."""

from __future__ import annotations

import math

import pytest

from objectives.pruning import (
    BadPrunerSettings,
    MemoryPopulation,
    Pruner,
    PrunerSettings,
    ScoreList,
    above_median,
    promotable,
)
from tests.support.pruning import decisions_both_ways, learning_curves


def settings(kind: str, **overrides: object) -> PrunerSettings:
    values: dict[str, object] = {"kind": kind, "metric": "loss", "direction": "minimize", "max_resource": 30}
    values.update(overrides)
    return PrunerSettings(**values)  # type: ignore[arg-type]


# -- hand-computed cases ----------------------------------------------------------------

def test_median_of_an_odd_and_an_even_number_of_scores() -> None:
    assert above_median(0.6, ScoreList([0.1, 0.5, 0.9]))  # median 0.5
    assert not above_median(0.5, ScoreList([0.1, 0.5, 0.9]))  # equal is not above
    assert not above_median(0.4, ScoreList([0.1, 0.5, 0.9]))
    # even: the median is the mean of the middle two, 0.4 and 0.6 -> 0.5
    assert above_median(0.55, ScoreList([0.1, 0.4, 0.6, 0.9]))
    assert not above_median(0.45, ScoreList([0.1, 0.4, 0.6, 0.9]))
    assert not above_median(5.0, ScoreList([]))


def test_promotion_keeps_the_best_third() -> None:
    # six scores at a rung, eta 3: the best two continue
    rung = ScoreList([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert promotable(0.1, rung, 3) and promotable(0.2, rung, 3)
    assert not promotable(0.3, rung, 3)
    # fewer scores than eta: only the best continues
    assert promotable(0.2, ScoreList([0.2, 0.5]), 3)
    assert not promotable(0.5, ScoreList([0.2, 0.5]), 3)


def test_asha_rungs_of_one_trial() -> None:
    population = MemoryPopulation()
    population.rungs[(0, 0)] = [0.1, 0.2, 0.3, 0.4, 0.5]
    pruner = Pruner(settings("asha", min_resource=1, reduction_factor=3), population.for_trial(9), "run", 9)
    # rung 0 at step 1: 0.15 ranks 2nd of 6, the best two continue
    assert not pruner.should_prune(1, 0.15)
    assert not pruner.should_prune(2, 0.15)  # no rung at step 2
    # rung 1 at step 3: alone there, so the best
    assert not pruner.should_prune(3, 0.15)
    population.rungs[(0, 2)] = [0.01]
    assert pruner.should_prune(9, 0.15)  # rung 2: second of two, not the best


def test_median_waits_for_startup_trials_and_warmup() -> None:
    population = MemoryPopulation()
    for tid, value in enumerate([0.1, 0.2, 0.3]):
        population.report(tid, 1, value)
        population.report(tid, 2, value)
        population.complete(tid)
    cfg = settings("median", startup_trials=4)
    assert not Pruner(cfg, population.for_trial(5), "run", 5).should_prune(1, 0.9)
    cfg = settings("median", startup_trials=3, warmup_steps=2)
    pruner = Pruner(cfg, population.for_trial(5), "run", 5)
    assert not pruner.should_prune(1, 0.9)
    assert pruner.should_prune(2, 0.9)


def test_maximized_metric() -> None:
    population = MemoryPopulation()
    for tid, accuracy in enumerate([0.5, 0.6, 0.7]):
        cfg = settings("median", direction="maximize", startup_trials=1)
        population.report(tid, 1, cfg.score(accuracy))
        population.complete(tid)
    cfg = settings("median", direction="maximize", startup_trials=1)
    assert Pruner(cfg, population.for_trial(3), "run", 3).should_prune(1, 0.55)
    assert not Pruner(cfg, population.for_trial(4), "run", 4).should_prune(1, 0.65)


def test_no_decision_at_the_budget() -> None:
    population = MemoryPopulation()
    population.rungs[(0, 0)] = [0.0, 0.0, 0.0]
    pruner = Pruner(settings("asha", min_resource=5, max_resource=5), population.for_trial(1), "run", 1)
    assert not pruner.should_prune(5, 1.0)


def test_nan_is_pruned() -> None:
    pruner = Pruner(settings("asha"), MemoryPopulation().for_trial(0), "run", 0)
    assert pruner.should_prune(1, math.nan)
    # the median judges the best value so far, NaN left out: NaN only prunes when all are
    population = MemoryPopulation()
    population.report(0, 1, 0.5)
    population.report(0, 2, 0.5)
    population.complete(0)
    median = Pruner(settings("median", startup_trials=1), population.for_trial(1), "run", 1)
    assert not median.should_prune(1, 0.1) and not median.should_prune(2, math.nan)
    assert Pruner(settings("median", startup_trials=1), population.for_trial(2), "run", 2).should_prune(1, math.nan)


@pytest.mark.parametrize("bad, message", [
    ({"kind": "random"}, "kind 'random'"),
    ({"reduction_factor": 1}, "reduction_factor is 1"),
    ({"min_resource": 40}, "min_resource (40) is above max_resource (30)"),
    ({"direction": "up"}, "direction 'up'"),
    ({"warmup_steps": True}, "warmup_steps is True"),
])
def test_bad_settings_say_what_is_wrong(bad: dict[str, object], message: str) -> None:
    with pytest.raises(BadPrunerSettings, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings(**{"kind": "asha", **bad})  # type: ignore[arg-type]


def test_settings_round_trip_through_a_document() -> None:
    cfg = settings("hyperband", min_resource=2, reduction_factor=2)
    document = cfg.to_document()
    document["max_resource"] = 30.0  # mongosh writes doubles
    assert PrunerSettings.from_document(document) == cfg
    with pytest.raises(BadPrunerSettings, match="unknown field"):
        PrunerSettings.from_document({**document, "extra": 1})
    with pytest.raises(BadPrunerSettings, match="not a document"):
        PrunerSettings.from_document("asha")


# -- the same decisions as Optuna ----------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cfg", [
    settings("median", startup_trials=5, warmup_steps=2),
    settings("median", startup_trials=0, direction="maximize"),
    settings("asha", min_resource=1, reduction_factor=3),
    settings("asha", min_resource=2, reduction_factor=2, direction="maximize"),
    settings("hyperband", min_resource=1, reduction_factor=3, max_resource=27),
    settings("hyperband", min_resource=1, reduction_factor=2, max_resource=16),
], ids=lambda cfg: f"{cfg.kind}-{cfg.direction}-eta{cfg.reduction_factor}")
def test_same_decisions_as_optuna(cfg: PrunerSettings, seed: int) -> None:
    # curves stop short of max_resource: at the budget itself this project does not prune
    curves = learning_curves(seed, n=40, length=min(cfg.max_resource - 1, 15))
    if cfg.direction == "maximize":
        curves = [[1 - v for v in curve] for curve in curves]
    theirs, ours = decisions_both_ways(cfg, curves, workers=3, seed=seed, trials=MemoryPopulation())
    assert ours == theirs
    assert any(pruned for _, _, pruned in ours)  # the comparison did test some pruning
