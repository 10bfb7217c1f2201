"""``hpo-coord`` with a SIGTERM that arrives while a ``__del__`` runs (tests only).

Run as ``python -m tests.support.sigterm_in_del start ARGS``: once fmin has polled the
queue a few times, an object is dropped whose ``__del__`` sends this process SIGTERM and
keeps running for a while, so Python handles the signal inside ``__del__`` -- where an
exception raised by a signal handler is printed as "Exception ignored" and lost (issue 12,
defect 11; seen in the wild inside pymongo's ``__del__`` methods).
"""

from __future__ import annotations

import os
import signal
import sys

from jobstore.trials import MongoTrials

POLLS_BEFORE_SIGNAL = 5


class _SignalsWhileCollected:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        total = 0
        for i in range(100_000):  # the handler runs at one of these bytecode boundaries
            total += i
        print("signal delivered inside __del__", file=sys.stderr, flush=True)


_polls = 0
_count = MongoTrials.count_by_state_unsynced


def _count_and_signal_once(self: MongoTrials, *args: object, **kwargs: object) -> int:
    global _polls
    _polls += 1
    if _polls == POLLS_BEFORE_SIGNAL:
        _SignalsWhileCollected()  # dropped at once: __del__ runs here
    return _count(self, *args, **kwargs)


MongoTrials.count_by_state_unsynced = _count_and_signal_once  # type: ignore[method-assign]

if __name__ == "__main__":
    from coordinator.cli import main

    sys.argv[0] = "hpo-coord"
    main()
