"""The cost of one pruning decision as the run grows: 100, 1,000 and 10,000 trials.

For each size, a fresh database holds that many completed trials, each with a score at
the step (median) or rung (ASHA) being decided, written an hour before (as a run with a
pruner records them in ``curves``), plus the job documents.  One worker process (its own
client and :class:`jobstore.curves.CurveStore`) then decides as 21 new trial attempts
in turn, through the worker's path (:class:`objectives.pruning.Pruner` on
:class:`jobstore.curves.AttemptCurves`: record the score, bring the process's copy of
the scores up to date, answer in memory).  Before each decision, the other workers
(another client) record the scores of ``--others`` more trials at that step or rung and
complete them, so every update has something to read.

The report gives the first decision (the process reads the step or rung whole), the
median and 95th percentile of the 20 later ones, the index keys and documents the
server examined for the last update's read of the changes, and the memory the copy
takes (measured with ``tracemalloc`` in a separate pass).

    python bench/pruning_cost.py            # 100, 1,000, 10,000 trials
    python bench/pruning_cost.py --quick    # smoke test: 50 and 200 trials
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.curves import CHANGE_OVERLAP, changes_query
from jobstore.queue import JobQueue
from objectives.pruning import Pruner, PrunerSettings

STEP = 5
DECISIONS = 20
RULES = {
    "median": PrunerSettings("median", "loss", "minimize", max_resource=15, startup_trials=5),
    "asha": PrunerSettings("asha", "loss", "minimize", max_resource=15, min_resource=1, reduction_factor=3),
}


def seed_run(db: object, n: int, rule: str, rng: random.Random) -> None:
    """``n`` completed trials of run ``r`` with their scores, written an hour ago."""
    jobs = [{s.EXP_KEY: "r", s.TID: tid, s.STATE: 2, s.RESULT: {"status": "ok", "loss": rng.random()}}
            for tid in range(n)]
    db[s.JOBS].insert_many(jobs)  # type: ignore[index]
    where = ({s.CURVE_STEP: STEP, s.CURVE_RUNG: None, s.CURVE_BRACKET: None} if rule == "median"
             else {s.CURVE_STEP: None, s.CURVE_RUNG: 0, s.CURVE_BRACKET: 0})
    written = server_time(db) - timedelta(hours=1)  # type: ignore[arg-type]
    docs = [{s.CURVE_EXP_KEY: "r", s.CURVE_TID: tid, s.CURVE_TOKEN: "t", **where, s.CURVE_SCORE: rng.random(),
             s.CURVE_COMPLETE: True, s.CURVE_REMOVED: False, s.CURVE_CHANGED: written} for tid in range(n)]
    db[s.CURVES].insert_many(docs)  # type: ignore[index]


def decide(queue: JobQueue, rule: str, tid: int, rng: random.Random) -> float:
    """One decision of a new attempt of trial ``tid`` through ``queue``'s copy; its time."""
    attempt = queue.curves.attempt("r", tid, f"token{tid}", holds=lambda: True)
    pruner = Pruner(RULES[rule], attempt, "r", tid)
    started = time.perf_counter()
    pruner.should_prune(STEP if rule == "median" else 1, rng.random())
    return time.perf_counter() - started


def others_write(queue: JobQueue, rule: str, tids: range, rng: random.Random) -> None:
    """Other workers record the scores of trials ``tids`` at the step or rung, and complete them."""
    for tid in tids:
        attempt = queue.curves.attempt("r", tid, f"token{tid}", holds=lambda: True)
        if rule == "median":
            attempt.record_step(STEP, rng.random())
        else:
            attempt.record_rung(0, 0, rng.random())
        queue.curves.complete("r", tid, f"token{tid}")


def examined(db: object) -> str:
    """Keys and documents the server examines for an update's read of the changes."""
    since = server_time(db) - CHANGE_OVERLAP  # type: ignore[arg-type]
    stats = db[s.CURVES].find(changes_query("r", since)).explain().get("executionStats", {})  # type: ignore[index]
    return f"{stats.get('totalKeysExamined', '?')} / {stats.get('totalDocsExamined', '?')}"


def copy_memory(server: c.Server, db_name: str, rule: str) -> float:
    """Bytes a fresh process's copy of the seeded step or rung takes."""
    with server.client() as client:
        queue = JobQueue(client[db_name])
        run = queue.curves.run("r")
        key = ("step", STEP) if rule == "median" else ("rung", 0, 0)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        size = run.scores(key).size()  # type: ignore[arg-type]
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    return held / max(size, 1)


def measure(server: c.Server, n: int, rule: str, others: int) -> list[str]:
    db_name = f"bench_prune_cost_{uuid.uuid4().hex[:8]}"
    rng = random.Random(n)
    with server.client() as client, server.client() as other_client:
        db = client[db_name]
        queue = JobQueue(db)
        queue.ensure_indexes()
        seed_run(db, n, rule, rng)
        other = JobQueue(other_client[db_name])
        tid = n
        first = decide(queue, rule, tid, rng)
        times = []
        for _ in range(DECISIONS):
            others_write(other, rule, range(tid + 1, tid + 1 + others), rng)
            tid += others + 1
            times.append(decide(queue, rule, tid, rng))
        keys = examined(db)
    per_score = copy_memory(server, db_name, rule)
    server.drop(db_name)
    return [rule, f"{n:,}", c.ms(first), c.ms(c.median(times)), c.ms(c.p95(times)), keys, f"{per_score:.0f}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated trial counts")
    parser.add_argument("--others", type=int, default=3,
                        help="scores the other workers record between two decisions of the measured one")
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
                rows.append(measure(server, n, rule, args.others))
                print(rows[-1], flush=True)
        label = server.label
    body = c.section(script="pruning_cost.py", server=label, start=start, extra=[start.finished()],
                     headers=["rule", "trials at the step/rung", "first decision in a process (ms)",
                              "later decisions, median (ms)", "later decisions, p95 (ms)",
                              "keys / documents examined by an update's read", "copy's memory (bytes per score)"],
                     rows=rows)
    title = "The cost of one pruning decision as the run grows"
    c.publish(args.out, title, body, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
