"""What both CLIs share: logging and user-error printing (issue 12, defects 4 and 5)."""

from __future__ import annotations

import logging

import pytest
from rich.highlighter import NullHighlighter

from cli_support.console import MAX_LOG_CHARS, fail, setup_logging, user_errors
from objectives.registry import get_experiment, load_reference


@pytest.fixture
def logged(capsys: pytest.CaptureFixture[str]):
    setup_logging("info")
    yield lambda: capsys.readouterr().err
    logging.getLogger().handlers.clear()


def test_a_huge_log_message_is_shortened_masked_and_not_highlighted(logged) -> None:
    """A 2 MB exception message used to stall a worker for minutes in rich's highlighter
    (quadratic on a long word); it is now shortened, and nothing is highlighted."""
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler.highlighter, NullHighlighter)
    message = "mongodb://bob:hunter2@h/db " + "a" * 2_000_000 + " the end"
    logging.getLogger("x").error("trial failed: %s", message)
    err = logged()
    assert "hunter2" not in err and "mongodb://bob:***@h/db" in err
    assert "characters left out" in err and "the end" in err
    assert len(err) < 2 * MAX_LOG_CHARS


def test_a_logged_traceback_is_masked_too(logged) -> None:
    try:
        raise RuntimeError("cannot reach MONGODB://coord:s3cret@h:1/db")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    err = logged()
    assert "RuntimeError" in err and "s3cret" not in err and "coord:***@h" in err


def test_fail_prints_brackets_literally(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        fail("bad value [/x] for mongodb://u:s3cret@h [bold]")
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "bad value [/x] for mongodb://u:***@h [bold]" in " ".join(err.split())


@pytest.mark.parametrize("mistake", [lambda: get_experiment("nope"), lambda: load_reference("no-colon")],
                         ids=["unknown experiment", "bad objective reference"])
def test_the_registrys_errors_are_user_errors(mistake, capsys: pytest.CaptureFixture[str]) -> None:
    """The experiments' errors come from the neutral ``user_errors`` module, so one
    ``except UserError`` prints them without a traceback."""
    with pytest.raises(SystemExit) as caught, user_errors():
        mistake()
    assert caught.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error:") and ("unknown experiment 'nope'" in err or "'no-colon'" in err)
