"""Monitoring commands of ``hpo-coord`` (status, runs, best, trials, plot, space)."""

from __future__ import annotations

import typer
from rich.console import Console


def register(app: typer.Typer, console: Console) -> None:
    """Add the monitoring commands to ``app``."""
