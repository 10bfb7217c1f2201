"""Coordinator cost vs history size: the time of one coordinator iteration (what hyperopt's
fmin does per loop: counts, new trial ids, refreshes, the algorithm's suggest, the
insert) with 100, 1,000, 5,000 and 10,000 finished trials in the run, split into database
time (the trials layer's calls; of it, the time inside pymongo commands) and algorithm
time.  This project's ``jobstore.trials.MongoTrials`` (incremental refresh) against stock
``hyperopt.mongoexp.MongoTrials`` (whose refresh re-reads every trial's id and version),
on the same server.  Appends a table to docs/benchmarks.md.

    python bench/coordinator_cost.py            # full run (about 10 minutes on 2 cores)
    python bench/coordinator_cost.py --quick    # smoke test: 50 and 200 trials, no stock side
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pymongo
from hyperopt import anneal, base, rand, tpe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from bench.stock_side import cost_iteration as ci
from jobstore import schema as s
from jobstore.runs import RunStore
from jobstore.trials import MongoTrials

ALGOS = {"tpe": tpe.suggest, "rand": rand.suggest, "anneal": anneal.suggest}
TARGET_RATIO = 2.0


def run_ours(server: c.Server, levels: list[int], iterations: int, algo_name: str) -> list[dict]:
    wire = ci.WireTimer()
    db_name = f"bench_cost_{uuid.uuid4().hex[:8]}"
    client: pymongo.MongoClient = pymongo.MongoClient(server.url, event_listeners=[wire])
    db = client[db_name]
    algo = ALGOS[algo_name]
    domain = base.Domain(lambda p: 0.0, ci.SPACE)
    runs = RunStore(db)
    out = []

    def finish_trial(tid: int, loss: float) -> None:
        # what a worker's claim and result write leave behind (updated_at and version stamped)
        db.jobs.update_one({s.EXP_KEY: ci.EXP_KEY, s.TID: tid}, s.stamped({
            s.STATE: 2, s.OWNER: "bench-host:2", s.RESULT: {"status": "ok", "loss": loss},
            s.BOOK_TIME: s.Expr.now(), s.FINISHED_AT: s.Expr.now()}))

    try:
        MongoTrials(db, exp_key=ci.EXP_KEY, refresh=False)  # indexes
        for level in levels:
            done = db.jobs.count_documents({s.EXP_KEY: ci.EXP_KEY, s.STATE: 2})
            if level > done:
                top = db.jobs.find_one({s.EXP_KEY: ci.EXP_KEY}, sort=[(s.TID, -1)])
                start = int(top[s.TID]) + 1 if top else 0
                for chunk in range(start, start + level - done, 1000):
                    end = min(chunk + 1000, start + level - done)
                    db.jobs.insert_many(ci.make_docs(domain, range(chunk, end), 1 + chunk, ours=True))
            runs.ensure(ci.EXP_KEY)
            wire.on = True
            before = wire.total
            started = time.perf_counter()
            trials = MongoTrials(db, exp_key=ci.EXP_KEY)
            first = time.perf_counter() - started
            wire.on = False
            first_wire = wire.total - before
            timed = []
            for i in range(iterations + 1):
                phases = ci.one_iteration(trials, domain, algo, 10_001 + i, wire, finish_trial)
                if i:
                    timed.append(phases)
            row = ci.summarize(max(level, done), first, timed, first_wire)
            print(f"  [ours] {row['finished']} trials: iteration {row['total_s'] * 1000:.1f} ms, database "
                  f"{row['database_s'] * 1000:.1f} ms, algorithm {row['algorithm_s'] * 1000:.1f} ms (load {c.load()})",
                  flush=True)
            out.append(row)
    finally:
        client.drop_database(db_name)
        client.close()
    return out


def run_stock(server: c.Server, env: c.StockEnv, levels: list[int], iterations: int, algo_name: str,
              indexes: bool, timeout: float) -> tuple[list[dict], str]:
    db_name = f"bench_cost_stock_{uuid.uuid4().hex[:8]}"
    command = [str(env.python), "-W", "ignore", str(c.STOCK_SIDE / "stock_coordinator_cost.py"),
               "--host-port", server.host_port, "--db", db_name, "--levels", ",".join(map(str, levels)),
               "--iterations", str(iterations), "--algo", algo_name] + (["--indexes"] if indexes else [])
    out: list[dict] = []
    note = ""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env.env(), start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.strip()
            if line.startswith("{"):
                row = json.loads(line)
                print(f"  [stock] {row['finished']} trials: iteration {row['total_s'] * 1000:.1f} ms, database "
                      f"{row['database_s'] * 1000:.1f} ms, algorithm {row['algorithm_s'] * 1000:.1f} ms "
                      f"(load {c.load()})", flush=True)
                out.append(row)
            if time.monotonic() > deadline:
                note = f"stock side stopped after {timeout:.0f} s"
                break
    finally:
        c.stop_processes([process], grace=5)
        if process.returncode not in (0, None, -15) and not note:
            error = (process.stderr.read() if process.stderr else "").strip().splitlines()
            note = f"stock side exited {process.returncode}: {error[-1] if error else ''}"
        server.drop(db_name)
    return out, note


def report(ours: list[dict], stock: list[dict], args: argparse.Namespace, server: c.Server,
           env: c.StockEnv | None, notes: list[str], start: c.Start) -> str:
    rows = []
    for side, data in (("hpo-queue", ours), ("stock hyperopt", stock)):
        if not data:
            continue
        base_db = data[0]["database_s"]
        for row in data:
            ratio = row["database_s"] / base_db if base_db else float("nan")
            ok = ratio <= TARGET_RATIO if side.startswith("hpo-queue") and row is data[-1] and len(data) > 1 else None
            p = row["phases"]
            rows.append([
                side, f"{row['finished']:,}", c.ms(row["first_load_s"]), c.ms(row["total_s"]),
                c.ms(row["database_s"]), c.ms(row["wire_s"]), c.ms(row["algorithm_s"]),
                " / ".join(c.ms(p.get(k, [float("nan")])[0]) for k in ("refresh", "count", "ids", "insert")),
                c.mark(f"{ratio:.2f}x", ok),
            ])
    headers = ["side", "finished trials", "first load (ms)", "iteration (ms)", "database (ms)",
               "of which in pymongo commands (ms)", f"algorithm `{args.algo}` (ms)",
               "database by call: refresh x3 / count x4 / new ids / insert (ms)", "database vs smallest"]
    extra = [
        f"- Stock side: {env.versions if env else 'not run'}" + (f"; {'; '.join(env.notes)}" if env and env.notes else ""),
        f"- Setup: a run filled with finished trials (space: uniform, loguniform, 3-way choice; documents "
        f"as a worker leaves them, last written an hour before), then {args.iterations} timed iterations per "
        "size after one warm-up, medians shown. One iteration is what hyperopt's FMinIter does per loop for one "
        "finished and one new trial: count(new), new_trial_ids(1), refresh, suggest, insert_trial_docs, refresh, "
        "count(new), [a simulated worker finishes the new trial, not timed], refresh, losses, "
        "count(new, running), count(done). 'database' is the time inside the trials object's calls (refresh, "
        "counts, ids, insert) including its client-side bookkeeping; the next column is the part spent in "
        "pymongo commands (command monitoring). 'first load' is constructing the trials object (full read), "
        "once per coordinator start.",
        "- Stock hyperopt creates no indexes; "
        + ("it was given (exp_key, state) and (exp_key, tid) indexes here so that its counts are indexed "
           "like this project's and the comparison isolates refresh." if args.stock_indexes
           else "it ran without indexes, as shipped."),
        f"- Target: this project's database time per iteration at the largest size at most {TARGET_RATIO:.0f}x "
        "that at the smallest (stock grows linearly).",
        start.finished(),
    ]
    extra += [f"- Note: {n}" for n in notes]
    return c.section(script="coordinator_cost.py", server=server.label, start=start, extra=extra,
                     headers=headers, rows=rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="100,1000,5000,10000", help="finished-trial counts")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per size")
    parser.add_argument("--algo", choices=tuple(ALGOS), default="tpe")
    parser.add_argument("--stock-indexes", action=argparse.BooleanOptionalAction, default=True,
                        help="give stock's collection indexes on (exp_key, state) and (exp_key, tid)")
    parser.add_argument("--stock-venv", type=Path, default=None)
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--stock-timeout", type=float, default=480, help="seconds allowed for the stock side")
    parser.add_argument("--quick", action="store_true", help="smoke test: 50 and 200 trials, 2 iterations, no stock")
    parser.add_argument("--stock", action="store_true", help="with --quick: run the stock side too")
    parser.add_argument("--out", type=Path, default=c.DEFAULT_REPORT)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.iterations = "50,200", 2
        if not args.stock:
            args.skip_stock = True
    levels = [int(x) for x in args.levels.split(",")]
    start = c.Start()
    notes: list[str] = []
    if args.skip_stock:
        notes.append("stock side skipped (--quick without --stock, or --skip-stock)")
        print(f"NOTE: {notes[-1]}", flush=True)
    with c.workdir(args.workdir) as tmp, c.bench_server(tmp) as server:
        print(f"server: {server.label}", flush=True)
        env = None
        stock: list[dict] = []
        if not args.skip_stock:
            try:
                env = c.check_stock_server(c.stock_env(args.stock_venv), server)
                if not env.talks_to_server:
                    notes.append(f"stock side not measured: {env.problem}")
                    env = None
            except Exception as exc:  # noqa: BLE001
                notes.append(f"stock side not measured: {exc}")
                env = None
        print(f"[ours] levels {levels} (load {c.load()})", flush=True)
        ours = run_ours(server, levels, args.iterations, args.algo)
        if env is not None:
            print(f"[stock] levels {levels} (load {c.load()})", flush=True)
            stock, note = run_stock(server, env, levels, args.iterations, args.algo, args.stock_indexes,
                                    args.stock_timeout)
            if note:
                notes.append(note)
        body = report(ours, stock, args, server, env, notes, start)
    title = "Coordinator cost vs history size"
    c.publish(args.out, title, body, quick=args.quick)
    return 0 if len(ours) == len(levels) else 1


if __name__ == "__main__":
    sys.exit(main())
