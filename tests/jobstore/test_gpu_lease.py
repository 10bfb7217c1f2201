"""GPU leases against the real test server, with simulated GPU lists."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pymongo
import pytest

from jobstore.connection import server_time
from jobstore.gpu_lease import LEASES, Gpu, GpuLease, NoFreeGpu, wait_for_gpus

FOUR = tuple(Gpu(i, f"GPU-{letter * 3}", "simulated", None) for i, letter in enumerate("abcd"))
TWO = FOUR[:2]


def held_leases(db: pymongo.database.Database) -> list[dict[str, object]]:
    """The leases in force, read as a monitoring user would (the documented query)."""
    return list(db[LEASES].find({"expires": {"$gt": server_time(db)}}).sort([("host", 1), ("index", 1)]))


def lease(
    db: pymongo.database.Database, worker: str, gpus: tuple[Gpu, ...] = TWO, **kwargs: object
) -> GpuLease:
    """A lease on host-1 over simulated ``gpus``."""
    return GpuLease(db, worker, gpus=gpus, host="host-1", **kwargs)


def test_workers_get_distinct_gpus_and_the_rest_wait(db) -> None:
    first, second, third = (lease(db, f"w{i}") for i in range(3))
    got = [first.acquire(), second.acquire()]
    assert sorted(g.uuid for gpus in got for g in gpus) == ["GPU-aaa", "GPU-bbb"]
    with pytest.raises(NoFreeGpu, match="held by w0"):
        third.acquire()
    assert third.leased == ()
    holders = {doc["_id"]: doc["holder"] for doc in held_leases(db)}
    assert holders == {got[0][0].uuid: "w0", got[1][0].uuid: "w1"}
    assert all(doc["host"] == "host-1" for doc in held_leases(db))


def test_release_frees_the_gpu(db) -> None:
    first, second = lease(db, "w0", gpus=TWO[:1]), lease(db, "w1", gpus=TWO[:1])
    first.acquire()
    with pytest.raises(NoFreeGpu):
        second.acquire()
    first.release()
    first.release()  # idempotent
    assert first.leased == () and held_leases(db) == []
    assert second.acquire() == TWO[:1]


def test_acquire_twice_is_an_error(db) -> None:
    worker = lease(db, "w0")
    worker.acquire()
    with pytest.raises(RuntimeError, match="already holds"):
        worker.acquire()


def test_concurrent_acquires_never_share_a_gpu(db_url: str) -> None:
    workers = 8
    barrier = threading.Barrier(workers)
    client: pymongo.MongoClient = pymongo.MongoClient(db_url)
    database = client.get_default_database()

    def attempt(i: int) -> tuple[str, ...]:
        worker = lease(database, f"w{i}", gpus=FOUR)
        barrier.wait()
        try:
            return tuple(g.uuid for g in worker.acquire())
        except NoFreeGpu:
            return ()

    try:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(attempt, range(workers)))
        holders = {doc["_id"]: doc["holder"] for doc in held_leases(database)}
    finally:
        client.close()
    won = [uuid for result in results for uuid in result]
    assert len(won) == len(set(won)), results
    # A worker gives up only once every GPU is taken, so all four end up leased.
    assert sorted(won) == [g.uuid for g in FOUR]
    assert holders == {uuid: f"w{i}" for i, result in enumerate(results) for uuid in result}


def test_killed_workers_gpu_is_reclaimed_after_expiry(db, caplog) -> None:
    killed = lease(db, "killed", gpus=TWO[:1], ttl=60)
    killed.acquire()
    survivor = lease(db, "survivor", gpus=TWO[:1])
    with pytest.raises(NoFreeGpu, match="held by killed"):
        survivor.acquire()
    # Its last renewal, to a lease that lapses in 1 s (a 1 s lease from the start could
    # lapse before the check above on a busy host), and then it is never renewed again.
    killed.ttl = 1.0
    assert killed.renew() is True
    stop = threading.Event()
    give_up = threading.Timer(60, stop.set)
    give_up.start()
    try:
        with caplog.at_level(logging.WARNING, logger="jobstore.gpu_lease"):
            got = wait_for_gpus(survivor, stop=stop, poll_interval=0.2)
    finally:
        give_up.cancel()
    assert got == TWO[:1], "the expired lease was never reclaimed"
    assert "waiting for a free GPU" in caplog.text
    assert [doc["holder"] for doc in held_leases(db)] == ["survivor"]
    # The killed worker, coming back, learns that it lost the GPU ...
    assert killed.renew() is False
    # ... and releasing what it believes it holds leaves the new holder's lease alone.
    killed.release()
    assert [doc["holder"] for doc in held_leases(db)] == ["survivor"]
    assert survivor.renew() is True


def test_renew_keeps_the_lease(db) -> None:
    worker = lease(db, "w0", gpus=TWO[:1])
    worker.acquire()
    before = db[LEASES].find_one()["expires"]
    assert worker.renew() is True
    assert db[LEASES].find_one()["expires"] >= before
    worker.release()
    assert worker.renew() is True  # nothing held, nothing lost


def test_wait_for_gpus_returns_none_when_stopped(db) -> None:
    lease(db, "w0", gpus=TWO[:1]).acquire()
    stop = threading.Event()
    stop.set()
    assert wait_for_gpus(lease(db, "w1", gpus=TWO[:1]), stop=stop) is None


def test_two_gpus_per_worker_is_all_or_nothing(db) -> None:
    single = lease(db, "single", gpus=FOUR[1:2])
    assert single.acquire() == (FOUR[1],)
    pair = lease(db, "pair", gpus=FOUR[:3], count=2)
    assert pair.acquire() == (FOUR[0], FOUR[2])
    assert [gpu.uuid for gpu in pair.leased] == ["GPU-aaa", "GPU-ccc"]  # pinned: tests/worker/test_gpus.py
    pair.release()
    single.release()
    # One GPU free out of the three: a two-GPU worker gets nothing and holds nothing.
    blocker = lease(db, "blocker", gpus=FOUR[:3], count=2)
    blocker.acquire()
    starved = lease(db, "starved", gpus=FOUR[:3], count=2)
    with pytest.raises(NoFreeGpu, match="need 2 free GPU"):
        starved.acquire()
    assert "starved" not in {doc["holder"] for doc in held_leases(db)}


def test_partial_claim_is_rolled_back(db, monkeypatch) -> None:
    """A worker that loses the race for its second GPU gives back the first one."""
    pair = lease(db, "pair", gpus=TWO, count=2)
    rival = lease(db, "rival", gpus=TWO[1:])
    real_claim = GpuLease._claim

    def rival_wins_second(self, gpu, token, now):
        if self is pair and gpu == TWO[1]:
            rival.acquire()
        return real_claim(self, gpu, token, now)

    monkeypatch.setattr(GpuLease, "_claim", rival_wins_second)
    with pytest.raises(NoFreeGpu, match="took the free ones first"):
        pair.acquire()
    assert pair.leased == ()
    assert {doc["_id"]: doc["holder"] for doc in held_leases(db)} == {"GPU-bbb": "rival"}


def test_more_gpus_than_the_host_has_is_refused(db) -> None:
    with pytest.raises(ValueError, match="only 2"):
        lease(db, "w0", count=3)


def test_cpu_mode(db, caplog) -> None:
    no_gpus = lease(db, "w0", gpus=())
    with caplog.at_level(logging.WARNING, logger="jobstore.gpu_lease"):
        assert no_gpus.acquire() == ()
    assert "runs on the CPU" in caplog.text
    assert no_gpus.cpu_only and no_gpus.renew() is True
    no_gpus.release()
    opted_out = lease(db, "w1", count=0)
    assert opted_out.acquire() == () and held_leases(db) == []
