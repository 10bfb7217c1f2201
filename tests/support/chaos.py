"""The chaos suite's harness: real processes, faults injected into them, and an audit.

A :class:`Chaos` starts ``hpo-worker`` and ``hpo-coord start`` processes running the
``chaos`` experiment (:mod:`tests.support.chaos_objective`), injects faults with a
seeded :class:`random.Random`, keeps the number of live workers up, and remembers what
it did to each process, so that at the end :meth:`Chaos.check_processes` can tell a
process that exited because it was told to from one that died on its own.

:func:`audit` compares the database with what the workers recorded and returns the
:class:`Figures` each scenario prints and asserts on:

* ``lost``: results a worker saw acknowledged by the store that the database does not
  hold as acknowledged (another state, another claim's token or owner, another loss,
  or no job at all) - the trial was re-run or its result vanished;
* ``doubled``: trials recorded more than once: a tid held by two job documents, or a
  trial whose result was acknowledged to two claims;
* ``phantom``: done trials whose point no worker ever evaluated.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo.database import Database

from jobstore import schema as s
from jobstore.schema import State
from tests.support.chaos_objective import RECORDS_ENV
from tests.support.processes import run_cli, start_coordinator, start_worker

OBJECTIVE = "tests.support.chaos_objective:chaos"
SEED_ENV = "HPO_CHAOS_SEED"
INJECTED = "chaos_injected"
"""Field the suite sets on the documents it injects, to tell them from real trials."""

# Log lines that must never appear in a process's output: a traceback means a crash
# or an unhandled error; "Exception ignored" is Python swallowing one (a lost signal).
_ALARMS = ("Traceback (most recent call last)", "Exception ignored")


def seed_for(default: int) -> int:
    """``$HPO_CHAOS_SEED`` when set (to replay a run), else ``default``."""
    return int(os.environ.get(SEED_ENV, default))


@dataclass
class Process:
    """A process the scenario started, and what it may end as."""

    name: str
    kind: str
    popen: subprocess.Popen[bytes]
    log: Path
    expected_exit: set[int] | None = None
    """None while the process must keep running; else the exit codes it may end with."""
    frozen: bool = False
    history: list[str] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def ready(self) -> bool:
        """A worker that said it is ready (its signal handlers are installed by then)."""
        return self.alive and " ready (run: " in self.text()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


class Chaos:
    """One scenario's processes and faults (see the module docstring)."""

    def __init__(self, scenario: str, url: str, db: Database, tmp_path: Path, seed: int,
                 run: str = "chaos") -> None:
        self.scenario = scenario
        self.url = url
        self.db = db
        self.run = run
        self.seed = seed
        self.rng = random.Random(seed)
        self.logs = tmp_path / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.records = tmp_path / "records"
        self.records.mkdir(parents=True, exist_ok=True)
        self.faults: Counter[str] = Counter()
        self.processes: list[Process] = []
        self.started = time.monotonic()
        self._thaw_at: list[tuple[float, Process]] = []
        print(f"\nCHAOS {scenario} seed={seed} (replay with {SEED_ENV}={seed})", flush=True)

    # -- processes --------------------------------------------------------------------

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start_worker(self, *args: str) -> Process:
        name = f"worker-{sum(p.kind == 'worker' for p in self.processes) + 1}"
        log = self._log(name)
        popen = start_worker(self.url, "--objective", OBJECTIVE, *args, log=log,
                             env={RECORDS_ENV: str(self.records)})
        process = Process(name, "worker", popen, log)
        self.processes.append(process)
        return process

    def start_coordinator(self, *args: str) -> Process:
        name = f"coordinator-{sum(p.kind == 'coordinator' for p in self.processes) + 1}"
        log = self._log(name)
        popen = start_coordinator(self.url, "--exp", "chaos", "--objective", OBJECTIVE, "--run", self.run,
                                  *args, log=log)
        process = Process(name, "coordinator", popen, log)
        self.processes.append(process)
        return process

    def workers(self) -> list[Process]:
        """Workers that are meant to be running now (frozen ones included)."""
        return [p for p in self.processes if p.kind == "worker" and p.expected_exit is None]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A one-shot ``hpo-coord`` command against the scenario's database."""
        return run_cli("coordinator", *args, "--mongo", self.url, url=self.url, timeout=timeout)

    # -- faults -----------------------------------------------------------------------

    def kill(self, process: Process) -> None:
        """``kill -9``: the process must end with -9."""
        process.popen.kill()
        process.popen.wait()
        process.expected_exit = {-signal.SIGKILL}
        process.history.append("kill -9")
        self.faults["kill -9"] += 1

    def terminate(self, process: Process, *, expect: set[int], timeout: float = 60, fault: bool = True) -> int:
        """One SIGTERM; the process must exit within ``timeout`` with a code in ``expect``.
        ``fault=False``: the scenario's clean-up, not counted as a fault."""
        if process.frozen:
            self.thaw(process)
        process.expected_exit = expect
        process.history.append("SIGTERM" if fault else "SIGTERM (end of scenario)")
        if fault:
            self.faults["SIGTERM"] += 1
        process.popen.send_signal(signal.SIGTERM)
        try:
            return process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()
            process.history.append(f"still running {timeout:.0f} s after one SIGTERM; killed")
            return process.popen.returncode

    def freeze(self, process: Process, seconds: float) -> None:
        """SIGSTOP now, SIGCONT after ``seconds`` (in :meth:`thaw_due`)."""
        process.popen.send_signal(signal.SIGSTOP)
        process.frozen = True
        process.history.append(f"SIGSTOP {seconds:.1f} s")
        self.faults["SIGSTOP"] += 1
        self._thaw_at.append((time.monotonic() + seconds, process))

    def thaw(self, process: Process) -> None:
        if process.frozen:
            process.popen.send_signal(signal.SIGCONT)
            process.frozen = False
        self._thaw_at = [(t, p) for t, p in self._thaw_at if p is not process]

    def thaw_due(self, everyone: bool = False) -> None:
        now = time.monotonic()
        for due, process in list(self._thaw_at):
            if everyone or due <= now:
                self.thaw(process)

    def replace_dead_workers(self, start: Callable[[], Process], give_up_after: int = 4) -> None:
        """Start a new worker for each that died on its own (each death stays a failure);
        after ``give_up_after`` deaths, fail at once rather than wait for a stalled run."""
        for process in self.workers():
            if not process.alive:
                process.history.append(f"died on its own with code {process.popen.returncode}")
                process.expected_exit = set()  # any code is a failure: see check_processes
                died = [p for p in self.processes if p.expected_exit == set()]
                if len(died) >= give_up_after:
                    raise AssertionError(f"{len(died)} workers died on their own\n{self.describe(died)}")
                start()

    def finish(self) -> None:
        """Thaw everyone, then stop every process that still runs with one SIGTERM."""
        self.thaw_due(everyone=True)
        for process in self.processes:
            if process.alive and process.expected_exit is None:
                code = {"worker": {0}, "coordinator": {130}}[process.kind]
                self.terminate(process, expect=code, fault=False)

    def cleanup(self) -> None:
        """Kill whatever still runs (after a failed scenario); no check."""
        self.thaw_due(everyone=True)
        for process in self.processes:
            if process.alive:
                process.popen.kill()
                process.popen.wait()

    def problems(self) -> list[str]:
        """Processes that ended otherwise than expected, or whose logs show a crash."""
        found = []
        for process in self.processes:
            code = process.popen.poll()
            if process.expected_exit is None and code is not None:
                found.append(f"{process.name} exited with {code} on its own")
            elif process.expected_exit is not None and code not in process.expected_exit:
                found.append(f"{process.name} exited with {code}, expected one of {sorted(process.expected_exit)}")
            text = process.text()
            for alarm in _ALARMS:
                if alarm in text:
                    found.append(f"{process.name}: {alarm!r} in its log")
        return found

    def describe(self, processes: Iterable[Process] | None = None) -> str:
        """Each process's history and log tail, for failure messages."""
        parts = []
        for process in processes if processes is not None else self.processes:
            parts.append(f"--- {process.name} (pid {process.popen.pid}, code {process.popen.poll()}, "
                         f"history: {', '.join(process.history) or '-'}) {process.log}\n{process.tail()}")
        return "\n".join(parts)

    def check_processes(self) -> None:
        """Every process still running or ended as expected, none with a traceback."""
        found = self.problems()
        assert not found, "\n".join(found) + "\n" + self.describe()

    @property
    def fault_count(self) -> int:
        return sum(self.faults.values())

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # -- waiting ----------------------------------------------------------------------

    def done(self) -> int:
        return self.db.jobs.count_documents({s.EXP_KEY: self.run, s.STATE: State.DONE, INJECTED: {"$exists": False}})

    def busy(self, process: Process) -> bool:
        """True if ``process`` holds a running job of the run."""
        return self.db.jobs.count_documents(
            {s.EXP_KEY: self.run, s.STATE: State.RUNNING, s.OWNER: {"$regex": f":{process.popen.pid}$"}}) > 0

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str,
                   *, during: Callable[[], None] | None = None) -> None:
        """Poll ``condition`` (calling ``during`` meanwhile); fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                     f"{self.done()} trial(s) done\n{self.describe()}")
            if during is not None:
                during()
            time.sleep(0.1)

    def wait_exit(self, process: Process, timeout: float, *, during: Callable[[], None] | None = None) -> int:
        """Wait for ``process`` to exit, calling ``during`` meanwhile; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while process.alive:
            if time.monotonic() > deadline:
                raise AssertionError(f"{process.name} still running after {timeout:.0f} s; "
                                     f"{self.done()} trial(s) done\n{self.describe()}")
            if during is not None:
                during()
            time.sleep(0.1)
        return process.popen.returncode


# -- the audit ---------------------------------------------------------------------------


@dataclass
class Figures:
    """What a scenario measured (see the module docstring)."""

    scenario: str
    seed: int
    faults: int
    fault_kinds: dict[str, int]
    trials: int
    """Job documents of the run (not counting injected ones)."""
    done: int
    errors: int
    evals: int
    """Evaluations started, over all workers (at least once per trial; more after faults)."""
    acked: int
    lost: int
    doubled: int
    phantom: int
    unfinished: int
    seconds: float
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        kinds = " ".join(f"{k.replace(' ', '')}={v}" for k, v in sorted(self.fault_kinds.items()) if v)
        return (f"CHAOS {self.scenario} seed={self.seed} faults={self.faults}"
                f"{f' ({kinds})' if kinds else ''} trials={self.trials} done={self.done} errors={self.errors} "
                f"evals={self.evals} acked={self.acked} lost={self.lost} doubled={self.doubled} "
                f"phantom={self.phantom} time={self.seconds:.0f}s")


def read_records(folder: Path) -> list[dict[str, Any]]:
    """Every record the workers wrote (a line cut by ``kill -9`` is skipped)."""
    found = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return found


def audit(chaos: Chaos) -> tuple[Figures, list[str]]:
    """The figures of ``chaos``'s run, and a description of each violation found."""
    everything = list(chaos.db.jobs.find({s.EXP_KEY: chaos.run}))
    jobs = [j for j in everything if INJECTED not in j]
    records = read_records(chaos.records)
    evals = [r for r in records if r["event"] == "eval"]
    acks = [r for r in records if r["event"] == "ack" and r.get("exp_key") == chaos.run]
    violations: list[str] = []

    by_tid: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for job in jobs:
        by_tid[job.get(s.TID)].append(job)
    doubled = 0
    for tid, held in by_tid.items():
        if len(held) > 1:
            doubled += 1
            violations.append(f"tid {tid} is held by {len(held)} job documents")

    # acknowledged results are checked against every document, injected ones included
    all_by_tid: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for job in everything:
        all_by_tid[job.get(s.TID)].append(job)
    acks_by_tid: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ack in acks:
        acks_by_tid[ack["tid"]].append(ack)
    lost = 0
    for tid, acked in acks_by_tid.items():
        if len({a["token"] for a in acked}) > 1:
            doubled += 1
            violations.append(f"tid {tid}: results acknowledged to {len(acked)} claims: {acked}")
        held = all_by_tid.get(tid, [])
        for ack in acked:
            job = held[0] if held else None
            why = _not_as_acknowledged(job, ack)
            if why:
                lost += 1
                violations.append(f"tid {tid}: result acknowledged to worker pid {ack['pid']} is lost: {why}")

    evaluated = {r["x"] for r in evals}
    phantom = 0
    for job in jobs:
        if job.get(s.STATE) == State.DONE and job.get(s.PARAMS) not in evaluated:
            phantom += 1
            violations.append(f"tid {job.get(s.TID)} is done but its point {job.get(s.PARAMS)} was never evaluated")
    unfinished = sum(job.get(s.STATE) not in (State.DONE, State.ERROR, State.CANCEL) for job in jobs)
    figures = Figures(
        scenario=chaos.scenario, seed=chaos.seed, faults=chaos.fault_count, fault_kinds=dict(chaos.faults),
        trials=len(jobs), done=sum(job.get(s.STATE) == State.DONE for job in jobs),
        errors=sum(job.get(s.STATE) == State.ERROR for job in jobs), evals=len(evals), acked=len(acks),
        lost=lost, doubled=doubled, phantom=phantom, unfinished=unfinished, seconds=chaos.elapsed(),
    )
    return figures, violations


def conclude(chaos: Chaos, coordinator: Process, code: int, max_evals: int,
             report: Callable[[Figures], None]) -> Figures:
    """The end every scenario of a run that must complete shares: stop the processes,
    audit the run, report its figures, and hold the guarantees (the coordinator exited 0,
    no result lost or doubled, exactly ``max_evals`` trials done, every process exited as
    told)."""
    coordinator.expected_exit = {0}
    chaos.finish()
    figures, violations = audit(chaos)
    report(figures)
    assert code == 0, chaos.describe([coordinator])
    assert not violations, "\n".join(violations)
    assert figures.trials == max_evals and figures.done == max_evals, figures
    chaos.check_processes()
    return figures


def _not_as_acknowledged(job: dict[str, Any] | None, ack: dict[str, Any]) -> str | None:
    """Why ``job`` does not hold the result ``ack`` recorded, or None if it does."""
    if job is None:
        return "no job document has its tid"
    if job.get(s.STATE) != ack["state"]:
        return f"the job is in state {job.get(s.STATE)}, the acknowledged write set {ack['state']}"
    token = (job.get(s.LEASE) or {}).get("token") if isinstance(job.get(s.LEASE), dict) else None
    if token is not None and token != ack["token"]:
        return "the job holds another claim's result (the trial ran again)"
    owner = str(job.get(s.OWNER) or "")
    if not owner.endswith(f":{ack['pid']}"):
        return f"the job's owner is {owner!r}"
    if ack["loss"] is not None and (job.get(s.RESULT) or {}).get("loss") != ack["loss"]:
        return f"the job's loss is {(job.get(s.RESULT) or {}).get('loss')}, the acknowledged one {ack['loss']}"
    return None
