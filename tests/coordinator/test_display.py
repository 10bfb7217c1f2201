"""Whole numbers are printed as integers (summary, status, best); objectives still get floats."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from pymongo.database import Database
from rich.console import Console
from typer.testing import CliRunner

import typer
from coordinator import monitor_cli
from coordinator.display import number_text, whole_floats_as_ints
from jobstore import schema as s
from tests.support.processes import run_cli

WHOLE_NUMBERS = "tests.support.experiments:whole_numbers"


def test_whole_floats_become_ints_through_nesting() -> None:
    value = {"channels": 24.0, "lr": 0.001, "layers": [2.0, {"width": np.float64(128.0)}], "bn": True,
             "name": "x", "big": 1e300, "none": None}
    shown = whole_floats_as_ints(value)
    assert shown == {"channels": 24, "lr": 0.001, "layers": [2, {"width": 128}], "bn": True,
                     "name": "x", "big": 1e300, "none": None}
    assert type(shown["channels"]) is int and type(shown["layers"][1]["width"]) is int
    assert type(shown["big"]) is float and shown["bn"] is True
    assert math.isnan(whole_floats_as_ints(math.nan))
    assert whole_floats_as_ints(-0.0) == 0 and type(whole_floats_as_ints(-0.0)) is int
    assert value["channels"] == 24.0 and type(value["channels"]) is float  # the input is left alone


@pytest.mark.parametrize(("value", "text"), [
    (18350, "18350"), (18350.0, "18350"), (np.int64(18350), "18350"), (0.12345678, "0.1235"),
    (1e-7, "1e-07"), (2.5, "2.5"), (math.inf, "inf"), (1e300, "1e+300"),
])
def test_number_text(value: float, text: str) -> None:
    assert number_text(value) == text


def test_summary_status_and_best_show_whole_numbers(db: Database, db_url: str) -> None:
    result = run_cli("coordinator", "start", "--exp", "whole-numbers", "--objective", WHOLE_NUMBERS,
                     "--mongo", db_url, "--max-evals", "4", "--local-workers", "1", "--algo", "rand",
                     "--seed", "1", url=db_url, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    best = db.jobs.find({s.STATE: s.State.DONE}).sort(s.LOSS, 1).limit(1)[0]
    channels = int(best[s.RESULT]["n_params"] - 16) // 764
    # what the objective received, and what the database holds, are still floats
    assert best[s.RESULT]["channels_type"] == "float" and best[s.PARAMS] == {"channels": float(channels)}
    out = " ".join(result.stdout.split())
    assert f"n_params {channels * 764 + 16})" in out and "e+0" not in out
    printed = json.loads(result.stdout[result.stdout.index("best params:") + len("best params:"):])
    assert printed == {"channels": channels} and f'"channels": {channels}' in result.stdout

    app = typer.Typer()
    monitor_cli.register(app, Console(width=250, highlight=False))
    status = CliRunner().invoke(app, ["status", "--mongo", db_url])
    assert status.exit_code == 0, status.output
    assert re.search(r'best params\s*│\s*\{"channels": %d\}' % channels, status.stdout), status.stdout
    shown = CliRunner().invoke(app, ["best", "--mongo", db_url])
    assert shown.exit_code == 0, shown.output
    assert re.search(r'"channels": %d\n' % channels, shown.stdout) and json.loads(shown.stdout) == printed
