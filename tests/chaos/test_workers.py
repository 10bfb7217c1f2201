"""Chaos: random kill -9, SIGSTOP/SIGCONT and SIGTERM of workers during a run."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from pymongo.database import Database

from tests.support.chaos import Chaos, Figures, Process, conclude, seed_for

pytestmark = pytest.mark.chaos

# Short leases so that killed and frozen workers' jobs come back quickly; a freeze of
# more than a second makes the worker a zombie whose late result must be refused.
WORKER = ["--run", "chaos", "--heartbeat", "0.2", "--lease", "1", "--poll-max", "0.05", "--grace", "2",
          "--connect-timeout", "10"]


@pytest.mark.parametrize(("max_evals", "workers", "max_faults"),
                         [(40, 3, 15), pytest.param(200, 4, 80, marks=pytest.mark.slow)])
def test_random_worker_faults(db: Database, db_url: str, make_chaos: Callable[..., Chaos],
                              chaos_report: Callable[[Figures], None], max_evals: int, workers: int,
                              max_faults: int) -> None:
    """Every fault a worker can suffer, at random moments: the run still ends with
    exactly max-evals trials, each recorded once, no acknowledged result lost, and each
    worker either running or ended the way it was told to."""
    chaos = make_chaos("kill-workers" if max_evals <= 40 else "kill-workers-long", db_url, db,
                       seed_for(1201 if max_evals <= 40 else 1301))
    rng = chaos.rng

    def start() -> Process:
        return chaos.start_worker(*WORKER)

    for _ in range(workers):
        start()
    coordinator = chaos.start_coordinator(
        "--max-evals", str(max_evals), "--lease", "2", "--queue", str(workers + 1), "--max-attempts", "50",
        "--seed", str(chaos.seed), "--set", "sleep=0.4", "--connect-timeout", "10")
    next_fault = time.monotonic() + rng.uniform(2, 4)

    def inject() -> None:
        nonlocal next_fault
        chaos.thaw_due()
        chaos.replace_dead_workers(start)
        if time.monotonic() < next_fault or chaos.done() >= max_evals - 3 or chaos.fault_count >= max_faults:
            return
        ready = [w for w in chaos.workers() if not w.frozen and w.ready]
        fault = rng.choice(["kill", "stop", "term"])
        if fault == "stop":
            # freeze a worker in the middle of a trial, mostly for longer than its lease:
            # when it wakes up it is a zombie whose result must be refused
            busy = [w for w in ready if chaos.busy(w)]
            ready = busy or ready
        victim = rng.choice(ready or [None])
        if victim is not None:
            if fault == "kill":
                chaos.kill(victim)
                start()
            elif fault == "stop":
                chaos.freeze(victim, rng.uniform(0.5, 3.0))
            else:
                chaos.terminate(victim, expect={0}, timeout=30)
                start()
        next_fault = time.monotonic() + rng.uniform(0.6, 1.6)

    code = chaos.wait_exit(coordinator, 240 if max_evals <= 40 else 900, during=inject)
    conclude(chaos, coordinator, code, max_evals, chaos_report)
