"""The dispatch benchmark's no-op objective, registered like any user objective
(``--objective bench.noop:noop``).  It records when it ran, inside the worker, so the
benchmark measures idle gaps the same way on both sides (see bench/stock_side/stock_noop.py)."""

from __future__ import annotations

import os
import time
from typing import Any

from hyperopt import hp

from objectives.base import Experiment, Reporter

SPACE = {"x": hp.uniform("x", -5, 5)}


def _noop(params: dict[str, float], reporter: Reporter) -> dict[str, Any]:
    started = time.time()
    loss = float(params["x"]) ** 2
    return {"status": "ok", "loss": loss, "bench_t0": started, "bench_t1": time.time(),
            "bench_slot": str(os.getpid())}


noop = Experiment(
    name="bench_noop",
    space=SPACE,
    objective=_noop,
    max_evals=500,
    algo="rand",
    description="Dispatch benchmark: x^2 over x ~ U(-5, 5), returns at once.",
)
