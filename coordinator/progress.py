"""A rich progress bar in the shape hyperopt's FMinIter expects.

hyperopt calls ``progress_callback(initial=..., total=...)`` and uses the result as a
context manager whose value has ``update(n)`` and a ``postfix`` attribute (the best
loss text).  This one counts finished trials, including those done before a resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class _Bar:
    def __init__(self, progress: Progress, task: int) -> None:
        self._progress = progress
        self._task = task
        self._postfix = ""

    @property
    def postfix(self) -> str:
        return self._postfix

    @postfix.setter
    def postfix(self, text: str) -> None:
        self._postfix = text
        self._progress.update(self._task, postfix=text)

    def update(self, n: int) -> None:
        self._progress.advance(self._task, n)


def rich_progress(console: Console, description: str):  # noqa: ANN201 - hyperopt's protocol
    """A hyperopt ``show_progressbar`` value drawing a rich bar on ``console``."""

    @contextmanager
    def callback(initial: int, total: int) -> Iterator[_Bar]:
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[postfix]}"),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(description, total=total, completed=initial, postfix="")
            yield _Bar(progress, task)

    return callback
