"""hpo-coord: start or resume a run, and look at runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from cli_support.console import (
    MONGO_HELP,
    ConnectTimeoutOption,
    LogLevelHelp,
    MongoOption,
    ObjectiveOption,
    PasswordFileOption,
    fail,
    not_empty,
    register_objectives,
    setup_logging,
    typer_app,
    user_errors,
)
from coordinator.algorithms import ALGORITHMS, DEFAULT_ALGORITHM, suggest_function
from coordinator.display import number_text, whole_floats_as_ints
from coordinator.local_server import DATABASE as LOCAL_DATABASE
from coordinator.local_server import DEFAULT_LOCAL_DIR, DEFAULT_PORT, LocalDirOption, database_url, serve_for_start
from coordinator.local_workers import MAX_RESTARTS, RESTART_WINDOW_S
from coordinator.start import (
    DEFAULT_QUEUE,
    TRIAL_TIMEOUT_SETTING,
    PrunerChoice,
    StartOptions,
    best_configuration,
    pruner_choice_metric,
    resume_hint,
    start_run,
    worker_command,
)
from jobstore.connection import DEFAULT_TIMEOUT_S, url_from_environment
from jobstore.queue import DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS
from jobstore.store import Store
from jobstore.trials import DEFAULT_POLL_INTERVAL_S, OUTAGE_TIMEOUT_HINT
from objectives.base import BadSetting, Experiment, Setting
from objectives.pruning import (
    DEFAULT_MIN_RESOURCE,
    DEFAULT_REDUCTION_FACTOR,
    DEFAULT_STARTUP_TRIALS,
    DEFAULT_WARMUP_STEPS,
    DIRECTIONS,
    KINDS,
)
from objectives.registry import get_experiment

app = typer_app(__doc__, no_args_is_help=True)
console = Console()

EXIT_INTERRUPTED = 130
EXIT_NO_TRIAL_SUCCEEDED = 3


def parse_settings(pairs: list[str] | None) -> dict[str, Any]:
    """``["epochs=10", "data_dir=/d"]`` as a dict; values are JSON when they parse as JSON."""
    settings: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            settings[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key.strip()] = raw
    return settings


def checked_settings(experiment: Experiment, pairs: list[str] | None) -> dict[str, Any]:
    """``--set`` pairs parsed and checked against the experiment's declared settings
    (and ``trial_timeout``, which every run takes); a refusal is a one-line error."""
    try:
        return experiment.check_settings(parse_settings(pairs), also=(TRIAL_TIMEOUT_SETTING,))
    except BadSetting as exc:
        fail(f"--set: {exc}")


@app.command()
def start(
    exp: Annotated[str, typer.Option(help="Experiment name (hpo-coord experiments lists them).",
                                     callback=not_empty("--exp"))],
    run: Annotated[Optional[str], typer.Option(
        help="Run name (hyperopt's exp_key). Default: the experiment name. Starting an "
        "existing run resumes it.", callback=not_empty("--run"))] = None,
    mongo: Annotated[Optional[str], typer.Option(
        help=MONGO_HELP + " With neither, a local server is started (data in --local-dir).",
        callback=not_empty("--mongo"))] = None,
    mongo_password_file: PasswordFileOption = None,
    max_evals: Annotated[Optional[int], typer.Option(min=1, help="Trials in the run, counting "
                                                     "those done before a resume. Default: a resumed run "
                                                     "keeps its own; a new run takes the experiment's.")] = None,
    algo: Annotated[Optional[str], typer.Option(help=f"One of {', '.join(ALGORITHMS)} (tpe is hyperopt's own TPE). "
                                                "Default: a resumed run keeps its algorithm; a new run uses the "
                                                f"experiment's, else {DEFAULT_ALGORITHM}.")] = None,
    queue: Annotated[Optional[int], typer.Option(min=1, help="Suggestions kept waiting in the queue; "
                                                 "at least the number of workers keeps them all busy. "
                                                 f"Default: {DEFAULT_QUEUE}, or --local-workers if more.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for the algorithm's random state.")] = None,
    local_workers: Annotated[int, typer.Option(min=0, help="Also start this many workers as child "
                                               "processes, restarted if they die (up to "
                                               f"{MAX_RESTARTS} crashes in {RESTART_WINDOW_S / 60:g} min "
                                               "each) and stopped at the end.")] = 0,
    poll_interval: Annotated[float, typer.Option(min=0.001, help="Seconds between looks at the queue.")] = DEFAULT_POLL_INTERVAL_S,
    max_attempts: Annotated[int, typer.Option(min=1, help="Times a trial's worker may be lost: the "
                                              "last time marks the trial as an error ('lost worker') "
                                              "instead of returning it to the queue.")] = DEFAULT_MAX_ATTEMPTS,
    lease: Annotated[float, typer.Option(min=1, help="Coordinator lease (s). After a database "
                                         "outage a job is presumed lost only once its worker's own "
                                         "lease has passed (this one for jobs that did not record theirs).")] = DEFAULT_LEASE_S,
    trial_timeout: Annotated[Optional[float], typer.Option(
        min=0, help="Time limit (s) of one trial. Past it the worker asks the trial to stop and records "
        "an error with the reason 'timeout' (not retried); a trial that has not stopped after the "
        "worker's --grace ends its worker process (exit code 76) for its supervisor to restart "
        "(local workers are restarted by this coordinator). Stored in the run (run setting "
        "trial_timeout), so every worker applies it and a resume keeps it; 0: no limit. "
        "Default: the experiment's (none unless it declares one).")] = None,
    outage_timeout: Annotated[Optional[float], typer.Option(
        min=0, help="Stop with an error naming the server when the database stays unreachable "
        "this many seconds. Default: wait for it however long, saying so in the log.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Run setting KEY=VALUE passed "
                                                      "to the objective (e.g. epochs=10), checked against "
                                                      "the experiment's declared settings before anything "
                                                      "is queued (hpo-coord experiments lists them). "
                                                      "Stored in the run: a resumed run keeps its "
                                                      "settings, and --set changes those it names. "
                                                      "Repeatable.")] = None,
    pruner: Annotated[Optional[str], typer.Option(
        help=f"Stop hopeless trials early: one of {', '.join(KINDS)} (median: worse than the median of "
        "completed trials at the same step; asha: asynchronous successive halving; hyperband: ASHA "
        "brackets). Decided by each worker after every report of the metric, from the run's other "
        "trials. Stored in the run; default: a resumed run keeps its pruner, a new run has none.",
        rich_help_panel="Pruning")] = None,
    pruner_metric: Annotated[Optional[str], typer.Option(
        help="The reported metric pruning compares. Default: the experiment's (digits and cifar100: loss).",
        rich_help_panel="Pruning")] = None,
    pruner_direction: Annotated[Optional[str], typer.Option(
        help=f"{' or '.join(DIRECTIONS)}: whether lower or higher --pruner-metric is better. Default: the "
        "experiment's for its metric, else minimize.", rich_help_panel="Pruning")] = None,
    min_resource: Annotated[Optional[int], typer.Option(
        min=1, help="asha/hyperband: the step of the first rung, below --max-resource. "
        f"Default: {DEFAULT_MIN_RESOURCE}.", rich_help_panel="Pruning")] = None,
    max_resource: Annotated[Optional[int], typer.Option(
        min=1, help="A trial's budget in steps (no decision is taken at or past it; hyperband sizes its "
        "brackets by it). Default: the run's epochs setting.", rich_help_panel="Pruning")] = None,
    reduction_factor: Annotated[Optional[int], typer.Option(
        min=2, help="asha/hyperband: rungs are this factor apart and keep the best 1/factor. "
        f"Default: {DEFAULT_REDUCTION_FACTOR}.",
        rich_help_panel="Pruning")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(
        min=0, help="median: no decision before this step, below --max-resource. "
        f"Default: {DEFAULT_WARMUP_STEPS}.", rich_help_panel="Pruning")] = None,
    startup_trials: Annotated[Optional[int], typer.Option(
        min=0, help="median: no decision before this many trials completed. "
        f"Default: {DEFAULT_STARTUP_TRIALS}.",
        rich_help_panel="Pruning")] = None,
    objective: ObjectiveOption = None,
    local_dir: LocalDirOption = DEFAULT_LOCAL_DIR,
    local_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the local server (local mode).")] = DEFAULT_PORT,
    connect_timeout: ConnectTimeoutOption = DEFAULT_TIMEOUT_S,
    log_level: Annotated[str, typer.Option(help=LogLevelHelp)] = "warning",
) -> None:
    """Start a run, or resume it if it exists, and drive it to --max-evals trials.

    Exit codes: 0 the run is done and a trial succeeded; 2 bad input or a refused start
    (nothing was changed), or the database stayed unreachable longer than --outage-timeout
    (the run is resumable); 3 the run is done but has no best trial (no trial succeeded, or
    every one that did was pruned); 130 stopped by Ctrl-C or SIGTERM (resumable); 70 a
    background thread died, the run's keeper or the one restarting --local-workers (its
    CRITICAL log line says why; resumable); 1 an unexpected error (a bug, with its
    traceback).
    """
    setup_logging(log_level)
    if pruner is not None and pruner not in KINDS:
        fail(f"--pruner must be one of {', '.join(KINDS)}, not {pruner!r}")
    if pruner_direction is not None and pruner_direction not in DIRECTIONS:
        fail(f"--pruner-direction must be one of {', '.join(DIRECTIONS)}, not {pruner_direction!r}")
    tuning = (pruner_metric, pruner_direction, min_resource, max_resource, reduction_factor, warmup_steps,
              startup_trials)
    if pruner is None and any(option is not None for option in tuning):
        fail("the pruning options (--pruner-metric, --min-resource, ...) need --pruner")
    choice = None if pruner is None else PrunerChoice(
        pruner, pruner_metric, pruner_direction, min_resource, max_resource, reduction_factor, warmup_steps,
        startup_trials)
    with user_errors():
        register_objectives(objective)
        experiment = get_experiment(exp)
        settings = checked_settings(experiment, set_)
        # refused before a local server starts and prints its worker command
        if algo is not None:
            suggest_function(algo)
        if choice is not None:
            pruner_choice_metric(experiment, choice)
        url = url_from_environment(mongo)
        run_name = run or experiment.name
        worker_args = [arg for ref in objective or [] for arg in ("--objective", ref)]
        server = None
        resume_args = list(worker_args)
        if url is None:
            resume_args += [] if local_dir == DEFAULT_LOCAL_DIR else ["--local-dir", str(local_dir)]
            resume_args += [] if local_port == DEFAULT_PORT else ["--local-port", str(local_port)]
            server = serve_for_start(local_dir, local_port)
            url = f"{server.url}/{LOCAL_DATABASE}"
            console.print(f"local MongoDB-protocol server (SecantusDB) at [bold]{url}[/], data in {local_dir / 'db'}")
            console.print(f"more workers can attach with: {worker_command(url, run_name, worker_args)}",
                          highlight=False, soft_wrap=True)
        try:
            store = Store.open(url, mongo_password_file, timeout_s=connect_timeout,
                               outage_limit=outage_timeout, longer=OUTAGE_TIMEOUT_HINT)
            options = StartOptions(
                run=run_name, max_evals=max_evals, algo=algo,
                queue=queue or max(DEFAULT_QUEUE, local_workers), seed=seed, local_workers=local_workers, poll_interval=poll_interval,
                max_attempts=max_attempts, lease=lease, trial_timeout=trial_timeout,
                outage_timeout=outage_timeout, settings=settings, pruner=choice,
                worker_args=worker_args,
            )
            try:
                summary = start_run(store, experiment, options, console)
            except KeyboardInterrupt:
                console.print(f"\nstopped; run [bold]{run_name}[/] is resumable with:\n  "
                              f"{resume_hint(experiment.name, run_name, None if server else url, resume_args)}")
                raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            if server is not None:
                server.stop()
    console.print(f"run [bold]{summary.run}[/]: {summary.done} trial(s) done")
    if summary.best is None:
        console.print(f"no best trial: {summary.no_best}")
        raise typer.Exit(EXIT_NO_TRIAL_SUCCEEDED)
    extras = {k: v for k, v in summary.best["result"].items() if k not in ("status", "loss") and
              isinstance(v, (int, float)) and not isinstance(v, bool)}
    details = "".join(f", {k} {number_text(v)}" for k, v in extras.items())
    worst = f"; worst successful loss {summary.worst_loss:.6g}" if summary.worst_loss is not None else ""
    console.print(f"best loss {summary.best['loss']:.6g} (trial {summary.best['tid']}{details}){worst}")
    console.print("best params:")
    console.print_json(json.dumps(whole_floats_as_ints(summary.best["params"]), default=str))


@app.command()
def retrain(
    ctx: typer.Context,
    run: Annotated[str, typer.Option(help="The run whose best configuration to retrain.",
                                     callback=not_empty("--run"))],
    mongo: MongoOption = None,
    mongo_password_file: PasswordFileOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Where to save the weights and config. "
                                                "Default: ./retrained/RUN.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a run setting "
                                                      "KEY=VALUE (e.g. epochs=30). Repeatable.")] = None,
    objective: ObjectiveOption = None,
    local_dir: LocalDirOption = DEFAULT_LOCAL_DIR,
    connect_timeout: ConnectTimeoutOption = DEFAULT_TIMEOUT_S,
    log_level: Annotated[str, typer.Option(help=LogLevelHelp)] = "info",
) -> None:
    """Train the best configuration of a run on the full training set and save it."""
    setup_logging(log_level)
    with user_errors():
        register_objectives(objective)
        url = database_url(mongo, local_dir, "hpo-coord retrain", ctx.call_on_close)
        with Store.open(url, mongo_password_file, timeout_s=connect_timeout) as store:
            best = best_configuration(store, run)
        experiment = get_experiment(best.experiment)
        if experiment.retrain is None:
            fail(f"experiment {experiment.name!r} does not support retraining")
        overrides = checked_settings(experiment, set_)
        settings = {**experiment.default_settings, **best.settings, **overrides}
        target = out or Path("retrained") / run
        console.print(f"retraining trial {best.tid} of run [bold]{run}[/] (validation loss "
                      f"{best.loss:.6g}) into {target}")
        summary = experiment.retrain(best.params, settings, target)
    console.print_json(json.dumps(summary, default=str))


@app.command()
def experiments() -> None:
    """List the experiments this installation knows, with the settings each takes."""
    from objectives.registry import known_names

    for name in known_names():
        settings: tuple[Setting, ...] = ()
        try:
            experiment = get_experiment(name)
            description, settings = experiment.description, experiment.settings
        except Exception as exc:  # noqa: BLE001 - listing must not fail on one broken entry
            description = f"(cannot load: {exc})"
        console.print(f"[bold]{name}[/]  {description}", highlight=False)
        for setting in settings:
            console.print(f"    --set {setting.describe()}", highlight=False, markup=False)


def main() -> None:
    from coordinator import monitor_cli
    from coordinator.dashboard import cli as dashboard_cli

    monitor_cli.register(app, console)
    dashboard_cli.register(app, console)
    app()
