"""A seeded run for the dashboard's tests, written the way workers write it.

``demo`` (experiment ``nested``): trials queued as fmin queues them, then through the
queue API: finished trials with per-epoch metrics, trials an ASHA pruner stopped (with
``pruned`` > 0; the run's settings then hold that pruner), error trials whose message
and traceback hold a password, a running trial on a live worker, a running trial whose
worker died five minutes ago, and new trials; two worker records, one of them stale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import PyMongoError

from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.queue import JobQueue
from jobstore.schema import State
from jobstore.workers import WorkerRegistry
from objectives.pruning import PrunerSettings
from objectives.tutorial import nested
from tests.support.jobs import enqueue

RUN = "demo"
LIVE_WORKER = "node-a:101"
DEAD_WORKER = "node-d:104"
SECRET = "s3cret-pw"
LEAKY_URL = f"mongodb://alice:{SECRET}@db.example:27017/hpo"
DEAD_FOR_S = 300
EPOCHS = 3
"""The steps a trial that runs to the end reports."""
PRUNER = PrunerSettings("asha", "val_loss", "minimize", max_resource=EPOCHS, min_resource=1, reduction_factor=2)
"""The pruner of a run seeded with pruned trials."""


@dataclass
class Seeded:
    """What was written, for tests to compare the dashboard against."""

    done: dict[int, float] = field(default_factory=dict)
    """tid -> loss of the finished trials (status ok), pruned ones included."""
    pruned: dict[int, int] = field(default_factory=dict)
    """tid -> the step where the pruner stopped the trial."""
    errors: list[int] = field(default_factory=list)
    running: int = -1
    stale: int = -1
    new: list[int] = field(default_factory=list)
    max_evals: int = 0


def loss_of(params: dict[str, Any]) -> float:
    return float(nested.objective(params, None))  # type: ignore[arg-type]


def finish_next(db: Database, run: str = RUN, owner: str = LIVE_WORKER,
                pruned_at: int | None = None) -> tuple[int, float]:
    """Claim the next new trial of ``run``, report :data:`EPOCHS` epochs and finish it ok;
    with ``pruned_at``, stop after that epoch and finish it as the worker finishes a
    pruned trial (ok, at the ``val_loss`` it reported there)."""
    queue = JobQueue(db)
    claim = queue.claim(owner, exp_key=run)
    assert claim is not None, "no new trial left to finish"
    loss = loss_of(claim.job[s.PARAMS])
    for epoch in range(1, (pruned_at or EPOCHS) + 1):
        val_loss = loss * (1 + 1 / epoch)
        queue.report(claim, epoch, {"val_loss": val_loss, "val_accuracy": epoch / (EPOCHS * (1 + loss))})
    result: dict[str, Any] = {"status": "ok", "loss": loss}
    if pruned_at is not None:
        loss = val_loss
        result = {"status": "ok", "loss": loss, "pruned": True, "pruned_step": pruned_at, "pruned_value": loss}
    assert queue.finish(claim, State.DONE, result, elapsed_s=0.5)
    return claim.tid, loss


def seed(db: Database, *, done: int = 24, pruned: int = 0, errors: int = 2, new: int = 4, run: str = RUN) -> Seeded:
    """Write the run described in the module doc into ``db``: ``done`` trials that ran
    to the end, then ``pruned`` trials stopped at epoch 1, 2, 1, 2, ..."""
    total = done + pruned + errors + 2 + new
    enqueue(db, run, total, experiment="nested", seed=3)
    settings = {f"{s.RUN_SETTINGS}.{s.RUN_PRUNER}": PRUNER.to_document()} if pruned else {}
    db[s.RUNS].update_one({s.ID: run}, {"$set": {s.RUN_MAX_EVALS: total + 10, s.RUN_ALGO: "tpe", **settings}})
    queue = JobQueue(db)
    queue.ensure_indexes()
    registry = WorkerRegistry(db)
    registry.ensure_indexes()
    registry.register(LIVE_WORKER, host="node-a", pid=101, device="cuda:0", version="test")
    seeded = Seeded(max_evals=total + 10)
    for _ in range(done):
        tid, loss = finish_next(db, run)
        seeded.done[tid] = loss
    for i in range(pruned):
        tid, loss = finish_next(db, run, pruned_at=1 + i % 2)
        seeded.done[tid] = loss
        seeded.pruned[tid] = 1 + i % 2
    for i in range(errors):
        claim = queue.claim(LIVE_WORKER, exp_key=run)
        assert claim is not None
        error = {"type": "ConnectionError", "reason": "exception",
                 "message": f"could not reach {LEAKY_URL} (attempt {i})",
                 "traceback": f"Traceback (most recent call last):\n  File \"train.py\", line 3\nConnectionError: {LEAKY_URL}"}
        assert queue.finish(claim, State.ERROR, {"status": "fail"}, error=error, elapsed_s=0.1)
        seeded.errors.append(claim.tid)
    claim = queue.claim(DEAD_WORKER, exp_key=run)
    assert claim is not None
    queue.report(claim, 1, {"val_loss": 0.9, "val_accuracy": 0.2})
    seeded.stale = claim.tid
    past = server_time(db) - timedelta(seconds=DEAD_FOR_S)
    db[s.JOBS].update_one({s.EXP_KEY: run, s.TID: claim.tid}, {"$set": {s.REFRESH_TIME: past, s.LEASE_EXPIRES: past}})
    registry.register(DEAD_WORKER, host="node-d", pid=104, device="cuda:3", version="test")
    registry.update(DEAD_WORKER, status="busy", current={"exp_key": run, "tid": claim.tid})
    db[s.WORKERS].update_one({s.ID: DEAD_WORKER}, {"$set": {s.WORKER_LAST_SEEN: past}})
    claim = queue.claim(LIVE_WORKER, exp_key=run)
    assert claim is not None
    seeded.running = claim.tid
    registry.update(LIVE_WORKER, status="busy", current={"exp_key": run, "tid": claim.tid},
                    trials_done=done + pruned + errors)
    seeded.new = [job[s.TID] for job in db[s.JOBS].find({s.EXP_KEY: run, s.STATE: State.NEW}, {s.TID: 1})]
    assert len(seeded.new) == new and all(math.isfinite(v) for v in seeded.done.values())
    return seeded


class WatchFails:
    """``db`` whose ``watch`` raises ``error`` while :attr:`failing` (a server without change
    streams raises ``OperationFailure``, one that is away ``AutoReconnect``); everything else
    is ``db``'s."""

    def __init__(self, db: Database, error: PyMongoError) -> None:
        self.db = db
        self.error = error
        self.failing = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)

    def __getitem__(self, name: str) -> Any:
        return self.db[name]

    def watch(self, *args: Any, **kwargs: Any) -> Any:
        if self.failing:
            raise self.error
        return self.db.watch(*args, **kwargs)
