"""The dashboard's queries are served by indexes: the winning plan of every query a run
page sends when it opens (and of the trial table's indexed sorts) reads an index, never
the collection.  Asked of the test server's ``explain``; on a real mongod (with
``HPO_TEST_MONGO_URL``) also no blocking sort, so a page costs the index entries up to
its end whatever the run's size.  That is the design behind the benchmark of
docs/benchmarks.md ("Opening a 10,000-trial run in the dashboard").
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pymongo
import pytest
from pymongo import monitoring
from pymongo.database import Database

from coordinator.dashboard.data import DashboardData
from jobstore.view import ReadOnlyView
from tests.support.dashboard import RUN, seed

READS = ("find", "aggregate", "count", "distinct")
INDEX_STAGES = {"IXSCAN", "COUNT_SCAN", "DISTINCT_SCAN", "IDHACK", "EXPRESS_IXSCAN"}
"""Stages that read an index (mongod 7/8 and SecantusDB name them so)."""
DRIVER_FIELDS = ("lsid", "$db", "$clusterTime", "$readPreference", "txnNumber")


class Reads(monitoring.CommandListener):
    """The read commands a client sent, as sent."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in READS:
            self.commands.append({k: v for k, v in event.command.items() if k not in DRIVER_FIELDS})

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture(scope="module")
def recorded(mongo_server_url: str) -> Iterator[tuple[Database, Reads]]:
    reads = Reads()
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_server_url, event_listeners=[reads])
    db = client[f"t_plans_{uuid.uuid4().hex[:6]}"]
    seed(db)  # creates the job and worker indexes, as workers do
    yield db, reads
    client.drop_database(db.name)
    client.close()


def stages(plan: Any) -> list[str]:
    """The stage names of a winning plan (classic or slot-based explain), top down."""
    if not isinstance(plan, dict):
        return []
    found = [plan["stage"]] if "stage" in plan else []
    for key in ("queryPlan", "inputStage"):
        found += stages(plan.get(key))
    for child in plan.get("inputStages", []):
        found += stages(child)
    return found


def winning_plan(db: Database, command: dict[str, Any]) -> list[str]:
    explained = db.command("explain", command, verbosity="queryPlanner")
    planner = explained.get("queryPlanner") or explained["stages"][0]["$cursor"]["queryPlanner"]
    return stages(planner["winningPlan"])


OPENING: dict[str, Callable[[DashboardData], Any]] = {
    "summary": lambda d: d.summary(RUN),
    "figures": lambda d: d.figures(RUN),
    "trial table": lambda d: d.trial_page(RUN),
    "errors": lambda d: d.errors(RUN),
    "importance": lambda d: d.importance(RUN),
    "workers": lambda d: d.workers(RUN),
    "trial table by loss": lambda d: d.trial_page(RUN, sort="loss", limit=5),
    "trial table by loss, descending": lambda d: d.trial_page(RUN, sort="loss", descending=True, limit=5),
    "trial table by state": lambda d: d.trial_page(RUN, sort="state", descending=True, limit=5),
    "trial table by finish": lambda d: d.trial_page(RUN, sort="finished_at", descending=True, limit=5),
    "one state's trials": lambda d: d.trial_page(RUN, states=["error"]),
}


@pytest.mark.parametrize("request_name", list(OPENING))
def test_every_query_of_the_run_page_reads_an_index(recorded: tuple[Database, Reads], request_name: str) -> None:
    db, reads = recorded
    secantus = "secantusVersion" in db.client.admin.command("buildInfo")
    reads.commands.clear()
    OPENING[request_name](DashboardData(ReadOnlyView(db)))
    assert reads.commands, "the request read nothing"
    for command in reads.commands:
        plan = winning_plan(db, command)
        assert "COLLSCAN" not in plan and INDEX_STAGES & set(plan), (command, plan)
        if not secantus:  # SecantusDB sorts after every index scan; mongod must not
            assert "SORT" not in plan, (command, plan)
