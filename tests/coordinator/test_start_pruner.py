"""``hpo-coord start --pruner``: the settings a run stores, defaults, resume, bad input."""

from __future__ import annotations

import uuid

import pytest
from pymongo.database import Database
from rich.console import Console
from typer.testing import CliRunner

from coordinator.cli import app
from coordinator.start import PrunerChoice, StartOptions, run_settings, start_run
from jobstore import schema as s
from jobstore.store import Store
from user_errors import UserError
from objectives.digits import digits
from objectives.pruning import PrunerSettings
from objectives.registry import get_experiment


def options(pruner: PrunerChoice | None, **settings: object) -> StartOptions:
    return StartOptions(run="r", max_evals=10, algo=None, settings=settings, pruner=pruner)


def test_defaults_come_from_the_experiment_and_the_epochs_setting() -> None:
    stored = run_settings(digits, options(PrunerChoice("asha"), epochs=15), None)[s.RUN_PRUNER]
    assert PrunerSettings.from_document(stored) == PrunerSettings(
        "asha", "loss", "minimize", max_resource=15, min_resource=1, reduction_factor=3)
    stored = run_settings(digits, options(PrunerChoice("median", metric="val_accuracy", direction="maximize",
                                                       max_resource=12, warmup_steps=2, startup_trials=3)), None)
    assert stored[s.RUN_PRUNER] == PrunerSettings("median", "val_accuracy", "maximize", max_resource=12,
                                                  warmup_steps=2, startup_trials=3).to_document()


def test_a_resumed_run_keeps_its_pruner_unless_told_otherwise() -> None:
    first = run_settings(digits, options(PrunerChoice("hyperband")), None)
    run = {s.RUN_SETTINGS: first}
    assert run_settings(digits, options(None), run)[s.RUN_PRUNER] == first[s.RUN_PRUNER]
    assert run_settings(digits, options(PrunerChoice("none")), run)[s.RUN_PRUNER] is None


def test_an_experiment_without_a_declared_metric_needs_one() -> None:
    quadratic = get_experiment("quadratic")
    with pytest.raises(UserError, match="declares no pruning metric; name the reported metric"):
        run_settings(quadratic, options(PrunerChoice("median"), epochs=5), None)
    with pytest.raises(UserError, match="pass --max-resource"):
        run_settings(quadratic, options(PrunerChoice("median", metric="val_loss")), None)
    with pytest.raises(UserError, match=r"min_resource \(20\) is above max_resource \(15\)"):
        run_settings(digits, options(PrunerChoice("asha", min_resource=20), epochs=15), None)


@pytest.mark.parametrize("args, message", [
    (["--pruner", "sometimes"], "--pruner must be one of none, median, asha, hyperband, not 'sometimes'"),
    (["--pruner", "asha", "--pruner-direction", "up"], "--pruner-direction must be one of minimize, maximize"),
    (["--min-resource", "2"], "the pruning options (--pruner-metric, --min-resource, ...) need --pruner"),
])
def test_bad_pruner_options_say_what_to_do(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["start", "--exp", "digits", "--mongo", "mongodb://127.0.0.1:1/x", *args])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split()), result.output


def test_a_start_refused_for_its_pruner_settings_writes_no_run(db: Database) -> None:
    """Pruner settings that cannot work are refused before the run document is created."""
    run = f"refused-pruner-{uuid.uuid4().hex[:8]}"
    bad = StartOptions(run=run, max_evals=2, algo=None, settings={"epochs": 15},
                       pruner=PrunerChoice("asha", min_resource=20))
    with pytest.raises(UserError, match=r"min_resource \(20\) is above max_resource \(15\)"):
        start_run(Store(db), digits, bad, Console())
    assert db[s.RUNS].find_one({s.ID: run}) is None


@pytest.mark.parametrize("stored", [
    {"kind": "asha", "metric": "loss", "direction": "minimize", "max_resource": 15, "reduction_factor": 1},
    {"kind": "median", "metric": "loss"},
    "asha",
])
def test_a_resume_refuses_a_stored_pruner_no_worker_can_use(stored: object) -> None:
    """Workers refuse a run whose stored pruner is unusable, so a resume that would keep
    it says so (and how to replace it) instead of queueing trials nobody runs."""
    run = {s.RUN_SETTINGS: {"epochs": 15, s.RUN_PRUNER: stored}}
    with pytest.raises(UserError, match=r"stored pruner settings .*--pruner"):
        run_settings(digits, options(None), run)
    replaced = run_settings(digits, options(PrunerChoice("median")), run)[s.RUN_PRUNER]
    assert PrunerSettings.from_document(replaced).kind == "median"
    assert run_settings(digits, options(PrunerChoice("none")), run)[s.RUN_PRUNER] is None


@pytest.mark.parametrize("choice, message", [
    (PrunerChoice("asha", min_resource=15), r"min_resource \(15\) is not below max_resource \(15\)"),
    (PrunerChoice("hyperband", max_resource=4, min_resource=4), r"min_resource \(4\) is not below max_resource"),
    (PrunerChoice("median", warmup_steps=15), r"warmup_steps \(15\) is not below max_resource \(15\)"),
    (PrunerChoice("asha", warmup_steps=2), r"--warmup-steps applies to median only, not asha"),
    (PrunerChoice("median", reduction_factor=2), r"--reduction-factor applies to asha and hyperband only"),
    (PrunerChoice("none", startup_trials=2), r"--startup-trials applies to median only, not none"),
])
def test_settings_that_would_never_prune_or_are_ignored_are_refused(choice: PrunerChoice, message: str) -> None:
    with pytest.raises(UserError, match=message):
        run_settings(digits, options(choice, epochs=15), None)


def test_none_takes_no_pruning_options() -> None:
    with pytest.raises(UserError, match="--pruner-metric applies to median, asha and hyperband only, not none"):
        run_settings(digits, options(PrunerChoice("none", metric="loss")), None)


def test_scores_recorded_under_other_settings_are_named() -> None:
    earlier = PrunerSettings("asha", "loss", "minimize", max_resource=15)
    assert PrunerSettings("hyperband", "loss", "minimize", max_resource=27).incomparable_scores(earlier) is None
    assert PrunerSettings("median", "loss", "minimize", max_resource=15,
                          reduction_factor=2).incomparable_scores(earlier) is None  # median reads step scores
    assert PrunerSettings("asha", "val_accuracy", "maximize", max_resource=15).incomparable_scores(earlier) == (
        "metric 'loss' -> 'val_accuracy', direction 'minimize' -> 'maximize'")
    assert PrunerSettings("hyperband", "loss", "minimize", max_resource=15,
                          reduction_factor=2).incomparable_scores(earlier) == "reduction_factor 3 -> 2"


def test_a_resume_refuses_a_pruner_that_would_compare_scores_of_another_kind(db: Database) -> None:
    """A run whose trials recorded pruning scores of one metric and direction (or at the
    rungs of one min_resource and reduction_factor) cannot be resumed with a pruner that
    would compare new trials with them: loss scores against accuracies prune nothing."""
    run = f"changed-pruner-{uuid.uuid4().hex[:8]}"
    first = run_settings(digits, options(PrunerChoice("median"), epochs=15), None)
    Store(db).runs.ensure(run, experiment=digits.name, fingerprint=digits.fingerprint(), settings=first)
    changed = StartOptions(run=run, max_evals=0, algo=None, settings={"epochs": 15},
                           pruner=PrunerChoice("median", metric="val_accuracy", direction="maximize"))
    db[s.CURVES].insert_one({s.CURVE_EXP_KEY: run, s.CURVE_TID: 0, s.CURVE_TOKEN: "t", s.CURVE_STEP: 1,
                             s.CURVE_RUNG: None, s.CURVE_BRACKET: None, s.CURVE_SCORE: 0.3,
                             s.CURVE_COMPLETE: True, s.CURVE_REMOVED: False})
    with pytest.raises(UserError, match=r"metric 'loss' -> 'val_accuracy'.*new run \(--run NAME\)"):
        start_run(Store(db), digits, changed, Console())
    assert db[s.RUNS].find_one({s.ID: run})[s.RUN_SETTINGS][s.RUN_PRUNER] == first[s.RUN_PRUNER]


def test_a_resumed_run_keeps_its_settings_and_its_pruner_budget() -> None:
    """A resume without --set keeps the run's epochs (it was reset to the experiment's
    default, so the resumed trials trained another budget), and a new --pruner takes its
    maximum resource from them; --set on the resume changes the setting it names."""
    first = run_settings(digits, options(PrunerChoice("asha"), epochs=3, split_seed=2), None)
    run = {s.RUN_SETTINGS: first}
    resumed = run_settings(digits, options(None), run)
    assert resumed == first
    assert run_settings(digits, options(PrunerChoice("median")), run)[s.RUN_PRUNER]["max_resource"] == 3
    changed = run_settings(digits, options(PrunerChoice("asha"), epochs=5), run)
    assert changed["epochs"] == 5 and changed["split_seed"] == 2 and changed[s.RUN_PRUNER]["max_resource"] == 5


def test_a_resume_checks_the_settings_it_keeps(caplog: pytest.LogCaptureFixture) -> None:
    """The stored settings a resume keeps are read from the database, so they are checked
    as --set's are: a refused value stops the resume, naming it and the --set that
    replaces it (which then works); one the experiment does not declare is dropped, with
    a warning, instead of reaching the objective."""
    run = {s.RUN_SETTINGS: {"epochs": "abc", "split_seed": 2}}
    with pytest.raises(UserError, match=r"stored settings: setting 'epochs' must be .*--set epochs=VALUE"):
        run_settings(digits, options(None), run)
    assert run_settings(digits, options(None, epochs=4), run)["epochs"] == 4
    with caplog.at_level("WARNING"):
        resumed = run_settings(digits, options(None), {s.RUN_SETTINGS: {"epochs": 3, "retired": 1}})
    assert resumed["epochs"] == 3 and "retired" not in resumed
    assert "stored setting 'retired' is not one experiment 'digits' declares" in caplog.text


def test_a_resume_that_changes_the_epochs_its_kept_pruner_was_sized_for_is_refused() -> None:
    """Resumed with --set epochs=N, a kept pruner sized from the old epochs would compare
    at another budget than the trials train: refused, naming the --pruner that sizes it
    anew, which then works; a max_resource given apart from the epochs is kept."""
    run = {s.RUN_SETTINGS: run_settings(digits, options(PrunerChoice("asha"), epochs=10), None)}
    with pytest.raises(UserError, match=r"sized for its 10 epochs .*--set epochs=20 .*--pruner asha"):
        run_settings(digits, options(None, epochs=20), run)
    assert run_settings(digits, options(PrunerChoice("asha"), epochs=20), run)[s.RUN_PRUNER]["max_resource"] == 20
    apart = {s.RUN_SETTINGS: run_settings(digits, options(PrunerChoice("asha", max_resource=9), epochs=10), None)}
    assert run_settings(digits, options(None, epochs=20), apart)[s.RUN_PRUNER]["max_resource"] == 9
