"""Every user error gets one clear message, exit code 2 and no traceback.

Most cases run the CLIs in-process (typer's CliRunner); the ones about processes
(the real exit path, a server that does not answer) run them as subprocesses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from pymongo.database import Database
from typer.testing import CliRunner

from coordinator.cli import app as coordinator_app
from jobstore.embedded import free_port
from tests.support.ports import refusing_port
from tests.support.processes import run_cli
from worker.cli import app as worker_app


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def invoke(module: str, *args: str) -> Ran:
    """Run a CLI in this process, like ``python -m MODULE ARGS``."""
    app = {"coordinator": coordinator_app, "worker": worker_app}[module]
    result = CliRunner().invoke(app, list(args), env={"HPO_MONGO_URL": "", "COLUMNS": "200"})
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def assert_user_error(result: Ran, *fragments: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in " ".join(output.split()), output


def test_unknown_experiment_lists_the_known_ones() -> None:
    result = invoke("coordinator", "start", "--exp", "cifar1000", "--mongo", "mongodb://127.0.0.1:1/x")
    assert_user_error(result, "unknown experiment 'cifar1000'", "known experiments:", "quadratic", "digits")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://localhost/db", "unsupported URL scheme"),
        ("mongodb://localhost:port/db", "bad port"),
    ],
)
def test_malformed_urls(url: str, message: str) -> None:
    assert_user_error(invoke("coordinator", "start", "--exp", "quadratic", "--mongo", url), message)
    assert_user_error(invoke("worker", "--mongo", url), message)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("MONGODB://coord:s3cretPW@localhost:port/db", "bad port in 'MONGODB://coord:***@localhost:port/db'"),
        ("mongodb://:s3cretPW@localhost/db", "bad user or password in 'mongodb://:***@localhost/db'"),
        ("mongodb://coord:s3cret@PW@localhost/db", "bad user or password in 'mongodb://coord:***@localhost/db'"),
        ("mongodb://coord:s3cretPW@h1:1,h2:x/db", "bad port in 'mongodb://coord:***@h1:1,h2:x/db'"),
    ],
)
def test_url_errors_never_show_the_password(url: str, message: str) -> None:
    for result in (invoke("coordinator", "start", "--exp", "quadratic", "--mongo", url),
                   invoke("worker", "--mongo", url)):
        assert_user_error(result, message)
        assert "s3cret" not in result.stdout + result.stderr


def test_unreachable_server_is_reported_at_once_with_the_password_masked() -> None:
    with refusing_port() as port:
        url = f"mongodb://alice:hunter2@127.0.0.1:{port}/db"
        for module, args in (("coordinator", ["start", "--exp", "quadratic"]), ("worker", [])):
            result = run_cli(module, *args, "--mongo", url)
            # "at once", not after the connect timeout: pymongo alone waits the whole
            # timeout on a refused connection and then names no cause, so the cause in the
            # message shows the refusal was seen (a check that needs no clock)
            assert_user_error(result, "cannot reach MongoDB at mongodb://alice:***@127.0.0.1",
                              "connection refused (nothing listens there)")
            assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", ""], "--run must not be empty"),
        (["--exp", ""], "--exp must not be empty"),
        (["--max-evals", "ten"], "Invalid value for '--max-evals'"),
        (["--max-evals", "0"], "Invalid value for '--max-evals'"),
        (["--set", "novalue"], "--set expects KEY=VALUE"),
        (["--algo", "sgd"], "unknown algorithm 'sgd'; choose one of: joint-tpe, tpe, rand, anneal, atpe"),
        (["--objective", "nomodule"], "must look like 'package.module:attribute'"),
        (["--objective", "os:path"], "is a module, not an objectives.base.Experiment"),
    ],
)
def test_bad_coordinator_options(args: list[str], message: str, db_url: str) -> None:
    base = ["start", "--exp", "quadratic", "--mongo", db_url]
    merged = base + args if args[0] != "--exp" else ["start", "--mongo", db_url] + args
    assert_user_error(invoke("coordinator", *merged), message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algo", "sgd"], "unknown algorithm 'sgd'; choose one of: joint-tpe, tpe, rand, anneal, atpe"),
        (["--pruner", "asha", "--warmup-steps", "2"], "--warmup-steps applies to median only, not asha"),
        (["--pruner", "none", "--min-resource", "2"], "--min-resource applies to asha and hyperband only, not none"),
        (["--pruner", "median"], "experiment 'quadratic' declares no pruning metric"),
    ],
)
def test_option_mistakes_are_refused_before_a_local_server_starts(args: list[str], message: str,
                                                                  tmp_path: Path) -> None:
    """Local mode: an unknown algorithm and the pruner option mistakes that read only the
    options and the experiment used to be refused after the local server had started and
    the command had printed its URL and how more workers could attach to the run."""
    data = tmp_path / "data"
    result = invoke("coordinator", "start", "--exp", "quadratic", *args, "--local-dir", str(data),
                    "--local-port", str(free_port()))
    assert_user_error(result, message)
    assert "more workers can attach" not in result.stdout + result.stderr
    assert not data.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--heartbeat", "-1"], "Invalid value for '--heartbeat'"),
        (["--heartbeat", "5", "--lease", "2"], "must be longer than --heartbeat"),
        (["--max-jobs", "many"], "Invalid value for '--max-jobs'"),
        (["--run", " "], "--run must not be empty"),
    ],
)
def test_bad_worker_options(args: list[str], message: str, db_url: str) -> None:
    assert_user_error(invoke("worker", "--mongo", db_url, *args), message)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("foo=1", "experiment 'digits' has no setting 'foo'; its settings: epochs (int, at least 1, default 10): "
                  "training epochs of each trial; split_seed (int, at least 0): seed of the train/validation split "
                  "(default 0); another seed checks a configuration on other data; trial_timeout (float, at least 0)"),
        ("epochs=abc", "setting 'epochs' must be an integer, not 'abc'"),
        ("epochs=2.5", "setting 'epochs' must be an integer, not 2.5"),
        ("epochs=0", "setting 'epochs' must be at least 1, not 0"),
        ("epochs=-3", "setting 'epochs' must be at least 1, not -3"),
        ("trial_timeout=-1", "setting 'trial_timeout' must be at least 0, not -1.0"),
    ],
)
def test_run_settings_are_checked_before_anything_is_written(setting: str, message: str, db_url: str,
                                                             db: Database) -> None:
    assert_user_error(invoke("coordinator", "start", "--exp", "digits", "--mongo", db_url, "--set", setting),
                      f"--set: {message}")
    assert db.list_collection_names() == []


def test_missing_database_option() -> None:
    assert_user_error(invoke("worker"), "hpo-worker needs a database: pass --mongo URL or set $HPO_MONGO_URL")
