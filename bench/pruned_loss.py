"""What loss should a pruned trial carry for TPE?  A measurement on simulated learning curves.

hyperopt's TPE learns only from the losses of ``ok`` trials.  A pruned trial can be
stored as a failure (TPE leaves it out: ``fail``), with the loss it reported at the step
where it stopped (``last``, what this project does), or with the worst loss of the
run's completed trials so far (``worst``: "pruned means bad", without its rank).  Each
policy drives hyperopt's ``tpe.suggest`` through ``fmin`` on the same simulated
learning curves, pruned by this project's ASHA rule (:mod:`objectives.pruning`,
reduction factor 3, rungs at 1, 3, 9 of a 15-step budget); the report gives the best
final loss of the completed trials and the steps trained (mean ± s.e. over seeds).

The curves: 4 hyperparameters in [0, 1]; final loss ``f(x)`` (a sum of a bowl and a
ripple, minimum 0); ``loss_t = f(x) + a(x) exp(-t / tau(x))``, with ``a`` and ``tau``
depending on ``x`` so that curves cross (some slow starters end best), plus noise.

    python bench/pruned_loss.py            # 3 policies x 30 seeds, 60 trials
    python bench/pruned_loss.py --quick    # smoke test: 2 seeds, 15 trials
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, tpe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from objectives.pruning import MemoryPopulation, Pruner, PrunerSettings

POLICIES = ("last", "fail", "worst")
BUDGET = 15
SPACE = {f"x{i}": hp.uniform(f"x{i}", 0, 1) for i in range(4)}


def final_loss(x: np.ndarray) -> float:
    return float(np.sum((x - 0.3) ** 2) + 0.1 * (1 - np.cos(6 * math.pi * (x[0] - 0.3))))


def curve(x: np.ndarray, rng: np.random.Generator) -> list[float]:
    start = 0.5 + 1.5 * x[1]
    tau = 1 + 6 * x[2]  # slow learners (large tau) can still end well
    return [final_loss(x) + start * math.exp(-t / tau) + float(rng.normal(0, 0.01)) for t in range(1, BUDGET + 1)]


def one_run(policy: str, seed: int, trials_n: int) -> tuple[float, int]:
    """(best final loss of the completed trials, steps trained) of one TPE run."""
    rng = np.random.default_rng(seed + 1000)
    cfg = PrunerSettings("asha", "loss", "minimize", max_resource=BUDGET, min_resource=1, reduction_factor=3)
    population = MemoryPopulation()
    finals: list[float] = []
    steps = 0
    tid = 0

    def objective(params: dict[str, float]) -> dict[str, Any]:
        nonlocal steps, tid
        x = np.array([params[f"x{i}"] for i in range(4)])
        pruner = Pruner(cfg, population.for_trial(tid), "sim", tid)
        this, tid = tid, tid + 1
        for step, value in enumerate(curve(x, rng), start=1):
            steps += 1
            if pruner.should_prune(step, value):
                if policy == "fail":
                    return {"status": STATUS_FAIL}
                if policy == "worst":
                    return {"status": STATUS_OK, "loss": max(finals) if finals else value}
                return {"status": STATUS_OK, "loss": value}
        population.complete(this)
        finals.append(value)
        return {"status": STATUS_OK, "loss": value}

    fmin(objective, SPACE, algo=tpe.suggest, max_evals=trials_n, trials=Trials(),
         rstate=np.random.default_rng(seed), show_progressbar=False)
    return min(finals), steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--out", type=Path, default=c.DEFAULT_REPORT)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 seeds, 15 trials")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.trials = 2, 15
    start = c.Start()
    rows = []
    for policy in POLICIES:
        runs = [one_run(policy, seed, args.trials) for seed in range(args.seeds)]
        best, steps = c.mean_se([r[0] for r in runs]), c.mean_se([r[1] for r in runs])
        rows.append([policy, f"{best[0]:.4f} ± {best[1]:.4f}", f"{steps[0]:.0f} ± {steps[1]:.0f}"])
        print(rows[-1], flush=True)
    body = c.section(script="pruned_loss.py", server=None, start=start, extra=[start.finished()],
                     headers=["pruned trial's result", "best final loss (mean ± s.e.)",
                              "steps trained (mean ± s.e.)"], rows=rows)
    title = f"The loss of a pruned trial for TPE: simulated curves, ASHA, {args.trials} trials, {args.seeds} seeds"
    c.publish(args.out, title, body, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
