"""Chaos: the database server killed (-9) and restarted during a run, and a long outage."""

from __future__ import annotations

import time
from collections.abc import Callable

import pymongo
import pytest

from jobstore import schema as s
from jobstore.embedded import EmbeddedServer
from tests.support.chaos import Chaos, Figures, Process, audit, conclude, seed_for

pytestmark = pytest.mark.chaos


@pytest.mark.parametrize("kills", [3, pytest.param(10, marks=pytest.mark.slow)])
def test_database_killed_and_restarted(private_server: EmbeddedServer, make_chaos: Callable[..., Chaos],
                                       chaos_report: Callable[[Figures], None], kills: int) -> None:
    """``kill -9`` of the server at random moments of a run, each time restarted on the
    same storage and port: every result a worker saw acknowledged survives the crash
    (the write was durable before it was acknowledged), the trial is not run again,
    and the run ends at exactly max-evals with every process still up."""
    url = f"{private_server.url}/chaos"
    db = pymongo.MongoClient(url, serverSelectionTimeoutMS=60_000).get_default_database()
    max_evals = 15 * kills
    short = kills == 3
    chaos = make_chaos("database-kill" if short else "database-kill-long", url, db, seed_for(1203 if short else 1303))
    rng = chaos.rng
    def start() -> Process:
        return chaos.start_worker("--run", "chaos", "--heartbeat", "0.5", "--lease", "4", "--poll-max", "0.05",
                                  "--connect-timeout", "10")

    for _ in range(3):
        start()
    coordinator = chaos.start_coordinator("--max-evals", str(max_evals), "--lease", "4", "--queue", "4",
                                          "--max-attempts", "20", "--set", "sleep=0.1", "--connect-timeout", "10")
    moments = sorted(rng.sample(range(3, max_evals - 5), kills))
    for done in moments:
        chaos.wait_until(lambda: chaos.done() >= done or not coordinator.alive, 180, f"{done} trials done",
                         during=lambda: chaos.replace_dead_workers(start))
        assert coordinator.alive, chaos.describe([coordinator])
        time.sleep(rng.uniform(0, 0.3))
        private_server.kill()
        chaos.faults["database kill -9"] += 1
        time.sleep(rng.uniform(0.2, 2.0))
        private_server.start()
    code = chaos.wait_exit(coordinator, 300, during=lambda: chaos.replace_dead_workers(start))
    conclude(chaos, coordinator, code, max_evals, chaos_report)


@pytest.mark.parametrize("outage_s", [20, pytest.param(75, marks=pytest.mark.slow)])
def test_long_database_outage(private_server: EmbeddedServer, make_chaos: Callable[..., Chaos],
                              chaos_report: Callable[[Figures], None], outage_s: float) -> None:
    """The server is stopped for ``outage_s`` seconds while trials run, then started
    again.  The workers' heartbeat (10 s) and lease (30 s, the defaults) are longer than the
    coordinator's lease (2 s), and their database operations give up after 1 s and
    back off (up to 10 s), so after the outage a worker may take seconds to renew its
    lease or write its result: the coordinator's requeuer must give each job its own
    worker's lease, so no live worker loses its job (every trial is claimed once),
    results computed meanwhile are written once, and every process rides it out."""
    url = f"{private_server.url}/chaos"
    db = pymongo.MongoClient(url, serverSelectionTimeoutMS=120_000).get_default_database()
    max_evals = 30
    short = outage_s == 20
    chaos = make_chaos("long-outage" if short else "long-outage-long", url, db, seed_for(1204 if short else 1304))
    def start() -> Process:
        return chaos.start_worker("--run", "chaos", "--heartbeat", "10", "--lease", "30", "--poll-max", "0.05",
                                  "--connect-timeout", "1")

    for _ in range(3):
        start()
    coordinator = chaos.start_coordinator("--max-evals", str(max_evals), "--lease", "2", "--queue", "3",
                                          "--set", "sleep=0.5", "--connect-timeout", "10")
    chaos.wait_until(lambda: chaos.done() >= 8 and db.jobs.count_documents(
        {s.EXP_KEY: "chaos", s.STATE: s.State.RUNNING}) >= 2, 180, "trials to finish and others to run")
    private_server.stop()
    chaos.faults[f"outage {outage_s:.0f} s"] += 1
    time.sleep(outage_s)
    private_server.start()
    code = chaos.wait_exit(coordinator, 300, during=lambda: chaos.replace_dead_workers(start))
    coordinator.expected_exit = {0}
    chaos.finish()
    figures, violations = audit(chaos)
    figures.notes["claimed more than once"] = sorted(
        j[s.TID] for j in db.jobs.find({s.EXP_KEY: "chaos", s.ATTEMPTS: {"$ne": 1}}))
    chaos_report(figures)
    assert code == 0, chaos.describe([coordinator])
    assert not violations, "\n".join(violations)
    assert figures.trials == max_evals and figures.done == max_evals, figures
    assert figures.notes["claimed more than once"] == [], "a live worker's job was requeued after the outage"
    assert "database is back" in "".join(p.text() for p in chaos.processes)
    chaos.check_processes()
