"""What both command-line programs share: logging, the database option, user errors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.highlighter import NullHighlighter
from rich.logging import RichHandler
from rich.markup import escape

from jobstore.connection import mask, url_from_environment
from objectives.registry import load_reference, register
from user_errors import UserError

EXIT_USER_ERROR = 2
MAX_LOG_CHARS = 10_000
"""Longer log messages (with their tracebacks) keep their first and last half of this."""
MONGO_HELP = (
    "MongoDB URL: any connection string MongoDB's drivers take, e.g. mongodb://[USER@]HOST:PORT/DB, "
    "a replica set's mongodb://USER@H1:PORT,H2:PORT/DB?replicaSet=NAME, mongodb+srv://USER@HOST/DB "
    "(or hyperopt's mongo://HOST:PORT/DB/jobs). Writes are journaled (w=majority) unless the URL "
    "sets w or journal. Default: $HPO_MONGO_URL."
)
PASSWORD_FILE_HELP = "Read the MongoDB password from this file (or set $HPO_MONGO_PASSWORD[_FILE])."
OBJECTIVE_HELP = (
    "Register an experiment from your own code, as package.module:attribute "
    "(an objectives.base.Experiment). Repeatable."
)

def typer_app(help: str, *, no_args_is_help: bool) -> typer.Typer:
    """A Typer application as both programs make them: no shell-completion options, and
    ``--help`` as plain text.  Help texts are therefore written plain, without RST or
    Markdown markup (typer's rich help panels would also show every flag, ``--help``
    included, as taking a ``<bool>`` value, which flags refuse)."""
    return typer.Typer(add_completion=False, help=help, no_args_is_help=no_args_is_help, rich_markup_mode=None,
                       context_settings={"max_content_width": HELP_WIDTH})


def not_empty(name: str) -> Callable[[str | None], str | None]:
    """A Typer callback rejecting an empty string for option ``name``."""

    def check(value: str | None) -> str | None:
        if value is not None and not value.strip():
            fail(f"{name} must not be empty")
        return value

    return check


# Options both programs take, declared once.
MongoOption = Annotated[Optional[str], typer.Option("--mongo", help=MONGO_HELP, callback=not_empty("--mongo"))]
PasswordFileOption = Annotated[Optional[Path], typer.Option(help=PASSWORD_FILE_HELP)]
ObjectiveOption = Annotated[Optional[list[str]], typer.Option(help=OBJECTIVE_HELP)]
ConnectTimeoutOption = Annotated[float, typer.Option(min=0.1, help="Seconds to wait for the database at start.")]
LogLevelHelp = "debug, info, warning or error."
HELP_WIDTH = 120
"""``--help`` uses the terminal's width up to this many columns."""

stderr = Console(stderr=True)

EXIT_TRIAL_HUNG = 76
"""``hpo-worker`` exit code: a trial ignored its time limit; a supervisor should start a fresh worker."""


def package_version() -> str:
    try:
        return version("hpo-queue")
    except PackageNotFoundError:
        return "unknown"


def setup_logging(level: str) -> None:
    """Log to stderr through rich, masking passwords in every message and traceback and
    shortening messages over :data:`MAX_LOG_CHARS`.  Nothing is highlighted: rich's
    highlighter takes minutes on a long message, such as an objective's exception."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        fail(f"unknown log level {level!r}; use debug, info, warning or error")
    handler = RichHandler(console=stderr, show_path=False, rich_tracebacks=False,
                          highlighter=NullHighlighter())
    handler.addFilter(_MaskPasswords())
    logging.basicConfig(level=numeric, format="%(message)s", datefmt="[%X]", handlers=[handler], force=True)
    logging.getLogger("pymongo").setLevel(max(numeric, logging.WARNING))
    logging.getLogger("hyperopt").setLevel(max(numeric, logging.WARNING))


class _MaskPasswords(logging.Filter):
    """Masks the record's message and traceback (formatted here, so that the handler
    prints the masked text) and shortens it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = shorten(mask(message))
        record.args = None
        return True


def shorten(text: str, limit: int = MAX_LOG_CHARS) -> str:
    """``text``, or its first and last ``limit / 2`` characters and how many were left out."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"


def fail(message: str) -> NoReturn:
    """Print a user error (password masked, printed literally) and exit 2 (no traceback)."""
    stderr.print(f"[bold red]error:[/] {escape(mask(message))}", highlight=False)
    raise SystemExit(EXIT_USER_ERROR)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into a one-line message and exit code 2."""
    try:
        yield
    except UserError as exc:
        fail(str(exc))


def register_objectives(references: list[str] | None) -> None:
    for reference in references or []:
        register(load_reference(reference))


def require_url(url: str | None, what: str) -> str:
    resolved = url_from_environment(url)
    if resolved is None:
        fail(f"{what} needs a database: pass --mongo URL or set $HPO_MONGO_URL")
    return resolved
