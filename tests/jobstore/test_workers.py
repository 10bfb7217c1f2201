"""Worker records (jobstore/workers.py)."""

from __future__ import annotations

from pymongo.database import Database

from jobstore import schema as s
from jobstore.workers import WorkerRegistry


def test_registering_creates_the_index_monitoring_reads_workers_through(db: Database) -> None:
    registry = WorkerRegistry(db)
    registry.register("node-a:1", host="node-a", pid=1, device="cpu", version="test")
    registry.register("node-b:2", host="node-b", pid=2, device="cpu", version="test")  # idempotent
    indexes = {index["name"]: list(index["key"].items()) for index in db[s.WORKERS].list_indexes()}
    assert indexes["last_seen"] == [(s.WORKER_LAST_SEEN, 1)]
    assert db[s.WORKERS].count_documents({}) == 2
