"""``hpo-coord`` exactly as installed, with one addition for the dispatch benchmark: the
wall-clock time at which each trial's job was inserted is appended to the file named by
``HPO_BENCH_INSERT_LOG`` (``tid time`` lines), so idle gaps can be split by whether
the queue held a job at the time.  Run as ``python -m bench._coord_timed start ...``."""

from __future__ import annotations

import os
import time

from jobstore import trials as _trials

_original = _trials.MongoTrials._insert_trial_docs
_log = open(os.environ["HPO_BENCH_INSERT_LOG"], "a", buffering=1)  # noqa: SIM115 - lives as long as the process


def _timed_insert(self, docs):  # type: ignore[no-untyped-def]
    tids = _original(self, docs)
    now = time.time()
    _log.writelines(f"{tid} {now:.6f}\n" for tid in tids)
    return tids


_trials.MongoTrials._insert_trial_docs = _timed_insert


if __name__ == "__main__":
    from coordinator.cli import main

    main()
