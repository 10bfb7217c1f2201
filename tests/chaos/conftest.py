"""The chaos suite's figures: one ``CHAOS ...`` line per scenario, printed as it ends
(visible with ``-s``), repeated in pytest's terminal summary, and written as JSON to
``chaos-summary.json`` in pytest's base temporary directory (or to
``$HPO_CHAOS_SUMMARY`` when set), so docs/reliability.md can quote a run's figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pymongo.database import Database

from tests.support.chaos import Chaos, Figures

_FIGURES = pytest.StashKey[list[Figures]]()
_SUMMARY_FILE = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def _chaos_figures(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Figures]]:
    figures = request.config.stash.setdefault(_FIGURES, [])
    target = Path(os.environ.get("HPO_CHAOS_SUMMARY") or tmp_path_factory.getbasetemp() / "chaos-summary.json")
    request.config.stash[_SUMMARY_FILE] = target
    yield figures
    target.write_text(json.dumps([dataclasses.asdict(f) for f in figures], indent=2, default=str) + "\n")


@pytest.fixture
def chaos_report(_chaos_figures: list[Figures]) -> Callable[[Figures], None]:
    """Print a scenario's figures and keep them for the summary."""

    def report(figures: Figures) -> None:
        print(figures.line(), flush=True)
        _chaos_figures.append(figures)

    return report


@pytest.fixture
def make_chaos(tmp_path: Path) -> Iterator[Callable[..., Chaos]]:
    """``make_chaos(scenario, url, db, seed)``: a :class:`Chaos` whose processes are
    killed at the end of the test if the scenario left any running."""
    made: list[Chaos] = []

    def make(scenario: str, url: str, db: Database, seed: int) -> Chaos:
        chaos = Chaos(scenario, url, db, tmp_path / scenario, seed)
        made.append(chaos)
        return chaos

    yield make
    for chaos in made:
        chaos.cleanup()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    figures = config.stash.get(_FIGURES, [])
    if not figures:
        return
    terminalreporter.section("chaos figures")
    for item in figures:
        terminalreporter.write_line(item.line())
    target = config.stash.get(_SUMMARY_FILE, None)
    if target is not None:
        terminalreporter.write_line(f"(also in {target})")
