"""MongoTrials: hyperopt's Trials API over the job queue."""

from __future__ import annotations

import _thread
import copy
import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pymongo
import pytest
from hyperopt import STATUS_OK, Trials, base, fmin, hp, rand, tpe
from pymongo import monitoring
from pymongo.database import Database
from pymongo.errors import AutoReconnect, ConnectionFailure

from jobstore import schema as s
from jobstore import trials as trials_module
from jobstore.errors import TrialIdTaken
from jobstore.queue import JobQueue
from jobstore.retry import DatabaseOutage, retrying
from jobstore.schema import State
from jobstore.trials import MongoTrials
from objectives.registry import get_experiment
from tests.support.jobs import enqueue


class DocumentCounter(monitoring.CommandListener):
    """Counts whole job documents (not ``{_id, version}`` stubs) the server returned."""

    def __init__(self) -> None:
        self.documents = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name in ("find", "getMore"):
            cursor = event.reply.get("cursor", {})
            batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
            self.documents += sum(1 for doc in batch if s.MISC in doc)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def counted(db_url: str) -> Iterator[tuple[Database, DocumentCounter]]:
    counter = DocumentCounter()
    client: pymongo.MongoClient = pymongo.MongoClient(db_url, event_listeners=[counter])
    yield client.get_default_database(), counter
    client.close()


def finish_all(db: Database, run: str, loss: float = 1.0) -> int:
    queue = JobQueue(db)
    done = 0
    while (claim := queue.claim("w", exp_key=run)) is not None:
        queue.finish(claim, State.DONE, {"status": STATUS_OK, "loss": loss + claim.tid})
        done += 1
    return done


def test_refresh_is_incremental(counted: tuple[Database, DocumentCounter]) -> None:
    db, counter = counted
    enqueue(db, "r", 200)
    finish_all(db, "r")
    trials = MongoTrials(db, exp_key="r")
    assert len(trials) == 200
    counter.documents = 0
    trials.refresh()
    assert counter.documents == 0, "an idle refresh must not re-download the run"
    enqueue(db, "r", 3, seed=1)
    counter.documents = 0
    trials.refresh()
    assert len(trials) == 203
    assert counter.documents == 3


def test_refresh_sees_updates_of_known_trials(db: Database) -> None:
    enqueue(db, "r", 2)
    trials = MongoTrials(db, exp_key="r")
    assert trials.count_by_state_synced(State.NEW) == 2
    finish_all(db, "r", loss=0.25)
    trials.refresh()
    assert trials.count_by_state_synced(State.DONE) == 2
    assert sorted(trials.losses()) == [0.25, 1.25]
    assert trials.best_trial[s.TID] == 0
    assert trials.argmin == {"x": trials.best_trial[s.MISC]["vals"]["x"][0]}


def test_error_jobs_are_left_out_like_hyperopt_does(db: Database) -> None:
    enqueue(db, "r", 2)
    queue = JobQueue(db)
    claim = queue.claim("w", exp_key="r")
    queue.finish(claim, State.ERROR, {"status": "fail"}, {"type": "X", "message": "m"})
    trials = MongoTrials(db, exp_key="r")
    assert len(trials) == 1
    assert trials.count_by_state_unsynced(State.ERROR) == 1
    assert trials.count_by_state_unsynced([State.NEW, State.ERROR]) == 2


def test_count_by_state_rejects_unknown_states(db: Database) -> None:
    trials = MongoTrials(db, exp_key="r")
    with pytest.raises(ValueError, match="invalid job state"):
        trials.count_by_state_unsynced(9)


def test_trial_ids_are_unique_under_concurrent_allocation(db: Database) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def allocate() -> None:
        trials = MongoTrials(db, exp_key="r", refresh=False)
        for _ in range(10):
            ids = trials.new_trial_ids(3)
            with lock:
                got.extend(ids)

    threads = [threading.Thread(target=allocate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 120 and len(set(got)) == 120
    assert max(got) < 4 * 16 * 2  # blocks of 16 reserved per trials object, none lost twice


def test_trial_ids_are_per_run(db: Database) -> None:
    assert MongoTrials(db, exp_key="a").new_trial_ids(2) == [0, 1]
    assert MongoTrials(db, exp_key="b").new_trial_ids(1) == [0]


def _suggest(trials: MongoTrials, algo, n: int, seed: int) -> list[dict]:
    experiment = get_experiment("quadratic")
    return algo(trials.new_trial_ids(n), base.Domain(experiment.objective, experiment.space), trials, seed)


def test_ids_an_algorithm_left_unused_are_handed_out_again(db: Database) -> None:
    trials = enqueue(db, "r", 2)
    finish_all(db, "r")
    trials.refresh()
    past_startup = functools.partial(tpe.suggest, n_startup_jobs=2)
    for seed in range(5):
        docs = _suggest(trials, past_startup, 4, seed)  # past its startup, TPE returns one trial for four ids
        assert len(docs) == 1
        trials.insert_trial_docs(docs)
    tids = sorted(d[s.TID] for d in db.jobs.find({s.EXP_KEY: "r"}, {s.TID: 1}))
    assert tids == list(range(7))


def test_ids_of_an_earlier_call_are_not_handed_out_again(db: Database) -> None:
    trials = MongoTrials(db, exp_key="r")
    earlier = _suggest(trials, rand.suggest, 2, 0)
    later = trials.new_trial_ids(2)
    trials.insert_trial_docs(earlier[:1])
    assert not set(trials.new_trial_ids(4)) & set(later), "the caller may still insert these"


def test_one_call_s_ids_may_be_inserted_one_at_a_time(db: Database) -> None:
    trials = MongoTrials(db, exp_key="r")
    for doc in _suggest(trials, rand.suggest, 3, 0):
        trials.insert_trial_docs([doc])
    assert trials.insert_trial_docs(_suggest(trials, rand.suggest, 1, 1)) == [3]
    assert sorted(d[s.TID] for d in db.jobs.find({s.EXP_KEY: "r"})) == [0, 1, 2, 3]


def test_a_trial_copied_from_another_run_is_inserted_not_taken_for_a_retry(db: Database) -> None:
    source = enqueue(db, "a", 1)
    copy = MongoTrials(db, exp_key="b")
    doc = dict(source.trials[0], exp_key="b", tid=copy.new_trial_ids(1)[0])
    assert copy.insert_trial_docs([doc]) == [0]
    assert db.jobs.count_documents({s.EXP_KEY: "b"}) == 1
    assert db.jobs.count_documents({s.EXP_KEY: "a"}) == 1


def test_a_trial_id_used_twice_is_an_error_not_a_silent_drop(db: Database) -> None:
    first = MongoTrials(db, exp_key="r")
    first.insert_trial_docs(_suggest(first, rand.suggest, 1, 0))
    second = MongoTrials(db, exp_key="r")
    experiment = get_experiment("quadratic")
    reused = rand.suggest([0], base.Domain(experiment.objective, experiment.space), second, 1)
    with pytest.raises(TrialIdTaken, match=r"already has trials with ids \[0\]"):
        second.insert_trial_docs(reused)
    assert db.jobs.count_documents({s.EXP_KEY: "r"}) == 1


def test_inserted_jobs_carry_readable_params_and_experiment(db: Database) -> None:
    enqueue(db, "n", 5, experiment="nested")
    doc = db.jobs.find_one({s.EXP_KEY: "n"})
    assert doc[s.EXPERIMENT] == "nested"
    assert doc[s.PARAMS]["model"]["kind"] in {"quadratic", "sine", "constant"}
    assert doc[s.STATE] == State.NEW and doc[s.ATTEMPTS] == 0 and doc[s.MAX_ATTEMPTS] == 3


def test_attachments_roundtrip_and_are_scoped_to_the_run(db: Database) -> None:
    a, b = MongoTrials(db, exp_key="a"), MongoTrials(db, exp_key="b")
    a.attachments["weights"] = b"\x00\x01"
    a.attachments["weights"] = b"\x02"
    assert a.attachments["weights"] == b"\x02"
    assert "weights" in a.attachments and "weights" not in b.attachments
    assert list(a.attachments) == ["weights"]
    with pytest.raises(KeyError):
        b.attachments["weights"]
    del a.attachments["weights"]
    assert "weights" not in a.attachments


def test_trial_attachments(db: Database) -> None:
    trials = enqueue(db, "r", 1)
    trial = trials.trials[0]
    trials.trial_attachments(trial)["log"] = b"hello"
    assert trials.trial_attachments(trial)["log"] == b"hello"
    assert "log" in trials.trial_attachments(trial)


def test_registered_runs_store_no_pickled_domain(db: Database) -> None:
    trials = MongoTrials(db, exp_key="r", experiment="quadratic")
    trials.attachments["FMinIter_Domain"] = b"pickle"
    assert "FMinIter_Domain" not in trials.attachments


def test_delete_all_keeps_trial_ids_unique(db: Database) -> None:
    trials = enqueue(db, "r", 3)
    trials.attachments["a"] = b"1"
    trials.delete_all()
    assert len(trials) == 0 and db.jobs.count_documents({s.EXP_KEY: "r"}) == 0
    assert "a" not in trials.attachments
    assert trials.new_trial_ids(1) == [3]


def test_view_shares_the_database(db: Database) -> None:
    enqueue(db, "a", 2)
    assert len(MongoTrials(db, exp_key="b").view(exp_key="a")) == 2


def test_handle_db_and_store_are_what_the_readme_says(db: Database) -> None:
    """README, "Coming from hyperopt.mongoexp": ``trials.handle`` is the trials object
    itself, ``trials.db`` the pymongo database, ``trials.store`` the store."""
    from jobstore.store import Store

    trials = MongoTrials(db, exp_key="r")
    assert trials.handle is trials
    assert isinstance(trials.db, Database) and trials.db.name == db.name
    assert isinstance(trials.store, Store) and trials.store.db.name == db.name


@contextmanager
def evaluating_thread(db: Database, exp_key: str) -> Iterator[None]:
    """While the block runs, a thread claims ``exp_key``'s jobs through the queue and
    finishes each with the loss ``(x - 1) ** 2``, as a worker would."""
    stop = threading.Event()

    def serve() -> None:
        queue = JobQueue(db)
        while not stop.is_set():
            claim = queue.claim("thread", exp_key=exp_key)
            if claim is None:
                time.sleep(0.005)
                continue
            queue.finish(claim, State.DONE, {"status": STATUS_OK, "loss": (claim.job[s.PARAMS] - 1) ** 2})

    server = threading.Thread(target=serve)
    server.start()
    try:
        yield
    finally:
        stop.set()
        server.join()


def test_fmin_drives_the_store_like_base_trials(db: Database) -> None:
    """The same fmin call gives the same kind of answer as with in-memory Trials."""
    space = hp.uniform("x", -2, 2)
    with evaluating_thread(db, "f"):
        trials = MongoTrials(db, exp_key="f", experiment="quadratic")
        best = fmin(lambda x: 0, space, algo=tpe.suggest, max_evals=30, trials=trials,
                    max_queue_len=2, show_progressbar=False, rstate=__import__("numpy").random.default_rng(0))
    assert len(trials) == 30 and trials.count_by_state_unsynced(State.DONE) == 30
    # Statistical (which suggestions see which results depends on the thread's timing),
    # with a wide margin: the same fmin on in-memory Trials with 3000 seeds ended at most
    # 0.16 from x = 1, and a miss needs the 20 random startup points all outside
    # [0.5, 1.5] (0.75 ** 20 = 0.3%) and then the 10 model-guided ones too.
    assert abs(best["x"] - 1) < 0.5
    assert isinstance(trials, Trials)
    # a run a plain script made records no experiment, fingerprint, settings, max_evals
    # or algo (docs/schema.md says so); hpo-coord start writes those
    run = db[s.RUNS].find_one({s.ID: "f"})
    assert set(run) >= {s.ID, s.RUN_NEXT_TID, s.RUN_CREATED_AT}
    assert not set(run) & {s.RUN_EXPERIMENT, s.RUN_FINGERPRINT, s.RUN_SETTINGS, s.RUN_MAX_EVALS, s.RUN_ALGO}


class JobQueries(monitoring.CommandListener):
    """Records the filters of counts (``count_documents``: an aggregate with a leading
    ``$match``) and finds on the jobs collection."""

    def __init__(self) -> None:
        self.counts: list[dict] = []
        self.finds: list[dict] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "aggregate" and event.command.get("aggregate") == s.JOBS:
            self.counts.append(event.command["pipeline"][0]["$match"])
        elif event.command_name == "find" and event.command.get("find") == s.JOBS:
            self.finds.append(event.command["filter"])

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.parametrize("overlap_ms", [0, 1000])
def test_counts_are_current_while_final_jobs_are_read_from_the_refresh_window(
    db_url: str, overlap_ms: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default 1 s overlap everything here is inside the window; with none, the
    jobs finished before the refresh are counted from the local copy."""
    monkeypatch.setattr(trials_module, "REFRESH_OVERLAP", timedelta(milliseconds=overlap_ms))
    listener = JobQueries()
    client: pymongo.MongoClient = pymongo.MongoClient(db_url, event_listeners=[listener])
    db = client.get_default_database()
    try:
        enqueue(db, "r", 12)
        queue = JobQueue(db)
        for _ in range(3):
            claim = queue.claim("w", exp_key="r")
            queue.finish(claim, State.DONE, {"status": STATUS_OK, "loss": 1.0})
        claim = queue.claim("w", exp_key="r")
        queue.finish(claim, State.ERROR, {"status": "fail"}, {"type": "X", "message": "m"})
        time.sleep(0.01)
        trials = MongoTrials(db, exp_key="r")
        time.sleep(0.01)
        # written after the refresh: the counts must see them without another refresh
        for _ in range(2):
            claim = queue.claim("w", exp_key="r")
            queue.finish(claim, State.DONE, {"status": STATUS_OK, "loss": 2.0})
        running = queue.claim("w", exp_key="r")
        assert running is not None
        listener.counts.clear()
        listener.finds.clear()
        assert trials.count_by_state_unsynced(State.DONE) == 5
        assert trials.count_by_state_unsynced([State.DONE, State.ERROR]) == 6
        assert trials.count_by_state_unsynced([State.NEW, State.RUNNING]) == 6
        assert trials.count_by_state_unsynced(State.RUNNING) == 1
        assert trials.count_by_state_unsynced(State.CANCEL) == 0
        # the server counted only new and running jobs; final ones were read from the refresh window
        assert all(set(f[s.STATE]["$in"]) <= {State.NEW, State.RUNNING} for f in listener.counts), listener.counts
        assert listener.finds and all(s.UPDATED_AT in f for f in listener.finds), listener.finds
        # the same counts from the refreshed copy, and after the running one finished
        trials.refresh()
        assert trials.count_by_state_unsynced(State.DONE) == 5
        time.sleep(0.01)
        queue.finish(running, State.DONE, {"status": STATUS_OK, "loss": 3.0})
        assert trials.count_by_state_unsynced(State.DONE) == 6
        assert trials.count_by_state_unsynced(State.RUNNING) == 0
        assert trials.count_by_state_unsynced(State.DONE) == db.jobs.count_documents(
            {s.EXP_KEY: "r", s.STATE: State.DONE})
    finally:
        client.close()


def _hand_made(trials: MongoTrials, tids: list) -> list[int]:
    """The issue's reproduction: trials inserted through hyperopt's own API with any ids."""
    return trials.insert_trial_docs(trials.new_trial_docs(
        tids, [{"a": 1}] * len(tids), [{"status": "new"}] * len(tids),
        [{"tid": tid, "cmd": None, "idxs": {}, "vals": {}} for tid in tids]))


def test_trial_ids_of_mixed_types_are_presented_in_insertion_order(db: Database) -> None:
    trials = MongoTrials(db)
    _hand_made(trials, ["a", 5])
    _hand_made(trials, [4, "id0", 9])
    trials.refresh()
    assert trials.tids == ["a", 5, 4, "id0", 9], "stock MongoTrials' order: by _id, i.e. insertion order"
    again = MongoTrials(db)  # a new object on such a collection loads it too
    assert again.tids == ["a", 5, 4, "id0", 9]
    assert len(again.specs) == len(again.results) == len(again.miscs) == 5


def test_trials_with_hand_made_ids_sort_in_mongodb_s_order_of_types(db: Database) -> None:
    trials = MongoTrials(db, exp_key="r")
    _hand_made(trials, [0])
    for key, tid in [("b", 1), (7, 2), (2.5, 3), ({"k": 1}, 4)]:
        db.jobs.insert_one({**db.jobs.find_one({s.TID: 0}, {s.ID: 0}), s.ID: key, s.TID: tid,
                            s.MISC: {"tid": tid, "cmd": None, "idxs": {}, "vals": {}}})
    trials.refresh()
    assert trials.tids == [3, 2, 1, 0, 4]  # numbers, strings, ObjectIds, anything else


VALID_DONE = {
    s.STATE: State.DONE, s.TID: 100, s.SPEC: None, s.RESULT: {"status": STATUS_OK, "loss": 0.5},
    s.MISC: {"tid": 100, "cmd": None, "idxs": {"x": [100]}, "vals": {"x": [0.5]}},
}
MALFORMED = {
    "no tid": {k: v for k, v in VALID_DONE.items() if k != s.TID},
    "tid is a document": {**VALID_DONE, s.TID: {"n": 1}},
    "no misc": {k: v for k, v in VALID_DONE.items() if k != s.MISC},
    "misc is a string": {**VALID_DONE, s.MISC: "x"},
    "misc.tid differs": {**VALID_DONE, s.MISC: {**VALID_DONE[s.MISC], "tid": 7}},
    "vals is a list": {**VALID_DONE, s.MISC: {**VALID_DONE[s.MISC], "vals": [0.5]}},
    "vals not lists": {**VALID_DONE, s.MISC: {**VALID_DONE[s.MISC], "vals": {"x": 0.5}}},
    "idxs of another trial": {**VALID_DONE, s.MISC: {**VALID_DONE[s.MISC], "idxs": {"x": [3]}}},
    "result is a number": {**VALID_DONE, s.RESULT: 0.5},
    "result without status": {**VALID_DONE, s.RESULT: {"loss": 0.5}},
    "ok with a string loss": {**VALID_DONE, s.RESULT: {"status": STATUS_OK, "loss": "low"}},
    "no spec": {k: v for k, v in VALID_DONE.items() if k != s.SPEC},
    "state is a string": {**VALID_DONE, s.STATE: "x"},
    "no state": {k: v for k, v in VALID_DONE.items() if k != s.STATE},
    "updated_at is a string": {**VALID_DONE, s.MISC: "x", s.UPDATED_AT: "yesterday"},
}


def _renumbered(doc: dict, tid: int) -> dict:
    """``doc`` (of ``MALFORMED``) under trial id ``tid`` instead of 100, flaws kept."""
    doc = copy.deepcopy(doc)
    if doc.get(s.TID) == 100:
        doc[s.TID] = tid
    misc = doc.get(s.MISC)
    if isinstance(misc, dict) and misc["tid"] == 100:
        misc["tid"] = tid
        if isinstance(misc["idxs"], dict):
            misc["idxs"] = {label: [tid] if ids == [100] else ids for label, ids in misc["idxs"].items()}
    return doc


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_document_is_skipped_with_one_warning_naming_it(
    db: Database, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    enqueue(db, "r", 3)
    finish_all(db, "r")
    bad_id = db.jobs.insert_one({**MALFORMED[case], s.EXP_KEY: "r"}).inserted_id
    with caplog.at_level("WARNING", logger="jobstore.trials"):
        trials = MongoTrials(db, exp_key="r")
        trials.refresh()
        warnings = [r.getMessage() for r in caplog.records if r.name == "jobstore.trials"]
        assert len(warnings) == 1 and repr(bad_id) in warnings[0] and "'r'" in warnings[0], warnings
        _hand_made(trials, trials.new_trial_ids(1))  # later refreshes still work, without warning again
        caplog.clear()
        trials.refresh()
        assert not caplog.records
    assert len(trials) == 4 and bad_id not in [t[s.ID] for t in trials.trials]
    # what fmin and the coordinator read still works
    assert len(trials.losses()) == 4 and trials.best_trial[s.TID] == 0
    trials.count_by_state_unsynced(list(State))
    assert trials.count_by_state_synced(State.DONE) == 3


def test_a_document_of_another_search_space_is_skipped_once_fmin_knows_the_space(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """TPE reads every label of the space from every trial; a trial without them would crash it."""
    enqueue(db, "f", 2)
    finish_all(db, "f")
    stranger = db.jobs.insert_one({**VALID_DONE, s.EXP_KEY: "f", s.MISC: {
        "tid": 100, "cmd": None, "idxs": {"y": [100]}, "vals": {"y": [1.0]}}}).inserted_id
    # and the others at once (but a tid that is a document: RunStore.ensure's floor of the
    # run's trial ids does not take it yet, issue 12 defect 9, jobstore/runs.py)
    for tid, (case, bad) in enumerate(MALFORMED.items(), start=200):
        if case != "tid is a document":
            db.jobs.insert_one({**_renumbered(bad, tid), s.EXP_KEY: "f"})
    trials = MongoTrials(db, exp_key="f", experiment="quadratic")
    assert stranger in [t[s.ID] for t in trials.trials]  # a valid trial until the space is known
    with evaluating_thread(db, "f"), caplog.at_level("WARNING", logger="jobstore.trials"):
        fmin(lambda x: 0, get_experiment("quadratic").space, algo=tpe.suggest, max_evals=8, trials=trials,
             show_progressbar=False, rstate=__import__("numpy").random.default_rng(0))
    assert len(trials) == 8 and stranger not in [t[s.ID] for t in trials.trials]
    assert sum(repr(stranger) in r.getMessage() and "lacks labels" in r.getMessage() for r in caplog.records) == 1


def test_fmin_raises_a_clear_error_naming_the_server_once_the_outage_limit_is_spent(private_server) -> None:
    trials = MongoTrials(f"{private_server.url}/lib", exp_key="o", outage_timeout=1)
    private_server.stop()
    with pytest.raises(DatabaseOutage) as raised:
        fmin(lambda x: x ** 2, hp.uniform("x", -1, 1), algo=rand.suggest, max_evals=2, trials=trials,
             show_progressbar=False)
    message = str(raised.value)
    assert f"the database at mongodb://127.0.0.1:{private_server.port}/lib has been unreachable" in message
    assert "outage limit of 1 s" in message and "outage_timeout=" in message
    assert isinstance(raised.value.__cause__, ConnectionFailure)


def test_without_a_limit_the_store_waits_for_the_database_and_says_so(
    private_server, caplog: pytest.LogCaptureFixture
) -> None:
    """The coordinator's policy (outage_timeout=None): a refresh waits out the outage."""
    client: pymongo.MongoClient = pymongo.MongoClient(private_server.url, serverSelectionTimeoutMS=300)
    trials = MongoTrials(client["coord"], exp_key="o", outage_timeout=None)
    _hand_made(trials, trials.new_trial_ids(2))
    private_server.stop()
    failed: list[BaseException] = []

    def restart_server() -> None:
        try:
            private_server.start()
        except BaseException as exc:  # noqa: BLE001 - the refresh would wait forever: end it
            failed.append(exc)
            _thread.interrupt_main()

    restart = threading.Timer(3, restart_server)
    restart.start()
    try:
        with caplog.at_level("WARNING", logger="jobstore.retry"):
            trials.refresh()
    except KeyboardInterrupt:
        pytest.fail(f"the test server did not restart, so the refresh could only wait: {failed}")
    finally:
        restart.join()
        client.close()
    assert len(trials) == 2
    waiting = [r.getMessage() for r in caplog.records
               if "database unavailable during refreshing trials" in r.getMessage()]
    assert waiting and all(f"waiting for the database at mongodb://127.0.0.1:{private_server.port}/coord with no "
                           "time limit" in line for line in waiting), waiting
    assert any("database is back" in r.getMessage() for r in caplog.records)


def test_the_outage_error_masks_the_password() -> None:
    def unreachable() -> None:
        raise AutoReconnect("mongo-0:27017: connection refused")

    with pytest.raises(DatabaseOutage) as raised:
        retrying(unreachable, "counting trials", give_up_after=0, server="mongodb://coord:s3cret@mongo-0:27017/hpo",
                 sleep=lambda _: None)
    assert "coord:***@mongo-0:27017/hpo" in str(raised.value) and "s3cret" not in str(raised.value)


def test_outage_timeout_must_be_a_duration(db: Database) -> None:
    with pytest.raises(ValueError, match="outage_timeout"):
        MongoTrials(db, outage_timeout=-1)


def test_a_runs_trials_leave_out_a_tid_that_is_not_an_integer(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    """Found by the chaos suite: a job of an hpo-coord run with ``tid: "abc"`` among the
    run's integer tids was presented as a trial, and TPE's sort by tid raised TypeError in
    the coordinator.  A run's tids come from its integer counter (and the queue marks any
    other tid as malformed), so such a document is left out with one warning."""
    trials = enqueue(db, "r", 3)
    stray = {**db.jobs.find_one({s.EXP_KEY: "r", s.TID: 0}, {s.ID: 0}), s.TID: "abc"}
    stray[s.MISC] = {**stray[s.MISC], "tid": "abc", "idxs": {label: ["abc"] for label in stray[s.MISC]["idxs"]}}
    db.jobs.insert_one(stray)
    with caplog.at_level("WARNING", logger="jobstore.trials"):
        trials.refresh()
        trials.refresh()
    assert trials.tids == [0, 1, 2]
    warnings = [r.getMessage() for r in caplog.records if r.name == "jobstore.trials"]
    assert len(warnings) == 1 and "tid is 'abc', not an integer" in warnings[0]
    exp = get_experiment("quadratic")
    suggested = tpe.suggest(trials.new_trial_ids(1), base.Domain(exp.objective, exp.space), trials, 0)
    assert len(suggested) == 1
    assert MongoTrials(db, exp_key="r").tids.count("abc") == 1, "plain hyperopt trials still take any tid"
