"""``bench/pruning.py``'s replay of ASHA on the curves of runs without pruning."""

from __future__ import annotations

import itertools

import pytest

from bench.pruning import Curve, expected_best_of, replay_asha


def _curve(tid: int, losses: list[float], accuracy: float) -> Curve:
    return Curve(tid, {step: {"loss": loss} for step, loss in enumerate(losses, start=1)}, losses[-1], accuracy)


@pytest.mark.parametrize("values", [[0.9], [0.5, 0.7, 0.9], [0.1, 0.4, 0.4, 0.8, 0.95]])
def test_expected_best_is_the_mean_maximum_over_every_draw(values: list[float]) -> None:
    for k in range(1, len(values) + 1):
        draws = list(itertools.combinations(values, k))
        assert expected_best_of(values, k) == pytest.approx(sum(max(d) for d in draws) / len(draws))


def test_one_worker_replays_asha_trial_by_trial() -> None:
    # budget 9, rungs at 1 and 3 (reduction factor 3); one worker, so each trial runs
    # whole before the next starts and sees every earlier trial's rung scores
    curves = [
        _curve(0, [0.5] * 9, 0.80),  # first at each rung: promoted, trains 9
        _curve(1, [0.6] * 9, 0.70),  # rung 1 holds 0.5, 0.6: fewer than 3, not the best: stops at 1
        _curve(2, [0.4, 0.3, 0.2] + [0.1] * 6, 0.95),  # best at rungs 1 and 3: trains 9
        _curve(3, [0.9] * 9, 0.10),  # 4 at rung 1, top 1 is 0.4: stops at 1
    ]
    replay = replay_asha(curves, "loss", budget=9, workers=1, min_resource=1)
    assert (replay.epochs, replay.survivors) == (9 + 1 + 9 + 1, 2)
    assert replay.best_accuracy == 0.95  # the survivor with the lowest final loss
    assert replay.random_accuracy == pytest.approx(expected_best_of([0.10, 0.70, 0.80, 0.95], 2))


def test_two_workers_take_trials_in_tid_order_and_run_side_by_side() -> None:
    # two workers: trials 0 and 1 reach rung 1 together (worker 0 first), so trial 1
    # meets trial 0's score there; trial 2 starts on the worker trial 1 frees
    curves = [_curve(2, [0.3] * 3, 0.9), _curve(0, [0.5] * 3, 0.6), _curve(1, [0.7] * 3, 0.5)]
    replay = replay_asha(curves, "loss", budget=3, workers=2, min_resource=1)
    # 0 trains 3; 1 stops at 1 (0.7 behind 0.5); 2, first among the others at rung 1 of 3, trains 3
    assert (replay.epochs, replay.survivors, replay.best_accuracy) == (3 + 1 + 3, 2, 0.9)
