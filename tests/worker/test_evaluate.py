"""worker.evaluate without a database: what becomes of results, exceptions and job fields."""

from __future__ import annotations

import threading

import pytest

from jobstore import schema as s
from jobstore.schema import State
from worker.evaluate import (
    MAX_RESULT_BYTES,
    MESSAGE_LIMIT,
    TRACEBACK_LIMIT,
    MalformedJob,
    clip,
    from_exception,
    interpret,
    job_command,
    job_experiment,
    job_vals,
    pruned,
)
from worker.timeout import TrialTimer


def test_clip_says_how_much_was_cut_and_can_keep_the_end() -> None:
    assert clip("short", 10) == "short"
    assert clip("a" * 30, 10) == "a" * 10 + " [... 20 characters cut]"
    kept = clip("h" * 50 + "t" * 50, 40, keep_tail=True)
    assert kept.startswith("h" * 10) and kept.endswith("t" * 30) and "60 characters cut" in kept


def test_a_huge_exception_is_stored_small_with_its_innermost_frame() -> None:
    def innermost() -> None:
        raise ValueError("boom " + "x" * 3_000_000)

    try:
        innermost()
    except ValueError as exc:
        outcome = from_exception(exc)
    assert outcome.state == State.ERROR and outcome.error is not None
    assert len(outcome.error["message"]) < MESSAGE_LIMIT + 50
    assert len(outcome.error["traceback"]) < TRACEBACK_LIMIT + 50
    assert "innermost" in outcome.error["traceback"] and "characters cut" in outcome.error["traceback"]


@pytest.mark.parametrize("value, text", [
    ({"loss": 1.0, "n": 2**64}, "OverflowError"),
    ({"loss": 1.0, "a\x00b": 1}, "InvalidDocument"),
    ({"loss": 1.0, "s": "\ud800"}, "UnicodeEncodeError"),
    ({"loss": 1.0, "blob": b"x" * (MAX_RESULT_BYTES + 1)}, f"more than the {MAX_RESULT_BYTES}"),
])
def test_results_mongodb_cannot_hold_are_unstorable_errors(value: dict, text: str) -> None:
    outcome = interpret(value)
    assert outcome.state == State.ERROR and outcome.error is not None
    assert outcome.error["reason"] == "unstorable result"
    assert outcome.error["message"].startswith("result cannot be stored: ") and text in outcome.error["message"]


def test_results_that_cannot_be_read_are_invalid() -> None:
    selfish: dict = {"loss": 1.0}
    selfish["me"] = selfish
    assert interpret(selfish).error["reason"] == "invalid result"
    assert interpret(10**400).error["reason"] == "invalid result"
    assert interpret({"loss": 0.5, "extra": [1, 2]}).state == State.DONE


@pytest.mark.parametrize("job, text", [
    ({}, "no 'misc'"),
    ({"misc": [1]}, "'misc' is of type list"),
    ({"misc": {}}, "'misc.vals' is of type null"),
    ({"misc": {"vals": {"x": None}}}, "'misc.vals.x' is of type null"),
])
def test_malformed_vals_name_the_field(job: dict, text: str) -> None:
    with pytest.raises(MalformedJob, match=text.replace("(", r"\(").replace(")", r"\)")):
        job_vals(job)


def test_experiment_and_command_fields_are_checked() -> None:
    assert job_experiment({"experiment": "digits"}) == "digits"
    assert job_experiment({}) is None
    with pytest.raises(MalformedJob, match="'experiment' is of type dict"):
        job_experiment({"experiment": {"$gt": ""}})
    assert job_command({"misc": {"cmd": ["domain_attachment", "FMinIter_Domain"]}}) == (
        "domain_attachment", "FMinIter_Domain")
    assert job_command({"misc": {}}) is None
    with pytest.raises(MalformedJob, match="'misc.cmd'"):
        job_command({"misc": {"cmd": "domain_attachment"}})


def test_the_trial_timer_fires_once_and_not_after_the_trial_ended() -> None:
    expired = threading.Event()
    with TrialTimer(0.05, 60, name="t", on_expired=expired.set, on_hung=lambda: None) as timer:
        assert expired.wait(10)
    assert timer.expired
    quiet = threading.Event()
    with TrialTimer(60, 60, name="t", on_expired=quiet.set, on_hung=lambda: None) as timer:
        pass
    assert not timer.expired and not quiet.is_set()
    with TrialTimer(None, 0, name="t", on_expired=quiet.set, on_hung=lambda: None) as timer:
        pass
    assert not timer.expired


def test_a_pruned_trial_carries_the_loss_it_reported_else_it_is_a_failure() -> None:
    kept = pruned(3, 0.4, 0.4)
    assert kept.state == State.DONE
    assert kept.result == {"status": "ok", "loss": 0.4, "pruned": True, "pruned_step": 3, "pruned_value": 0.4}
    for loss in (None, float("nan"), "0.4"):
        failed = pruned(3, 0.9, loss)
        assert failed.state == State.DONE and failed.error is None
        assert failed.result == {"status": "fail", "reason": "pruned", "pruned": True, "pruned_step": 3,
                                 "pruned_value": 0.9}


def test_the_pruned_result_keys_are_the_schemas_queried_paths() -> None:
    """A pruned trial's result uses the schema's key names, which the queries (status,
    pruning's population, the ``run_pruned`` index) use as dotted paths."""
    result = pruned(3, 0.9, 0.4).result
    assert {s.RESULT_PRUNED, s.RESULT_PRUNED_STEP, s.RESULT_PRUNED_VALUE} <= result.keys()
    assert s.PRUNED == f"{s.RESULT}.{s.RESULT_PRUNED}" and s.PRUNED_STEP == f"{s.RESULT}.{s.RESULT_PRUNED_STEP}"
