"""Learning curves run as concurrent trials through Optuna's pruners and through ours,
for comparing decisions (the in-memory population and the store's)."""

from __future__ import annotations

import math
import random
from typing import Protocol

import optuna

from objectives.pruning import Population, Pruner, PrunerSettings

optuna.logging.set_verbosity(optuna.logging.ERROR)


class Trials(Protocol):
    """Where the trials of a comparison record and read their scores."""

    def for_trial(self, tid: int) -> Population:
        """The population trial ``tid`` decides with (called when it starts)."""

    def complete(self, tid: int) -> None:
        """Trial ``tid`` ran to its end without being pruned."""


def learning_curves(seed: int, n: int, length: int) -> list[list[float]]:
    """Noisy decreasing learning curves that cross, some with a NaN."""
    rng = random.Random(seed)
    curves = []
    for _ in range(n):
        final, start, speed = rng.uniform(0.05, 0.6), rng.uniform(0.7, 1.5), rng.uniform(0.1, 1.0)
        curve = [final + (start - final) * math.exp(-speed * step) + rng.gauss(0, 0.02)
                 for step in range(1, length + 1)]
        if rng.random() < 0.05:
            curve[rng.randrange(length)] = math.nan
        curves.append(curve)
    return curves


def optuna_pruner(cfg: PrunerSettings) -> optuna.pruners.BasePruner:
    """Optuna's pruner for ``cfg``."""
    if cfg.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_steps)
    if cfg.kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=cfg.min_resource,
                                                      reduction_factor=cfg.reduction_factor)
    return optuna.pruners.HyperbandPruner(min_resource=cfg.min_resource, max_resource=cfg.max_resource,
                                          reduction_factor=cfg.reduction_factor)


def decisions_both_ways(cfg: PrunerSettings, curves: list[list[float]], workers: int, seed: int,
                        trials: Trials) -> tuple[list[tuple[int, int, bool]], list[tuple[int, int, bool]]]:
    """Run ``curves`` as trials ``0..n-1`` of run ``"run"``, ``workers`` at a time in a
    random interleaving, through Optuna's pruner and through ours on ``trials``; each
    one's (trial, step, pruned) decisions."""
    study = optuna.create_study(study_name="run", direction=cfg.direction, pruner=optuna_pruner(cfg))
    rng = random.Random(seed)
    pending = list(range(len(curves)))
    running: dict[int, tuple[optuna.trial.Trial, Pruner, int]] = {}
    theirs: list[tuple[int, int, bool]] = []
    ours: list[tuple[int, int, bool]] = []
    while pending or running:
        while pending and len(running) < workers:
            tid = pending.pop(0)
            trial = study.ask()
            assert trial.number == tid
            running[tid] = (trial, Pruner(cfg, trials.for_trial(tid), "run", tid), 0)
        tid = rng.choice(sorted(running))
        trial, pruner, done = running[tid]
        step, value = done + 1, curves[tid][done]
        trial.report(value, step)
        their, our = trial.should_prune(), pruner.should_prune(step, value)
        theirs.append((tid, step, their))
        ours.append((tid, step, our))
        if their or our:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            del running[tid]
        elif step == len(curves[tid]):
            study.tell(trial, value)
            trials.complete(tid)
            del running[tid]
        else:
            running[tid] = (trial, pruner, step)
    return theirs, ours
