"""Chaos: malformed documents injected during a run, and results BSON cannot hold."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pymongo.database import Database

from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.schema import State
from tests.support.chaos import INJECTED, Chaos, Figures, audit, read_records, seed_for

pytestmark = pytest.mark.chaos

WORKER = ["--heartbeat", "0.5", "--lease", "3", "--poll-max", "0.05", "--connect-timeout", "10"]


def _job(db: Database, run: str, tid: Any, x: float, kind: str, state: State = State.NEW) -> dict[str, Any]:
    """A job document as fmin inserts it, ready to be damaged."""
    return {
        s.EXP_KEY: run, s.TID: tid, s.STATE: state, s.SPEC: None, s.RESULT: {"status": "new"},
        s.MISC: {"tid": tid, "cmd": ["domain_attachment", "FMinIter_Domain"], "workdir": None,
                 "idxs": {"x": [tid]}, "vals": {"x": [x]}},
        s.OWNER: None, s.VERSION: 0, s.BOOK_TIME: None, s.REFRESH_TIME: None, s.PARAMS: x,
        s.ATTEMPTS: 0, s.MAX_ATTEMPTS: 3, s.UPDATED_AT: server_time(db), s.EXPERIMENT: "chaos",
        INJECTED: kind,
    }


def malformed_jobs(db: Database, run: str) -> list[dict[str, Any]]:
    """One job of ``run`` for each way a job document can be damaged."""
    expired = {"token": "injected", "expires": server_time(db) - timedelta(minutes=5)}
    running = {s.STATE: State.RUNNING, s.OWNER: "ghost:1", s.LEASE: expired, s.ATTEMPTS: 1}
    docs = [
        {**_job(db, run, 0, 0.1, "no tid"), **running},
        _job(db, run, "abc", 0.2, "tid 'abc'"),
        {**_job(db, run, 90003, 0.3, "attempts 'x'"), s.ATTEMPTS: "x"},
        {**_job(db, run, 90004, 0.4, "lease not a dict"), **running, s.LEASE: "x"},
        {**_job(db, run, 90005, 0.5, "lease not a dict, expired"), **running,
         s.LEASE: [{"token": "injected", "expires": expired["expires"]}]},
        _job(db, run, 90006, 0.6, "misc missing"),
        _job(db, run, 90007, 0.7, "vals not a list"),
        {**_job(db, run, 90008, 0.8, "misc not a dict"), s.MISC: "x"},
    ]
    del docs[0][s.TID]
    del docs[5][s.MISC]
    docs[6][s.MISC]["vals"] = {"x": 0.7}
    return docs


# What a claim followed by a release (a worker refusing the job's run) rewrites.
_BOOKKEEPING = {s.VERSION, s.UPDATED_AT, s.OWNER, s.BOOK_TIME, s.REFRESH_TIME, s.LEASE, s.METRICS, s.STARTED_AT}


def _queue_fields(doc: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in doc.items() if key not in _BOOKKEEPING}


MALFORMED_RUNS: list[dict[str, Any]] = [
    {s.ID: "other", s.RUN_EXPERIMENT: "chaos", s.RUN_SETTINGS: "not a dict", s.RUN_NEXT_TID: "abc",
     s.RUN_COORDINATOR: "x", INJECTED: "run fields of the wrong type"},
    {s.ID: 12345, s.RUN_EXPERIMENT: 5, s.RUN_COORDINATOR: {"expires": "soon", "pid": "x"},
     INJECTED: "run id not a string"},
    {s.ID: "bare", INJECTED: "run with no fields"},
]


def test_malformed_documents_injected_during_a_run(db: Database, db_url: str, make_chaos: Callable[..., Chaos],
                                                   chaos_report: Callable[[Figures], None]) -> None:
    """Damaged job documents (in this run and another) and damaged run documents appear
    mid-run.  Each damaged job ends as an error or is left alone (skipped); no worker,
    keeper or requeuer dies; the run still ends at exactly max-evals; the monitoring
    commands still answer without a traceback."""
    max_evals = 30
    chaos = make_chaos("malformed-documents", db_url, db, seed_for(1205))
    chaos.start_worker("--run", "chaos", *WORKER)
    chaos.start_worker(*WORKER)  # any run: meets the other run's jobs too
    chaos.start_worker(*WORKER)
    coordinator = chaos.start_coordinator("--max-evals", str(max_evals), "--lease", "3", "--queue", "3",
                                          "--set", "sleep=0.1", "--connect-timeout", "10")
    chaos.wait_until(lambda: chaos.done() >= 6 or not coordinator.alive, 180, "the first trials")
    injected = malformed_jobs(db, "chaos") + malformed_jobs(db, "other")
    db.jobs.insert_many(injected)
    db.runs.insert_many(MALFORMED_RUNS)
    chaos.faults["malformed document"] += len(injected) + len(MALFORMED_RUNS)
    code = chaos.wait_exit(coordinator, 240, during=lambda: chaos.replace_dead_workers(
        lambda: chaos.start_worker(*WORKER)))
    coordinator.expected_exit = {0}

    commands = [["status", "--run", "chaos"], ["status", "--run", "other"], ["runs"], ["trials", "--run", "chaos"],
                ["trials", "--run", "other"], ["best", "--run", "chaos"]]
    answers = {" ".join(args): chaos.cli(*args) for args in commands}
    chaos.finish()
    figures, violations = audit(chaos)
    outcomes: dict[str, str] = {}
    for doc in injected:
        now = db.jobs.find_one({s.ID: doc[s.ID]})
        label = f"{doc[s.EXP_KEY]}: {doc[INJECTED]}"
        if now is None:
            violations.append(f"{label}: the document was deleted")
        elif now == doc:
            outcomes[label] = "left alone"
        elif _queue_fields(now) == _queue_fields(doc) and now.get(s.STATE) == State.NEW:
            outcomes[label] = "handed back unchanged (a worker refused its run)"
        elif now.get(s.STATE) in (State.ERROR, State.CANCEL, State.DONE):
            outcomes[label] = f"{State(now[s.STATE]).name.lower()}: {(now.get(s.ERROR) or {}).get('message')}"
            if now[s.STATE] == State.ERROR and not (now.get(s.ERROR) or {}).get("message"):
                violations.append(f"{label}: an error without a message: {now}")
        else:
            violations.append(f"{label}: changed but not finished: {now}")
    for command, answer in answers.items():
        output = answer.stdout + answer.stderr
        if answer.returncode not in (0, 2) or "Traceback" in output:
            violations.append(f"hpo-coord {command} exited {answer.returncode}:\n{output[-3000:]}")
    figures.notes["injected"] = outcomes
    chaos_report(figures)
    print(json.dumps(outcomes, indent=1), flush=True)
    assert code == 0, chaos.describe([coordinator])
    assert not violations, "\n".join(violations)
    assert figures.trials == max_evals and figures.done == max_evals, figures
    chaos.check_processes()


def test_poison_results(db: Database, db_url: str, make_chaos: Callable[..., Chaos],
                        chaos_report: Callable[[Figures], None]) -> None:
    """Each worker's 2nd and 5th evaluations return an integer of 2**64 and its 3rd a
    17 MB string, neither of which BSON can hold.  Those trials end as errors with a
    reason, the others are done, the run ends with max-evals trials in a final state
    (fmin does not replace errors), and no worker dies."""
    max_evals = 24
    chaos = make_chaos("poison-results", db_url, db, seed_for(1206))
    start = lambda: chaos.start_worker("--run", "chaos", *WORKER)  # noqa: E731
    start()
    start()
    coordinator = chaos.start_coordinator(
        "--max-evals", str(max_evals), "--lease", "3", "--queue", "2", "--set", "sleep=0.05",
        "--set", 'poison={"int": [2, 5], "text": [3]}',
        "--connect-timeout", "10")
    code = chaos.wait_exit(coordinator, 240, during=lambda: chaos.replace_dead_workers(start))
    coordinator.expected_exit = {0}
    chaos.finish()
    figures, violations = audit(chaos)
    poisoned = {r["x"]: r["poison"] for r in read_records(chaos.records) if r["event"] == "eval" and r["poison"]}
    chaos.faults["poison result"] += len(poisoned)
    figures.faults = chaos.fault_count
    figures.fault_kinds = dict(chaos.faults)
    reasons: dict[str, int] = {}
    for job in db.jobs.find({s.EXP_KEY: "chaos"}):
        kind = poisoned.get(job[s.PARAMS])
        if kind is None:
            if job[s.STATE] != State.DONE:
                violations.append(f"tid {job[s.TID]} was not poisoned but is in state {job[s.STATE]}")
            continue
        error = job.get(s.ERROR) or {}
        if job[s.STATE] != State.ERROR or not error.get("message") or job[s.RESULT].get("status") != "fail":
            violations.append(f"tid {job[s.TID]} returned a {kind} BSON cannot hold but ended as "
                              f"state {job[s.STATE]}, result {job[s.RESULT]}, error {error}")
        reason = f"{kind}: {error.get('reason') or job[s.RESULT].get('reason')}"
        reasons[reason] = reasons.get(reason, 0) + 1
    figures.notes["poisoned"] = reasons
    chaos_report(figures)
    assert code == 0, chaos.describe([coordinator])
    assert set(poisoned.values()) == {"int", "text"}, poisoned
    assert not violations, "\n".join(violations)
    assert figures.trials == max_evals and figures.unfinished == 0, figures
    assert figures.errors == len(poisoned), figures
    chaos.check_processes()
