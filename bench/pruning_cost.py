"""The cost of one pruning decision as the run grows: 100, 1,000 and 10,000 trials.

For each size, a fresh database holds that many completed trials, each with a score at
the step (median) or rung (ASHA) being decided, as a run with a pruner records them
(``curves``), plus the job documents.  Then 20 new trial attempts each take one decision
through the worker's path (:class:`objectives.pruning.Pruner` on
:class:`jobstore.curves.AttemptCurves`: record the score, then count on the index); the
report gives the median and the 95th percentile of a decision's time, and the index
keys and documents the server examined for the rule's main question.

    python bench/pruning_cost.py            # 100, 1,000, 10,000 trials
    python bench/pruning_cost.py --quick    # smoke test: 50 and 200 trials
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from jobstore import schema as s
from jobstore.queue import JobQueue
from objectives.pruning import Pruner, PrunerSettings

STEP = 5
DECISIONS = 20
RULES = {
    "median": PrunerSettings("median", "loss", "minimize", max_resource=15, startup_trials=5),
    "asha": PrunerSettings("asha", "loss", "minimize", max_resource=15, min_resource=1, reduction_factor=3),
}


def seed_run(db: object, n: int, rule: str, rng: random.Random) -> None:
    """``n`` completed trials of run ``r`` with their scores."""
    jobs = [{s.EXP_KEY: "r", s.TID: tid, s.STATE: 2, s.RESULT: {"status": "ok", "loss": rng.random()}}
            for tid in range(n)]
    db[s.JOBS].insert_many(jobs)  # type: ignore[index]
    if rule == "median":
        docs = [{s.CURVE_EXP_KEY: "r", s.CURVE_TID: tid, s.CURVE_TOKEN: "t", s.CURVE_STEP: STEP, s.CURVE_RUNG: None,
                 s.CURVE_BRACKET: None, s.CURVE_SCORE: rng.random(), s.CURVE_COMPLETE: True} for tid in range(n)]
    else:
        docs = [{s.CURVE_EXP_KEY: "r", s.CURVE_TID: tid, s.CURVE_TOKEN: "t", s.CURVE_STEP: None, s.CURVE_RUNG: 0,
                 s.CURVE_BRACKET: 0, s.CURVE_SCORE: rng.random(), s.CURVE_COMPLETE: True} for tid in range(n)]
    db[s.CURVES].insert_many(docs)  # type: ignore[index]


def examined(db: object, rule: str) -> str:
    """Keys and documents the server examined for the rule's count of scores."""
    query = ({s.CURVE_EXP_KEY: "r", s.CURVE_COMPLETE: True, s.CURVE_STEP: STEP} if rule == "median"
             else {s.CURVE_EXP_KEY: "r", s.CURVE_BRACKET: 0, s.CURVE_RUNG: 0})
    stats = db[s.CURVES].find({**query, s.CURVE_SCORE: {"$lt": 0.5}}).explain().get("executionStats", {})  # type: ignore[index]
    return f"{stats.get('totalKeysExamined', '?')} / {stats.get('totalDocsExamined', '?')}"


def measure(server: c.Server, n: int, rule: str) -> list[str]:
    db_name = f"bench_prune_cost_{uuid.uuid4().hex[:8]}"
    rng = random.Random(n)
    with server.client() as client:
        db = client[db_name]
        queue = JobQueue(db)
        queue.ensure_indexes()
        seed_run(db, n, rule, rng)
        times = []
        for i in range(DECISIONS):
            tid = n + i
            attempt = queue.curves.attempt("r", tid, f"token{i}", holds=lambda: True)
            pruner = Pruner(RULES[rule], attempt, "r", tid)
            started = time.perf_counter()
            pruner.should_prune(STEP if rule == "median" else 1, rng.random())
            times.append(time.perf_counter() - started)
        keys = examined(db, rule)
    server.drop(db_name)
    return [rule, f"{n:,}", c.ms(c.median(times)), c.ms(c.p95(times)), keys]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated trial counts")
    parser.add_argument("--out", type=Path, default=c.DEFAULT_REPORT)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the server's files here")
    parser.add_argument("--quick", action="store_true", help="smoke test: 50 and 200 trials")
    args = parser.parse_args(argv)
    sizes = [50, 200] if args.quick else [int(x) for x in args.sizes.split(",") if x]
    start = c.Start()
    rows = []
    with c.workdir(args.workdir) as tmp, c.bench_server(tmp) as server:
        for rule in RULES:
            for n in sizes:
                rows.append(measure(server, n, rule))
                print(rows[-1], flush=True)
        label = server.label
    body = c.section(script="pruning_cost.py", server=label, start=start, extra=[start.finished()],
                     headers=["rule", "trials at the step/rung", "decision, median (ms)", "decision, p95 (ms)",
                              "keys / documents examined by one count"], rows=rows)
    title = "The cost of one pruning decision as the run grows"
    c.publish(args.out, title, body, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
