"""A plain hyperopt script written for hyperopt.mongoexp (used by tests/test_compat.py).

The test runs it after changing only its import line.
"""

import os
import sys

from hyperopt import fmin, hp, tpe
from hyperopt.mongoexp import MongoTrials


def objective(x):
    with open(os.environ["EVALUATIONS_FILE"], "a") as out:
        out.write(f"{x}\n")
    return (x - 1) ** 2


if __name__ == "__main__":
    trials = MongoTrials(sys.argv[1], exp_key="stock_script")
    best = fmin(objective, hp.uniform("x", -3, 3), algo=tpe.suggest, max_evals=int(sys.argv[2]), trials=trials)
    print("BEST", best)
