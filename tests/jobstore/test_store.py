"""The store: one handle made once from the URL, retries inside the typed stores'
methods (one policy, tested with an injected failing client on the real test server),
the no-retry paths, and the read-only view."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bson import Decimal128
from pymongo.database import Database
from pymongo.errors import AutoReconnect, InvalidOperation, OperationFailure

from jobstore import schema as s
from jobstore.connection import PASSWORD_FILE_ENV, URL_ENV
from jobstore.errors import CoordinatorBusy
from jobstore.retry import DatabaseOutage, RetryPolicy
from jobstore.schema import State
from jobstore.store import Store
from jobstore.trials import MongoTrials
from tests.support.flaky import FlakyDatabase
from tests.support.jobs import enqueue


def _flaky_store(db: Database, failures: int, **options: object) -> tuple[Store, FlakyDatabase, list[float]]:
    """A store on ``db`` whose collection calls fail ``failures`` times; the waits between
    its retries are recorded instead of slept."""
    flaky = FlakyDatabase(db, failures, **options)  # type: ignore[arg-type]
    waits: list[float] = []
    return Store(flaky, retry=RetryPolicy(server="mongodb://db.example:27017/hpo",  # type: ignore[arg-type]
                                          sleep=waits.append)), flaky, waits


# -- one policy, inside the store's methods ------------------------------------------------


def test_every_queue_operation_rides_out_transient_errors_with_backoff(db: Database) -> None:
    enqueue(db, "r", 2)
    store, flaky, waits = _flaky_store(db, 3)
    claim = store.queue.claim("w", exp_key="r")
    assert claim is not None and claim.tid == 0
    assert len(flaky.failed) == 3 and waits == [0.5, 1.0, 2.0]
    for operation in (lambda: store.queue.report(claim, 1, {"loss": 0.5}),
                      lambda: store.queue.finish(claim, State.DONE, {"status": "ok", "loss": 0.5})):
        flaky.failures = 2
        assert operation() is True
        assert flaky.failures == 0
    done = db.jobs.find_one({s.EXP_KEY: "r", s.TID: 0})
    assert done[s.STATE] == State.DONE and done[s.METRICS] == [{"step": 1, "loss": 0.5}]
    second = store.queue.claim("w", exp_key="r")
    flaky.failures = 2
    assert store.queue.release(second) is True
    assert db.jobs.find_one({s.EXP_KEY: "r", s.TID: 1})[s.STATE] == State.NEW


def test_run_worker_and_view_operations_ride_out_transient_errors(db: Database) -> None:
    store, flaky, _ = _flaky_store(db, 2)
    assert store.runs.ensure("r", experiment="e", fingerprint="f")[s.ID] == "r"
    assert flaky.failures == 0
    for operation in (lambda: store.runs.allocate_tids("r", 3), lambda: store.runs.get("r"),
                      lambda: store.workers.register("h:1", host="h", pid=1, device="cpu", version="t"),
                      lambda: store.workers.update("h:1", status="busy"),
                      lambda: store.view.runs.find({}), lambda: store.view.jobs.count({}),
                      lambda: store.view.jobs.aggregate([{"$match": {}}])):
        flaky.failures = 2
        operation()
        assert flaky.failures == 0
    assert db.runs.find_one({s.ID: "r"})[s.RUN_NEXT_TID] == 3
    assert db.workers.find_one({s.ID: "h:1"})[s.WORKER_STATUS] == "busy"


def test_the_outage_limit_chosen_when_opening_the_store_ends_the_wait(db: Database) -> None:
    store, flaky, waits = _flaky_store(db, 100)
    limited = store.with_outage_limit(0, "pass --outage-timeout")
    with pytest.raises(DatabaseOutage) as raised:
        limited.runs.get("r")
    message = str(raised.value)
    assert "the database at mongodb://db.example:27017/hpo has been unreachable" in message
    assert "while reading run 'r'" in message and "outage limit of 0 s" in message
    assert "pass --outage-timeout" in message
    assert isinstance(raised.value.__cause__, AutoReconnect)
    assert flaky.failed == ["runs.find_one"] and waits == []


def test_a_request_the_server_refuses_is_not_retried(db: Database) -> None:
    store, flaky, waits = _flaky_store(db, 5)
    flaky.failures = 0
    with pytest.raises(OperationFailure):
        store.view.jobs.find({s.TID: {"$nosuchoperator": 1}})
    assert waits == []


# -- the no-retry paths ----------------------------------------------------------------------


def test_heartbeat_writes_and_the_requeue_are_not_retried(db: Database) -> None:
    """A heartbeat skips a beat on a transient error (jobstore.heartbeat) and the requeuer
    counts one as a break in contact (jobstore.requeuer): the error must reach them."""
    enqueue(db, "r", 1)
    store, flaky, waits = _flaky_store(db, 0)
    claim = store.queue.claim("w", exp_key="r")
    store.workers.register("h:1", host="h", pid=1, device="cpu", version="t")
    token = store.runs.acquire_coordinator("r", 30)
    for beat in (lambda: store.queue.heartbeat(claim), lambda: store.workers.beat("h:1", status="idle"),
                 lambda: store.runs.renew_coordinator("r", token, 30), store.queue.requeue_expired):
        flaky.failures = 1
        with pytest.raises(AutoReconnect):
            beat()
    assert waits == []


# -- retried writes stay idempotent after a lost reply -----------------------------------


def test_a_coordinator_lease_taken_though_its_reply_was_lost_is_kept(db: Database) -> None:
    store, flaky, _ = _flaky_store(db, 0, methods={"update_one"}, after=True, collections={s.RUNS})
    store.runs.ensure("r", experiment="e", fingerprint="f")
    flaky.failures = 1
    token = store.runs.acquire_coordinator("r", 30)
    assert flaky.failed == ["runs.update_one"]
    assert db.runs.find_one({s.ID: "r"})[s.RUN_COORDINATOR]["token"] == token
    with pytest.raises(CoordinatorBusy):
        Store(db).runs.acquire_coordinator("r", 30)


def test_a_gpu_lease_taken_though_its_reply_was_lost_is_kept(db: Database) -> None:
    from jobstore.gpu_lease import Gpu
    from tests.jobstore.test_gpu_lease import held_leases

    store, flaky, _ = _flaky_store(db, 0, methods={"update_one"}, after=True, collections={"gpu_leases"})
    lease = store.gpu_lease("w", gpus=[Gpu(0, "GPU-a", "test", None)], host="h")
    flaky.failures = 2  # the GPU's registration, then its claim
    assert [gpu.uuid for gpu in lease.acquire()] == ["GPU-a"]
    assert [(doc["_id"], doc["holder"]) for doc in held_leases(db)] == [("GPU-a", "w")]


def test_trials_inserted_though_the_reply_was_lost_are_inserted_once(db: Database) -> None:
    store, flaky, _ = _flaky_store(db, 0, methods={"insert_many"}, after=True)
    docs = [{s.EXP_KEY: "r", s.TID: tid, s.STATE: State.NEW} for tid in range(3)]
    flaky.failures = 1
    assert store.queue.insert_new(docs) == []
    assert sorted(job[s.TID] for job in db.jobs.find({s.EXP_KEY: "r"})) == [0, 1, 2]


def test_a_report_written_though_its_reply_was_lost_is_written_once(db: Database) -> None:
    enqueue(db, "r", 1)
    store, flaky, _ = _flaky_store(db, 0, methods={"update_one"}, after=True)
    claim = store.queue.claim("w", exp_key="r")
    assert claim is not None
    flaky.failures = 1
    assert store.queue.report(claim, 1, {"loss": 0.5})
    assert store.queue.report(claim, 2, {"loss": 0.4})
    assert store.queue.report(claim, 2, {"loss": 0.3})  # the same step again, other values: kept
    assert flaky.failed == ["jobs.update_one"]
    assert db.jobs.find_one({s.TID: 0})[s.METRICS] == [
        {"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}, {"step": 2, "loss": 0.3}]


# -- one object from the URL ------------------------------------------------------------------


@pytest.mark.parametrize("path, collection", [("/{db}.trials_a", "trials_a"), ("/{db}", "jobs")])
def test_the_jobs_collection_named_in_the_url_is_every_typed_stores(
        db: Database, mongo_server_url: str, path: str, collection: str) -> None:
    store = Store.open(mongo_server_url.rstrip("/") + path.format(db=db.name))
    assert store.db.name == db.name and store.jobs_collection == collection
    assert store.queue.jobs.name == store.runs.jobs.name == store.view.jobs.name == collection
    assert store.queue is store.queue, "one queue per store: a retried claim finds its own attempt"


def test_hyperopts_url_names_the_collection_too(db: Database, mongo_server_url: str) -> None:
    host = mongo_server_url.split("://", 1)[1].rstrip("/")
    store = Store.open(f"mongo://{host}/{db.name}/trials_b")
    assert store.queue.jobs.full_name == f"{db.name}.trials_b"


def test_a_store_closes_the_client_it_opened_and_only_that(db: Database, db_url: str) -> None:
    with Store.open(db_url) as store:
        limited = store.with_outage_limit(5)
        limited.close()  # shares the connection, does not own it
        assert store.server_time()
        Store(db).close()  # the caller's client stays the caller's
        assert db.command("ping")["ok"]
    with pytest.raises(InvalidOperation):
        store.db.command("ping")
    with pytest.raises(InvalidOperation):
        limited.db.command("ping")
    store.close()  # idempotent


def test_trials_opened_from_a_url_close_their_connection(db: Database, db_url: str) -> None:
    with MongoTrials(db_url, exp_key="r") as trials:
        view = trials.view(exp_key="other")
    with pytest.raises(InvalidOperation):
        trials.db.command("ping")
    with pytest.raises(InvalidOperation):
        view.db.command("ping")
    MongoTrials(db, exp_key="r").close()  # the caller's database stays open
    assert db.command("ping")["ok"]


def test_child_processes_get_the_password_file_through_the_environment(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("Zq9-child-secret\n")
    monkeypatch.chdir(tmp_path)
    store = Store(db, url="mongodb://alice@db.example:27017/hpo", password_file=Path("pw"))
    env = store.child_environment()
    assert env == {URL_ENV: "mongodb://alice@db.example:27017/hpo", PASSWORD_FILE_ENV: str(secret)}
    assert os.path.isabs(env[PASSWORD_FILE_ENV])
    assert "Zq9-child-secret" not in repr(env)


def test_a_store_made_from_a_handle_cannot_be_handed_to_a_child(db: Database) -> None:
    with pytest.raises(ValueError, match="not opened from a URL"):
        Store(db).child_environment()


# -- the read-only view ------------------------------------------------------------------------


def test_the_view_only_reads(db: Database) -> None:
    view = Store(db).view
    for collection in (view.jobs, view.runs, view.workers, view.gpu_leases):
        public = {name for name in dir(collection) if not name.startswith("_")}
        assert public == {"name", "find", "find_one", "count", "distinct", "aggregate"}
    with pytest.raises(ValueError, match=r"cannot run \$out"):
        view.jobs.aggregate([{"$match": {}}, {"$out": "copy"}])
    assert "copy" not in db.list_collection_names()


def test_the_best_trial_is_the_lowest_finite_ok_loss(db: Database) -> None:
    base = {s.EXP_KEY: "r", s.STATE: State.DONE, s.MISC: {"vals": {"x": [0.0]}}}
    db.jobs.insert_many([
        {**base, s.TID: 0, s.RESULT: {"status": "ok", "loss": 0.5, "accuracy": 0.9}},
        {**base, s.TID: 1, s.RESULT: {"status": "ok", "loss": float("nan")}},
        {**base, s.TID: 2, s.RESULT: {"status": "ok", "loss": float("-inf")}},
        {**base, s.TID: 3, s.RESULT: {"status": "fail", "loss": 0.1}},
        {**base, s.TID: "x", s.RESULT: {"status": "ok", "loss": 0.2}},
        {**base, s.TID: 5, s.STATE: State.RUNNING, s.RESULT: {"status": "ok", "loss": 0.0}},
        {**base, s.EXP_KEY: "other", s.TID: 6, s.RESULT: {"status": "ok", "loss": 0.0}},
        # points that cannot be decoded from misc.vals (found by tests/coordinator/test_start.py)
        {**base, s.TID: 7, s.RESULT: {"status": "ok", "loss": 0.01}, s.MISC: None},
        {**base, s.TID: 8, s.RESULT: {"status": "ok", "loss": 0.02}, s.MISC: {"vals": {"x": 0.7}}},
        {**base, s.TID: 9, s.RESULT: {"status": "ok", "loss": 0.03}, s.MISC: {"vals": {"x": [1, 2]}}},
        # numbers to the server, but no float loss or integer tid to a reader
        {**base, s.TID: 10, s.RESULT: {"status": "ok", "loss": Decimal128("0.001")}},
        {**base, s.TID: 10.5, s.RESULT: {"status": "ok", "loss": 0.002}},
        {**base, s.TID: [11], s.RESULT: [{"status": "ok", "loss": 0.003}]},
    ])
    Store(db).queue.ensure_indexes()  # the view names its index, as coordinators and workers create it
    view = Store(db).view
    assert view.best_trial("r")[s.TID] == 7, "the lowest loss, whatever its misc"
    best = view.best_trial("r", s.has_point)
    assert best is not None and best[s.TID] == 0
    assert best[s.RESULT] == {"status": "ok", "loss": 0.5, "accuracy": 0.9}
    assert view.best_trial("none") is None


def test_a_pruned_trial_is_never_the_best_and_a_run_of_only_pruned_ones_says_so(db: Database) -> None:
    base = {s.STATE: State.DONE, s.MISC: {"vals": {"x": [0.0]}}}
    pruned = {"status": "ok", "pruned": True, "pruned_step": 2, "pruned_value": 0.05}
    db.jobs.insert_many([
        # a pruned trial carries the loss it reported where it stopped, here the lowest
        {**base, s.EXP_KEY: "r", s.TID: 0, s.RESULT: {**pruned, "loss": 0.05}},
        {**base, s.EXP_KEY: "r", s.TID: 1, s.RESULT: {"status": "ok", "loss": 0.3}},
        {**base, s.EXP_KEY: "r", s.TID: 2, s.RESULT: {"status": "ok", "loss": 0.4, "pruned": False}},
        {**base, s.EXP_KEY: "p", s.TID: 0, s.RESULT: {**pruned, "loss": 0.05}},
        {**base, s.EXP_KEY: "p", s.TID: 1, s.RESULT: {**pruned, "loss": 0.2}},
        {**base, s.EXP_KEY: "p", s.TID: 2, s.RESULT: {"status": "fail", "reason": "pruned", "pruned": True}},
        {**base, s.EXP_KEY: "p", s.TID: 3, s.RESULT: {"status": "fail", "reason": "diverged"}},
    ])
    Store(db).queue.ensure_indexes()
    view = Store(db).view
    assert view.best_trial("r")[s.TID] == 1
    assert view.best_trial("r", s.has_point)[s.TID] == 1
    assert view.best_trial("p") is None
    assert view.no_best_trial("p").startswith(
        "no trial that trained its whole budget has finished with status ok; 2 trial(s) with status ok "
        "were pruned")
    assert view.no_best_trial("none") == "no trial has finished with status ok yet"
