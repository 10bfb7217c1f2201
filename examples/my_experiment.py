"""An experiment of your own, outside this project (see docs/objectives.md).

Run it with:

    hpo-coord start --objective examples.my_experiment:branin --exp branin --local-workers 2
"""

import math

from hyperopt import hp

from objectives.base import Experiment, Reporter


def branin(params: dict, reporter: Reporter) -> float:
    """The Branin function; its minimum is about 0.398."""
    x, y = params["x"], params["y"]
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    return a * (y - b * x**2 + c * x - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x) + 10


branin = Experiment(
    name="branin",
    space={"x": hp.uniform("x", -5, 10), "y": hp.uniform("y", 0, 15)},
    objective=branin,
    max_evals=50,
    description="The Branin function (an example of a user experiment).",
)
