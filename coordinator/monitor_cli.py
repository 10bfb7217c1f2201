"""Monitoring commands of ``hpo-coord``: status, runs, best, trials, plot, space.

All but ``space`` read the database named by ``--mongo`` (default ``$HPO_MONGO_URL``;
password from ``--mongo-password-file`` or the environment, never printed), else the
local data in ``--local-dir`` (see :mod:`coordinator.local_server`), and never change a
job, run or worker document.  ``--run`` may be left out when the database
holds exactly one run; an unknown run is a one-line error listing the runs (exit 2).
Each command is a plain function taking a :class:`Session` (the console, and the
store's read-only view opened from the connection options all commands share,
declared once) and its own options.  Queries live in :mod:`coordinator.monitor`,
figures in :mod:`coordinator.plots`; docs/monitoring.md documents the commands.
"""

from __future__ import annotations

import csv
import functools
import inspect
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from cli_support.console import (
    ConnectTimeoutOption,
    LogLevelHelp,
    MongoOption,
    ObjectiveOption,
    PasswordFileOption,
    not_empty,
    register_objectives,
    setup_logging,
    user_errors,
)
from coordinator import monitor, plots
from coordinator.display import whole_floats_as_ints
from coordinator.local_server import DEFAULT_LOCAL_DIR, LocalDirOption, database_url
from jobstore import schema as s
from jobstore.connection import DEFAULT_TIMEOUT_S
from jobstore.store import Store
from jobstore.view import ReadOnlyView
from objectives.pruning import rule_settings
from objectives.registry import get_experiment
from user_errors import UserError

log = logging.getLogger(__name__)

LogLevel = Annotated[str, typer.Option(help=LogLevelHelp)]
Run = Annotated[Optional[str], typer.Option(
    help="Run name (exp_key). Default: the only run in the database.", callback=not_empty("--run"))]


class TrialFormat(str, Enum):
    csv = "csv"
    json = "json"


def _under_a_file(path: Path) -> None:
    """Refuse ``path`` when its nearest existing parent is not a directory (nothing
    can be created under it)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {path}: {parent} is a file, not a directory; "
                                "give a path whose parent directories are directories (or missing)")
            return


def _output_dir(path: Path) -> Path:
    """``path`` for ``--out DIR``: refused when it exists and is not a directory, or
    lies under a file."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file: give a directory for the PNG files "
                        "(it is created if missing)")
    _under_a_file(path)
    return path


def _output_file(path: Path) -> Path:
    """``path`` for ``--out FILE``: refused when it is a directory, or lies under a file."""
    if path.is_dir():
        raise UserError(f"--out {path} is a directory: give a file name to write the trials to")
    _under_a_file(path)
    return path


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _compact_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _span(delta: timedelta) -> str:
    """The span a throughput was measured over: to a tenth of a second under a minute
    (whole seconds read "6 finished in the last 0s" for a sub-second burst), else as
    :func:`monitor.duration`."""
    if delta < timedelta(minutes=1):
        return f"{delta.total_seconds():.1f}s"
    return monitor.duration(delta)


def render_status(st: monitor.RunStatus) -> Group:
    """The status of a run as rich tables: summary, stale jobs, workers."""
    c = st.counts
    summary = Table(title=f"run {st.run}" + (f" (experiment {st.experiment})" if st.experiment else ""),
                    show_header=False, title_justify="left")
    summary.add_column("what", style="bold")
    summary.add_column("value", overflow="fold")
    states = f"new {c.new}  running {c.running}  done {c.done}  error {c.error}"
    summary.add_row("trials", states + (f"  cancel {c.cancel}" if c.cancel else "") + f"  (total {c.total})")
    if st.max_evals is not None:
        errors = f" ({c.error} error(s) not counted)" if c.error else ""
        summary.add_row("progress", f"{c.done} of {st.max_evals} done{errors}")
    if st.best is None:
        pruned = st.pruning is not None and st.pruning.pruned > 0
        summary.add_row("best loss", "no ok trial that trained its whole budget yet (pruned trials are never "
                        "the best)" if pruned else "no ok trial yet")
    else:
        summary.add_row("best loss", f"{st.best.loss:.6g} (trial {st.best.tid})")
        summary.add_row("best params", _compact_json(whole_floats_as_ints(st.best.params)))
    rate = st.throughput
    if rate.per_hour is None or rate.window_start is None or rate.last_finish is None:
        summary.add_row("throughput", "not enough finished trials yet")
    else:
        summary.add_row("throughput", f"{rate.per_hour:.1f} trials/h ({rate.window_trials} finished "
                        f"in the last {_span(rate.last_finish - rate.window_start)} of activity)")
    if rate.last_finish is not None:
        summary.add_row("last finish", f"{monitor.ago(st.now, rate.last_finish)} ago")
    if st.eta is not None:
        summary.add_row("ETA", "complete" if st.eta == timedelta(0) else monitor.duration(st.eta))
    if st.pruning is not None:
        p = st.pruning.settings
        saved = "" if st.pruning.steps_saved is None else f", {st.pruning.steps_saved} epochs (steps) saved"
        summary.add_row("pruning", f"{p.get('kind')} on {p.get('metric')} ({p.get('direction')}): "
                        f"{st.pruning.pruned} trial(s) pruned{saved}")
        summary.add_row("pruner settings", _compact_json(rule_settings(p)))
    summary.add_row("stale running jobs", str(len(st.stale)))
    parts: list[Any] = [summary]
    if st.stale:
        stale = Table(title="stale running jobs", title_justify="left")
        for column in ("tid", "worker", "last heartbeat", "why"):
            stale.add_column(column, overflow="fold", no_wrap=column != "why")
        for job in st.stale:
            stale.add_row(str(job.tid), job.owner or "-",
                          f"{monitor.ago(st.now, job.refresh_time)} ago" if job.refresh_time else "-",
                          "; ".join(job.reasons))
        parts.append(stale)
    workers = Table(title=f"workers seen in the last {monitor.duration(monitor.WORKER_HORIZON)}",
                    title_justify="left")
    for column in ("worker", "host", "device", "state", "current trial", "last heartbeat", "trials done"):
        workers.add_column(column, overflow="fold", no_wrap=column != "device")
    for w in st.workers:
        current = "-" if not w.current else f"{w.current.get('exp_key')}:{w.current.get('tid')}"
        workers.add_row(w.id, w.host or "-", w.device or "-", w.state, current,
                        f"{monitor.ago(st.now, w.last_seen)} ago" if w.last_seen else "-",
                        str(w.trials_done))
    if not st.workers:
        workers.caption = "no worker seen"
    parts.append(workers)
    return Group(*parts)


def render_runs(runs: list[monitor.RunOverview]) -> Table:
    """One row per run; on a narrow terminal the run names stay whole (what a reader
    copies into ``--run``) and the other cells wrap."""
    table = Table(title="runs", title_justify="left")
    for column in ("run", "experiment", "trials", "new", "running", "done", "error",
                   "max evals", "best loss", "pruner", "created (UTC)"):
        table.add_column(column, overflow="fold", no_wrap=column == "run")
    for r in runs:
        c = r.counts
        table.add_row(r.run, r.experiment or "-", str(c.total), str(c.new), str(c.running),
                      str(c.done), str(c.error), "-" if r.max_evals is None else str(r.max_evals),
                      _number(r.best_loss), "none" if r.pruner is None else str(r.pruner.get("kind")),
                      r.created_at.strftime("%Y-%m-%d %H:%M:%S") if r.created_at else "-")
    if not runs:
        table.caption = "no runs in this database"
    return table


def trials_text(rows: list[dict[str, Any]], fmt: TrialFormat) -> str:
    """``rows`` (see :func:`coordinator.monitor.trial_rows`) as CSV or JSON text."""
    if fmt is TrialFormat.json:
        return json.dumps(rows, indent=1) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=monitor.TRIAL_COLUMNS + monitor.param_columns(rows),
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _prior_table(samples: dict[str, list[float]], infos: dict[str, plots.ParamInfo], n: int) -> Table:
    table = Table(title=f"{n} samples of the prior", title_justify="left")
    for column in ("label", "distribution", "active", "values"):
        table.add_column(column, overflow="fold")
    for label in sorted(samples):
        values = samples[label]
        info = infos.get(label) or plots.ParamInfo(label, "unknown")
        if not values:
            summary = "-"
        elif info.categorical:
            summary = ", ".join(f"{name}: {sum(1 for v in values if int(v) == i)}"
                                for i, name in enumerate(info.options))
        else:
            low, mid, high = (float(x) for x in np.percentile(values, [0, 50, 100]))
            summary = f"min {low:.4g}  median {mid:.4g}  max {high:.4g}"
        table.add_row(label, info.distribution, f"{len(values)}/{n}", summary)
    return table


@dataclass
class Session:
    """What each monitoring command gets besides its own options: the console to print
    on, and the database, opened on first use from the shared connection options
    (``--mongo``, else ``$HPO_MONGO_URL``, else the local data in ``--local-dir``: see
    :func:`coordinator.local_server.database_url`; a server started for the command is
    stopped through ``on_close`` when it ends)."""

    console: Console
    command: str
    on_close: Callable[[Callable[[], None]], object] | None = None
    mongo: str | None = None
    mongo_password_file: Path | None = None
    local_dir: Path = DEFAULT_LOCAL_DIR
    connect_timeout: float = DEFAULT_TIMEOUT_S
    _store: Store | None = field(default=None, repr=False)

    @property
    def view(self) -> ReadOnlyView:
        """The store's read-only view (connects the first time)."""
        if self._store is None:
            assert self.on_close is not None, "a command without the connection options has no database"
            url = database_url(self.mongo, self.local_dir, f"hpo-coord {self.command}", self.on_close)
            self._store = Store.open(url, self.mongo_password_file, timeout_s=self.connect_timeout)
        return self._store.view

    def run(self, run: str | None) -> str:
        """``run`` if it exists, else the only run (see :func:`coordinator.monitor.require_run`)."""
        return monitor.require_run(self.view, run)


def _keyword(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


_LOG_LEVEL = _keyword("log_level", LogLevel, "warning")
_CONTEXT = _keyword("ctx", typer.Context, None)
_CONNECTION = (
    _keyword("mongo", MongoOption, None),
    _keyword("mongo_password_file", PasswordFileOption, None),
    _keyword("local_dir", LocalDirOption, DEFAULT_LOCAL_DIR),
    _keyword("connect_timeout", ConnectTimeoutOption, DEFAULT_TIMEOUT_S),
)
"""The connection options every monitoring command but ``space`` shares, declared once."""


def _command(function: Callable[..., None], console: Console, *, database: bool = True) -> Callable[..., None]:
    """``function(session, **own_options)`` as a Typer command: its own options, then the
    shared ones (the connection options when it reads the ``database``, and
    ``--log-level``), which set up logging and the :class:`Session`; user errors end
    it with one line and exit code 2."""
    own = list(inspect.signature(function, eval_str=True).parameters.values())[1:]
    shared = (_CONTEXT, *_CONNECTION, _LOG_LEVEL) if database else (_LOG_LEVEL,)
    name = function.__name__

    @functools.wraps(function)
    def command(**options: Any) -> None:
        setup_logging(options.pop("log_level"))
        session = Session(console, name)
        if database:
            ctx = options.pop("ctx")
            connection = {parameter.name: options.pop(parameter.name) for parameter in _CONNECTION}
            session = Session(console, name, ctx.call_on_close, **connection)
        with user_errors():
            function(session, **options)

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + list(shared))
    return command


def status(
    session: Session,
    run: Run = None,
    watch: Annotated[bool, typer.Option("--watch", help="Redraw until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between redraws with --watch.")] = 5.0,
    stale_after: Annotated[float, typer.Option(
        min=1, help="Flag running jobs without a heartbeat for this many seconds, "
        "and call workers not seen for as long lost.")] = monitor.STALE_AFTER.total_seconds(),
) -> None:
    """A run's progress: counts by state, best trial, throughput, ETA, workers, stale jobs."""
    name = session.run(run)

    def current() -> Group:
        return render_status(monitor.run_status(session.view, name, timedelta(seconds=stale_after)))

    if not watch:
        session.console.print(current())
        return
    with Live(current(), console=session.console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(current(), refresh=True)
        except KeyboardInterrupt:
            pass


def runs(session: Session) -> None:
    """Every run in the database with its trial counts and best loss."""
    session.console.print(render_runs(monitor.list_runs(session.view)))


def best(session: Session, run: Run = None) -> None:
    """Print the best trial's params as JSON (stdout), ready to reuse."""
    name = session.run(run)
    found = monitor.best_trial(session.view, name)
    if found is None:
        raise UserError(f"run {name!r} has no best trial: {session.view.no_best_trial(name)}")
    typer.echo(json.dumps(whole_floats_as_ints(found.params), indent=2, sort_keys=True))


def trials(
    session: Session,
    run: Run = None,
    format_: Annotated[TrialFormat, typer.Option("--format", help="csv or json.")] = TrialFormat.csv,
    out: Annotated[Optional[Path], typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Export one row per trial: tid, state, loss, status, durations, attempts, worker, params."""
    if out is not None:
        _output_file(out)
    name = session.run(run)
    rows = monitor.trial_rows(session.view, name)
    text = trials_text(rows, format_)
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    session.console.print(f"wrote {len(rows)} trial(s) of run {name} to {out}", highlight=False)


def plot(
    session: Session,
    out: Annotated[Path, typer.Option(help="Directory for the PNG files (created).")],
    run: Run = None,
    top: Annotated[int, typer.Option(min=1, help="Learning curves of this many best trials.")] = 5,
    objective: ObjectiveOption = None,
) -> None:
    """Write a run's figures: loss per trial, scatter matrix, histograms, parallel
    coordinates, learning curves, importance."""
    _output_dir(out)
    register_objectives(objective)
    name = session.run(run)
    points = monitor.trial_points(session.view, name)
    curves = monitor.learning_curves(session.view, name, plots.top_trials(points, top))
    experiment = (session.view.runs.find_one({s.ID: name}, {s.RUN_EXPERIMENT: 1}) or {}).get(s.RUN_EXPERIMENT)
    outcomes = plots.plot_run(points, curves, plots.space_infos(experiment), out, name)
    for outcome in outcomes:
        if outcome.path is not None:
            session.console.print(f"wrote {outcome.path}", highlight=False)
        else:
            session.console.print(f"skipped {outcome.name}: {outcome.skipped}", highlight=False)


def space(
    session: Session,
    exp: Annotated[str, typer.Option(help="Experiment name (hpo-coord experiments lists them).",
                                     callback=not_empty("--exp"))],
    out: Annotated[Path, typer.Option(help="Directory for prior.png (created).")],
    samples: Annotated[int, typer.Option(min=1, help="Points to draw from the prior.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    objective: ObjectiveOption = None,
) -> None:
    """Draw points from an experiment's prior and plot each hyperparameter's
    distribution (no database needed)."""
    _output_dir(out)
    register_objectives(objective)
    experiment = get_experiment(exp)
    drawn = plots.sample_prior(experiment.space, samples, seed)
    infos = plots.describe_space(experiment.space)
    session.console.print(_prior_table(drawn, infos, samples))
    path = plots.plot_prior(drawn, infos, samples, out / "prior.png", experiment.name)
    session.console.print(f"wrote {path}", highlight=False)


def register(app: typer.Typer, console: Console) -> None:
    """Add the monitoring commands to ``app``; tables are printed on ``console``."""
    for function in (status, runs, best, trials, plot):
        app.command()(_command(function, console))
    app.command()(_command(space, console, database=False))
