"""The tutorial's examples: small analytic objectives with known optima.

They evaluate in microseconds, so they are what the tests, the dispatch benchmark and
a first look at the system use.
"""

from __future__ import annotations

import math
from typing import Any

from hyperopt import hp

from objectives.base import Experiment, Reporter


def _quadratic(x: float, reporter: Reporter) -> float:
    return x**2 - x + 1


def _sphere(params: dict[str, float], reporter: Reporter) -> float:
    return params["x"] ** 2 + params["y"] ** 2


def _nested(params: dict[str, Any], reporter: Reporter) -> float:
    """A model choice whose branches carry their own hyperparameters.

    The best value, 0, is reached with the ``quadratic`` branch at ``a = 2``; the
    ``sine`` branch can only get down to 0.5.
    """
    model = params["model"]
    if model["kind"] == "quadratic":
        return (model["a"] - 2.0) ** 2
    if model["kind"] == "sine":
        return 0.5 + (1.0 + math.sin(model["freq"])) * model["phase"]
    return 3.0


quadratic = Experiment(
    name="quadratic",
    space=hp.uniform("x", -5, 5),
    objective=_quadratic,
    max_evals=100,
    description="f(x) = x^2 - x + 1 over x ~ U(-5, 5); minimum 0.75 at x = 0.5.",
)

sphere = Experiment(
    name="sphere",
    space={"x": hp.normal("x", 0, 2), "y": hp.uniform("y", -3, 3)},
    objective=_sphere,
    max_evals=100,
    description="f(x, y) = x^2 + y^2 over a dict space; minimum 0 at the origin.",
)

nested = Experiment(
    name="nested",
    space={
        "model": hp.choice(
            "model",
            [
                {"kind": "quadratic", "a": hp.uniform("a", -5, 5)},
                {
                    "kind": "sine",
                    "freq": hp.uniform("freq", 0, 6.3),
                    "phase": hp.loguniform("phase", -3, 0),
                },
                {"kind": "constant"},
            ],
        )
    },
    objective=_nested,
    max_evals=100,
    description="A nested hp.choice whose branches have their own hyperparameters; minimum 0.",
)
