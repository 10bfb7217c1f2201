"""The one decoder of a trial's point: misc.vals -> what the objective receives."""

from __future__ import annotations

import pytest
from hyperopt import hp

from jobstore import schema as s

SPACE = {"model": hp.choice("model", [
    {"kind": "linear", "lr": hp.loguniform("lr", -5, 0)},
    {"kind": "cnn", "channels": hp.quniform("channels", 8, 32, 8), "pool": hp.choice("pool", ["max", "avg"])},
])}


def test_params_from_vals_decodes_choices_and_skips_inactive_labels() -> None:
    vals = {"model": [1], "lr": [], "channels": [24.0], "pool": [0]}
    params = s.params_from_vals(SPACE, vals)
    assert params == {"model": {"kind": "cnn", "channels": 24.0, "pool": "max"}}
    assert type(params["model"]["channels"]) is float  # as hyperopt's quniform gives it


def test_params_from_vals_raises_for_vals_outside_the_space() -> None:
    with pytest.raises((KeyError, IndexError, TypeError, ValueError)):
        s.params_from_vals(SPACE, {"model": [5], "lr": [], "channels": [], "pool": []})
