"""Stock side of the coordinator-cost benchmark: ``hyperopt.mongoexp.MongoTrials``.

Run with the stock venv's Python (pymongo 3).  Fills a run with finished trials up to
each level, then times coordinator iterations (see cost_iteration.py).  Prints one JSON
object per level on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import cost_iteration as ci
import pymongo
from hyperopt import anneal, base, rand, tpe
from pymongo import monitoring

warnings.simplefilter("ignore", DeprecationWarning)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host-port", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--levels", required=True, help="comma-separated finished-trial counts")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--algo", choices=("tpe", "rand", "anneal"), default="tpe")
    parser.add_argument("--indexes", action="store_true",
                        help="create (exp_key, state) and (exp_key, tid) indexes, which stock does not")
    args = parser.parse_args()

    wire = ci.WireTimer()
    monitoring.register(wire)  # before any client exists, so stock's own client reports too
    from hyperopt import mongoexp

    client = pymongo.MongoClient(f"mongodb://{args.host_port}")
    jobs = client[args.db]["jobs"]
    if args.indexes:
        jobs.create_index([("exp_key", 1), ("state", 1)])
        jobs.create_index([("exp_key", 1), ("tid", 1)])
    algo = {"tpe": tpe.suggest, "rand": rand.suggest, "anneal": anneal.suggest}[args.algo]
    domain = base.Domain(lambda p: 0.0, ci.SPACE)
    url = f"mongo://{args.host_port}/{args.db}/jobs"
    have = 0
    seed = 1

    def finish_trial(tid, loss):
        # what a stock worker's reserve + result write leaves behind
        jobs.update_one({"exp_key": ci.EXP_KEY, "tid": tid},
                        {"$set": {"state": base.JOB_STATE_DONE, "owner": "bench-host:2",
                                  "result": {"status": "ok", "loss": loss}}, "$inc": {"version": 2}})

    for level in [int(x) for x in args.levels.split(",")]:
        done = jobs.count_documents({"exp_key": ci.EXP_KEY, "state": base.JOB_STATE_DONE})
        if level > done:
            top = jobs.find_one({"exp_key": ci.EXP_KEY}, sort=[("tid", -1)])
            start = (top["tid"] + 1) if top else 0
            for chunk in range(start, start + level - done, 1000):
                end = min(chunk + 1000, start + level - done)
                jobs.insert_many(ci.make_docs(domain, range(chunk, end), seed + chunk, ours=False))
            client[args.db]["job_ids"].update_one({"a": 0}, {"$max": {"last_id": start + level - done}}, upsert=True)
            have = level
        wire.on = True
        before = wire.total
        started = time.perf_counter()
        trials = mongoexp.MongoTrials(url, exp_key=ci.EXP_KEY)
        first = time.perf_counter() - started
        wire.on = False
        first_wire = wire.total - before
        runs = []
        for i in range(args.iterations + 1):
            phases = ci.one_iteration(trials, domain, algo, seed + 10_000 + i, wire, finish_trial)
            if i:  # the first iteration is a warm-up
                runs.append(phases)
        out = ci.summarize(have, first, runs, first_wire)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
