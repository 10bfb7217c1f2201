"""The one decoder of a trial's point: misc.vals -> what the objective receives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hyperopt import hp
from pymongo import IndexModel

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


# -- docs/schema.md names the fields and indexes this module defines -------------------

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"


def _doc_section(title: str) -> str:
    """The text of docs/schema.md's ``## `title` ...`` section."""
    text = SCHEMA_DOC.read_text()
    start = text.index(f"## `{title}`")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _fields_defined(between: str, until: str) -> set[str]:
    """The field names this module defines between two of its ``# -- ...`` comments:
    ``NAME = "value"`` with a top-level value (no dot)."""
    source = Path(s.__file__).read_text()
    block = source[source.index(between):source.index(until)]
    return {value for value in re.findall(r'^[A-Z_]+ = "([\w]+)"$', block, re.M)}


def _table_fields(section: str) -> set[str]:
    return set(re.findall(r"^\| `(\w+)` \|", section, re.M)) | {
        name for row in re.findall(r"^\| (`\w+`(?:, `\w+`)+) \|", section, re.M) for name in re.findall(r"`(\w+)`", row)}


def _keys(indexes: list[IndexModel]) -> set[tuple[str, ...]]:
    return {tuple(index.document["key"]) for index in indexes}


def _braced(text: str) -> set[tuple[str, ...]]:
    return {tuple(field.strip() for field in span.split(",")) for span in re.findall(r"`\{([\w., ]+)\}`", text)}


def test_the_jobs_table_lists_every_job_field() -> None:
    defined = _fields_defined("# -- job fields", "# -- run fields") - {s.RESULT_PRUNED, s.RESULT_PRUNED_STEP,
                                                                      s.RESULT_PRUNED_VALUE}
    assert _table_fields(_doc_section("jobs")) == defined


def test_the_runs_table_lists_every_run_field() -> None:
    defined = _fields_defined("# -- run fields", "# -- worker fields") - {s.RUN_TRIAL_TIMEOUT, s.RUN_PRUNER}
    assert _table_fields(_doc_section("runs")) == defined | {s.ID}
    settings = _doc_section("runs")
    assert f"`{s.RUN_TRIAL_TIMEOUT}`" in settings and f"`{s.RUN_PRUNER}`" in settings


def test_the_workers_and_curves_sections_name_every_field() -> None:
    workers = set(re.findall(r"`(\w+)`", _doc_section("workers")))
    assert _fields_defined("# -- worker fields", "# The fields hyperopt") <= workers
    curves = set(re.findall(r"`(\w+)`", _doc_section("curves")))
    assert _fields_defined("# -- curve fields", "CURVE_INDEXES") <= curves


def test_the_indexes_listed_are_the_ones_created() -> None:
    jobs = _doc_section("jobs")
    listed = jobs[jobs.index("Indexes (created on first use):"):jobs.index("\n\n", jobs.index("Indexes"))]
    job_part, _, others = listed.partition("`workers` has")
    assert _braced(job_part) == _keys(s.JOB_INDEXES)
    workers_part, _, leases_part = others.partition("`gpu_leases` has")
    assert _braced(workers_part) == _keys(s.WORKER_INDEXES)
    assert _braced(leases_part) == {("expires",)}  # jobstore.gpu_lease.ensure_indexes
    curves = _doc_section("curves")
    assert _braced(curves[curves.index("Indexes:"):]) == _keys(s.CURVE_INDEXES)
