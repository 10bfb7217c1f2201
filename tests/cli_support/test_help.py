"""``--help`` of both programs, as a user runs them: plain text, flags shown as flags."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.processes import finish_cli, start_cli

COORDINATOR_COMMANDS = ["start", "retrain", "experiments", "status", "runs", "best", "trials", "plot", "space",
                        "dashboard"]
HELP_PAGES = [("worker", []), ("coordinator", [])] + [("coordinator", [name]) for name in COORDINATOR_COMMANDS]


@pytest.fixture(scope="module")
def pages() -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    """Every help page, each from its own process as a user runs it (``COLUMNS=100``),
    started all at once: each process spends seconds importing the programs."""
    running = {(module, *args): start_cli(module, *args, "--help", env={"COLUMNS": "100"})
               for module, args in HELP_PAGES}
    return {page: finish_cli(process) for page, process in running.items()}


def _help(pages: dict[tuple[str, ...], subprocess.CompletedProcess[str]], module: str, args: list[str]) -> str:
    done = pages[(module, *args)]
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_command_list_is_complete(pages: dict[tuple[str, ...], subprocess.CompletedProcess[str]]) -> None:
    listed = re.findall(r"^  (\w+) ", _help(pages, "coordinator", []).split("Commands:")[1], re.MULTILINE)
    assert sorted(listed) == sorted(COORDINATOR_COMMANDS)


@pytest.mark.parametrize(("module", "args"), HELP_PAGES, ids=[" ".join([m, *a]) for m, a in HELP_PAGES])
def test_help_is_plain_text_without_markup(pages: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
                                           module: str, args: list[str]) -> None:
    text = _help(pages, module, args)
    assert "`" not in text, text
    assert "<bool>" not in text, text
    assert re.search(r"^  --help\s+Show this message and exit\.$", text, re.MULTILINE), text


@pytest.mark.parametrize(("module", "args", "flag", "help_start"), [
    ("coordinator", ["status"], "--watch", "Redraw until Ctrl-C."),
    ("worker", [], "--allow-pickle", "Run jobs whose objective is a pickled"),
])
def test_boolean_options_are_shown_as_flags(pages: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
                                            module: str, args: list[str], flag: str, help_start: str) -> None:
    """A flag takes no value (``--watch true`` is refused), so none is shown."""
    assert re.search(rf"^  {flag}\s+{re.escape(help_start)}", _help(pages, module, args), re.MULTILINE)


def _exit_codes(text: str) -> set[int]:
    """The codes the help's ``Exit codes: N what; N what; ...`` paragraph lists."""
    paragraph = " ".join(text.split()).split("Exit codes:")[1].split(" Options:")[0]
    return {int(code) for code in re.findall(r"(?:^|; )(\d+) (?!\+)", paragraph.strip())}


def test_every_exit_code_is_in_the_help(pages: dict[tuple[str, ...], subprocess.CompletedProcess[str]]) -> None:
    """The codes the programs exit with, from the constants they use."""
    from cli_support.console import EXIT_TRIAL_HUNG, EXIT_USER_ERROR
    from jobstore.fatal import EXIT_THREAD_DIED
    from worker.loop import EXIT_GPU_LOST, EXIT_REFUSED

    worker = _help(pages, "worker", [])
    assert _exit_codes(worker) == {0, 1, EXIT_USER_ERROR, EXIT_REFUSED, EXIT_GPU_LOST, EXIT_TRIAL_HUNG,
                                   EXIT_THREAD_DIED}
    assert "128 + the signal's number (143 for SIGTERM)" in " ".join(worker.split())
    assert _exit_codes(_help(pages, "coordinator", ["start"])) == {0, 1, 2, 3, 70, 130}
