"""Workers lease GPUs through MongoDB (simulated GPU lists) and pin themselves."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pymongo.database import Database

from jobstore import schema as s
from jobstore.store import Store
from tests.support.gpus import fake_nvidia_smi
from tests.support.processes import FAST, start_worker, stop, wait_for
from worker.loop import Worker, WorkerConfig

GPUS = {"HPO_FAKE_GPUS": "GPU-aaaa,GPU-bbbb"}
def test_two_workers_get_distinct_gpus_and_a_third_waits(db: Database, db_url: str, tmp_path: Path) -> None:
    workers = [start_worker(db_url, *FAST, log=tmp_path / f"w{i}.log", env=GPUS) for i in range(3)]
    try:
        wait_for(lambda: db.workers.count_documents({}) == 2, what="two workers to register")
        devices = sorted(w[s.WORKER_DEVICE] for w in db.workers.find())
        assert [d.split("(")[1] for d in devices] == ["GPU-aaaa)", "GPU-bbbb)"]
        def waiting() -> list[int]:
            return [p for p in range(3) if "waiting for a free GPU" in (tmp_path / f"w{p}.log").read_text()]

        # the third may start well after the other two registered on a busy host
        wait_for(lambda: len(waiting()) > 0, what="the third worker to wait for a GPU")
        assert len(waiting()) == 1 and db.workers.count_documents({}) == 2
        stop(workers[0 if waiting()[0] != 0 else 1])
        wait_for(lambda: db.workers.count_documents({}) == 3, what="the waiting worker to get the freed GPU")
    finally:
        for worker in workers:
            stop(worker)


def test_cpu_host_runs_with_a_warning(db: Database, db_url: str, tmp_path: Path) -> None:
    worker = start_worker(db_url, "--idle-exit", "0.5", log=tmp_path / "w.log", env={"HPO_FAKE_GPUS": ""})
    assert worker.wait(60) == 0
    assert db.workers.find_one()[s.WORKER_DEVICE] == "cpu"
    assert "runs on the CPU" in " ".join((tmp_path / "w.log").read_text().split())


def _gpu_warnings(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines()
            if "WARNING" in line and ("GPU" in line or "nvidia-smi" in line)]


def test_a_worker_asked_for_no_gpu_says_nothing_about_gpus(db: Database, db_url: str, tmp_path: Path) -> None:
    """``--gpus-per-worker 0`` does not look for GPUs at all: the stand-in nvidia-smi on
    the PATH (which fails, and records that it ran) is never run, and no GPU warning is
    logged."""
    ran = tmp_path / "nvidia-smi-ran"
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, f"touch {ran}; exit 9")
    log = tmp_path / "w.log"
    worker = start_worker(db_url, "--gpus-per-worker", "0", "--idle-exit", "0.5", log=log,
                          env={"PATH": str(bin_dir)})
    assert worker.wait(60) == 0
    assert db.workers.find_one()[s.WORKER_DEVICE] == "cpu"
    assert not ran.exists()
    assert _gpu_warnings(log) == []


def test_a_cpu_host_warns_once(db: Database, db_url: str, tmp_path: Path) -> None:
    """The default (one GPU per worker) on a host without nvidia-smi: one warning."""
    log = tmp_path / "w.log"
    worker = start_worker(db_url, "--idle-exit", "0.5", log=log, env={"PATH": str(tmp_path)})
    assert worker.wait(60) == 0
    assert db.workers.find_one()[s.WORKER_DEVICE] == "cpu"
    warnings = _gpu_warnings(log)
    assert len(warnings) == 1 and "runs on the CPU" in warnings[0], warnings


def test_a_deleted_worker_record_is_written_again_and_the_worker_goes_on(
        db: Database, db_url: str, tmp_path: Path) -> None:
    """Deleting a worker's record (cleaning up the ``workers`` collection) is not a lost
    GPU lease: the worker writes its record again at its next heartbeat and keeps
    working, its GPU still leased."""
    log = tmp_path / "w.log"
    worker = start_worker(db_url, *FAST, log=log, env={"HPO_FAKE_GPUS": "GPU-aaaa"})
    try:
        wait_for(lambda: db.workers.count_documents({}) == 1, what="the worker to register")
        worker_id = db.workers.find_one()[s.ID]
        db.workers.delete_many({})
        wait_for(lambda: db.workers.find_one({s.ID: worker_id}) is not None, what="the record written again")
        time.sleep(1)  # a few more heartbeats
        assert worker.poll() is None, log.read_text()
        record = db.workers.find_one({s.ID: worker_id})
        assert "GPU-aaaa" in record[s.WORKER_DEVICE] and record[s.WORKER_HOST]
        assert db.gpu_leases.find_one({s.ID: "GPU-aaaa"})["holder"] == worker_id
        assert "GPU lease was taken over" not in log.read_text()
    finally:
        stop(worker)


def test_a_worker_creates_the_index_its_record_is_read_by(db: Database, db_url: str, tmp_path: Path) -> None:
    """Status and the dashboard find live workers by ``last_seen``: the worker creates
    that index, as it creates the queue's."""
    worker = start_worker(db_url, "--gpus-per-worker", "0", "--idle-exit", "0.5", log=tmp_path / "w.log")
    assert worker.wait(60) == 0
    assert "last_seen" in db.workers.index_information()


def test_the_gpu_lease_lasts_the_workers_lease(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hpo-worker --lease`` is also the GPU lease's length (its --help and
    docs/deploy.md say so): a dead worker's GPU is free one lease after its last renewal."""
    asked: dict[str, object] = {}

    class Asked(Exception):
        pass

    def gpu_lease(store: Store, worker_id: str, **options: object) -> None:
        asked.update(options)
        raise Asked

    monkeypatch.setattr(Store, "gpu_lease", gpu_lease)
    monkeypatch.setenv("HPO_FAKE_GPUS", "GPU-aaaa")
    with pytest.raises(Asked):
        Worker(Store(db), WorkerConfig(heartbeat=2.0, lease=7.0)).run()
    assert (asked["ttl"], asked["count"]) == (7.0, 1)
