"""Run documents: identity, trial-id counter, coordinator lease."""

from __future__ import annotations

import time

import pytest
from pymongo.database import Database

from jobstore.errors import CoordinatorBusy, RunMismatch
from jobstore.runs import RunStore
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
    first = runs.acquire_coordinator("r", lease_s=1.0)
    with pytest.raises(CoordinatorBusy, match="already being coordinated by .* pid"):
        runs.acquire_coordinator("r", lease_s=1.0)
    assert runs.renew_coordinator("r", first, lease_s=1.0)
    time.sleep(1.2)
    second = runs.acquire_coordinator("r", lease_s=30.0)
    assert second != first
    assert not runs.renew_coordinator("r", first, lease_s=1.0)
    runs.release_coordinator("r", first)  # a stale release changes nothing
    with pytest.raises(CoordinatorBusy):
        runs.acquire_coordinator("r", lease_s=30.0)
    runs.release_coordinator("r", second)
    runs.acquire_coordinator("r", lease_s=30.0)
