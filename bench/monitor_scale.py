"""Benchmark: ``hpo-coord status`` and ``hpo-coord trials`` on a 10,000-trial run.

Seeds one finished run into a fresh database, shaped as the queue leaves it: hyperopt's
own trial documents (``Trials.new_trial_docs`` from points of a CNN-like nested space
drawn from its prior), then the fields a worker writes (``book_time``, ``started_at``,
``finished_at``, ``owner``, ``attempts``, 15 epochs of ``metrics``, ``params``, and an
``error`` with traceback on 2 % of trials), eight worker records, and the indexes the
queue and the monitor create.  Then it times, each the best of ``--repeat`` calls after
one untimed warm-up:

* the queries behind ``status`` (``coordinator.monitor.run_status`` and its parts);
* the ``trials`` export (``coordinator.monitor.trial_rows`` plus CSV and JSON text);
* the ``runs`` overview;

and appends a dated section to docs/benchmarks.md (``--output``).  The server is a
SecantusDB started here (``jobstore.embedded.EmbeddedServer``) unless
``HPO_BENCH_MONGO_URL`` names another (e.g. a real ``mongodb://host:27017``); the
benchmark uses its own database there and drops it afterwards.

    python bench/monitor_scale.py                 # 10,000 trials
    python bench/monitor_scale.py --quick         # 500 trials, a smoke test
"""

from __future__ import annotations

import argparse
import datetime
import logging
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pymongo
from hyperopt import Trials, base, hp, pyll
from pymongo.database import Database

from coordinator import monitor, monitor_cli
from jobstore import schema as s
from jobstore.connection import server_time
from jobstore.embedded import EmbeddedServer
from jobstore.schema import State
from jobstore.store import Store

log = logging.getLogger("bench.monitor_scale")

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO / "docs" / "benchmarks.md"
BENCHMARKS_INTRO = """# Benchmarks

Measured results, newest sections last.  Each section names the machine, the software
versions and the exact command, so that it can be rerun and compared.
"""
URL_ENV = "HPO_BENCH_MONGO_URL"
RUN = "bench-cnn"
EXPERIMENT = "bench-cnn"
WORKERS = 8
EPOCHS = 15
ERROR_SHARE = 0.02
TRIAL_S = 90.0
"""Seconds a trial takes on a worker; with WORKERS workers a trial finishes every
TRIAL_S / WORKERS seconds."""
BATCH = 500
SECANTUS_NOTE = (
    "SecantusDB decodes every document an index scan visits (it has no covered queries and "
    "cannot stop a sorted scan early), so here each query that touches the run's done trials "
    "costs time in proportion to their number and size; on MongoDB 7/8 the same queries read "
    "only index keys (counts, `finished_at`) or one index entry (best trial).  Set "
    f"`{URL_ENV}` to measure a real MongoDB."
)

SPACE = {
    "lr": hp.loguniform("lr", math.log(1e-4), math.log(0.3)),
    "weight_decay": hp.loguniform("weight_decay", math.log(1e-6), math.log(1e-2)),
    "batch_size": hp.choice("batch_size", [64, 128, 256, 512]),
    "optimizer": hp.choice("optimizer", [
        {"name": "sgd", "momentum": hp.uniform("momentum", 0.8, 0.99)},
        {"name": "adamw"},
    ]),
    "depth": hp.quniform("depth", 2, 5, 1),
    "width": hp.quniform("width", 32, 256, 32),
    "dropout": hp.uniform("dropout", 0.0, 0.5),
    "augment": hp.choice("augment", [None, {"crop_padding": hp.quniform("crop_padding", 2, 6, 2)}]),
}
TRACEBACK = "Traceback (most recent call last):\n" + "  File \"objective.py\", line 1, in train\n" * 20


def hyperopt_docs(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` new-trial documents of SPACE as hyperopt's fmin inserts them (tids 0..n-1)."""
    domain = base.Domain(lambda params: 0.0, SPACE)
    ids = list(range(n))
    idxs, vals = pyll.rec_eval(domain.s_idxs_vals,
                               memo={domain.s_new_ids: ids, domain.s_rng: np.random.default_rng(seed)})
    miscs = [{"tid": tid, "cmd": domain.cmd, "workdir": domain.workdir} for tid in ids]
    base.miscs_update_idxs_vals(miscs, idxs, vals)
    docs = Trials(exp_key=RUN).new_trial_docs(ids, [None] * n, [domain.new_result() for _ in ids], miscs)
    return [base.SONify(doc) for doc in docs]


def finish(doc: dict[str, Any], rng: np.random.Generator, start: datetime.datetime) -> dict[str, Any]:
    """``doc`` as a worker leaves it: claimed, evaluated with metrics, finished."""
    tid = doc[s.TID]
    params = s.bson_safe(s.params_from_vals(SPACE, doc[s.MISC]["vals"]))
    book = start + datetime.timedelta(seconds=tid * TRIAL_S / WORKERS)
    started = book + datetime.timedelta(seconds=float(rng.uniform(1, 3)))
    finished = started + datetime.timedelta(seconds=float(rng.uniform(0.8, 1.2) * TRIAL_S))
    loss = float(0.2 + abs(math.log10(params["lr"]) + 2) * 0.3 + rng.normal(0, 0.05) ** 2)
    metrics = [
        {"step": epoch, "train_loss": loss * (1 + 2 / epoch), "val_loss": loss * (1 + 1.5 / epoch),
         "val_accuracy": 1 / (1 + loss * (1 + 1.5 / epoch)), "lr": params["lr"] * (1 - epoch / (EPOCHS + 1))}
        for epoch in range(1, EPOCHS + 1)
    ]
    failed = rng.random() < ERROR_SHARE
    doc.update({
        s.STATE: State.ERROR if failed else State.DONE,
        s.OWNER: f"gpu-node-{tid % WORKERS}:{4000 + tid % WORKERS}",
        s.BOOK_TIME: book,
        s.REFRESH_TIME: finished,
        s.STARTED_AT: started,
        s.FINISHED_AT: finished,
        s.UPDATED_AT: finished,
        s.VERSION: EPOCHS + 4,
        s.PARAMS: params,
        s.EXPERIMENT: EXPERIMENT,
        s.ATTEMPTS: 1,
        s.MAX_ATTEMPTS: 3,
        s.LEASE: {"token": uuid.uuid4().hex, "expires": None},
        s.METRICS: metrics[: int(rng.integers(1, EPOCHS))] if failed else metrics,
        s.RESULT: {"status": "fail", "reason": "exception"} if failed else {"status": "ok", "loss": loss},
    })
    if failed:
        doc[s.ERROR] = {"type": "RuntimeError", "message": "CUDA out of memory", "reason": "exception",
                        "traceback": TRACEBACK}
    return doc


def seed_run(db: Database, n: int, seed: int = 0) -> None:
    """Insert a finished run of ``n`` trials (see the module docstring)."""
    store = Store(db)
    store.queue.ensure_indexes()
    runs = store.runs
    runs.ensure(RUN, experiment=EXPERIMENT, fingerprint="bench", settings={"epochs": EPOCHS},
                max_evals=n, algo="tpe")
    runs.allocate_tids(RUN, n)
    now = server_time(db)
    start = now - datetime.timedelta(seconds=n * TRIAL_S / WORKERS + 2 * TRIAL_S)
    rng = np.random.default_rng(seed)
    docs = hyperopt_docs(n, seed)
    for first in range(0, n, BATCH):
        db[s.JOBS].insert_many([finish(doc, rng, start) for doc in docs[first:first + BATCH]])
    registry = store.workers
    registry.ensure_indexes()
    for k in range(WORKERS):
        worker_id = f"gpu-node-{k}:{4000 + k}"
        registry.register(worker_id, host=f"gpu-node-{k}", pid=4000 + k, device=f"cuda:{k}", version="bench")
        registry.update(worker_id, status="idle")


def best_of(repeat: int, operation: Callable[[], Any]) -> float:
    """The shortest of ``repeat`` wall-clock times of ``operation``, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        operation()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(db: Database, repeat: int) -> list[tuple[str, float]]:
    """(what, seconds) for each timed operation."""
    view = Store(db).view
    now = view.server_time()
    rows = monitor.trial_rows(view, RUN)  # also the untimed warm-up after seeding
    monitor.run_status(view, RUN)
    return [
        ("`status`: `run_status` (all of the below)", best_of(repeat, lambda: monitor.run_status(view, RUN))),
        ("  counts by state (`$group` on `{exp_key, state}`)", best_of(repeat, lambda: monitor.count_states(view, RUN))),
        ("  best trial (`find_one` in loss order)", best_of(repeat, lambda: monitor.best_trial(view, RUN))),
        ("  throughput (`finished_at` index)", best_of(repeat, lambda: monitor.throughput(view, RUN, now))),
        ("  stale running jobs", best_of(repeat, lambda: monitor.stale_jobs(view, RUN, now))),
        ("  workers", best_of(repeat, lambda: monitor.workers(view, now))),
        ("`trials`: `trial_rows` (projected find)", best_of(repeat, lambda: monitor.trial_rows(view, RUN))),
        ("`trials`: rows to CSV text", best_of(repeat, lambda: monitor_cli.trials_text(rows, monitor_cli.TrialFormat.csv))),
        ("`trials`: rows to JSON text", best_of(repeat, lambda: monitor_cli.trials_text(rows, monitor_cli.TrialFormat.json))),
        ("`runs`: `list_runs`", best_of(repeat, lambda: monitor.list_runs(view))),
    ]


@contextmanager
def database(url: str | None) -> Iterator[tuple[Database, str]]:
    """A fresh database on ``url``, or on an embedded SecantusDB; and the server's name."""
    with tempfile.TemporaryDirectory(prefix="monitor-bench-") as scratch:
        server = None
        if url is None:
            server = EmbeddedServer(Path(scratch) / "data")
            server.start()
            url = server.url
        client: pymongo.MongoClient = pymongo.MongoClient(url)
        name = f"monitor_bench_{uuid.uuid4().hex[:6]}"
        try:
            info = client.admin.command("buildInfo")
            kind = f"SecantusDB {version('secantusdb')} (embedded)" if server else f"MongoDB {info.get('version')}"
            yield client[name], kind
        finally:
            client.drop_database(name)
            client.close()
            if server is not None:
                server.stop()


@contextmanager
def seeded_database(trials: int) -> Iterator[tuple[Database, str, float]]:
    """A fresh database (see :func:`database`; on ``$HPO_BENCH_MONGO_URL`` if set) holding
    :func:`seed_run`'s run of ``trials`` trials; the server's name; the seconds seeding took."""
    with database(os.environ.get(URL_ENV)) as (db, server):
        log.info("seeding %d trials on %s", trials, server)
        started = time.perf_counter()
        seed_run(db, trials)
        yield db, server, time.perf_counter() - started


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPUs, "
            f"{platform.platform()}; load average {load} when the timings ended")


def render_section(n: int, server: str, seed_s: float, timings: list[tuple[str, float]],
                   command: str, repeat: int) -> str:
    versions = ", ".join(f"{name} {version(name)}" for name in ("pymongo", "hyperopt"))
    lines = [
        f"## Monitoring queries on a {n:,}-trial run (`bench/monitor_scale.py`), "
        f"{datetime.date.today().isoformat()}",
        "",
        f"- Machine: {machine()}",
        f"- Software: Python {platform.python_version()}, {versions}; server: {server}",
        f"- Command: `{command}`",
        f"- Run: {n:,} finished trials ({ERROR_SHARE:.0%} errors with tracebacks), {EPOCHS} epochs of "
        f"metrics each, 8 hyperparameters (nested choices), {WORKERS} worker records; seeding took "
        f"{seed_s:.1f} s.",
        f"- Each time is the best of {repeat} calls (after one untimed warm-up), from the client, "
        "wall clock.",
        "",
        "| operation | seconds |",
        "| --- | ---: |",
    ]
    lines += [f"| {what.replace('  ', '&nbsp;&nbsp;')} | {seconds:.3f} |" for what, seconds in timings]
    if server.startswith("SecantusDB"):
        lines += ["", SECANTUS_NOTE]
    return "\n".join(lines) + "\n"


def append_section(path: Path, section: str) -> None:
    """Append ``section`` to ``path``, creating the file with the intro if needed."""
    text = path.read_text() if path.exists() else BENCHMARKS_INTRO
    path.write_text(text.rstrip("\n") + "\n\n" + section)


def parse_args(argv: list[str] | None = None, doc: str | None = None) -> argparse.Namespace:
    """The options of this script and of ``bench/dashboard_open.py`` (``doc``: the calling
    script's docstring, whose first paragraph is the description; default this one's)."""
    parser = argparse.ArgumentParser(description=(doc or __doc__).split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000, help="Trials in the seeded run.")
    parser.add_argument("--quick", action="store_true", help="500 trials, one repeat: a smoke test.")
    parser.add_argument("--repeat", type=int, default=3, help="Time each operation this many times.")
    parser.add_argument("--output", type=Path, default=BENCHMARKS_MD, help="Markdown file to append to.")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.repeat = 500, 1
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    command = shlex.join(["python", "bench/monitor_scale.py", *(sys.argv[1:] if argv is None else argv)])
    with seeded_database(args.trials) as (db, server, seed_s):
        timings = measure(db, args.repeat)
    for what, seconds in timings:
        log.info("%-55s %8.3f s", what, seconds)
    append_section(args.output, render_section(args.trials, server, seed_s, timings, command, args.repeat))
    log.info("appended to %s", args.output)


if __name__ == "__main__":
    main()
