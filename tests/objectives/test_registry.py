"""Finding experiments: built-ins, entry points, --objective references."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from objectives.base import Experiment, NullReporter
from objectives.registry import _entry_points, get_experiment, known_names, load_reference
from user_errors import BadObjectiveReference, UnknownExperiment


def test_builtins_are_found_lazily() -> None:
    assert {"quadratic", "sphere", "nested", "digits", "cifar100", "nasbench201"} <= set(known_names())
    quadratic = get_experiment("quadratic")
    assert quadratic.objective(0.5, NullReporter()) == 0.75


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(UnknownExperiment, match="unknown experiment 'nope'; known experiments: .*quadratic"):
        get_experiment("nope")


def test_the_documented_example_loads_and_runs() -> None:
    branin = load_reference("examples.my_experiment:branin")
    assert isinstance(branin, Experiment) and branin.name == "branin"
    assert branin.objective({"x": math.pi, "y": 2.275}, NullReporter()) == pytest.approx(0.3979, abs=1e-3)


def test_entry_points_register_experiments_without_editing_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "acme_experiments.py"
    package.write_text(
        "from hyperopt import hp\n"
        "from objectives.base import Experiment\n"
        "acme = Experiment(name='acme', space=hp.uniform('x', 0, 1), objective=lambda x, r: x)\n"
    )
    dist = tmp_path / "acme_experiments-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-experiments\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hpo_queue.experiments]\nacme = acme_experiments:acme\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _entry_points.cache_clear()
    assert "acme" in known_names()
    assert get_experiment("acme").objective(0.25, NullReporter()) == 0.25
    sys.modules.pop("acme_experiments", None)
    _entry_points.cache_clear()


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("nocolon", "must look like 'package.module:attribute'"),
        ("no_such_module_xyz:exp", "cannot import module 'no_such_module_xyz'"),
        ("objectives.tutorial:missing", "has no attribute 'missing'"),
        ("objectives.tutorial:math", "is a module, not an objectives.base.Experiment"),
    ],
)
def test_bad_references_are_explained(reference: str, message: str) -> None:
    with pytest.raises(BadObjectiveReference, match=message):
        load_reference(reference)


def test_fingerprint_is_stable_and_tracks_version_and_space() -> None:
    quadratic = get_experiment("quadratic")
    assert quadratic.fingerprint() == get_experiment("quadratic").fingerprint()
    from dataclasses import replace

    from hyperopt import hp

    assert replace(quadratic, version="2").fingerprint() != quadratic.fingerprint()
    assert replace(quadratic, space=hp.uniform("x", -5, 6)).fingerprint() != quadratic.fingerprint()
