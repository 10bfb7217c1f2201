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
from dataclasses import dataclass
from typing import Any

import pymongo
import pytest
from pymongo import monitoring
from pymongo.database import Database

from coordinator.dashboard.data import TRIAL_SORTS, DashboardData
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


def nodes(plan: Any) -> list[dict[str, Any]]:
    """The stages of a winning plan (classic or slot-based explain), top down."""
    if not isinstance(plan, dict):
        return []
    found = [plan] if "stage" in plan else []
    for key in ("queryPlan", "inputStage"):
        found += nodes(plan.get(key))
    for child in plan.get("inputStages", []):
        found += nodes(child)
    return found


@dataclass
class Plan:
    """A winning plan's stage names and the indexes it reads."""

    stages: list[str]
    indexes: list[str]


def winning_plan(db: Database, command: dict[str, Any]) -> Plan:
    explained = db.command("explain", command, verbosity="queryPlanner")
    planner = explained.get("queryPlanner") or explained["stages"][0]["$cursor"]["queryPlanner"]
    found = nodes(planner["winningPlan"])
    return Plan([node["stage"] for node in found], [node["indexName"] for node in found if "indexName" in node])


OPENING: dict[str, Callable[[DashboardData], Any]] = {
    "summary": lambda d: d.summary(RUN),
    "figures": lambda d: d.figures(RUN),
    "trial table": lambda d: d.trial_page(RUN),
    "errors": lambda d: d.errors(RUN),
    "importance": lambda d: d.importance(RUN),
    "workers": lambda d: d.workers(RUN),
    "one state's trials": lambda d: d.trial_page(RUN, states=["error"]),
}


def is_secantus(db: Database) -> bool:
    return "secantusVersion" in db.client.admin.command("buildInfo")


def plans(db: Database, reads: Reads, request: Callable[[DashboardData], Any]) -> list[tuple[dict[str, Any], Plan]]:
    """Each read ``request`` sends, with its winning plan."""
    reads.commands.clear()
    request(DashboardData(ReadOnlyView(db)))
    assert reads.commands, "the request read nothing"
    return [(command, winning_plan(db, command)) for command in reads.commands]


def reads_an_index(plan: Plan) -> bool:
    return "COLLSCAN" not in plan.stages and bool(INDEX_STAGES & set(plan.stages))


@pytest.mark.parametrize("request_name", list(OPENING))
def test_every_query_of_the_run_page_reads_an_index(recorded: tuple[Database, Reads], request_name: str) -> None:
    db, reads = recorded
    for command, plan in plans(db, reads, OPENING[request_name]):
        assert reads_an_index(plan), (command, plan)
        if not is_secantus(db):  # SecantusDB sorts after every index scan; mongod must not
            assert "SORT" not in plan.stages, (command, plan)


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
@pytest.mark.parametrize("sort", [name for name, key in TRIAL_SORTS.items() if key.index])
def test_indexed_sorts_page_through_their_index(recorded: tuple[Database, Reads], sort: str,
                                                descending: bool) -> None:
    db, reads = recorded
    for command, plan in plans(db, reads, lambda d: d.trial_page(RUN, sort=sort, descending=descending, limit=5)):
        assert reads_an_index(plan), (command, plan)
        # SecantusDB's planner takes any index on the run and sorts after it; mongod's
        # must walk the sort's own index
        if not is_secantus(db) and "$sort" in str(command.get("pipeline")):
            assert "SORT" not in plan.stages and TRIAL_SORTS[sort].index in plan.indexes, (command, plan)
