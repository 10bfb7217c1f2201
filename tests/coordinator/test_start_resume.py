"""``hpo-coord start`` on an existing run: what a resume keeps of ``--max-evals``."""

from __future__ import annotations

import logging

import pytest
from pymongo.database import Database

from coordinator.start import StartOptions, refuse_max_evals_below_done, run_max_evals
from jobstore import schema as s
from jobstore.schema import State
from objectives.digits import digits
from tests.support.processes import RECORDING, run_cli
from user_errors import UserError


def options(max_evals: int | None) -> StartOptions:
    return StartOptions(run="r", max_evals=max_evals, algo=None)


def test_max_evals_is_the_option_else_the_run_s_own_else_the_experiment_s(caplog: pytest.LogCaptureFixture) -> None:
    assert run_max_evals(digits, options(None), None) == digits.max_evals
    assert run_max_evals(digits, options(None), {s.RUN_MAX_EVALS: 200}) == 200
    assert run_max_evals(digits, options(7), {s.RUN_MAX_EVALS: 200}) == 7
    with caplog.at_level(logging.WARNING):
        assert run_max_evals(digits, options(None), {s.RUN_MAX_EVALS: "lots"}) == digits.max_evals
    assert "stored max_evals 'lots' is not a positive integer" in caplog.text


def test_a_max_evals_below_the_trials_done_is_refused_saying_what_to_pass() -> None:
    refuse_max_evals_below_done("r", 30, {s.RUN_MAX_EVALS: 50}, done=30)  # ends once running ones finish
    with pytest.raises(UserError, match=r"run 'r' has 30 trials done.*2 would end it at once\. Pass more than 30 "
                                        r"to run more trials, or leave --max-evals out to keep the run's 50"):
        refuse_max_evals_below_done("r", 2, {s.RUN_MAX_EVALS: 50}, done=30)


def _start(db_url: str, *max_evals: str):
    return run_cli("coordinator", "start", "--exp", "recording", "--objective", RECORDING, "--mongo", db_url,
                   "--run", "m", *max_evals, "--local-workers", "1", "--queue", "2", url=db_url, timeout=300)


def test_a_resume_keeps_the_run_s_max_evals_and_refuses_fewer_than_are_done(db: Database, db_url: str) -> None:
    """The resume command the Ctrl-C hint prints names no --max-evals: the run keeps its
    own (it took the experiment's, 20 for recording, and ran 16 more trials); a --max-evals below the
    trials done is refused before anything is written."""
    first = _start(db_url, "--max-evals", "4")
    assert first.returncode == 0, first.stdout + first.stderr
    resumed = _start(db_url)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert db.jobs.count_documents({s.EXP_KEY: "m"}) == 4
    assert db.runs.find_one({s.ID: "m"})[s.RUN_MAX_EVALS] == 4
    lowered = _start(db_url, "--max-evals", "2")
    assert lowered.returncode == 2, lowered.stdout + lowered.stderr
    assert "run 'm' has 4 trials done" in " ".join(lowered.stderr.split())
    assert db.runs.find_one({s.ID: "m"})[s.RUN_MAX_EVALS] == 4
    assert db.jobs.count_documents({s.EXP_KEY: "m", s.STATE: {"$ne": State.DONE}}) == 0
