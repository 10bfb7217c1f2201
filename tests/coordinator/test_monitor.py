"""The monitoring commands against a realistic run on the test server.

One run, ``demo``, is produced once for the module the way production produces it:
hyperopt's fmin with MongoTrials, two worker.loop.Worker threads evaluating an
experiment that reports per-epoch metrics and fails on one branch.  Then, through the
queue API, what a live system also shows: a trial whose last allowed attempt was lost
(LostWorker error), a running trial whose worker died five minutes ago (stale lease), a
running trial on a live worker, a new trial, and a second run.  Every expected value is computed from the
documents themselves, independently of coordinator.monitor.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hyperopt
import numpy as np
import pymongo
import pytest
import typer
from hyperopt import base, hp, rand
from matplotlib.image import imread
from bson import Decimal128
from pymongo.database import Database
from rich.console import Console
from typer.testing import CliRunner

from coordinator import monitor, monitor_cli, plots
from coordinator.dashboard.data import DashboardData
from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.queue import Claim, JobQueue
from jobstore.schema import State
from jobstore.store import Store
from jobstore.trials import MongoTrials
from jobstore.workers import WorkerRegistry
from objectives.base import Experiment, NullReporter, Reporter
from objectives.pruning import PrunerSettings
from objectives.registry import register
from worker.loop import Worker, WorkerConfig

RUN = "demo"
LIVE_WORKER = "node-c:103"
DEAD_WORKER = "node-d:104"
"""The seeded run's live and dead workers (see :func:`seeded`)."""
OTHER_RUN = "other"
FMIN_EVALS = 16
PRUNER = PrunerSettings("median", "val_loss", "minimize", max_resource=3, startup_trials=2)
MAX_EVALS = 40
"""The run document's max_evals: the run is still under way when the tests look."""
DEAD_FOR = timedelta(minutes=5)


def _objective(params: dict[str, Any], reporter: Reporter) -> Any:
    model = params["model"]
    if model["kind"] == "constant":
        raise ValueError("a constant model cannot be trained")
    if model["kind"] == "quadratic":
        loss = (model["a"] - 2.0) ** 2 + 0.01
    else:
        loss = 0.5 + (1.0 + np.sin(model["freq"])) * model["phase"]
    for epoch in (1, 2, 3):
        reporter.report(epoch, loss=loss * (1 + 1 / epoch), val_loss=loss * (1 + 1 / epoch),
                        val_accuracy=epoch / (3 * (1 + loss)))
    return loss


EXPERIMENT = register(Experiment(
    name="monitor-demo",
    space={"model": hp.choice("model", [
        {"kind": "quadratic", "a": hp.uniform("a", -5, 5)},
        {"kind": "sine", "freq": hp.uniform("freq", 0, 6.3), "phase": hp.loguniform("phase", -3, 0)},
        {"kind": "constant"},
    ])},
    objective=_objective,
    max_evals=MAX_EVALS,
    algo="rand",
    description="the nested space, reporting metrics, failing on the constant branch",
))


def _add_trial(db: Database, run: str, *, max_attempts: int = 3, seed: int = 0) -> int:
    """One new trial inserted the way fmin inserts it."""
    trials = MongoTrials(db, exp_key=run, refresh=False, experiment=EXPERIMENT.name,
                         max_attempts=max_attempts)
    trials.space = EXPERIMENT.space
    ids = trials.new_trial_ids(1)
    trials.insert_trial_docs(rand.suggest(ids, base.Domain(_objective, EXPERIMENT.space), trials, seed))
    return ids[0]


def _backdate(db: Database, query: dict[str, Any], collection: str, fields: list[str]) -> None:
    """Make ``fields`` of the matching document lie DEAD_FOR in the past (a dead process)."""
    past = server_time(db) - DEAD_FOR
    db[collection].update_one(query, {"$set": {field: past for field in fields}})


def _fmin_with_workers(db: Database) -> None:
    trials = MongoTrials(db, exp_key=RUN, refresh=False, experiment=EXPERIMENT.name, poll_interval=0.02)
    trials.runs.ensure(RUN, experiment=EXPERIMENT.name, fingerprint=EXPERIMENT.fingerprint(),
                       settings={s.RUN_PRUNER: PRUNER.to_document()}, max_evals=MAX_EVALS, algo="rand")
    workers = []
    for i in range(2):
        worker = Worker(Store(db), WorkerConfig(run=RUN, heartbeat=1.0, lease=5.0, poll_max=0.05))
        worker.worker_id = f"node-{'ab'[i]}:{101 + i}"
        workers.append(worker)
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        hyperopt.fmin(EXPERIMENT.objective, EXPERIMENT.space, algo=rand.suggest, max_evals=FMIN_EVALS,
                      trials=trials, rstate=np.random.default_rng(7), max_queue_len=2,
                      show_progressbar=False, return_argmin=False)
    finally:
        for worker in workers:
            worker.request_stop()
        for thread in threads:
            thread.join(30)


@pytest.fixture(scope="module")
def seeded_once(mongo_server_url: str) -> Iterator[tuple[str, Database]]:
    """The URL and a handle of a database holding the ``demo`` and ``other`` runs."""
    name = f"t_monitor_{uuid.uuid4().hex[:6]}"
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_server_url)
    db = client[name]
    _fmin_with_workers(db)
    queue = JobQueue(db)
    registry = WorkerRegistry(db)
    # A trial whose worker vanished and whose last allowed attempt is used up.
    lost = _add_trial(db, RUN, max_attempts=1, seed=1)
    queue.claim("node-d:104", exp_key=RUN)
    _backdate(db, {s.EXP_KEY: RUN, s.TID: lost}, s.JOBS, [s.LEASE_EXPIRES])
    assert queue.requeue_expired().failed == [(RUN, lost)]
    # A running trial whose worker died five minutes ago, after two epochs.
    stale = _add_trial(db, RUN, seed=2)
    claim = queue.claim("node-d:104", exp_key=RUN)
    assert claim is not None and claim.tid == stale
    queue.report(claim, 1, {"val_loss": 0.9, "val_accuracy": 0.2})
    queue.report(claim, 2, {"val_loss": 0.8, "val_accuracy": 0.3})
    _backdate(db, {s.EXP_KEY: RUN, s.TID: stale}, s.JOBS, [s.REFRESH_TIME, s.LEASE_EXPIRES])
    registry.register("node-d:104", host="node-d", pid=104, device="cuda:3", version="test")
    registry.update("node-d:104", status="busy", current={"exp_key": RUN, "tid": stale})
    _backdate(db, {s.ID: "node-d:104"}, s.WORKERS, [s.WORKER_LAST_SEEN])
    # A running trial on a live worker.
    live = _add_trial(db, RUN, seed=3)
    claim = queue.claim(LIVE_WORKER, exp_key=RUN)
    assert claim is not None and claim.tid == live
    queue.report(claim, 1, {"val_loss": 0.7, "val_accuracy": 0.4})
    registry.register(LIVE_WORKER, host="node-c", pid=103, device="cuda:2", version="test")
    registry.update(LIVE_WORKER, status="busy", current={"exp_key": RUN, "tid": live})
    # A trial nobody took yet, and another run.
    _add_trial(db, RUN, seed=4)
    for seed in (5, 6):
        _add_trial(db, OTHER_RUN, seed=seed)
    yield f"{mongo_server_url}/{name}", db
    client.drop_database(name)
    client.close()


@pytest.fixture
def seeded(seeded_once: tuple[str, Database]) -> tuple[str, Database]:
    """``seeded_once`` as of now: its live worker's heartbeat renewed (its job's lease and
    its record), as that worker would keep doing, and its dead worker last heard from
    ``DEAD_FOR`` ago.  The module's tests can run for longer than the lease (30 s) or
    :data:`coordinator.monitor.STALE_AFTER` (60 s) on a busy host: a worker last heard from
    when the module began is then rightly shown lost, and a dead one dead for 6 minutes."""
    _, db = seeded_once
    job = db[s.JOBS].find_one({s.EXP_KEY: RUN, s.OWNER: LIVE_WORKER, s.STATE: State.RUNNING})
    assert JobQueue(db).heartbeat(Claim(job=job, token=job[s.LEASE]["token"], owner=LIVE_WORKER))
    assert WorkerRegistry(db).beat(LIVE_WORKER, status="busy", current={"exp_key": RUN, "tid": job[s.TID]})
    _backdate(db, {s.EXP_KEY: RUN, s.OWNER: DEAD_WORKER, s.STATE: State.RUNNING}, s.JOBS,
              [s.REFRESH_TIME, s.LEASE_EXPIRES])
    _backdate(db, {s.ID: DEAD_WORKER}, s.WORKERS, [s.WORKER_LAST_SEEN])
    return seeded_once


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    monitor_cli.register(app, Console(width=250, highlight=False))
    return app


def invoke(app: typer.Typer, *args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def row(*cells: Any) -> str:
    """A regex for consecutive cells of a rich table row (cells are regexes)."""
    return r"\s*│\s*".join(str(c) for c in cells)


def _jobs(db: Database, run: str = RUN) -> list[dict[str, Any]]:
    return list(db[s.JOBS].find({s.EXP_KEY: run}).sort(s.TID, 1))


def _ok(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [j for j in jobs if j[s.STATE] == State.DONE and j[s.RESULT].get("status") == "ok"]


def _best(db: Database) -> dict[str, Any]:
    """The lowest loss among the ok trials that trained their whole budget (not pruned)."""
    return min((j for j in _ok(_jobs(db)) if not j[s.RESULT].get("pruned")), key=lambda j: j[s.RESULT]["loss"])


def _states(db: Database, run: str = RUN) -> Counter:
    return Counter(State(j[s.STATE]).name.lower() for j in _jobs(db, run))


# -- the seeded run is what the tests below assume --------------------------------------


def test_seeded_run_looks_like_a_real_one(seeded: tuple[str, Database]) -> None:
    _, db = seeded
    jobs = _jobs(db)
    states = _states(db)
    errors = Counter(j[s.ERROR]["type"] for j in jobs if j[s.STATE] == State.ERROR)
    assert states["done"] + errors["ValueError"] == FMIN_EVALS and errors["LostWorker"] == 1
    assert states["running"] == 2 and states["new"] == 1
    assert set(errors) == {"ValueError", "LostWorker"}
    assert all(j[s.METRICS] for j in _ok(jobs))
    assert {j[s.OWNER] for j in _ok(jobs)} <= {"node-a:101", "node-b:102"}
    assert db[s.WORKERS].count_documents({}) == 4


# -- queries -------------------------------------------------------------------------


def test_run_status_values(seeded: tuple[str, Database]) -> None:
    _, db = seeded
    status = monitor.run_status(Store(db).view, RUN)
    states = _states(db)
    c = status.counts
    assert (c.new, c.running, c.done, c.error, c.cancel) == (
        states["new"], states["running"], states["done"], states["error"], 0)
    best = _best(db)
    assert status.best is not None
    assert (status.best.tid, status.best.loss, status.best.params) == (
        best[s.TID], best[s.RESULT]["loss"], best[s.PARAMS])
    finished = sorted(j[s.FINISHED_AT] for j in _jobs(db) if j.get(s.FINISHED_AT))
    rate = status.throughput
    assert rate.last_finish == finished[-1] and rate.window_start == finished[0]
    # the whole run is younger than the window: every finish counts
    assert rate.window_trials == len(finished)
    hours = (finished[-1] - finished[0]).total_seconds() / 3600
    assert rate.per_hour == pytest.approx((len(finished) - 1) / hours)
    assert status.eta is not None
    assert status.eta.total_seconds() == pytest.approx(
        (MAX_EVALS - c.done) / rate.per_hour * 3600, rel=1e-6)
    assert status.max_evals == MAX_EVALS and status.experiment == EXPERIMENT.name
    stale_tid = db[s.JOBS].find_one({s.EXP_KEY: RUN, s.OWNER: "node-d:104", s.STATE: State.RUNNING})[s.TID]
    assert [j.tid for j in status.stale] == [stale_tid]
    assert status.stale[0].owner == "node-d:104"
    assert any(r.startswith("lease expired") for r in status.stale[0].reasons)
    assert any(r.startswith("no heartbeat for 5m") for r in status.stale[0].reasons)
    by_id = {w.id: w for w in status.workers}
    assert {k: w.state for k, w in by_id.items()} == {
        "node-a:101": "stopped", "node-b:102": "stopped", "node-c:103": "busy", "node-d:104": "lost"}
    done_by = Counter(j[s.OWNER] for j in _jobs(db) if j[s.STATE] in (State.DONE, State.ERROR)
                      and j[s.OWNER] in ("node-a:101", "node-b:102"))
    assert by_id["node-a:101"].trials_done + by_id["node-b:102"].trials_done == sum(done_by.values())
    assert by_id["node-a:101"].device == "cpu" and by_id["node-d:104"].device == "cuda:3"
    live_tid = db[s.JOBS].find_one({s.EXP_KEY: RUN, s.OWNER: "node-c:103"})[s.TID]
    assert by_id["node-c:103"].current == {"exp_key": RUN, "tid": live_tid}


@pytest.mark.parametrize("idle_h", [0.25, 1.5, 30.0])
def test_throughput_is_the_hour_before_the_latest_finish_however_long_ago(db: Database, idle_h: float) -> None:
    """Read from the recent finishes while the run is active, from the latest finish's
    window once it has been idle for longer than the window, or twice as long."""
    now = server_time(db)
    last = now - timedelta(hours=idle_h)
    finishes = [last - timedelta(minutes=10 * k) for k in range(19)]  # every 10 minutes for 3 hours
    db[s.JOBS].insert_many([{s.EXP_KEY: "r", s.TID: k, s.FINISHED_AT: at} for k, at in enumerate(finishes)]
                           + [{s.EXP_KEY: "r", s.TID: 99, s.FINISHED_AT: "not a date"},
                              {s.EXP_KEY: "other", s.TID: 0, s.FINISHED_AT: now}])
    rate = monitor.throughput(Store(db).view, "r", now)
    window = [at for at in finishes if at > last - monitor.THROUGHPUT_WINDOW]
    assert (rate.last_finish, rate.window_start, rate.window_trials) == (last, min(window), len(window))
    assert rate.per_hour == pytest.approx((len(window) - 1) / ((last - min(window)).total_seconds() / 3600))


def test_list_runs(seeded: tuple[str, Database]) -> None:
    _, db = seeded
    overview = {r.run: r for r in monitor.list_runs(Store(db).view)}
    assert set(overview) == {RUN, OTHER_RUN}
    assert overview[RUN].counts.total == len(_jobs(db))
    assert overview[RUN].best_loss == _best(db)[s.RESULT]["loss"]
    assert overview[OTHER_RUN].counts.new == 2 and overview[OTHER_RUN].best_loss is None
    assert overview[RUN].pruner == PRUNER.to_document() and overview[OTHER_RUN].pruner is None


# -- commands ------------------------------------------------------------------------


def test_status_command(seeded: tuple[str, Database], cli: typer.Typer) -> None:
    url, db = seeded
    result = invoke(cli, "status", "--run", RUN, "--mongo", url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    states = _states(db)
    assert (f"new {states['new']}  running {states['running']}  done {states['done']}  "
            f"error {states['error']}") in out
    best = _best(db)
    assert f"{best[s.RESULT]['loss']:.6g} (trial {best[s.TID]})" in out
    assert json.dumps(best[s.PARAMS], sort_keys=True) in out
    assert re.search(row("throughput", r"[\d.]+ trials/h"), out)
    assert re.search(row("ETA", r"\d+m?\d*s"), out)
    assert f"{states['done']} of {MAX_EVALS} done ({states['error']} error(s) not counted)" in out
    stale = db[s.JOBS].find_one({s.EXP_KEY: RUN, s.OWNER: "node-d:104", s.STATE: State.RUNNING})
    assert re.search(row(str(stale[s.TID]), "node-d:104", r"5m\d\ds ago", r"lease expired 5m\d\ds ago; "
                         r"no heartbeat for 5m\d\ds"), out)
    live = db[s.JOBS].find_one({s.EXP_KEY: RUN, s.OWNER: "node-c:103"})
    done = Counter(j[s.OWNER] for j in _jobs(db) if j[s.STATE] in (State.DONE, State.ERROR))
    # the simulated workers (c, d) never counted a trial in their records
    for worker, host, device, state, current, trials_done in (
            ("node-a:101", r"\S+", "cpu", "stopped", "-", done["node-a:101"]),
            ("node-c:103", "node-c", "cuda:2", "busy", f"{RUN}:{live[s.TID]}", 0),
            ("node-d:104", "node-d", "cuda:3", "lost", f"{RUN}:{stale[s.TID]}", 0)):
        ago = r"5m\d\ds ago" if state == "lost" else r"(\d+m)?\d+s ago"
        assert re.search(row(worker, host, device, state, current, ago, trials_done), out), worker


def test_status_watch_redraws_until_interrupted(seeded: tuple[str, Database], cli: typer.Typer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = seeded
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(monitor_cli, "time", SimpleNamespace(sleep=sleep))
    result = invoke(cli, "status", "--run", RUN, "--mongo", url, "--watch", "--interval", "0.5")
    assert result.exit_code == 0, result.output
    assert sleeps == [0.5, 0.5]
    assert "best loss" in result.stdout


def test_runs_command(seeded: tuple[str, Database], cli: typer.Typer) -> None:
    url, db = seeded
    result = invoke(cli, "runs", "--mongo", url)
    assert result.exit_code == 0, result.output
    states = _states(db)
    total = sum(states.values())
    best = _best(db)[s.RESULT]["loss"]
    assert re.search(row(RUN, "monitor-demo", total, states["new"], states["running"], states["done"],
                         states["error"], MAX_EVALS, f"{best:.6g}", PRUNER.kind), result.stdout)
    assert re.search(row(OTHER_RUN, "-", 2, 2, 0, 0, 0, "-", "-", "none"), result.stdout)


def test_best_prints_reusable_params(seeded: tuple[str, Database], cli: typer.Typer) -> None:
    url, db = seeded
    result = invoke(cli, "best", "--run", RUN, "--mongo", url)
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)
    assert params == _best(db)[s.PARAMS]
    assert EXPERIMENT.objective(params, NullReporter()) == pytest.approx(_best(db)[s.RESULT]["loss"])


def test_best_says_when_every_ok_trial_was_pruned(db: Database, db_url: str, cli: typer.Typer) -> None:
    MongoTrials(db, exp_key="p", experiment="monitor-demo").runs.ensure(
        "p", experiment="monitor-demo", fingerprint="x", settings={s.RUN_PRUNER: PRUNER.to_document()})
    db.jobs.insert_one({s.EXP_KEY: "p", s.TID: 0, s.STATE: State.DONE, s.MISC: {"vals": {"a": [1.0]}},
                        s.RESULT: {"status": "ok", "loss": 0.1, "pruned": True, "pruned_step": 1}})
    result = invoke(cli, "best", "--run", "p", "--mongo", db_url)
    assert result.exit_code == 2 and result.stdout == ""
    assert "run 'p' has no best trial: no trial that trained its whole budget" in " ".join(result.output.split())
    assert "1 trial(s) with status ok were pruned" in " ".join(result.output.split())
    status = invoke(cli, "status", "--run", "p", "--mongo", db_url)
    assert re.search(row("best loss", r"no ok trial that trained its whole budget yet \(pruned trials are never "
                         r"the best\)"), status.stdout)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=None)


def test_trials_csv_round_trips(seeded: tuple[str, Database], cli: typer.Typer) -> None:
    url, db = seeded
    result = invoke(cli, "trials", "--run", RUN, "--mongo", url, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    jobs = _jobs(db)
    assert [int(r["tid"]) for r in rows] == [j[s.TID] for j in jobs]
    for row, job in zip(rows, jobs):
        result_doc = job.get(s.RESULT) or {}
        assert row["state"] == State(job[s.STATE]).name.lower()
        assert row["status"] == result_doc.get("status", "")
        if "loss" in result_doc:
            assert float(row["loss"]) == result_doc["loss"]
        else:
            assert row["loss"] == ""
        assert row["attempts"] == str(job[s.ATTEMPTS])
        assert row["worker"] == (job.get(s.OWNER) or "")
        for column, start in (("booked_to_finished_s", s.BOOK_TIME), ("started_to_finished_s", s.STARTED_AT)):
            if job.get(s.FINISHED_AT) and job.get(start):
                assert float(row[column]) == (job[s.FINISHED_AT] - job[start]).total_seconds()
                assert _parse_time(row["finished_at"]) == job[s.FINISHED_AT]
            else:
                assert row[column] == ""
        assert row["error_type"] == (job.get(s.ERROR) or {}).get("type", "")
        assert row["pruned_step"] == (str(result_doc["pruned_step"]) if result_doc.get("pruned") else "")
        model = job[s.PARAMS]["model"]
        assert row["params.model.kind"] == model["kind"]
        for key in ("a", "freq", "phase"):
            if key in model:
                assert float(row[f"params.model.{key}"]) == model[key]
            else:
                assert row[f"params.model.{key}"] == ""


def test_trials_json_to_file(seeded: tuple[str, Database], cli: typer.Typer, tmp_path: Path) -> None:
    url, db = seeded
    out = tmp_path / "export" / "trials.json"
    result = invoke(cli, "trials", "--run", RUN, "--mongo", url, "--format", "json", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    jobs = _jobs(db)
    assert f"wrote {len(jobs)} trial(s)" in result.stdout
    assert [r["tid"] for r in rows] == [j[s.TID] for j in jobs]
    assert [r["loss"] for r in rows] == [(j.get(s.RESULT) or {}).get("loss") for j in jobs]
    assert [r["worker"] for r in rows] == [j.get(s.OWNER) for j in jobs]


def test_trials_writes_whole_number_params_as_best_shows_them(db: Database, db_url: str,
                                                               cli: typer.Typer) -> None:
    """``trials`` wrote ``16.0`` (hyperopt's quniform gives floats) where ``best`` prints
    ``16``; the stored point, what the objective receives, keeps its floats."""
    MongoTrials(db, exp_key="w", experiment="monitor-demo").runs.ensure("w", experiment="monitor-demo",
                                                                       fingerprint="x")
    params = {"units": 16.0, "lr": 0.25, "opt": {"layers": 3.0, "kind": "sgd"}}
    db.jobs.insert_one({s.EXP_KEY: "w", s.TID: 0, s.STATE: State.DONE, s.PARAMS: params,
                        s.MISC: {"vals": {"units": [16.0]}}, s.RESULT: {"status": "ok", "loss": 0.5}})
    best = invoke(cli, "best", "--run", "w", "--mongo", db_url)
    assert json.loads(best.stdout) == {"units": 16, "lr": 0.25, "opt": {"layers": 3, "kind": "sgd"}}
    assert re.search(r'"units": 16\n', best.stdout), best.stdout
    result = invoke(cli, "trials", "--run", "w", "--mongo", db_url, "--format", "csv")
    assert result.exit_code == 0, result.output
    [row] = list(csv.DictReader(io.StringIO(result.stdout)))
    assert (row["params.units"], row["params.lr"], row["params.opt.layers"], row["params.opt.kind"]) == (
        "16", "0.25", "3", "sgd")
    assert row["loss"] == "0.5"
    result = invoke(cli, "trials", "--run", "w", "--mongo", db_url, "--format", "json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert re.search(r'"params.units": 16[,\n]', result.stdout), result.stdout
    assert re.search(r'"params.opt.layers": 3[,\n]', result.stdout), result.stdout
    assert (row["params.units"], row["params.lr"], row["params.opt.kind"]) == (16, 0.25, "sgd")
    # the dashboard's trial table serves the same rows (monitor.trial_row)
    [row] = DashboardData(Store(db).view).trial_page("w")["rows"]
    assert re.search(r'"params.units": 16[,}]', json.dumps(row)), row
    stored = db.jobs.find_one({s.EXP_KEY: "w"})[s.PARAMS]
    assert stored == params and type(stored["units"]) is float


def _assert_png(path: Path, min_size: tuple[int, int]) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    assert path.stat().st_size > 10_000, path
    height, width = imread(path).shape[:2]
    assert width >= min_size[0] and height >= min_size[1], (path, width, height)


def test_plot_writes_every_figure(seeded: tuple[str, Database], cli: typer.Typer, tmp_path: Path) -> None:
    url, _ = seeded
    result = invoke(cli, "plot", "--run", RUN, "--mongo", url, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "skipped" not in result.stdout
    for name in ("loss", "scatter_matrix", "histograms", "parallel_coordinates", "learning_curves",
                 "importance"):
        assert f"wrote {tmp_path / name}.png" in result.stdout
        _assert_png(tmp_path / f"{name}.png", (600, 300))


def test_plot_names_what_it_skips(seeded: tuple[str, Database], cli: typer.Typer, tmp_path: Path) -> None:
    url, _ = seeded
    result = invoke(cli, "plot", "--run", OTHER_RUN, "--mongo", url, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "skipped loss.png: no trial has finished with status ok yet" in result.stdout
    assert "skipped importance.png: importance needs at least 10 ok trials" in result.stdout
    _assert_png(tmp_path / "histograms.png", (300, 300))


# -- errors --------------------------------------------------------------------------


def test_unknown_run_lists_the_runs(seeded: tuple[str, Database], cli: typer.Typer) -> None:
    url, _ = seeded
    for command in ("status", "best", "trials", "plot"):
        args = [command, "--run", "nope", "--mongo", url] + (["--out", "/tmp/unused"] if command == "plot" else [])
        result = invoke(cli, *args)
        assert result.exit_code == 2, (command, result.output)
        assert f"unknown run 'nope'; runs in this database: {RUN}, {OTHER_RUN}" in result.stderr
        assert "Traceback" not in result.output


def test_run_is_required_with_several_runs(seeded: tuple[str, Database], cli: typer.Typer) -> None:
    url, _ = seeded
    result = invoke(cli, "status", "--mongo", url)
    assert result.exit_code == 2
    assert f"pass --run to choose a run; runs in this database: {RUN}, {OTHER_RUN}" in result.stderr


def test_password_is_never_printed(cli: typer.Typer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPO_MONGO_PASSWORD", raising=False)
    monkeypatch.delenv("HPO_MONGO_PASSWORD_FILE", raising=False)
    result = invoke(cli, "runs", "--mongo", "mongodb://ann:s3cret@127.0.0.1:1/hpo", "--connect-timeout", "0.2")
    assert result.exit_code == 2
    assert "cannot reach MongoDB" in result.stderr
    assert "s3cret" not in result.output and "ann:***@" in result.stderr


def test_no_database_given(cli: typer.Typer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPO_MONGO_URL", raising=False)
    result = invoke(cli, "runs")
    assert result.exit_code == 2
    assert "hpo-coord runs needs a database" in result.stderr


def test_hpo_coord_entry_point_has_the_commands(seeded: tuple[str, Database]) -> None:
    import subprocess
    import sys

    url, _ = seeded
    done = subprocess.run([sys.executable, "-m", "coordinator", "runs", "--mongo", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # not a terminal: rich's 80 columns, where the run names must stay whole
    assert RUN in done.stdout and OTHER_RUN in done.stdout


# -- the README's Mongo queries run, and say what they claim -----------------------------

DOC = Path(__file__).resolve().parents[2] / "README.md"
QUERY_SECTION = "## Monitoring with Mongo queries"
SCHEMA_FIELDS = {value for name, value in vars(s).items() if name.isupper() and isinstance(value, str)}


def doc_queries() -> dict[str, tuple[str, str]]:
    """``{heading: (mongosh block, python block)}`` of the queries section."""
    text = DOC.read_text()
    section = text[text.index(QUERY_SECTION):]
    end = section.find("\n## ", len(QUERY_SECTION))
    section = section if end < 0 else section[:end]
    queries = {}
    for chunk in section.split("\n### ")[1:]:
        title, _, body = chunk.partition("\n")
        blocks = dict(re.findall(r"```(js|python)\n(.*?)```", body, re.S))
        assert set(blocks) == {"js", "python"}, f"{title!r} needs one ```js and one ```python block"
        queries[title.strip()] = (blocks["js"], blocks["python"])
    return queries


def _field_paths(value: Any, match: bool = False) -> Iterator[str]:
    """Field paths a pipeline reads: ``$match`` keys and ``"$path"`` references."""
    if isinstance(value, str):
        if value.startswith("$") and not value.startswith("$$"):
            yield value[1:]
    elif isinstance(value, list):
        for item in value:
            yield from _field_paths(item, match)
    elif isinstance(value, dict):
        for key, item in value.items():
            if match and not key.startswith("$"):
                yield key
            # a $match document's keys are fields, also inside $and/$or/$nor; below
            # any other operator come expressions, whose fields are "$path" strings
            yield from _field_paths(item, key == "$match" or match and key in ("$and", "$or", "$nor"))


def _expected(db: Database) -> dict[str, Any]:
    """What each documented query must return on the seeded run, from plain Python."""
    jobs = _jobs(db)
    ok = sorted((j for j in _ok(jobs) if not j[s.RESULT].get("pruned")), key=lambda j: j[s.RESULT]["loss"])
    finished = [j for j in jobs if j[s.STATE] in (State.DONE, State.ERROR)]
    hourly = Counter((j[s.OWNER], j[s.FINISHED_AT].replace(minute=0, second=0, microsecond=0))
                     for j in finished)
    errors: dict[str, list[int]] = {}
    for j in jobs:
        if j[s.STATE] == State.ERROR:
            errors.setdefault(j[s.ERROR]["type"], []).append(j[s.TID])
    stale = [j for j in jobs if j[s.STATE] == State.RUNNING and j[s.OWNER] == "node-d:104"]
    return {
        "Counts by state": [{"_id": state, "trials": n} for state, n in
                            sorted(Counter(j[s.STATE] for j in jobs).items())],
        "The best five trials with their params": [
            {"tid": j[s.TID], "loss": j[s.RESULT]["loss"], "params": j[s.PARAMS]} for j in ok[:5]],
        "Running jobs without a heartbeat for a minute": [
            {"tid": j[s.TID], "owner": j[s.OWNER], "refresh_time": j[s.REFRESH_TIME],
             "lease_expires": j[s.LEASE]["expires"]} for j in stale],
        "Trials per worker per hour": [
            {"_id": {"worker": worker, "hour": hour}, "trials": n}
            for (worker, hour), n in sorted(hourly.items(), key=lambda kv: (kv[0][1], kv[0][0]))],
        "Errors grouped by type": sorted(
            [(kind, len(tids), sorted(tids)) for kind, tids in errors.items()], key=lambda e: (-e[1], e[0])),
        "The learning curve of a trial": ok[0][s.METRICS],
        "Pruned trials and where they stopped": [
            {"tid": j[s.TID], "step": j[s.RESULT]["pruned_step"], "value": j[s.RESULT]["pruned_value"],
             **({"loss": j[s.RESULT]["loss"]} if "loss" in j[s.RESULT] else {})}
            for j in jobs if j.get(s.RESULT, {}).get("pruned")],
        "Trials finished in the last hour": [{"trials": len(finished)}],
        "Workers and how long ago they were seen": ["node-a:101", "node-b:102", "node-c:103", "node-d:104"],
    }


def _shape(title: str, result: list[dict[str, Any]]) -> Any:
    """The part of a query's result that :func:`_expected` predicts."""
    if title == "Errors grouped by type":
        return [(r["_id"], r["trials"], sorted(r["tids"])) for r in result]
    if title == "Workers and how long ago they were seen":
        seen = {r["_id"]: r["seconds_since_seen"] for r in result}
        assert seen["node-d:104"] >= DEAD_FOR.total_seconds() - 1 and seen["node-c:103"] < 60
        assert [r["seconds_since_seen"] for r in result] == sorted(seen.values())
        return sorted(seen)
    return result


def test_documented_queries_run_and_agree(seeded: tuple[str, Database]) -> None:
    _, db = seeded
    queries = doc_queries()
    expected = _expected(db)
    assert len(queries) >= 6
    assert set(queries) == set(expected), "every documented query needs an expected value here"
    for title, (js, python) in queries.items():
        shell = re.fullmatch(r"\s*db\.(\w+)\.aggregate\((.*)\)\s*;?\s*", js, re.S)
        assert shell, f"{title!r}: the mongosh form must be db.COLLECTION.aggregate([...])"
        collection, pipeline = shell.group(1), json.loads(shell.group(2))
        namespace: dict[str, Any] = {"db": db}
        exec(python, namespace)  # noqa: S102 - the documentation's own example
        assert namespace["pipeline"] == pipeline, f"{title!r}: mongosh and pymongo forms differ"
        assert f"db.{collection}.aggregate(pipeline)" in python, title
        assert collection in (s.JOBS, s.WORKERS), title
        for path in _field_paths(pipeline):
            assert path.split(".")[0] in SCHEMA_FIELDS | {"_id"}, f"{title!r}: unknown field {path!r}"
        assert _shape(title, namespace["result"]) == expected[title], title



SCHEMA_DOC = DOC.parent / "docs" / "schema.md"
MONITORING_DOC = DOC.parent / "docs" / "monitoring.md"


def _mongosh_best_query(doc: Path, section: str) -> tuple[dict[str, Any], list[tuple[str, int]], int]:
    """The ``db.jobs.find(FILTER).sort(SORT).limit(N)`` of ``doc``'s ``section``, as
    pymongo takes it (mongosh's bare keys quoted)."""
    text = doc.read_text()
    text = text[text.index(section):]
    found = re.search(r"```js\n\s*db\.jobs\.find\((\{.*?\})\)\s*\.sort\((\{.*?\})\)\.limit\((\d+)\)\s*```", text, re.S)
    assert found, f"{doc.name}: no best-trial query in {section!r}"

    def parsed(literal: str) -> Any:
        return json.loads(re.sub(r"([{,]\s*)([$A-Za-z_][\w.]*)\s*:", r'\1"\2":', literal))

    return parsed(found.group(1)), list(parsed(found.group(2)).items()), int(found.group(3))


@pytest.mark.parametrize(("doc", "section"), [(DOC, "## The job documents"), (SCHEMA_DOC, "## `jobs`")],
                         ids=["README", "schema.md"])
def test_the_documented_best_trial_query_finds_what_hpo_coord_best_does(
        db: Database, doc: Path, section: str) -> None:
    """Among trials with lower losses that are not the best (pruned, failed, errored,
    still running, of another run), the query finds the one ``best_trial`` names."""
    query, sort, limit = _mongosh_best_query(doc, section)
    JobQueue(db).ensure_indexes()
    ok = {"status": "ok"}
    db[s.JOBS].insert_many([
        {s.EXP_KEY: RUN, s.TID: 0, s.STATE: State.DONE, s.RESULT: {**ok, "loss": 0.5}},
        {s.EXP_KEY: RUN, s.TID: 1, s.STATE: State.DONE, s.RESULT: {**ok, "loss": 0.3}},  # the best
        {s.EXP_KEY: RUN, s.TID: 2, s.STATE: State.DONE,
         s.RESULT: {**ok, "loss": 0.1, "pruned": True, "pruned_step": 1, "pruned_value": 0.1}},
        {s.EXP_KEY: RUN, s.TID: 3, s.STATE: State.DONE, s.RESULT: {"status": "fail", "loss": 0.05}},
        {s.EXP_KEY: RUN, s.TID: 4, s.STATE: State.ERROR, s.RESULT: {**ok, "loss": 0.04}},
        {s.EXP_KEY: RUN, s.TID: 5, s.STATE: State.RUNNING, s.RESULT: {**ok, "loss": 0.03}},
        {s.EXP_KEY: OTHER_RUN, s.TID: 0, s.STATE: State.DONE, s.RESULT: {**ok, "loss": 0.01}},
    ])
    found = list(db[s.JOBS].find({**query, s.EXP_KEY: RUN}).sort(sort).limit(limit))
    best = Store(db).view.best_trial(RUN)
    assert best is not None and best[s.TID] == 1
    assert [j[s.TID] for j in found] == [1]


def test_the_monitoring_pages_python_example_runs(seeded: tuple[str, Database],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    url, db = seeded
    text = MONITORING_DOC.read_text()
    example = re.search(r"```python\n(from coordinator import monitor\n.*?)```", text, re.S)
    assert example, "docs/monitoring.md: the example using coordinator.monitor is gone"
    code = example.group(1)
    assert '"mongodb://localhost:27017/hpo"' in code and '"cifar-1"' in code, code
    exec(code.replace('"mongodb://localhost:27017/hpo"', repr(url)).replace('"cifar-1"', repr(RUN)),  # noqa: S102
         {})
    best = monitor.run_status(Store(db).view, RUN).best
    assert best is not None and capsys.readouterr().out == f"{best}\n"


# -- malformed documents (issue 12, defect 9) ----------------------------------------------


def test_malformed_documents_are_left_out_or_read_as_missing_never_a_traceback(
    db: Database, db_url: str, cli: typer.Typer, tmp_path: Path
) -> None:
    from bson import ObjectId

    from tests.support.jobs import enqueue

    enqueue(db, "r", 3)
    queue = JobQueue(db)
    for _ in range(2):
        claim = queue.claim("w:1", exp_key="r")
        queue.report(claim, 1, {"val_loss": 1.0})
        queue.finish(claim, State.DONE, {"status": "ok", "loss": float(claim.tid)})
    db.runs.update_one({s.ID: "r"}, {"$set": {s.RUN_MAX_EVALS: "many", s.RUN_CREATED_AT: "once"}})
    db[s.JOBS].insert_many([
        {s.EXP_KEY: "r", s.STATE: State.DONE, s.RESULT: {"status": "ok", "loss": -1.0}},  # no tid
        {s.EXP_KEY: "r", s.TID: "abc", s.STATE: State.RUNNING, s.LEASE: "foo"},
        {s.EXP_KEY: "r", s.TID: 10, s.STATE: "weird", s.RESULT: "x", s.ERROR: "boom", s.MISC: "m",
         s.BOOK_TIME: "yesterday", s.FINISHED_AT: 5, s.ATTEMPTS: "x", s.OWNER: {"host": "h"},
         s.METRICS: "none"},
        {s.EXP_KEY: "r", s.TID: 11, s.STATE: State.DONE, s.RESULT: {"status": "ok", "loss": -2.0},
         s.PARAMS: {"x": ObjectId(), "when": server_time(db)}, s.MISC: {"vals": {"x": 3}}, s.METRICS: [1, "a"]},
        {s.EXP_KEY: "r", s.TID: 12, s.STATE: State.RUNNING, s.LEASE: {"token": "t", "expires": "soon"},
         s.REFRESH_TIME: "now"},
    ])
    db[s.WORKERS].insert_one({s.ID: "odd:1", s.WORKER_LAST_SEEN: server_time(db), s.WORKER_DONE: "many",
                              s.WORKER_CURRENT: "t", s.WORKER_HOST: 7})
    rows = monitor.trial_rows(Store(db).view, "r")
    assert [r["tid"] for r in rows] == [0, 1, 2, 10, 11, 12]
    odd = rows[3]
    assert (odd["state"], odd["status"], odd["attempts"], odd["book_time"], odd["error_type"]) == (
        "weird", None, None, None, None)
    assert rows[4]["params.when"] == str(db[s.JOBS].find_one({s.TID: 11})[s.PARAMS]["when"])
    status = monitor.run_status(Store(db).view, "r")
    assert [j.tid for j in status.stale] == [12] and status.stale[0].reasons == ["no valid lease"]
    assert status.best is not None and status.best.tid == 11
    assert monitor.learning_curves(Store(db).view, "r", [0, 10, 11]) == {0: [{"step": 1, "val_loss": 1.0}]}
    for args in (["status"], ["runs"], ["trials", "--format", "csv"], ["trials", "--format", "json"],
                 ["best"], ["plot", "--out", str(tmp_path)]):
        if args != ["runs"]:
            args = [*args, "--run", "r"]
        result = invoke(cli, *args, "--mongo", db_url)
        assert result.exit_code == 0, (args, result.output)
        assert "Traceback" not in result.output, args
    result = invoke(cli, "trials", "--run", "r", "--mongo", db_url, "--format", "csv")
    assert "left out 2 malformed job document(s)" in result.stderr
    assert "tid is missing" in result.stderr and "tid is 'abc', not an integer" in result.stderr


def test_progress_counts_done_trials_so_a_resume_that_replaced_errors_is_not_over_100_percent(
    db: Database, db_url: str, cli: typer.Typer
) -> None:
    # max_evals 2: the first session's two trials errored, the resume's two are done
    JobQueue(db).ensure_indexes()
    db[s.RUNS].insert_one({s.ID: "r", s.RUN_EXPERIMENT: EXPERIMENT.name, s.RUN_MAX_EVALS: 2})
    now = server_time(db)
    db[s.JOBS].insert_many([
        {s.EXP_KEY: "r", s.TID: tid, s.STATE: state, s.FINISHED_AT: now - timedelta(minutes=4 - tid),
         s.RESULT: {"status": "ok", "loss": 1.0} if state == State.DONE else {"status": "new"}}
        for tid, state in enumerate([State.ERROR, State.ERROR, State.DONE, State.DONE])])
    status = monitor.run_status(Store(db).view, "r")
    assert status.eta == timedelta(0)
    result = invoke(cli, "status", "--run", "r", "--mongo", db_url)
    assert result.exit_code == 0, result.output
    assert re.search(row("progress", re.escape("2 of 2 done (2 error(s) not counted)")), result.stdout)
    assert re.search(row("ETA", "complete"), result.stdout)


# -- pruning (issue 18) --------------------------------------------------------------------

def test_status_counts_pruned_trials_and_the_epochs_they_saved(seeded: tuple[str, Database],
                                                              cli: typer.Typer) -> None:
    _, db = seeded
    pruned = [j for j in _jobs(db) if j.get(s.RESULT, {}).get("pruned")]
    assert pruned, "the seeded run's median pruner pruned nothing: the test would test nothing"
    assert all(j[s.STATE] == State.DONE and len(j[s.METRICS]) == j[s.RESULT]["pruned_step"] for j in pruned)
    status = monitor.run_status(Store(db).view, RUN)
    assert status.pruning is not None and status.pruning.pruned == len(pruned)
    saved = sum(PRUNER.max_resource - j[s.RESULT]["pruned_step"] for j in pruned)
    assert status.pruning.steps_saved == saved
    assert monitor.run_status(Store(db).view, OTHER_RUN).pruning is None
    shown = invoke(cli, "status", "--run", RUN, "--mongo", seeded[0]).stdout
    assert re.search(row("pruning", rf"median on val_loss \(minimize\): {len(pruned)} trial\(s\) pruned, "
                         rf"{saved} epochs \(steps\) saved"), shown), shown
    # the settings median's rule reads, not the ones only asha and hyperband read
    settings_row = next(line for line in shown.splitlines() if "pruner settings" in line)
    assert all(key in settings_row for key in ("warmup_steps", "startup_trials", "max_resource")), shown
    assert "reduction_factor" not in settings_row and "min_resource" not in settings_row, shown


def test_plots_mark_pruned_trials(seeded: tuple[str, Database], tmp_path: Path) -> None:
    _, db = seeded
    points = monitor.trial_points(Store(db).view, RUN)
    pruned = {j[s.TID]: j[s.RESULT]["pruned_step"] for j in _jobs(db) if j.get(s.RESULT, {}).get("pruned")}
    assert {p.tid: p.pruned_step for p in points if p.pruned_step is not None} == pruned
    tid = next(iter(pruned))
    curves = monitor.learning_curves(Store(db).view, RUN, [tid])
    figure = plots.learning_curves_figure(curves, {}, RUN, pruned)
    ax = figure.axes[0]
    assert ax.lines[0].get_linestyle() == "--" and ax.lines[1].get_marker() == "x"
    assert f"pruned at step {pruned[tid]}" in ax.get_legend().get_texts()[0].get_text()


@pytest.mark.parametrize("bad_step", [float("nan"), float("inf"), -4, 99, "3", Decimal128("3")])
def test_a_malformed_pruned_step_saves_nothing_and_breaks_no_status(db: Database, bad_step: Any) -> None:
    """A pruned trial whose ``result.pruned_step`` is not a step within the budget (NaN,
    infinite, negative, past ``max_resource``, a string, a decimal as mongosh's
    NumberDecimal writes) counts as pruned and saves no step; the other pruned trials'
    savings are still summed."""
    run = f"malformed-step-{uuid.uuid4().hex[:8]}"
    for tid, step in ((0, 1), (1, bad_step)):
        db[s.JOBS].insert_one({s.EXP_KEY: run, s.TID: tid, s.STATE: State.DONE,
                               s.RESULT: {"status": "ok", "loss": 0.5, "pruned": True, "pruned_step": step}})
    status = monitor.pruning_status(Store(db).view, run, PRUNER.to_document())
    assert status is not None and status.pruned == 2
    assert status.steps_saved == PRUNER.max_resource - 1


def test_best_so_far_never_comes_from_a_pruned_trial() -> None:
    """The loss chart's best-so-far line and the PNG's title follow ``hpo-coord best``: a
    pruned trial (its loss the one it reported where it stopped) is never the best."""
    points = [monitor.TrialPoint(0, State.DONE, 0.05, pruned_step=1),   # lowest, but pruned
              monitor.TrialPoint(1, State.DONE, 0.4),
              monitor.TrialPoint(2, State.DONE, 0.01, pruned_step=3),
              monitor.TrialPoint(3, State.DONE, 0.3)]
    series = plots.loss_series(points)
    assert np.isnan(series.best_so_far[0]) and series.best_so_far[1:] == [0.4, 0.4, 0.3]
    assert plots.loss_figure(points, "r").axes[0].get_title() == "run r: loss per trial, best 0.3"
    only_pruned = plots.loss_figure(points[:1], "r").axes[0].get_title()
    assert only_pruned == "run r: loss per trial, no trial trained its whole budget yet"


def test_status_gives_a_short_throughput_span_to_a_tenth_of_a_second() -> None:
    """Six trials finished within 0.8 s: the span read "in the last 0s of activity" beside
    a rate of 22,500 trials/h (whole seconds, truncated)."""
    last = datetime(2026, 1, 1, 12, 0, 0, 800000)
    start = datetime(2026, 1, 1, 12, 0, 0)
    status = monitor.RunStatus(
        run="r", experiment=None, algo=None, max_evals=None, now=last, counts=monitor.StateCounts(done=6),
        best=None, throughput=monitor.Throughput(5 / (0.8 / 3600), 6, start, last), eta=None, stale=[],
        workers=[])
    console = Console(width=200, record=True)
    console.print(monitor_cli.render_status(status))
    text = console.export_text()
    assert "22500.0 trials/h (6 finished in the last 0.8s of activity)" in text, text
