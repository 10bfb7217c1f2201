"""One coordinator iteration, timed the same way for this project and for stock hyperopt.

Imported by bench/coordinator_cost.py (this project's side, pymongo 4) and by
bench/stock_side/stock_coordinator_cost.py (stock side, pymongo 3); so it imports
neither this project nor anything pymongo-version specific beyond ``pymongo.monitoring``.

An iteration is what hyperopt's ``FMinIter.run`` does per loop when one trial has
finished and one new one is suggested (asynchronous trials)::

    count(new) ; new_trial_ids(1) ; refresh ; ALGO ; insert_trial_docs ; refresh ; count(new)
    (fmin sleeps; a worker finishes the trial: not timed)
    refresh ; losses ; count(new, running) ; count(done)

Everything but ALGO and ``losses`` is the trials layer talking to the database
("database time"); of that, the time spent inside pymongo commands is "wire time"
(measured with pymongo's command monitoring: from sending a command to having its reply).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from hyperopt import base, hp, rand
from pymongo import monitoring

SPACE = {
    "x": hp.uniform("x", -5, 5),
    "lr": hp.loguniform("lr", -7, 0),
    "kind": hp.choice("kind", ["a", "b", "c"]),
}
EXP_KEY = "coordinator-cost"


def loss_of(vals):
    return (vals["x"][0] - 1.0) ** 2 + abs(vals["lr"][0] - 0.01) + 0.1 * vals["kind"][0]


class WireTimer(monitoring.CommandListener):
    """Sums the durations of pymongo commands while ``on``."""

    def __init__(self):
        self.on = False
        self.total = 0.0
        self.commands = 0

    def started(self, event):
        pass

    def succeeded(self, event):
        if self.on:
            self.total += event.duration_micros / 1e6
            self.commands += 1

    def failed(self, event):
        if self.on:
            self.total += event.duration_micros / 1e6
            self.commands += 1


def plain(value):
    """``value`` with numpy scalars and arrays turned into plain Python (BSON-encodable)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):
        return plain(value.tolist())
    return value


def make_docs(domain, tids, seed, ours):
    """Finished trial documents for ``tids``, as they look after a worker finished them."""
    docs = [plain(doc) for doc in rand.suggest(list(tids), domain, base.Trials(exp_key=EXP_KEY), seed)]
    when = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    for doc in docs:
        doc["exp_key"] = EXP_KEY
        doc["state"] = base.JOB_STATE_DONE
        doc["result"] = {"status": "ok", "loss": float(loss_of(doc["misc"]["vals"]))}
        doc["owner"] = "bench-host:1"
        doc["book_time"] = when
        doc["refresh_time"] = when
        doc["version"] = 3
        if ours:
            doc["updated_at"] = when
            doc["params"] = {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
            doc["attempts"] = 1
            doc["max_attempts"] = 3
            doc["lease"] = {"token": "0" * 32, "expires": None}
            doc["metrics"] = []
            doc["started_at"] = when
            doc["finished_at"] = when
    return docs


def one_iteration(trials, domain, algo, seed, wire, finish_trial):
    """Run one iteration; return ``{phase: [elapsed_s, wire_s]}`` plus totals."""
    phases = {}

    def timed(name, call):
        wire.on = True
        before = wire.total
        started = time.perf_counter()
        try:
            return call()
        finally:
            elapsed = time.perf_counter() - started
            wire.on = False
            slot = phases.setdefault(name, [0.0, 0.0])
            slot[0] += elapsed
            slot[1] += wire.total - before

    timed("count", lambda: trials.count_by_state_unsynced(base.JOB_STATE_NEW))
    ids = timed("ids", lambda: trials.new_trial_ids(1))
    timed("refresh", trials.refresh)
    docs = timed("algo", lambda: algo(ids, domain, trials, seed))
    timed("insert", lambda: trials.insert_trial_docs(docs))
    timed("refresh", trials.refresh)
    timed("count", lambda: trials.count_by_state_unsynced(base.JOB_STATE_NEW))
    finish_trial(docs[0]["tid"], float(loss_of(docs[0]["misc"]["vals"])))
    timed("refresh", trials.refresh)
    timed("losses", trials.losses)
    timed("count", lambda: trials.count_by_state_unsynced([base.JOB_STATE_NEW, base.JOB_STATE_RUNNING]))
    timed("count", lambda: trials.count_by_state_unsynced(base.JOB_STATE_DONE))
    return phases


def summarize(level, first_load, runs, wire_first):
    """Median over iterations of each phase; database = all phases but algo and losses."""
    def med(values):
        values = sorted(values)
        n = len(values)
        return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])

    names = sorted({name for run in runs for name in run})
    phase = {name: [med([run.get(name, [0, 0])[0] for run in runs]),
                    med([run.get(name, [0, 0])[1] for run in runs])] for name in names}
    database = [sum(v[0] for k, v in run.items() if k not in ("algo", "losses")) for run in runs]
    wire = [sum(v[1] for k, v in run.items() if k not in ("algo", "losses")) for run in runs]
    algorithm = [run["algo"][0] + run.get("losses", [0, 0])[0] for run in runs]
    total = [sum(v[0] for v in run.values()) for run in runs]
    return {
        "finished": level,
        "first_load_s": first_load,
        "first_load_wire_s": wire_first,
        "iterations": len(runs),
        "total_s": med(total),
        "database_s": med(database),
        "wire_s": med(wire),
        "algorithm_s": med(algorithm),
        "phases": phase,
    }
