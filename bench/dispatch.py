"""Dispatch benchmark: how fast trials flow through the queue with a no-op objective.

This project (``hpo-coord start`` + ``hpo-worker`` processes) against stock hyperopt
(``fmin`` with ``hyperopt.mongoexp.MongoTrials`` + ``hyperopt-mongo-worker`` processes,
from a virtual environment of their own with ``pymongo<4``), on the same server, with
1, 4 and 8 workers.  Reports trials per second and each worker's idle gap between the
end of one trial and the start of the next, measured inside the workers (the no-op
objective records when it starts and returns), overall and only over the gaps during
which the queue held a job (from the coordinator's insert times and the jobs'
``book_time``).  Appends a table to docs/benchmarks.md.

    python bench/dispatch.py            # full run (about 10 minutes on 2 cores)
    python bench/dispatch.py --quick    # smoke test; skips the stock side

``--write-concern`` measures instead what durable writes cost this project: the same
runs with the embedded server syncing its log at every commit or not, and the store's
client writing with its default ``w=majority, journal=true`` or with ``w=1,
journal=false`` (``?w=1&journal=false`` in the URL), interleaved, ``--repeat`` times each; and the latency of one client's writes in each
configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import IO

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as c
from jobstore.trials import DEFAULT_POLL_INTERVAL_S
from worker.loop import DEFAULT_POLL_MAX_S, DEFAULT_POLL_MIN_S

TARGET_SPEEDUP = 20.0
TARGET_GAP_S = 0.050


@dataclass
class Result:
    side: str
    workers: int
    algo: str
    evals: int
    queue: int
    done: int = 0
    wall_s: float = float("nan")
    rate: float = float("nan")
    gaps: list[float] = field(default_factory=list)
    busy_gaps: list[float] = field(default_factory=list)
    doc_gaps: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds used during the run by the server, the coordinator and the workers."""
    note: str = ""

    def cpu_cell(self) -> str:
        if not self.cpu:
            return ""
        cores = os.cpu_count() or 1
        parts = " / ".join(f"{self.cpu.get(k, float('nan')):.0f}" for k in ("server", "coordinator", "workers"))
        return f"{parts} of {cores} x {self.wall_s:.0f}"


class CpuMeter:
    """CPU seconds of the server, the coordinator and the workers over one run.

    The server and the workers are read from /proc while they run; the coordinator is
    read from this process's waited-for children after it exits (call ``coordinator_done``
    right after waiting for it, before the workers are stopped)."""

    def __init__(self, server: c.Server) -> None:
        self._server = server
        self._server0 = c.cpu_seconds(server.pid)
        self._children0 = c.children_cpu_seconds()
        self.cpu: dict[str, float] = {}

    def coordinator_done(self) -> None:
        self.cpu["coordinator"] = c.children_cpu_seconds() - self._children0

    def workers_before_stop(self, workers: list[subprocess.Popen]) -> None:
        self.cpu["workers"] = sum(c.cpu_seconds(p.pid) for p in workers)
        self.cpu["server"] = c.cpu_seconds(self._server.pid) - self._server0


def _epoch(value) -> float:
    return value.replace(tzinfo=UTC).timestamp()


def _read_inserts(path: Path) -> dict[int, float]:
    inserts: dict[int, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            tid, at = line.split()
            inserts[int(tid)] = float(at)
    return inserts


def analyse(result: Result, docs: list[dict], inserts: dict[int, float], *, doc_gaps: bool) -> Result:
    """Fill in rate and gaps from finished job documents and insert times."""
    runs = [d for d in docs if isinstance(d.get("result"), dict) and "bench_t0" in d["result"]]
    result.done = len(runs)
    if not runs:
        result.note = "no trial finished"
        return result
    t0 = np.array([d["result"]["bench_t0"] for d in runs])
    t1 = np.array([d["result"]["bench_t1"] for d in runs])
    result.rate = (len(runs) - 1) / max(1e-9, float(t1.max() - t0.min())) if len(runs) > 1 else float("nan")
    # jobs waiting at time T: inserted at or before T, claimed (book_time) after T
    pairs = [(inserts[d["tid"]], _epoch(d["book_time"])) for d in docs
             if d.get("tid") in inserts and d.get("book_time") is not None]
    inserted = np.sort([p[0] for p in pairs])
    booked = np.sort([p[1] for p in pairs])

    def waiting(at: float) -> int:
        return int(np.searchsorted(inserted, at, side="right") - np.searchsorted(booked, at, side="right"))

    by_slot: dict[str, list[dict]] = {}
    for d in runs:
        by_slot.setdefault(str(d["result"]["bench_slot"]), []).append(d)
    for jobs in by_slot.values():
        jobs.sort(key=lambda d: d["result"]["bench_t0"])
        for prev, nxt in zip(jobs, jobs[1:], strict=False):
            gap = nxt["result"]["bench_t0"] - prev["result"]["bench_t1"]
            result.gaps.append(gap)
            if waiting(prev["result"]["bench_t1"]) > 0:
                result.busy_gaps.append(gap)
            if doc_gaps and prev.get("finished_at") and nxt.get("started_at"):
                result.doc_gaps.append(_epoch(nxt["started_at"]) - _epoch(prev["finished_at"]))
    return result


def drive(result: Result, server: c.Server, db_name: str, run: str, logs: Path, timeout: float, name: str,
          start_workers: Callable[[IO[bytes]], list[subprocess.Popen]],
          start_coordinator: Callable[[IO[bytes]], subprocess.Popen]) -> list[dict]:
    """Start the workers, then the coordinator; wait for it (at most ``timeout``) and stop
    the workers.  Fills in ``result``'s wall time, CPU and note; returns the run's done
    jobs and drops the database."""
    with open(logs, "ab") as out:
        procs = start_workers(out)
        started = time.monotonic()
        meter = CpuMeter(server)
        coord = start_coordinator(out)
        try:
            code = coord.wait(timeout)
        except subprocess.TimeoutExpired:
            c.stop_processes([coord])
            code = None
            result.note = f"stopped after {timeout:.0f} s"
        result.wall_s = time.monotonic() - started
        meter.coordinator_done()
        meter.workers_before_stop(procs)
        result.cpu = meter.cpu
        c.stop_processes(procs)
    if code not in (0, None):
        result.note = f"{name} exited {code}; see {logs}"
    with server.client() as client:
        docs = list(client[db_name].jobs.find({"exp_key": run, "state": 2}))
    server.drop(db_name)
    return docs


def run_ours(server: c.Server, tmp: Path, workers: int, evals: int, algo: str, queue: int,
             timeout: float, poll: float, worker_poll: float, url_query: str = "") -> Result:
    result = Result("hpo-queue", workers, algo, evals, queue)
    db_name = f"bench_dispatch_{uuid.uuid4().hex[:8]}"
    url = server.database_url(db_name) + url_query
    run = f"dispatch-w{workers}-{algo}"
    inserts = tmp / f"{db_name}.inserts"
    env = c.our_env(HPO_BENCH_INSERT_LOG=str(inserts))

    def start_workers(out: IO[bytes]) -> list[subprocess.Popen]:
        return [subprocess.Popen(
            [sys.executable, "-m", "worker", "--mongo", url, "--run", run, "--objective", "bench.noop:noop",
             "--poll-min", str(worker_poll), "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True)
            for _ in range(workers)]

    def start_coordinator(out: IO[bytes]) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "bench._coord_timed", "start", "--exp", "bench_noop", "--objective",
             "bench.noop:noop", "--mongo", url, "--run", run, "--max-evals", str(evals), "--algo", algo,
             "--queue", str(queue), "--poll-interval", str(poll), "--seed", "1", "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True)

    docs = drive(result, server, db_name, run, tmp / f"{db_name}.log", timeout, "hpo-coord",
                 start_workers, start_coordinator)
    return analyse(result, docs, _read_inserts(inserts), doc_gaps=True)


def run_stock(server: c.Server, env: c.StockEnv, tmp: Path, workers: int, evals: int, algo: str,
              queue: int, poll: float, timeout: float) -> Result:
    result = Result("stock hyperopt", workers, algo, evals, queue)
    db_name = f"bench_stock_{uuid.uuid4().hex[:8]}"
    run = f"dispatch-w{workers}-{algo}"
    inserts = tmp / f"{db_name}.inserts"
    work = tmp / db_name
    work.mkdir()

    def start_workers(out: IO[bytes]) -> list[subprocess.Popen]:
        return [subprocess.Popen(
            [str(env.worker), f"--mongo={server.host_port}/{db_name}", f"--poll-interval={poll}",
             f"--exp-key={run}"],
            stdout=out, stderr=subprocess.STDOUT, env=env.env(HPO_BENCH_SLOT=str(slot)), cwd=work,
            start_new_session=True)
            for slot in range(workers)]

    def start_coordinator(out: IO[bytes]) -> subprocess.Popen:
        return subprocess.Popen(
            [str(env.python), "-W", "ignore", str(c.STOCK_SIDE / "stock_driver.py"),
             "--url", f"mongo://{server.host_port}/{db_name}/jobs", "--exp-key", run,
             "--max-evals", str(evals), "--algo", algo, "--queue", str(queue), "--seed", "1",
             "--insert-log", str(inserts)],
            stdout=out, stderr=subprocess.STDOUT, env=env.env(), cwd=work, start_new_session=True)

    docs = drive(result, server, db_name, run, tmp / f"{db_name}.log", timeout, "stock driver",
                 start_workers, start_coordinator)
    return analyse(result, docs, _read_inserts(inserts), doc_gaps=False)


def report(results: list[Result], args: argparse.Namespace, server: c.Server, stock: c.StockEnv | None,
           stock_note: str, start: c.Start) -> str:
    stock_rate = {(r.workers, r.algo): r.rate for r in results if r.side.startswith("stock")}
    rows = []
    for r in results:
        ours = r.side.startswith("hpo-queue")
        base = stock_rate.get((r.workers, r.algo))
        if ours and base and not math.isnan(base):
            speedup = r.rate / base
            ok = speedup >= TARGET_SPEEDUP if r.workers == 4 else None
            speed = c.mark(f"{speedup:.0f}x", ok)
        else:
            speed = ""
        gap_ok = (c.median(r.busy_gaps) <= TARGET_GAP_S) if ours and r.workers == 4 and r.busy_gaps else None
        rows.append([
            r.side, r.workers, r.algo, f"{r.done}/{r.evals}", r.queue, f"{r.wall_s:.1f}", f"{r.rate:.2f}", speed,
            f"{c.ms(c.median(r.gaps))} / {c.ms(c.p95(r.gaps))}",
            c.mark(f"{c.ms(c.median(r.busy_gaps))} / {c.ms(c.p95(r.busy_gaps))}", gap_ok),
            f"{len(r.busy_gaps)}/{len(r.gaps)}",
            f"{c.ms(c.median(r.doc_gaps))} / {c.ms(c.p95(r.doc_gaps))}" if r.doc_gaps else "",
            r.cpu_cell(), r.note,
        ])
    headers = ["side", "workers", "algo", "done/evals", "queue", "wall (s)", "trials/s", "vs stock",
               "idle gap median / p95 (ms), all", "idle gap median / p95 (ms), queue non-empty",
               "gaps with queue non-empty", "doc gap finished_at->started_at median / p95 (ms)",
               "CPU s: server / coordinator / workers, of cores x wall", "note"]
    extra = [
        f"- Stock side: {stock.versions if stock else 'not run'}"
        + (f"; {'; '.join(stock.notes)}" if stock and stock.notes else ""),
        f"- Setup: no-op objective (x^2, x ~ U(-5, 5)); `{args.algo}` on both sides"
        + (", plus `tpe` with 4 workers" if args.also_tpe else "")
        + "; the coordinator keeps `queue` = "
        f"{args.queue_factor} x workers suggestions waiting (hpo-coord `--queue`, stock fmin `max_queue_len`); "
        f"this project's workers with `--poll-min {args.worker_poll_min}` (then doubling up to the default "
        f"`--poll-max {DEFAULT_POLL_MAX_S}`), its coordinator with "
        f"`--poll-interval {args.coord_poll}`; stock workers `hyperopt-mongo-worker --poll-interval={args.stock_poll}` "
        "(default mode: one subprocess per job), stock fmin polls every 1 s (hard-coded)",
        "- Idle gap: per worker, from the no-op objective returning to it starting on the next trial, "
        "timed inside the worker (worker-side timing, the same code on both sides; stock workers are told "
        "apart by a slot number in their environment since their per-job subprocesses change pid). "
        "'queue non-empty': gaps at whose start some job was inserted and not yet claimed (coordinator insert "
        "times vs the jobs' book_time). The last column is this project's job documents' server-side "
        "timestamps (finished_at of one trial to started_at of the owner's next), as a cross-check.",
        f"- trials/s: done trials / (last trial end - first trial start); wall: coordinator start to exit. "
        f"Evaluations: {args.evals} for this project, {args.stock_evals} for stock (stock runs at well "
        "under 2 trials/s, so its full 500 would not fit the time budget; its rate is steady after the first few).",
        "- CPU: seconds of CPU each part used during the run (the server from /proc, when the benchmark "
        "started it; the coordinator and workers with the children they waited for), against the CPU "
        "time the machine had (cores x wall).",
        f"- Targets (4 workers): at least {TARGET_SPEEDUP:.0f}x stock's trials/s; median idle gap at most "
        f"{TARGET_GAP_S * 1000:.0f} ms while the queue is non-empty.",
        start.finished(),
    ]
    if stock_note:
        extra.append(f"- Note: {stock_note}")
    return c.section(script="dispatch.py", server=server.label, start=start, extra=extra,
                     headers=headers, rows=rows)


FAST_WRITES = "?w=1&journal=false"
"""The URL options that turn the store's durable write concern off."""


@contextlib.contextmanager
def unsynced_server(workdir: Path) -> Iterator[c.Server]:
    """An embedded server without ``--sync-on-commit`` (the configuration before issue 12)."""
    from jobstore.embedded import EmbeddedServer

    with EmbeddedServer(workdir / "db-nosync", log_file=workdir / "server-nosync.log",
                        sync_on_commit=False) as server:
        yield c.Server(url=server.url, label="", pid=server.pid)


def write_latencies(server: c.Server, query: str, writes: int) -> list[float]:
    """Seconds per acknowledged ``update_one`` of one client through the store's
    ``connect`` (so with its write concern), one after another."""
    from jobstore.connection import connect, parse_url

    db = connect(parse_url(server.database_url(f"bench_wc_{uuid.uuid4().hex[:8]}") + query))
    try:
        db.probe.insert_one({"_id": 1, "n": 0})
        latencies = []
        for _ in range(writes):
            started = time.perf_counter()
            db.probe.update_one({"_id": 1}, {"$inc": {"n": 1}})
            latencies.append(time.perf_counter() - started)
        db.client.drop_database(db.name)
    finally:
        db.client.close()
    return latencies


def write_concern_cost(args: argparse.Namespace, counts: list[int]) -> int:
    """Trials/s with and without durable writes (see the module docstring)."""
    start = c.Start()
    rows = []
    ok = True
    with c.workdir(args.workdir) as tmp, c.bench_server(tmp) as synced, contextlib.ExitStack() as stack:
        external = os.environ.get(c.BENCH_URL_ENV) is not None
        servers = [("synced", synced)] if external else [
            ("sync on commit", synced), ("no sync", stack.enter_context(unsynced_server(tmp)))]
        configs = [(label, server, client, query) for label, server in servers
                   for client, query in (("w=majority, j (default)", ""), ("w=1, no journal", FAST_WRITES))]
        results: dict[tuple[str, str, int], list[Result]] = {}
        latency: dict[tuple[str, str], list[float]] = {}
        for repeat in range(args.repeat):
            for label, server, client, query in configs:
                latency.setdefault((label, client), []).extend(write_latencies(server, query, args.writes))
            for k in counts:
                for label, server, client, query in configs:
                    queue = max(1, args.queue_factor * k)
                    print(f"[{repeat + 1}/{args.repeat}] server {label}, client {client}, {k} worker(s), "
                          f"{args.evals} evals (load {c.load()})", flush=True)
                    r = run_ours(server, tmp, k, args.evals, args.algo, queue, args.timeout, args.coord_poll,
                                 args.worker_poll_min, url_query=query)
                    print(f"  {r.done} done, {r.rate:.2f} trials/s {r.note}", flush=True)
                    ok = ok and r.done == r.evals
                    results.setdefault((label, client, k), []).append(r)
        for (label, client, k), runs in results.items():
            rows.append([
                "embedded" if not external else "external", label if not external else "(as configured)", client, k,
                ", ".join(f"{r.rate:.2f}" for r in runs), f"{c.median([r.rate for r in runs]):.2f}",
                ", ".join(c.ms(c.median(r.busy_gaps)) for r in runs),
                ", ".join(f"{r.cpu.get('server', float('nan')):.0f}" for r in runs),
                "; ".join(r.note for r in runs if r.note),
            ])
        latency_rows = [["embedded" if not external else "external", label if not external else "(as configured)",
                         client, len(values), c.ms(c.median(values)), c.ms(c.p95(values))]
                        for (label, client), values in latency.items()]
        headers = ["server", "server log", "client write concern", "workers", "trials/s, each run",
                   "trials/s, median", "idle gap median (ms), queue non-empty, each run", "server CPU s, each run",
                   "note"]
        extra = [
            f"- Setup: no-op objective, `{args.algo}`, {args.evals} evaluations per run, queue = "
            f"{args.queue_factor} x workers, runs interleaved (each configuration once per round, "
            f"{args.repeat} round(s)); 'w=1, no journal' is the URL option `{FAST_WRITES}`, the default is the "
            "store's `w=majority, journal=true`; 'sync on commit' is the embedded server's default since "
            "issue 12 (`secantusd-py --sync-on-commit`), 'no sync' the configuration before it.",
            "- SecantusDB understates the relative cost on a real mongod: there a plain write takes well "
            "under a millisecond, so waiting for the journal commit (`j: true`) and, on a replica set, for a "
            "secondary (`w: majority`, a network round trip) is a larger share of each write than SecantusDB's "
            "log sync is of its slow (Python) writes. Measure a real deployment with "
            f"`{c.BENCH_URL_ENV}=mongodb://... python bench/dispatch.py --write-concern` (the server's own "
            "settings then apply; only the client's write concern varies).",
            "- What it means for a run: the coordinator and a worker make a handful of writes per trial "
            "(claim, heartbeats, result, suggestion), so durability adds milliseconds per trial; it shows "
            "only with a no-op objective, as here.",
            start.finished(),
        ]
        lines = c.header_lines(script="dispatch.py", server=synced.label, start=start, extra=extra)
    body = ("\n".join(lines) + "\n\nOne client's acknowledged `update_one`, one after another:\n\n"
            + c.table(["server", "server log", "client write concern", "writes", "median (ms)", "p95 (ms)"],
                      latency_rows)
            + "\n\nDispatch (end to end):\n\n" + c.table(headers, rows) + "\n")
    title = "Dispatch: cost of durable writes"
    c.publish(args.out, title, body, quick=args.quick)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,4,8", help="comma-separated worker counts")
    parser.add_argument("--evals", type=int, default=500, help="evaluations per run, this project")
    parser.add_argument("--stock-evals", type=int, default=60, help="evaluations per run, stock hyperopt")
    parser.add_argument("--algo", choices=("rand", "tpe"), default="rand")
    parser.add_argument("--also-tpe", action=argparse.BooleanOptionalAction, default=True,
                        help="also run both sides with tpe and 4 workers")
    parser.add_argument("--coord-poll", type=float, default=DEFAULT_POLL_INTERVAL_S,
                        help="hpo-coord start --poll-interval (seconds between the coordinator's looks at the queue)")
    parser.add_argument("--worker-poll-min", type=float, default=DEFAULT_POLL_MIN_S,
                        help="hpo-worker --poll-min (first wait when the queue is empty)")
    parser.add_argument("--queue-factor", type=int, default=2, help="queued suggestions per worker")
    parser.add_argument("--stock-poll", type=float, default=0.1, help="hyperopt-mongo-worker --poll-interval")
    parser.add_argument("--stock-venv", type=Path, default=None,
                        help=f"stock venv (default ${c.STOCK_VENV_ENV} or ~/.cache/hpo-queue/bench-stock-venv)")
    parser.add_argument("--skip-stock", action="store_true", help="measure this project only")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per run")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 and 2 workers, 30 evaluations, no stock side unless --stock")
    parser.add_argument("--stock", action="store_true", help="with --quick: run the stock side too")
    parser.add_argument("--out", type=Path, default=c.DEFAULT_REPORT, help="report to append to")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs here (default: a temp dir)")
    parser.add_argument("--write-concern", action="store_true",
                        help="measure the cost of durable writes instead (this project only; --workers "
                        "default 4)")
    parser.add_argument("--repeat", type=int, default=2, help="with --write-concern: rounds of runs")
    parser.add_argument("--writes", type=int, default=300,
                        help="with --write-concern: timed single-client writes per configuration and round")
    args = parser.parse_args(argv)
    if args.write_concern and args.workers == parser.get_default("workers"):
        args.workers = "4"
    if args.quick:
        args.workers, args.evals, args.stock_evals, args.also_tpe = "1,2", 30, 10, False
        args.timeout = min(args.timeout, 120)
        args.repeat, args.writes = 1, 50
        if args.write_concern:
            args.workers = "2"
        if not args.stock:
            args.skip_stock = True
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    if args.write_concern:
        return write_concern_cost(args, counts)
    start = c.Start()
    stock_note = ""
    if args.skip_stock:
        stock_note = ("stock side skipped (--quick without --stock, or --skip-stock): it needs a venv "
                      "with hyperopt and pymongo<4 (about a minute to install) and runs at ~1 trial/s")
        print(f"NOTE: {stock_note}", flush=True)
    results: list[Result] = []
    with c.workdir(args.workdir) as tmp, c.bench_server(tmp) as server:
        print(f"server: {server.label}", flush=True)
        stock: c.StockEnv | None = None
        if not args.skip_stock:
            try:
                stock = c.check_stock_server(c.stock_env(args.stock_venv), server)
            except Exception as exc:  # noqa: BLE001 - report and go on with our side
                stock_note = f"stock side not measured: {exc}"
                print(f"NOTE: {stock_note}", flush=True)
            else:
                if not stock.talks_to_server:
                    stock_note = f"stock side not measured: {stock.problem}"
                    print(f"NOTE: {stock_note}", flush=True)
                    stock = None
        plan: list[tuple] = [(k, args.algo) for k in counts]
        if args.also_tpe and args.algo != "tpe":
            plan.append((4, "tpe"))
        for k, algo in plan:
            queue = max(1, args.queue_factor * k)
            print(f"[ours] {k} worker(s), {algo}, {args.evals} evals, queue {queue} (load {c.load()})", flush=True)
            r = run_ours(server, tmp, k, args.evals, algo, queue, args.timeout, args.coord_poll, args.worker_poll_min)
            print(f"  {r.done} done, {r.rate:.1f} trials/s, gap median {c.ms(c.median(r.gaps))} ms {r.note}",
                  flush=True)
            results.append(r)
            if stock is not None:
                print(f"[stock] {k} worker(s), {algo}, {args.stock_evals} evals, queue {queue} (load {c.load()})",
                      flush=True)
                r = run_stock(server, stock, tmp, k, args.stock_evals, algo, queue, args.stock_poll, args.timeout)
                print(f"  {r.done} done, {r.rate:.2f} trials/s, gap median {c.ms(c.median(r.gaps))} ms {r.note}",
                      flush=True)
                results.append(r)
        body = report(results, args, server, stock, stock_note, start)
    title = "Dispatch: trials per second and idle gaps"
    c.publish(args.out, title, body, quick=args.quick)
    ours_ok = all(r.done == r.evals for r in results if r.side.startswith("hpo-queue"))
    return 0 if ours_ok else 1


if __name__ == "__main__":
    sys.exit(main())
