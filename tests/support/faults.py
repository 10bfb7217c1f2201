"""Fault injection for the process-level tests, loaded with ``--objective``.

``--objective tests.support.faults:sleeper`` registers ``sleeper``, an experiment whose
objective sleeps ``seconds`` (run setting, default 60) without reporting metrics, so
only the heartbeat thread renews its lease; it stops early when asked to.

When the environment variable ``HPO_TEST_FAULT`` is set, importing this module also
breaks one of the store's operations, in the process that imports it, so that the
background thread calling it fails:

* ``job-heartbeat``: ``JobQueue.heartbeat`` (a worker's job heartbeat thread)
* ``worker-heartbeat``: ``WorkerRegistry.beat`` (a worker's record heartbeat thread)
* ``keeper``: ``RunStore.renew_coordinator`` (the coordinator's keeper thread)
* ``requeuer``: ``JobQueue.requeue_expired`` (the keeper's or an idle worker's requeuer)
* ``local-workers``: ``JobQueue.requeue_abandoned`` (the coordinator's thread watching its
  ``--local-workers``, when one exits)
* ``dashboard-feed``: ``ChangeFeed.signature`` (the dashboard's polling feed thread)

With ``HPO_TEST_FAULT_WHEN`` naming a file, the operation works until that file exists.
"""

from __future__ import annotations

import os
import time
from typing import Any

from hyperopt import hp

from coordinator.dashboard.live import ChangeFeed
from jobstore.queue import JobQueue
from jobstore.runs import RunStore
from jobstore.workers import WorkerRegistry
from objectives.base import Experiment, Reporter, Setting, TrialInterrupted

FAULT_ENV = "HPO_TEST_FAULT"
WHEN_ENV = "HPO_TEST_FAULT_WHEN"


def _sleep(x: float, reporter: Reporter) -> Any:
    deadline = time.monotonic() + float(reporter.settings.get("seconds", 60))
    while time.monotonic() < deadline:
        if reporter.should_stop():
            raise TrialInterrupted("asked to stop")
        time.sleep(0.1)
    return x**2


sleeper = Experiment(
    name="sleeper",
    space=hp.uniform("x", -5, 5),
    objective=_sleep,
    max_evals=1,
    description="sleeps without reporting (tests only)",
    settings=(Setting("seconds", float, help="how long", minimum=0),),
)


def _broken(what: str, original: Any, when: str | None) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        if when is not None and not os.path.exists(when):
            return original(*args, **kwargs)
        raise RuntimeError(f"injected fault: {what}")
    return fail


_TARGETS = {
    "job-heartbeat": (JobQueue, "heartbeat"),
    "worker-heartbeat": (WorkerRegistry, "beat"),
    "keeper": (RunStore, "renew_coordinator"),
    "requeuer": (JobQueue, "requeue_expired"),
    "local-workers": (JobQueue, "requeue_abandoned"),
    "dashboard-feed": (ChangeFeed, "signature"),
}

_fault = os.environ.get(FAULT_ENV)
if _fault:
    owner, name = _TARGETS[_fault]
    setattr(owner, name, _broken(_fault, getattr(owner, name), os.environ.get(WHEN_ENV)))
