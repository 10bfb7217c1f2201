"""The dashboard's JSON API against the test server, on the run of tests/support/dashboard.py.

Expected values come from what the seeding wrote (or from the documents themselves),
not from coordinator.monitor.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pymongo
import pytest
from bson import Decimal128
from pymongo.database import Database
from starlette.testclient import TestClient

from coordinator.dashboard.app import COOKIE, create_app
from coordinator.dashboard import data as dashboard_data
from coordinator.dashboard import live
from coordinator.dashboard.data import MAX_PAGE, TOP_CURVES, TRIAL_SORTS, DashboardData
from coordinator.dashboard.live import ANY_RUN_KEY, POLLING, STREAM, WORKERS_KEY, ChangeFeed
from jobstore import schema as s
from jobstore.retry import DatabaseOutage
from jobstore.schema import State
from jobstore.view import ReadOnlyView
from jobstore.queue import JobQueue
from jobstore.workers import WorkerRegistry
from tests.support.dashboard import (DEAD_WORKER, EPOCHS, LEAKY_URL, LIVE_WORKER, PRUNER, RUN, SECRET, Seeded,
                                     WatchFails, finish_next, seed)
from tests.support.processes import wait_for

WAIT_S = 30.0
"""How long a test waits for the feed to see a change (a timeout, not a speed claim)."""


@pytest.fixture(scope="module")
def seeded(mongo_server_url: str) -> Iterator[tuple[Database, Seeded]]:
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_server_url)
    db = client[f"t_dashboard_{uuid.uuid4().hex[:6]}"]
    yield db, seed(db, pruned=4)
    client.drop_database(db.name)
    client.close()


@pytest.fixture(scope="module")
def client(seeded: tuple[Database, Seeded]) -> Iterator[TestClient]:
    db, _ = seeded
    with TestClient(create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db))) as test_client:
        yield test_client


def get(client: TestClient, url: str, status: int = 200, **params: Any) -> Any:
    response = client.get(url, params=params)
    assert response.status_code == status, response.text
    assert SECRET not in response.text
    return response.json()


def test_runs(client: TestClient, seeded: tuple[Database, Seeded]) -> None:
    _, sd = seeded
    [run] = get(client, "/api/runs")["runs"]
    assert run["run"] == RUN and run["experiment"] == "nested" and run["algo"] == "tpe"
    assert run["counts"] == {"new": len(sd.new), "running": 2, "done": len(sd.done), "error": len(sd.errors),
                             "cancel": 0, "total": len(sd.done) + len(sd.errors) + 2 + len(sd.new)}
    assert run["best_loss"] == min(sd.done.values())
    assert run["max_evals"] == sd.max_evals and run["eta_s"] > 0
    assert run["pruner"] == PRUNER.to_document()
    assert run["pruner_text"] == "asha on val_loss (minimize): min_resource 1, max_resource 3, reduction_factor 2"


def test_a_run_without_a_pruner_says_none(db: Database) -> None:
    seed(db, done=2, errors=0, new=1)
    with TestClient(create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db, use_stream=False))) as c:
        [run] = get(c, "/api/runs")["runs"]
        summary = get(c, f"/api/runs/{RUN}")
    assert (run["pruner"], run["pruner_text"]) == (None, "none")
    assert (summary["pruner"], summary["pruner_text"], summary["pruning"]) == (None, "none", None)


@pytest.mark.parametrize("stored, text", [
    ("asha", "none"), ({"kind": "none"}, "none"), ({"kind": None}, "none"),
    ({"kind": "asha", "max_resource": "x", "min_resource": {"nested": 1}},
     "asha on ? (?): min_resource {'nested': 1}, max_resource x"),
])
def test_a_malformed_pruner_setting_is_shown_as_stored(db: Database, stored: Any, text: str) -> None:
    seed(db, done=1, errors=0, new=1)
    db[s.RUNS].update_one({s.ID: RUN}, {"$set": {f"{s.RUN_SETTINGS}.{s.RUN_PRUNER}": stored}})
    data = DashboardData(ReadOnlyView(db))
    [run] = data.runs()
    assert run["pruner_text"] == text and data.summary(RUN)["pruner_text"] == text


@pytest.mark.parametrize("settings, text", [
    ({"kind": "median", "metric": "loss", "direction": "minimize", "max_resource": 15, "min_resource": 1,
      "reduction_factor": 3, "warmup_steps": 2, "startup_trials": 5},
     "median on loss (minimize): warmup_steps 2, startup_trials 5, max_resource 15"),
    ({"kind": "hyperband", "metric": "acc", "direction": "maximize", "max_resource": 27, "min_resource": 1,
      "reduction_factor": 3}, "hyperband on acc (maximize): min_resource 1, max_resource 27, reduction_factor 3"),
    ({"kind": "future", "metric": "loss", "eta": 4}, "future on loss (?): eta 4"),
    (None, "none"),
])
def test_pruner_text_shows_each_kinds_settings(settings: dict[str, Any] | None, text: str) -> None:
    assert dashboard_data.pruner_text(settings) == text


def test_summary_best_and_workers(client: TestClient, seeded: tuple[Database, Seeded]) -> None:
    db, sd = seeded
    summary = get(client, f"/api/runs/{RUN}")
    best_tid = min(sd.done, key=sd.done.__getitem__)
    assert summary["best"]["tid"] == best_tid and summary["best"]["loss"] == sd.done[best_tid]
    assert summary["best"]["params"] == db[s.JOBS].find_one({s.EXP_KEY: RUN, s.TID: best_tid})[s.PARAMS]
    workers = {w["id"]: w for w in summary["workers"]}
    assert workers[DEAD_WORKER]["stale"] and workers[DEAD_WORKER]["state"] == "lost"
    assert not workers[LIVE_WORKER]["stale"] and workers[LIVE_WORKER]["current"] == {"exp_key": RUN, "tid": sd.running}
    assert [j["tid"] for j in summary["stale"]] == [sd.stale]
    assert summary["feed"]["mode"] in (STREAM, POLLING)
    assert summary["pruner"] == PRUNER.to_document() and summary["pruner_text"].startswith("asha on val_loss")
    assert summary["pruning"] == {"pruned": len(sd.pruned),
                                  "steps_saved": sum(EPOCHS - step for step in sd.pruned.values())}


def test_a_best_loss_stored_as_a_decimal_is_passed_over(db: Database) -> None:
    """A loss written as NumberDecimal (by hand, in mongosh) is a number to the server's
    best-trial query but no float: the runs list and the summary failed with a 500."""
    sd = seed(db, done=3, errors=0, new=1)
    lowest = min(sd.done, key=sd.done.__getitem__)
    db[s.JOBS].update_one({s.EXP_KEY: RUN, s.TID: lowest}, {"$set": {s.LOSS: Decimal128("-1")}})
    runner_up = min((t for t in sd.done if t != lowest), key=sd.done.__getitem__)
    with TestClient(create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db, use_stream=False))) as c:
        assert get(c, "/api/runs")["runs"][0]["best_loss"] == sd.done[runner_up]
        assert get(c, f"/api/runs/{RUN}")["best"]["tid"] == runner_up


def test_a_max_evals_too_far_ahead_for_an_eta_has_none(db: Database) -> None:
    """An ETA past what a timedelta holds (a max_evals of 2**62 in the run document)
    failed the runs list and the summary with a 500 (OverflowError)."""
    seed(db, done=3, errors=0, new=1)
    db[s.RUNS].update_one({s.ID: RUN}, {"$set": {s.RUN_MAX_EVALS: 2**62}})
    with TestClient(create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db, use_stream=False))) as c:
        [run] = get(c, "/api/runs")["runs"]
        summary = get(c, f"/api/runs/{RUN}")
    assert run["max_evals"] == summary["max_evals"] == 2**62 and run["per_hour"] > 0
    assert run["eta_s"] is None and summary["eta_s"] is None


def test_run_names_that_are_not_strings_are_listed_as_text(db: Database) -> None:
    """A job whose exp_key is a document or a decimal, or a run document with such an
    _id, failed the runs list and every unknown-run answer with a 500 (unhashable), and
    the polling feed's thread with them, which takes the dashboard down."""
    seed(db, done=1, errors=0, new=1)
    db[s.JOBS].insert_many([{s.EXP_KEY: {"name": "x"}, s.TID: 0, s.STATE: int(State.NEW)},
                            {s.EXP_KEY: Decimal128("1.5"), s.TID: 0, s.STATE: int(State.NEW)}])
    db[s.RUNS].insert_one({s.ID: Decimal128("2.5"), s.RUN_EXPERIMENT: "nested"})
    with TestClient(create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db, use_stream=False))) as c:
        names = [run["run"] for run in get(c, "/api/runs")["runs"]]
        assert "unknown run 'nope'" in get(c, "/api/runs/nope", 404)["error"]
    assert sorted(names) == sorted([RUN, "{'name': 'x'}", "1.5", "2.5"])
    assert RUN in dict(ChangeFeed(db, use_stream=False).signature(ANY_RUN_KEY))


def test_workers_endpoint_is_the_summarys_liveness(client: TestClient, seeded: tuple[Database, Seeded]) -> None:
    _, sd = seeded
    workers = get(client, f"/api/runs/{RUN}/workers")
    assert {w["id"]: w["stale"] for w in workers["workers"]} == {LIVE_WORKER: False, DEAD_WORKER: True}
    assert [j["tid"] for j in workers["stale"]] == [sd.stale]
    assert any(r.startswith("no heartbeat for 5m") for r in workers["stale"][0]["reasons"])


def test_unknown_run_is_404_naming_the_runs(client: TestClient) -> None:
    body = get(client, "/api/runs/nope", 404)
    assert "unknown run 'nope'" in body["error"] and RUN in body["error"]
    get(client, "/api/runs/nope/figures", 404)
    assert "unknown run 'nope'" in get(client, "/api/events", 404, key="nope")["error"]


def test_a_trial_id_that_is_not_an_integer_is_404_saying_so(db: Database) -> None:
    """``/api/runs/RUN/trials/abc`` reached the run route (run names may hold ``/``) and
    answered "unknown run 'RUN/trials/abc'"; a run named so is still that run."""
    seed(db, done=2, errors=0, new=0)
    seed(db, done=1, errors=0, new=0, run=f"{RUN}/trials/x")
    with TestClient(create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db))) as c:
        for tid in ("abc", "1.5"):
            error = get(c, f"/api/runs/{RUN}/trials/{tid}", 404)["error"]
            assert error == f"run {RUN!r} has no trial {tid!r}: a trial id is an integer (/api/runs/RUN/trials/TID)"
        assert f"run {RUN!r} has no trial -1" == get(c, f"/api/runs/{RUN}/trials/-1", 404)["error"]
        assert "unknown run 'nope/trials/abc'" in get(c, "/api/runs/nope/trials/abc", 404)["error"]
        assert get(c, f"/api/runs/{RUN}/trials/x")["run"] == f"{RUN}/trials/x"
        assert f"run '{RUN}/trials/x' has no trial 'y'" in get(c, f"/api/runs/{RUN}/trials/x/trials/y", 404)["error"]


def test_figures_are_the_runs_data(client: TestClient, seeded: tuple[Database, Seeded]) -> None:
    _, sd = seeded
    figures = get(client, f"/api/runs/{RUN}/figures")
    loss = figures["loss"]
    tids = sorted(sd.done)
    assert loss["tids"] == tids and loss["losses"] == [sd.done[t] for t in tids]
    best, expected = None, []  # the best so far of the trials that trained their whole budget
    for t in tids:
        if t not in sd.pruned:
            best = sd.done[t] if best is None else min(best, sd.done[t])
        expected.append(best)
    assert loss["best_so_far"] == expected and any(sd.pruned.get(t) for t in tids)
    assert loss["error_tids"] == sd.errors
    assert loss["pruned_steps"] == [sd.pruned.get(t) for t in tids] and any(loss["pruned_steps"])
    parallel = figures["parallel"]
    assert parallel["losses"] == [sd.done[t] for t in tids]
    dims = {d["label"]: d for d in parallel["dimensions"]}
    assert set(dims) == {"model", "a", "freq", "phase"}
    assert dims["model"]["options"] == ["kind=quadratic", "kind=sine", "kind=constant"]
    assert dims["phase"]["log"] and not dims["a"]["log"]
    # a nested label is None where its branch was not taken
    assert sum(v is not None for v in dims["a"]["values"]) == sum(v == 0 for v in dims["model"]["values"])
    assert {d["label"] for d in figures["matrix"]["dimensions"]} == {"a", "freq", "phase"}
    curves = figures["curves"]
    assert curves["metric"] == "val_accuracy"
    assert [c["tid"] for c in curves["series"]] == sorted(sd.done, key=sd.done.__getitem__)[:TOP_CURVES]
    for c in curves["series"]:
        assert c["pruned_step"] == sd.pruned.get(c["tid"])
        assert c["steps"] == list(range(1, (c["pruned_step"] or EPOCHS) + 1))
    assert any(c["pruned_step"] for c in curves["series"]), "no pruned trial among the curves: the seed tests nothing"
    assert figures["skipped"] == {}


def test_a_step_that_is_not_a_number_is_the_entrys_position_in_the_curves(db: Database) -> None:
    """A metrics entry's ``step`` of a type JSON lacks (a date, a decimal) failed the run
    page's charts with a 500."""
    sd = seed(db, done=3, errors=0, new=1)
    best = min(sd.done, key=sd.done.__getitem__)
    db[s.JOBS].update_one({s.EXP_KEY: RUN, s.TID: best}, {"$set": {s.METRICS: [
        {"step": datetime(2026, 1, 1), "val_accuracy": 0.5}, {"step": Decimal128("2"), "val_accuracy": 0.6},
        {"step": 3, "val_accuracy": 0.7}]}})
    with TestClient(create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db, use_stream=False))) as c:
        [curve] = [c for c in get(c, f"/api/runs/{RUN}/figures")["curves"]["series"] if c["tid"] == best]
    assert curve["steps"] == [1, 2, 3] and curve["values"] == [0.5, 0.6, 0.7]


def test_trials_deleted_from_a_run_leave_its_charts(db: Database) -> None:
    """The charts' points are kept and refreshed with the trials written since: trials
    deleted from the run (hyperopt's ``trials.delete_all()``) stayed in the charts."""
    sd = seed(db, done=5, errors=0, new=1)
    data = DashboardData(ReadOnlyView(db))
    assert data.figures(RUN)["loss"]["tids"] == sorted(sd.done)
    gone = sorted(sd.done)[:2]
    assert JobQueue(db).delete({s.EXP_KEY: RUN, s.TID: {"$in": gone}}) == 2
    assert data.figures(RUN)["loss"]["tids"] == sorted(sd.done)[2:]


def test_importance(client: TestClient) -> None:
    body = get(client, f"/api/runs/{RUN}/importance")
    assert {r["label"] for r in body["importance"]} == {"model", "a", "freq", "phase"}
    values = [r["value"] for r in body["importance"]]
    assert values == sorted(values, reverse=True) and math.isclose(sum(values), 1.0)


def test_trial_table_sorts_filters_and_pages(client: TestClient, seeded: tuple[Database, Seeded]) -> None:
    _, sd = seeded
    total = len(sd.done) + len(sd.errors) + 2 + len(sd.new)
    page = get(client, f"/api/runs/{RUN}/trials", limit=10, offset=10)
    assert page["total"] == total and [r["tid"] for r in page["rows"]] == list(range(10, 20))
    by_loss = get(client, f"/api/runs/{RUN}/trials", sort="loss", limit=5)
    assert [r["loss"] for r in by_loss["rows"]] == sorted(sd.done.values())[:5]
    worst = get(client, f"/api/runs/{RUN}/trials", sort="loss", order="desc", limit=3)
    assert [r["loss"] for r in worst["rows"]] == sorted(sd.done.values(), reverse=True)[:3]
    last = get(client, f"/api/runs/{RUN}/trials", sort="loss", offset=total - 3, limit=3)
    assert all(r["loss"] is None for r in last["rows"]), "trials without a loss sort last"
    errors = get(client, f"/api/runs/{RUN}/trials", state="error")
    assert errors["total"] == len(sd.errors) and [r["tid"] for r in errors["rows"]] == sd.errors
    either = client.get(f"/api/runs/{RUN}/trials", params=[("state", "new"), ("state", "running")]).json()
    assert sorted(r["tid"] for r in either["rows"]) == sorted(sd.new + [sd.running, sd.stale])
    dead = get(client, f"/api/runs/{RUN}/trials", worker=DEAD_WORKER)
    assert [r["tid"] for r in dead["rows"]] == [sd.stale]
    pruned = get(client, f"/api/runs/{RUN}/trials", pruned="true")
    assert {r["tid"]: r["pruned_step"] for r in pruned["rows"]} == sd.pruned and pruned["total"] == len(sd.pruned)
    unpruned = get(client, f"/api/runs/{RUN}/trials", pruned="false", state="done", limit=MAX_PAGE)
    assert sorted(r["tid"] for r in unpruned["rows"]) == sorted(set(sd.done) - set(sd.pruned))
    assert all(r["pruned_step"] is None for r in unpruned["rows"])
    by_step = get(client, f"/api/runs/{RUN}/trials", sort="pruned_step", order="desc", limit=len(sd.pruned) + 1)
    assert [r["pruned_step"] for r in by_step["rows"]] == sorted(sd.pruned.values(), reverse=True) + [None]
    by_duration = get(client, f"/api/runs/{RUN}/trials", sort="duration", order="desc", limit=total)
    durations = [r["started_to_finished_s"] for r in by_duration["rows"]]
    known = [d for d in durations if d is not None]
    assert known == sorted(known, reverse=True) and durations[len(known):] == [None] * (total - len(known))


def test_table_pages_hold_every_trial_once_in_order(db: Database) -> None:
    """Each sort reads the trials with a value, then those without (none yet, or a
    malformed value): pages of any size meet at that seam without losing a trial."""
    sd = seed(db, done=6, errors=1, new=2)
    junk = min(sd.done)
    # a start time that is not a date: the server cannot subtract it from the finish (duration)
    db[s.JOBS].update_one({s.EXP_KEY: RUN, s.TID: junk}, {"$set": {s.LOSS: "abc", s.ATTEMPTS: "x",
                                                                   s.STARTED_AT: "yesterday"}})
    data = DashboardData(ReadOnlyView(db))
    tids = sorted(job[s.TID] for job in db[s.JOBS].find({s.EXP_KEY: RUN}))
    for sort in TRIAL_SORTS:
        for descending in (False, True):
            for size in (1, 3, len(tids)):
                pages = [data.trial_page(RUN, sort=sort, descending=descending, offset=offset, limit=size)
                         for offset in range(0, len(tids) + size, size)]
                rows = [row for page in pages for row in page["rows"]]
                assert sorted(r["tid"] for r in rows) == tids, (sort, descending, size)
                assert {page["total"] for page in pages} == {len(tids)}
    by_loss = [r["loss"] for r in data.trial_page(RUN, sort="loss", limit=MAX_PAGE)["rows"]]
    losses = sorted(loss for tid, loss in sd.done.items() if tid != junk)
    assert by_loss == losses + [None] * (len(tids) - len(losses)), "the malformed loss is among those without one"
    worst = [r["loss"] for r in data.trial_page(RUN, sort="loss", descending=True, limit=MAX_PAGE)["rows"]]
    assert worst == losses[::-1] + [None] * (len(tids) - len(losses))


def test_importance_is_refitted_at_most_every_interval(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(db, done=12, errors=0, new=2)
    data = DashboardData(ReadOnlyView(db))
    assert data.importance(RUN)["ok"] == 12
    finish_next(db)
    assert data.importance(RUN)["ok"] == 12, "refitted before IMPORTANCE_EVERY_S"
    monkeypatch.setattr(dashboard_data, "IMPORTANCE_EVERY_S", 0.0)
    assert data.importance(RUN)["ok"] == 13


@pytest.mark.parametrize("params, message", [
    ({"sort": "colour"}, "unknown sort key 'colour'"),
    ({"state": "finished"}, "unknown state 'finished'"),
    ({"limit": MAX_PAGE + 1}, f"limit between 1 and {MAX_PAGE}"),
    ({"offset": -1}, "offset must be >= 0"),
    ({"offset": 2**63}, "offset must be >= 0 and below 2**63"),
    ({"offset": "x"}, "offset must be an integer"),
    ({"order": "up"}, "order must be asc or desc"),
    ({"pruned": "yes"}, "pruned must be true or false"),
])
def test_bad_table_queries_are_400(client: TestClient, params: dict[str, Any], message: str) -> None:
    assert message in get(client, f"/api/runs/{RUN}/trials", 400, **params)["error"]


def test_offsets_and_tids_past_what_mongodb_stores_are_a_bad_query_or_no_trial(client: TestClient) -> None:
    """BSON integers have 64 bits: a larger offset or tid could not even be sent to the
    server (pymongo raised OverflowError, a 500)."""
    assert "below 2**63" in get(client, f"/api/runs/{RUN}/errors", 400, offset=2**63)["error"]
    assert get(client, f"/api/runs/{RUN}/errors", offset=2**63 - 1)["rows"] == []
    assert get(client, f"/api/runs/{RUN}/trials", offset=2**63 - 1, sort="loss")["rows"] == []
    assert f"no trial {2**70}" in get(client, f"/api/runs/{RUN}/trials/{2**70}", 404)["error"]


def test_errors_with_tracebacks_masked(client: TestClient, seeded: tuple[Database, Seeded]) -> None:
    _, sd = seeded
    body = get(client, f"/api/runs/{RUN}/errors")
    assert body["total"] == len(sd.errors) and [e["tid"] for e in body["rows"]] == sd.errors[::-1]
    first = body["rows"][0]
    assert first["type"] == "ConnectionError" and first["reason"] == "exception"
    assert "alice:***@db.example" in first["message"] and "Traceback" in first["traceback"]


def test_one_trial(client: TestClient, seeded: tuple[Database, Seeded]) -> None:
    db, sd = seeded
    tid = min(sd.done)
    trial = get(client, f"/api/runs/{RUN}/trials/{tid}")
    job = db[s.JOBS].find_one({s.EXP_KEY: RUN, s.TID: tid})
    assert trial["state"] == "done" and trial["result"] == job[s.RESULT] and trial["params"] == job[s.PARAMS]
    assert [m["step"] for m in trial["metrics"]] == [1, 2, 3]
    assert [e["event"] for e in trial["timeline"]] == ["queued", "claimed", "started", "last heartbeat", "finished"]
    assert trial["attempts"] == 1 and trial["requeues"] == 0 and trial["error"] is None
    assert trial["pruned_step"] == sd.pruned.get(tid)
    stopped, step = next(iter(sd.pruned.items()))
    pruned = get(client, f"/api/runs/{RUN}/trials/{stopped}")
    assert pruned["pruned_step"] == step and [m["step"] for m in pruned["metrics"]] == list(range(1, step + 1))
    error = get(client, f"/api/runs/{RUN}/trials/{sd.errors[0]}")
    assert error["error"]["type"] == "ConnectionError" and "***" in error["error"]["traceback"]
    stale = get(client, f"/api/runs/{RUN}/trials/{sd.stale}")
    assert "lease expires" in [e["event"] for e in stale["timeline"]]
    assert "no trial 9999" in get(client, f"/api/runs/{RUN}/trials/9999", 404)["error"]


def test_a_password_in_a_trials_result_is_masked(db: Database) -> None:
    """An objective's result is free-form (``{"status": "fail", "reason": ...}``): a URL
    with its password there was shown on the trial page as written."""
    sd = seed(db, done=1, errors=0, new=1)
    [tid] = sd.done
    db[s.JOBS].update_one({s.EXP_KEY: RUN, s.TID: tid}, {"$set": {
        s.STATUS: "fail", "result.reason": f"cannot reach {LEAKY_URL}", "result.notes": [{"db": LEAKY_URL}]}})
    with TestClient(create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db, use_stream=False))) as c:
        result = get(c, f"/api/runs/{RUN}/trials/{tid}")["result"]  # get() checks SECRET is in no answer
    assert result["reason"] == "cannot reach mongodb://alice:***@db.example:27017/hpo"
    assert result["notes"] == [{"db": "mongodb://alice:***@db.example:27017/hpo"}]


def test_pages_and_local_plotly(client: TestClient, seeded: tuple[Database, Seeded]) -> None:
    _, sd = seeded
    for url in ("/", f"/runs/{RUN}", f"/runs/{RUN}/trials/{sd.running}"):
        response = client.get(url)
        assert response.status_code == 200 and "/static/dashboard.js" in response.text
        assert "https://" not in response.text, "pages must not load anything from the internet"
    plotly = client.get("/static/plotly.min.js")
    assert plotly.status_code == 200 and "plotly.js" in plotly.text[:2000]
    assert client.get("/static/dashboard.js").status_code == 200
    assert client.get("/static/run.html").status_code == 404


def test_fixed_run_opens_at_root(seeded: tuple[Database, Seeded]) -> None:
    db, _ = seeded
    with TestClient(create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db, use_stream=False), run=RUN)) as c:
        response = c.get("/", follow_redirects=False)
        assert response.status_code == 307 and response.headers["location"] == f"/runs/{RUN}"


def test_a_fixed_run_whose_name_needs_escaping_opens_at_root(db: Database) -> None:
    """Run names are free text: ``#``, ``?`` or ``%`` in one must not end the path (the
    pages escape each path segment the same way)."""
    run = "lr 1e-3 #2?x=50%/b"
    with TestClient(create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db, use_stream=False), run=run)) as c:
        response = c.get("/", follow_redirects=False)
    assert response.headers["location"] == "/runs/lr%201e-3%20%232%3Fx%3D50%25/b"


def test_token_is_required_everywhere(seeded: tuple[Database, Seeded]) -> None:
    db, _ = seeded
    app = create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db, use_stream=False), token="tok-123")
    with TestClient(app) as c:
        for url in ("/", f"/runs/{RUN}", "/api/runs", "/static/plotly.min.js", "/api/events"):
            assert c.get(url).status_code == 401, url
        assert c.get("/api/runs", params={"token": "wrong"}).status_code == 401
        for header, status in (("Bearer tok-123", 200), ("bearer  tok-123", 200), ("tok-123", 401),
                               ("Basic tok-123", 401), ("Bearer tok-1234", 401)):
            assert c.get("/api/runs", headers={"Authorization": header}).status_code == status, header
        opened = c.get(f"/runs/{RUN}", params={"token": "tok-123", "x": "1"}, follow_redirects=False)
        assert opened.status_code == 303 and opened.headers["location"] == f"/runs/{RUN}?x=1"
        assert COOKIE in opened.headers["set-cookie"] and "HttpOnly" in opened.headers["set-cookie"]
        assert c.get("/api/runs").status_code == 200, "the cookie set on opening carries the token"


def test_opening_a_page_with_the_token_redirects_to_that_page_here(db: Database) -> None:
    """The redirect that drops ``?token=`` goes to the address as it was opened: an
    escaped ``%`` in a run name stayed unescaped (``50%2541`` led to run ``50A``), and a
    path opened as ``//host/`` sent the browser to that host."""
    app = create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db, use_stream=False), token="tok-123")
    with TestClient(app) as c:
        page = "/runs/lr%3D1e-3%2050%2541%3F/b/trials/3"  # run 'lr=1e-3 50%41?/b'
        opened = c.get(page + "?token=tok-123&x=%26", follow_redirects=False)
        assert opened.status_code == 303 and opened.headers["location"] == page + "?x=%26"
        elsewhere = c.get("http://testserver//evil.example/x?token=tok-123", follow_redirects=False)
        assert elsewhere.status_code == 303 and elsewhere.headers["location"] == "/evil.example/x"


def test_without_a_token_only_requests_to_this_machine_are_answered(seeded: tuple[Database, Seeded]) -> None:
    """A page from another site can point its own host name at 127.0.0.1 (DNS rebinding)
    and read a dashboard served there without a token: its requests name that host."""
    db, _ = seeded
    app = create_app(DashboardData(ReadOnlyView(db)), ChangeFeed(db, use_stream=False), local_only=True)
    with TestClient(app) as c:
        for host in ("localhost:8080", "127.0.0.1:8080", "127.0.0.2", "[::1]:8080"):
            assert c.get("/api/runs", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example:8080", "evil.example", "10.0.0.5:8080", ""):
            refused = c.get("/api/runs", headers={"Host": host})
            assert refused.status_code == 403 and "--token" in refused.text, host
        assert c.get("/", headers={"Host": "evil.example"}).status_code == 403


def until_the_feed_follows(feed: ChangeFeed, db: Database) -> None:
    """Return once ``feed``'s thread follows changes: its change stream is open, or its
    poller has a reading of every key watched so far (a sleep cannot promise either on a
    busy host, and a change made before would be missed for good).

    A new worker record is a change of :data:`WORKERS_KEY` in both modes; one written
    before the stream opened is never counted, so it is written again until one is.
    Polling, a pass counts the workers at most once and reads every watched key unless
    it fails: two counted records in a row are counted in two passes, so the first of
    them was complete."""
    registry = WorkerRegistry(db)
    deadline = time.monotonic() + WAIT_S
    for _ in range(2):
        while True:
            seen = feed.version(WORKERS_KEY)
            registry.register(f"barrier-{uuid.uuid4().hex[:6]}", host="barrier", pid=1, device="cpu", version="test")
            try:
                wait_for(lambda: feed.version(WORKERS_KEY) > seen, 5, "the feed to count a new worker record")
                break
            except AssertionError:
                assert time.monotonic() < deadline, f"the feed counted no new worker record in {WAIT_S:.0f} s"


@pytest.mark.parametrize("use_stream", [True, False], ids=["change-stream", "polling"])
def test_feed_sees_a_trial_finish_and_a_worker_write(mongo_server_url: str, use_stream: bool) -> None:
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_server_url)
    db = client[f"t_feed_{uuid.uuid4().hex[:6]}"]
    try:
        seed(db, done=2, errors=0, new=2)
        feed = ChangeFeed(db, poll_interval_s=0.2, use_stream=use_stream)
        keys = (RUN, WORKERS_KEY, ANY_RUN_KEY)
        for key in keys:
            feed.version(key)  # watched from now on
        feed.start()
        try:
            until_the_feed_follows(feed, db)
            start = {key: feed.version(key) for key in keys}
            finish_next(db)
            wait_for(lambda: feed.version(RUN) > start[RUN] and feed.version(ANY_RUN_KEY) > start[ANY_RUN_KEY],
                     WAIT_S, "the feed to see the trial finish")
            registry = WorkerRegistry(db)
            registry.update(LIVE_WORKER, status="idle")
            wait_for(lambda: feed.version(WORKERS_KEY) > start[WORKERS_KEY], WAIT_S, "the feed to see the worker write")
            if use_stream:
                # events arrive in order: once a worker write after it was seen, the heartbeat was too
                queue = JobQueue(db)
                claim = queue.claim(LIVE_WORKER, exp_key=RUN)
                assert claim is not None
                workers_before = feed.version(WORKERS_KEY)
                registry.update(LIVE_WORKER, status="busy")
                wait_for(lambda: feed.version(WORKERS_KEY) > workers_before, WAIT_S, "the barrier after the claim")
                claimed = feed.version(RUN)
                assert queue.heartbeat(claim)
                workers_before = feed.version(WORKERS_KEY)
                registry.update(LIVE_WORKER, status="busy")
                wait_for(lambda: feed.version(WORKERS_KEY) > workers_before, WAIT_S, "the barrier after the heartbeat")
                assert feed.version(RUN) == claimed, "a heartbeat is not a change"
            assert feed.mode == (STREAM if use_stream else POLLING)
        finally:
            feed.stop()
    finally:
        client.drop_database(db.name)
        client.close()


def test_the_change_stream_is_reopened_after_the_database_is_dropped(mongo_server_url: str) -> None:
    """Dropping the database ends (invalidates) a database's change stream: the feed
    kept asking the closed stream for changes, never saw another one, and spun a core."""
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_server_url)
    db = client[f"t_feed_{uuid.uuid4().hex[:6]}"]
    try:
        seed(db, done=1, errors=0, new=1)
        feed = ChangeFeed(db, poll_interval_s=0.2)
        feed.version(RUN)
        feed.start()
        try:
            until_the_feed_follows(feed, db)
            client.drop_database(db.name)
            seed(db, done=1, errors=0, new=2)
            until_the_feed_follows(feed, db)
            before = feed.version(RUN)
            finish_next(db)
            wait_for(lambda: feed.version(RUN) > before, WAIT_S, "the feed to see a trial finish after the drop")
            assert feed.mode == STREAM
        finally:
            feed.stop()
    finally:
        client.drop_database(db.name)
        client.close()


def test_polling_sees_states_and_stale_workers_not_heartbeats(db: Database) -> None:
    """Heartbeats rewrite ``updated_at`` and ``last_seen`` every few seconds: were they
    changes, every open page would re-read the run that often."""
    seed(db, done=2, errors=0, new=2)
    queue, registry = JobQueue(db), WorkerRegistry(db)
    claim = queue.claim(LIVE_WORKER, exp_key=RUN)
    assert claim is not None
    current = {"exp_key": RUN, "tid": claim.tid}
    registry.update(LIVE_WORKER, status="busy", current=current)
    feed = ChangeFeed(db, poll_interval_s=0.2, use_stream=False, stale_after=timedelta(seconds=5))
    keys = (RUN, WORKERS_KEY, ANY_RUN_KEY)
    for key in keys:
        feed.version(key)
    feed.start()
    try:
        beats = time.monotonic() + 3.0  # some 15 polls
        while time.monotonic() < beats:
            assert queue.heartbeat(claim) and registry.beat(LIVE_WORKER, status="busy", current=current)
            time.sleep(0.3)
        assert {key: feed.version(key) for key in keys} == {key: 0 for key in keys}, "a heartbeat counted as a change"
        wait_for(lambda: feed.version(WORKERS_KEY) > 0, WAIT_S, "the feed to see the worker go stale")
        assert feed.version(RUN) == 0
        assert queue.finish(claim, State.DONE, {"status": "ok", "loss": 0.5}, elapsed_s=0.1)
        wait_for(lambda: feed.version(RUN) > 0 and feed.version(ANY_RUN_KEY) > 0, WAIT_S, "the feed to see the finish")
    finally:
        feed.stop()


def test_polling_rides_out_an_outage(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Database errors, an outage past the store's limit included, are waited out;
    anything else takes the process down (tests/coordinator/dashboard/test_cli.py)."""
    seed(db, done=1, errors=0, new=2)
    died: list[BaseException] = []
    monkeypatch.setattr(live, "die", lambda thread, exc, **kwargs: died.append(exc))
    real = ChangeFeed.signature
    failures: list[Exception] = [DatabaseOutage("injected: outage"), pymongo.errors.AutoReconnect("injected")]

    def signature(feed: ChangeFeed, key: str) -> Any:
        if failures:
            raise failures.pop(0)
        return real(feed, key)

    monkeypatch.setattr(ChangeFeed, "signature", signature)
    feed = ChangeFeed(db, poll_interval_s=0.2, use_stream=False)
    feed.version(RUN)
    feed.start()
    try:
        wait_for(lambda: not failures, WAIT_S, "the feed to poll through the outage")
        until_the_feed_follows(feed, db)
        finish_next(db)
        wait_for(lambda: feed.version(RUN) > 0, WAIT_S, "the feed to see the finish after the outage")
    finally:
        feed.stop()
    assert died == []


def test_feed_falls_back_to_polling_without_change_streams(seeded: tuple[Database, Seeded]) -> None:
    db, _ = seeded
    no_streams = WatchFails(db, pymongo.errors.OperationFailure(  # as a standalone mongod
        "The $changeStream stage is only supported on replica sets", 40573,
        {"errmsg": "The $changeStream stage is only supported on replica sets", "code": 40573}))
    feed = ChangeFeed(no_streams, poll_interval_s=0.2)  # type: ignore[arg-type]
    feed.start()
    try:
        wait_for(lambda: feed.mode == POLLING, WAIT_S, "the feed to fall back to polling")
        assert "only supported on replica sets" in feed.note and "polling every 0.2 s" in feed.note
    finally:
        feed.stop()


def test_an_interrupted_change_stream_is_not_shown_as_live(seeded: tuple[Database, Seeded]) -> None:
    """While the change stream cannot be reopened (the server is away), the pages said
    "live (MongoDB change stream)" over data that no longer changed."""
    db, _ = seeded
    away = WatchFails(db, pymongo.errors.AutoReconnect("injected: connection refused"))
    feed = ChangeFeed(away)  # type: ignore[arg-type]
    with TestClient(create_app(DashboardData(ReadOnlyView(db)), feed)) as c:
        wait_for(lambda: feed.note, WAIT_S, "the feed to say the stream is interrupted")
        shown = get(c, f"/api/runs/{RUN}")["feed"]
        assert shown["mode"] == STREAM and "change stream interrupted" in shown["note"], shown
        assert "injected: connection refused" in shown["note"] and "reopening" in shown["note"], shown
        away.failing = False
        wait_for(lambda: not feed.note, WAIT_S, "the feed to reopen the stream")


def test_an_outage_past_the_limit_answers_503(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """An outage longer than the store's limit (``DatabaseOutage``, not a pymongo error)
    is a 503 saying the database is unavailable, as a pymongo error is, not a 500."""
    data = DashboardData(ReadOnlyView(db))

    def away(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseOutage("injected: the database stayed away for 900 s")

    monkeypatch.setattr(data, "runs", away)
    monkeypatch.setattr(data, "require_run", away)
    with TestClient(create_app(data, ChangeFeed(db, use_stream=False))) as c:
        assert "database unavailable: injected" in get(c, "/api/runs", 503)["error"]
        assert "database unavailable: injected" in get(c, "/api/events", 503, key=RUN)["error"]
