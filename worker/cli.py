"""hpo-worker: evaluate jobs from the queue until stopped."""

from __future__ import annotations

import math
from typing import Annotated, Optional

import typer

from cli_support.console import (
    ConnectTimeoutOption,
    LogLevelHelp,
    MongoOption,
    ObjectiveOption,
    PasswordFileOption,
    not_empty,
    package_version,
    register_objectives,
    require_url,
    setup_logging,
    typer_app,
    user_errors,
)
from jobstore.connection import DEFAULT_TIMEOUT_S
from jobstore.retry import DEFAULT_GIVE_UP_S
from jobstore.store import Store
from worker.loop import DEFAULT_POLL_MAX_S, DEFAULT_POLL_MIN_S, Worker, WorkerConfig

app = typer_app(__doc__, no_args_is_help=False)


@app.command()
def work(
    mongo: MongoOption = None,
    mongo_password_file: PasswordFileOption = None,
    run: Annotated[Optional[str], typer.Option(help="Only take jobs of this run (exp_key). Default: any run.",
                                               callback=not_empty("--run"))] = None,
    max_jobs: Annotated[Optional[int], typer.Option(min=1, help="Exit after this many jobs.")] = None,
    idle_exit: Annotated[Optional[float], typer.Option(
        min=0, help="Exit after this many seconds without a job. Default: wait forever.")] = None,
    poll_min: Annotated[float, typer.Option(min=0.001, help="First wait (s) when the queue is empty.")] = DEFAULT_POLL_MIN_S,
    poll_max: Annotated[float, typer.Option(min=0.001, help="Longest wait (s) between polls; waits double up to it.")] = DEFAULT_POLL_MAX_S,
    heartbeat: Annotated[float, typer.Option(min=0.1, help="Seconds between lease renewals.")] = 10.0,
    lease: Annotated[Optional[float], typer.Option(
        min=0.3, help="Lease length (s): a job not renewed for this long is lost, and so is the GPU "
        "lease (--gpus-per-worker). Default: 3 heartbeats.")] = None,
    grace: Annotated[float, typer.Option(
        min=0, help="After SIGTERM/SIGINT, seconds the current trial may take before it is "
        "interrupted and returned to the queue. Also the seconds a trial past its time limit "
        "(hpo-coord start --trial-timeout) has to stop before this worker records the timeout "
        "and exits with code 76, for its supervisor to start a fresh one.")] = 60.0,
    allow_pickle: Annotated[bool, typer.Option(
        "--allow-pickle", help="Run jobs whose objective is a pickled hyperopt Domain stored in the "
        "database (plain hyperopt fmin scripts). Executes code from the database: only if you "
        "trust everyone who can write to it.")] = False,
    gpus_per_worker: Annotated[int, typer.Option(
        min=0, help="GPUs this worker leases (by UUID, through MongoDB) and pins itself to; it "
        "waits while none is free. 0, or a host without GPUs, runs on the CPU.")] = 1,
    outage_timeout: Annotated[float, typer.Option(
        min=0, help="Stop (exit code 2, naming the server) when the database stays unreachable this many "
        "seconds; inf: wait however long. Local workers of hpo-coord start get the coordinator's "
        "--outage-timeout (by default they wait as it does).")] = DEFAULT_GIVE_UP_S,
    objective: ObjectiveOption = None,
    connect_timeout: ConnectTimeoutOption = DEFAULT_TIMEOUT_S,
    log_level: Annotated[str, typer.Option(help=LogLevelHelp)] = "info",
) -> None:
    """Claim jobs from the queue and evaluate them until stopped.

    Exit codes: 0 stopped (signal, --max-jobs, --idle-exit); 2 bad options, the --run's
    jobs are refused (other experiment code), or the database stayed unreachable longer
    than --outage-timeout; 75 the GPU lease was taken over;
    76 a trial ignored its time limit (restart the worker: it frees the GPU); 70 a
    background thread died (a heartbeat; its CRITICAL log line says why); 128 + the
    signal's number (143 for SIGTERM) after a second stop signal, or when the trial
    ignored the first one's interruption (its job is handed back); 1 an unexpected error
    (a bug, with its traceback).
    """
    setup_logging(log_level)
    lease_s = lease if lease is not None else 3 * heartbeat
    if lease_s <= heartbeat:
        raise typer.BadParameter(f"--lease ({lease_s}) must be longer than --heartbeat ({heartbeat})")
    if poll_max < poll_min:
        raise typer.BadParameter(f"--poll-max ({poll_max}) must not be below --poll-min ({poll_min})")
    with user_errors():
        register_objectives(objective)
        store = Store.open(require_url(mongo, "hpo-worker"), mongo_password_file, timeout_s=connect_timeout,
                           outage_limit=None if math.isinf(outage_timeout) else outage_timeout,
                           longer="hpo-worker --outage-timeout SECONDS (inf: no limit)")
        config = WorkerConfig(
            run=run, max_jobs=max_jobs, idle_exit=idle_exit, poll_min=poll_min, poll_max=poll_max,
            heartbeat=heartbeat, lease=lease_s, grace=grace, allow_pickle=allow_pickle, gpus=gpus_per_worker,
            version=package_version(),
        )
        worker = Worker(store, config)
        worker.install_signal_handlers()
        code = worker.run()
    raise typer.Exit(code)


def main() -> None:
    app()
