"""The dispatch benchmark's no-op objective for stock hyperopt workers.

Importable without this project (stock workers unpickle the Domain, which refers to
``stock_noop.noop`` by name).  Records, inside the worker, when it ran and which
worker slot ran it (``HPO_BENCH_SLOT``, inherited by the per-job subprocesses that
stock ``hyperopt-mongo-worker`` starts, whose pids change with every job).
"""

from __future__ import annotations

import os
import time

from hyperopt import hp

SPACE = {"x": hp.uniform("x", -5, 5)}


def noop(params):
    started = time.time()
    loss = float(params["x"]) ** 2
    return {"status": "ok", "loss": loss, "bench_t0": started, "bench_t1": time.time(),
            "bench_slot": os.environ.get("HPO_BENCH_SLOT", str(os.getpid()))}
