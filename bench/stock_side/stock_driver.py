"""Stock hyperopt's distributed driver: ``fmin`` with ``hyperopt.mongoexp.MongoTrials``.

Run with the stock venv's Python (``pymongo<4``).  Like ``bench/_coord_timed.py`` it
logs the insert time of each trial to ``--insert-log``; nothing else is changed.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import stock_noop
from hyperopt import anneal, fmin, mongoexp, rand, tpe

warnings.simplefilter("ignore", DeprecationWarning)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="mongo://host:port/db/jobs")
    parser.add_argument("--exp-key", required=True)
    parser.add_argument("--max-evals", type=int, required=True)
    parser.add_argument("--algo", choices=("rand", "tpe", "anneal"), default="rand")
    parser.add_argument("--queue", type=int, default=1, help="fmin's max_queue_len")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--insert-log", required=True)
    args = parser.parse_args()

    log = open(args.insert_log, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    original = mongoexp.MongoTrials._insert_trial_docs

    def timed_insert(self, docs):
        ids = original(self, docs)
        now = time.time()
        log.writelines(f"{doc['tid']} {now:.6f}\n" for doc in docs)
        return ids

    mongoexp.MongoTrials._insert_trial_docs = timed_insert
    algo = {"rand": rand.suggest, "tpe": tpe.suggest, "anneal": anneal.suggest}[args.algo]
    trials = mongoexp.MongoTrials(args.url, exp_key=args.exp_key)
    fmin(stock_noop.noop, stock_noop.SPACE, algo=algo, max_evals=args.max_evals, trials=trials,
         max_queue_len=args.queue, rstate=np.random.default_rng(args.seed), show_progressbar=False)


if __name__ == "__main__":
    main()
