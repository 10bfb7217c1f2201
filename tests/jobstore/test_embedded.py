"""Durability: what the store acknowledged survives ``kill -9`` of the server (issue 12,
defect 10).  Two layers each suffice on SecantusDB, and each is tested alone: the
embedded server syncs its log at every commit, and the store's client asks for
journaled (majority) writes, which is what protects results on a real mongod."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pymongo
import pytest

from jobstore import schema as s
from jobstore.connection import connect, parse_url
from jobstore.embedded import EmbeddedServer, EmbeddedServerError, ServerRecord, recorded_server
from jobstore.queue import JobQueue
from jobstore.schema import State
from tests.support.jobs import enqueue

WRITES = 100


def _write_then_crash(server: EmbeddedServer, collection: pymongo.collection.Collection) -> None:
    """Write ``WRITES`` documents, each acknowledged, and kill the server the moment the
    last acknowledgement arrives."""
    for i in range(WRITES):
        collection.insert_one({"i": i, "done": True})
    server.kill()


def _count_after_restart(server: EmbeddedServer, name: str) -> int:
    server.start()
    with pymongo.MongoClient(server.url) as client:
        return client.d[name].count_documents({"done": True})


@pytest.fixture
def server_without_sync(tmp_path: Path):
    server = EmbeddedServer(tmp_path / "nosync", sync_on_commit=False)
    server.start()
    yield server
    server.stop()


def test_the_embedded_server_keeps_acknowledged_writes_through_kill_9(private_server: EmbeddedServer) -> None:
    """A client that asks for nothing (w=1, no journal) still loses nothing."""
    # (short timeouts: closing a client whose server is gone waits for server selection)
    with pymongo.MongoClient(private_server.url, w=1, journal=False, serverSelectionTimeoutMS=500) as client:
        _write_then_crash(private_server, client.d.plain)
    assert _count_after_restart(private_server, "plain") == WRITES


def test_the_stores_writes_survive_kill_9_of_a_server_that_does_not_sync(
    server_without_sync: EmbeddedServer,
) -> None:
    """Against a server without --sync-on-commit, the store's journaled write concern
    is what keeps its acknowledged writes (on SecantusDB as on mongod)."""
    db = connect(parse_url(f"{server_without_sync.url}/d"), timeout_s=1)
    try:
        _write_then_crash(server_without_sync, db.journaled)
    finally:
        db.client.close()
    assert _count_after_restart(server_without_sync, "journaled") == WRITES


def test_results_acknowledged_by_the_store_survive_kill_9(private_server: EmbeddedServer) -> None:
    """End to end through the queue: every result ``finish`` acknowledged is there after
    the server was killed and restarted."""
    db = connect(parse_url(f"{private_server.url}/results"), timeout_s=1)
    try:
        enqueue(db, "r", 40)
        queue = JobQueue(db)
        for _ in range(40):
            claim = queue.claim("w", exp_key="r")
            assert claim is not None
            assert queue.finish(claim, State.DONE, {"status": "ok", "loss": float(claim.tid)})
        private_server.kill()
    finally:
        db.client.close()
    private_server.start()
    with pymongo.MongoClient(private_server.url) as client:
        jobs = client.results.jobs
        assert jobs.count_documents({s.EXP_KEY: "r", s.STATE: State.DONE}) == 40
        assert sorted(j[s.RESULT]["loss"] for j in jobs.find({s.EXP_KEY: "r"})) == \
            sorted(float(j[s.TID]) for j in jobs.find({s.EXP_KEY: "r"}))


def test_a_server_that_cannot_listen_is_not_taken_for_the_one_on_its_port(
        private_server: EmbeddedServer, tmp_path: Path) -> None:
    """A second server started on a port another server already listens on fails to
    start: the answer on its port comes from the other server (another directory's data,
    another process), so start() must not return as if it were its own, nor record it."""
    record = tmp_path / "server.json"
    second = EmbeddedServer(tmp_path / "other-db", port=private_server.port, record=record)
    with pytest.raises(EmbeddedServerError, match="exited with code"):
        second.start(timeout=30)
    second.stop()
    assert not record.exists()
    assert private_server.running


def test_a_stale_record_is_not_taken_for_another_server_on_its_port(
        private_server: EmbeddedServer, tmp_path: Path) -> None:
    """A record left by a server that has gone names a port another server now listens
    on: that one is not the recorded server (its pid is another), so the record names
    no running server."""
    client: pymongo.MongoClient = pymongo.MongoClient(private_server.url)
    try:
        live = int(client.admin.command("serverStatus")["pid"])
    finally:
        client.close()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    port = private_server.port
    record = tmp_path / "server.json"
    for pid, names in ((live, True), (gone.pid, False)):
        record.write_text(json.dumps({"port": port, "pid": pid, "owner": gone.pid}))
        found = recorded_server(record)
        assert (found == ServerRecord(port=port, pid=pid, owner=gone.pid)) is names
