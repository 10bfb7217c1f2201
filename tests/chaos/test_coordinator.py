"""Chaos: kill -9 and SIGTERM of the coordinator during a run, then resume."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from pymongo.database import Database

from jobstore import schema as s
from tests.support.chaos import Chaos, Figures, Process, conclude, seed_for

pytestmark = pytest.mark.chaos

WORKER = ["--run", "chaos", "--heartbeat", "0.2", "--lease", "1", "--poll-max", "0.05", "--connect-timeout", "10"]


def coordinate(chaos: Chaos, args: list[str], timeout: float = 60) -> Process:
    """Start a coordinator and wait until it holds the run; a start refused because the
    killed one's lease is still live exits 2 with a clear message, and is retried."""
    deadline = time.monotonic() + timeout
    while True:
        process = chaos.start_coordinator(*args)
        while process.alive:
            holder = (chaos.db.runs.find_one({s.ID: chaos.run}) or {}).get(s.RUN_COORDINATOR) or {}
            if holder.get("pid") == process.popen.pid:
                return process
            assert time.monotonic() < deadline, f"no coordinator took the run in {timeout:.0f} s\n{chaos.describe()}"
            time.sleep(0.05)
        process.expected_exit = {2}
        assert "is already being coordinated by" in process.text(), chaos.describe([process])
        process.history.append("refused: the run's lease was still live")
        time.sleep(0.5)


@pytest.mark.parametrize("rounds", [4, pytest.param(12, marks=pytest.mark.slow)])
def test_coordinator_killed_and_terminated_then_resumed(db: Database, db_url: str, make_chaos: Callable[..., Chaos],
                                                         chaos_report: Callable[[Figures], None], rounds: int) -> None:
    """The coordinator is killed (-9) or stopped (one SIGTERM) mid-run, again and again,
    and each time resumed: the run ends at exactly max-evals with every trial once; a
    SIGTERM'd coordinator exits 130 with the resume command, a killed one's successor
    waits for its lease; the workers never notice."""
    max_evals = 15 * rounds
    short = rounds == 4
    chaos = make_chaos("coordinator" if short else "coordinator-long", db_url, db, seed_for(1202 if short else 1302))
    rng = chaos.rng
    def start() -> Process:
        return chaos.start_worker(*WORKER)

    for _ in range(2):
        start()
    args = ["--max-evals", str(max_evals), "--lease", "2", "--queue", "3", "--set", "sleep=0.2",
            "--connect-timeout", "10"]
    faults = ["kill", "term"] * (rounds // 2)
    rng.shuffle(faults)
    for fault in faults:
        coordinator = coordinate(chaos, args)
        target = chaos.done() + rng.randint(2, 6)
        chaos.wait_until(lambda: chaos.done() >= target or not coordinator.alive, 120, "trials to finish",
                         during=lambda: chaos.replace_dead_workers(start))
        assert coordinator.alive, f"the coordinator ended before its fault\n{chaos.describe([coordinator])}"
        time.sleep(rng.uniform(0, 0.5))
        if fault == "kill":
            chaos.kill(coordinator)
        else:
            code = chaos.terminate(coordinator, expect={130}, timeout=30)
            assert code == 130, chaos.describe([coordinator])
            assert "is resumable with:" in coordinator.text(), chaos.describe([coordinator])
    last = coordinate(chaos, args)
    code = chaos.wait_exit(last, 240, during=lambda: chaos.replace_dead_workers(start))
    conclude(chaos, last, code, max_evals, chaos_report)
