"""Run documents: identity, trial-id counter, coordinator lease."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from pymongo.database import Database

from jobstore import schema as s
from jobstore.errors import CoordinatorBusy, RunMismatch
from jobstore.runs import MalformedRun, RunStore
from tests.support.jobs import enqueue


def test_resume_with_another_space_or_experiment_is_refused(db: Database) -> None:
    runs = RunStore(db)
    runs.ensure("r", experiment="quadratic", fingerprint="aaa", settings={"epochs": 1})
    runs.ensure("r", experiment="quadratic", fingerprint="aaa", settings={"epochs": 2})
    assert runs.get("r")["settings"] == {"epochs": 2}
    with pytest.raises(RunMismatch, match="another search space or objective version"):
        runs.ensure("r", experiment="quadratic", fingerprint="bbb")
    with pytest.raises(RunMismatch, match="belongs to experiment 'quadratic', not 'sphere'"):
        runs.ensure("r", experiment="sphere", fingerprint="aaa")


def test_counter_starts_above_existing_jobs(db: Database) -> None:
    enqueue(db, "r", 5)
    db.runs.delete_many({})
    runs = RunStore(db)
    runs.ensure("r")
    assert runs.allocate_tids("r", 2) == [5, 6]


def test_one_coordinator_per_run_and_takeover_after_expiry(db: Database) -> None:
    runs = RunStore(db)
    runs.ensure("r", experiment="quadratic", fingerprint="f")
    first = runs.acquire_coordinator("r", lease_s=30.0)
    holder = runs.get("r")[s.RUN_COORDINATOR]
    assert holder["expires"] - holder["since"] == timedelta(seconds=30)  # one server "now" for both
    with pytest.raises(CoordinatorBusy, match="already being coordinated by .* pid"):
        runs.acquire_coordinator("r", lease_s=30.0)
    # a renewal sets the lease it asks for: a short one, so this test can outlive it
    # without a 1 s lease that a busy host could outlive before the busy check above
    assert runs.renew_coordinator("r", first, lease_s=0.5)
    time.sleep(1.0)
    second = runs.acquire_coordinator("r", lease_s=30.0)
    assert second != first
    assert not runs.renew_coordinator("r", first, lease_s=1.0)
    runs.release_coordinator("r", first)  # a stale release changes nothing
    with pytest.raises(CoordinatorBusy):
        runs.acquire_coordinator("r", lease_s=30.0)
    runs.release_coordinator("r", second)
    runs.acquire_coordinator("r", lease_s=30.0)


# -- malformed run documents and jobs (issue 12, defect 9) -------------------------------


def test_ensure_ignores_jobs_with_a_malformed_tid_when_setting_the_counter(db: Database) -> None:
    enqueue(db, "r", 3)
    db.jobs.insert_many([{"exp_key": "r", "tid": "abc", "state": 0}, {"exp_key": "r", "state": 0},
                         {"exp_key": "r", "tid": float("inf"), "state": 0},
                         {"exp_key": "r", "tid": float("nan"), "state": 0},
                         {"exp_key": "r", "tid": 2.5, "state": 0}])
    db.runs.delete_many({})
    runs = RunStore(db)
    runs.ensure("r")
    assert runs.allocate_tids("r", 1) == [3]


def test_ensure_on_a_damaged_counter_says_how_to_repair_it(db: Database) -> None:
    enqueue(db, "r", 3)
    db.runs.update_one({"_id": "r"}, {"$set": {"next_tid": "x"}})
    with pytest.raises(MalformedRun, match=r"counter 'next_tid' is 'x', not an integer\. Repair it with "
                       r"db\.runs\.updateOne\(\{_id: 'r'\}, \{\$set: \{next_tid: 3\}\}\)"):
        RunStore(db).ensure("r")


@pytest.mark.parametrize("holder", ["someone", {"host": "h", "pid": 1}, {"expires": "never"}, 7])
def test_a_malformed_coordinator_field_is_taken_over(db: Database, holder: object) -> None:
    runs = RunStore(db)
    runs.ensure("r", experiment="quadratic", fingerprint="f")
    db.runs.update_one({"_id": "r"}, {"$set": {"coordinator": holder}})
    token = runs.acquire_coordinator("r", lease_s=30.0)
    assert runs.renew_coordinator("r", token, lease_s=30.0)
    with pytest.raises(CoordinatorBusy):
        runs.acquire_coordinator("r", lease_s=30.0)
