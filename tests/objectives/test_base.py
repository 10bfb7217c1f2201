"""The experiment contract: declared run settings."""

from __future__ import annotations

import pytest
from hyperopt import hp

from objectives.base import BadSetting, Experiment, Setting

EXPERIMENT = Experiment(
    name="e", space=hp.uniform("x", 0, 1), objective=lambda x, r: x,
    settings=(
        Setting("epochs", int, 10, "epochs", minimum=1, maximum=500),
        Setting("lr_scale", float, help="scale", minimum=0),
        Setting("augment", bool, False),
        Setting("mode", str, "fast", choices=("fast", "slow")),
        Setting("data_dir", str),
        Setting("plan", dict),
    ),
)


def test_defaults_are_the_declared_ones_that_have_a_default() -> None:
    assert EXPERIMENT.default_settings == {"epochs": 10, "augment": False, "mode": "fast"}


def test_values_are_parsed_by_their_declaration() -> None:
    given = {"epochs": 20, "lr_scale": 2, "augment": True, "mode": "slow", "data_dir": "/d", "plan": {"a": 1}}
    assert EXPERIMENT.check_settings(given) == {**given, "lr_scale": 2.0}
    assert isinstance(EXPERIMENT.check_settings({"lr_scale": 2})["lr_scale"], float)
    assert EXPERIMENT.check_settings({"data_dir": 123}) == {"data_dir": "123"}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"foo": 1}, "experiment 'e' has no setting 'foo'; its settings: epochs (int, between 1 and 500, "
                     "default 10): epochs; lr_scale (float, at least 0): scale; augment (bool, default False); "
                     "mode (fast|slow, default 'fast'); data_dir (str); plan (dict)"),
        ({"epochs": "abc"}, "setting 'epochs' must be an integer, not 'abc'"),
        ({"epochs": True}, "setting 'epochs' must be an integer, not True"),
        ({"epochs": 0}, "setting 'epochs' must be between 1 and 500, not 0"),
        ({"epochs": 501}, "setting 'epochs' must be between 1 and 500, not 501"),
        ({"lr_scale": -0.5}, "setting 'lr_scale' must be at least 0, not -0.5"),
        ({"lr_scale": "big"}, "setting 'lr_scale' must be a number, not 'big'"),
        ({"augment": "yes"}, "setting 'augment' must be true or false, not 'yes'"),
        ({"mode": "medium"}, "setting 'mode' must be one of 'fast', 'slow', not 'medium'"),
        ({"plan": [1]}, "setting 'plan' must be a JSON object, not [1]"),
        # --set decodes NaN and Infinity as JSON floats
        ({"lr_scale": float("nan")}, "setting 'lr_scale' must be a finite number, not nan"),
        ({"lr_scale": float("inf")}, "setting 'lr_scale' must be a finite number, not inf"),
    ],
)
def test_refused_settings_say_what_is_allowed(given: dict, message: str) -> None:
    with pytest.raises(BadSetting) as caught:
        EXPERIMENT.check_settings(given)
    assert str(caught.value) == message


def test_settings_every_experiment_takes_are_accepted() -> None:
    timeout = Setting("trial_timeout", float, minimum=0)
    assert EXPERIMENT.check_settings({"trial_timeout": 5}, also=(timeout,)) == {"trial_timeout": 5.0}
    with pytest.raises(BadSetting, match="no setting 'trial_timeout'"):
        EXPERIMENT.check_settings({"trial_timeout": 5})


def test_a_setting_of_an_unsupported_type_is_refused_when_declared() -> None:
    with pytest.raises(TypeError, match="setting 'when': type must be one of int, float, bool, str, dict, list"):
        Setting("when", tuple)


def test_the_example_of_docs_objectives_md_builds_and_checks_its_settings() -> None:
    """The first example of docs/objectives.md is valid code for this API, and the
    message it quotes for ``--set epochs=0`` is the one given."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "objectives.md").read_text()
    namespace: dict[str, object] = {}
    exec(re.findall(r"```python\n(.*?)```", text, re.S)[0], namespace)  # noqa: S102 - the doc's own example
    mine = namespace["mine"]
    assert isinstance(mine, Experiment)
    assert (mine.name, mine.algo, mine.trial_timeout, mine.default_settings) == ("mine", "tpe", 3600, {"epochs": 10})
    quoted = re.search(r'`--set epochs=0`: "(.*?)"', " ".join(text.split()))
    assert quoted is not None
    with pytest.raises(BadSetting, match=re.escape(quoted.group(1))):
        mine.check_settings({"epochs": 0})
