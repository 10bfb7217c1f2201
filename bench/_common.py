"""Helpers shared by the benchmark scripts: the server, the stock-hyperopt virtual
environment, machine facts, statistics and the markdown report.

Nothing here is part of the product; the scripts in ``bench/`` are run by hand (or in
CI with ``--quick``) and append their tables to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STOCK_SIDE = REPO / "bench" / "stock_side"
DEFAULT_REPORT = REPO / "docs" / "benchmarks.md"
BENCH_URL_ENV = "HPO_BENCH_MONGO_URL"
STOCK_VENV_ENV = "HPO_BENCH_STOCK_VENV"
STOCK_REQUIREMENTS = ["hyperopt==0.3.0", "pymongo<4"]
"""What the stock side installs: the same hyperopt release as this project uses, and the
last pymongo line that stock ``hyperopt.mongoexp`` works with."""

REPORT_INTRO = """# Benchmarks

Measured figures for hpo-queue against stock hyperopt (``hyperopt.mongoexp.MongoTrials``
with ``hyperopt-mongo-worker``, which needs ``pymongo<4`` and therefore runs in a virtual
environment of its own).  Each section is appended by the script that measured it, with
the date, the machine, the versions, the server the figures were taken on, and the exact
command.  Targets are recorded, not asserted; a figure that misses its target is marked
**MISS**.

"""


# -- machine and versions ---------------------------------------------------------------

def load() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` prints them."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def machine() -> str:
    mem = memory_gib()
    memory = f", {mem:.0f} GiB RAM" if mem else ""
    return f"{cpu_model()}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}"


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def our_versions() -> str:
    names = ("hyperopt", "pymongo", "numpy", "secantusdb")
    return ", ".join(f"{n} {package_version(n)}" for n in names) + f", Python {platform.python_version()}"


def command_line(script: str) -> str:
    return " ".join(["python", f"bench/{script}", *map(shlex.quote, sys.argv[1:])])


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Start:
    """When a benchmark began and the machine's load then (its report is written at the end)."""

    date: str = field(default_factory=now_utc)
    load: str = field(default_factory=load)
    at: float = field(default_factory=time.monotonic)

    def finished(self, detail: str = "") -> str:
        """The report line on the script's own time (with ``detail`` on its parts) and
        the load at its end."""
        minutes = f"{(time.monotonic() - self.at) / 60:.1f} min" + (f" ({detail})" if detail else "")
        return f"- Script time: {minutes}; load average at end: {load()}"


# -- statistics ---------------------------------------------------------------------------

def median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def p95(values: Sequence[float]) -> float:
    return float(np.percentile(values, 95)) if len(values) else float("nan")


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n))."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    se = float(arr.std(ddof=1) / np.sqrt(arr.size)) if arr.size > 1 else float("nan")
    return float(arr.mean()), se


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    return f"{seconds * 1000:.1f}" if seconds < 10 else f"{seconds * 1000:.0f}"


# -- the server ----------------------------------------------------------------------------

@dataclass
class Server:
    """The MongoDB-protocol server both sides of a benchmark talk to."""

    url: str
    """``mongodb://host:port`` (no database)."""
    label: str
    """Which server this is, for the report."""
    pid: int | None = None
    """The server's process id when the benchmark started it (for its CPU time)."""

    def database_url(self, name: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))

    @property
    def host_port(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 27017}"

    def client(self, **kwargs: Any):
        import pymongo

        return pymongo.MongoClient(self.url, **kwargs)

    def drop(self, *names: str) -> None:
        with contextlib.closing(self.client()) as client:
            for name in names:
                client.drop_database(name)


def _describe(url: str, embedded: bool) -> str:
    import pymongo

    with contextlib.closing(pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)) as client:
        info = client.admin.command("buildInfo")
        hello = client.admin.command("hello")
    wire = f"wire {hello.get('minWireVersion')}-{hello.get('maxWireVersion')}"
    if embedded:
        return (f"SecantusDB {package_version('secantusdb')} (embedded, single node, in Python; "
                f"reports MongoDB {info.get('version')}, {wire}) on this machine")
    return f"MongoDB {info.get('version')} ({wire}) from {BENCH_URL_ENV}"


@contextlib.contextmanager
def bench_server(workdir: Path) -> Iterator[Server]:
    """``$HPO_BENCH_MONGO_URL`` when set, else a SecantusDB server started for the run."""
    external = os.environ.get(BENCH_URL_ENV)
    if external:
        parts = urlsplit(external)
        url = urlunsplit((parts.scheme, parts.netloc, "/", parts.query, ""))
        yield Server(url=url, label=_describe(url, embedded=False))
        return
    import signal

    from jobstore.embedded import EmbeddedServer

    # the server runs in a session of its own: on SIGTERM, leave through the with-block
    # so that it is stopped, not orphaned with its storage locked
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        with EmbeddedServer(workdir / "db", log_file=workdir / "server.log") as server:
            yield Server(url=server.url, label=_describe(server.url, embedded=True), pid=server.pid)
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the stock side ------------------------------------------------------------------------

@dataclass
class StockEnv:
    """A virtual environment with stock hyperopt and pymongo 3."""

    root: Path
    versions: str = ""
    talks_to_server: bool | None = None
    problem: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def worker(self) -> Path:
        return self.root / "bin" / "hyperopt-mongo-worker"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for stock processes: only ``bench/stock_side`` on the path."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "HPO_MONGO_URL")}
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(STOCK_SIDE)
        env["PYTHONUNBUFFERED"] = "1"
        env["OMP_NUM_THREADS"] = "1"
        env.update(extra)
        return env


def default_stock_venv() -> Path:
    explicit = os.environ.get(STOCK_VENV_ENV)
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "hpo-queue" / "bench-stock-venv"


def _stock_versions(python: Path) -> str:
    code = (
        "import hyperopt, pymongo, numpy, platform, sys; "
        "print(f'hyperopt {hyperopt.__version__}, pymongo {pymongo.version}, numpy {numpy.__version__}, "
        "Python {platform.python_version()}')"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "import failed")
    return done.stdout.strip()


def stock_env(path: Path | None = None) -> StockEnv:
    """The stock venv at ``path`` (default: the user cache), created and installed if needed.

    Raises:
        RuntimeError: the venv could not be created or its packages not installed.
    """
    root = Path(path or default_stock_venv()).expanduser()
    env = StockEnv(root)
    marker = root / ".hpo-bench-ok"
    if marker.exists() and env.python.exists() and env.worker.exists():
        try:
            env.versions = _stock_versions(env.python)
            return env
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
    print(f"[stock] creating a virtual environment for stock hyperopt in {root} "
          f"(pip install {' '.join(STOCK_REQUIREMENTS)}; about a minute)", flush=True)
    started = time.monotonic()
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    made = subprocess.run([base_python, "-m", "venv", str(root)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        made = subprocess.run([sys.executable, "-m", "venv", str(root)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise RuntimeError(f"cannot create the stock venv {root}: {made.stderr.strip()}")
    pip = subprocess.run(
        [str(env.python), "-m", "pip", "install", "--quiet", *STOCK_REQUIREMENTS],
        capture_output=True, text=True, check=False,
    )
    if pip.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(STOCK_REQUIREMENTS)} into {root} failed:\n{pip.stderr[-2000:]}")
    env.versions = _stock_versions(env.python)
    marker.write_text(env.versions + "\n")
    print(f"[stock] ready in {time.monotonic() - started:.0f} s: {env.versions}", flush=True)
    return env


def check_stock_server(env: StockEnv, server: Server) -> StockEnv:
    """Does pymongo 3 (stock's) work against ``server``?  Records the answer on ``env``."""
    code = f"""
import json, pymongo
c = pymongo.MongoClient({server.url!r}, serverSelectionTimeoutMS=5000)
db = c['hpo_bench_wirecheck']
hello = db.command('ismaster')
db.jobs.insert_one({{'a': 1}})
n = db.jobs.find({{'a': 1}}).count()
doc = db.jobs.find_and_modify({{'a': 1}}, {{'$set': {{'b': 2}}}}, new=True)
c.drop_database('hpo_bench_wirecheck')
print(json.dumps({{'min': hello.get('minWireVersion'), 'max': hello.get('maxWireVersion'), 'count': n, 'fam': doc.get('b')}}))
"""
    import warnings  # noqa: F401 - stock code prints deprecation warnings; they are harmless

    done = subprocess.run([str(env.python), "-W", "ignore", "-c", code], capture_output=True, text=True,
                          timeout=60, env=env.env(), check=False)
    if done.returncode == 0:
        info = json.loads(done.stdout.strip().splitlines()[-1])
        env.talks_to_server = info["count"] == 1 and info["fam"] == 2
        env.notes.append(
            f"pymongo 3 talks to this server (it reports wire versions {info['min']}-{info['max']}; "
            "find_and_modify and Cursor.count work)"
        )
    else:
        env.talks_to_server = False
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        env.problem = f"pymongo 3 cannot work with this server: {last}"
    return env


def our_env(**extra: str) -> dict[str, str]:
    """Environment for this project's processes started by a benchmark."""
    env = {k: v for k, v in os.environ.items() if k != "HPO_MONGO_URL"}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def stop_processes(processes: Sequence[subprocess.Popen], grace: float = 15.0) -> None:
    """SIGTERM each process group we started, then SIGKILL what is left after ``grace``."""
    import signal

    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_logged(command: Sequence[str], log: Path, cwd: Path, timeout: float) -> tuple[float, str]:
    """Run ``command`` (this project's environment, a session of its own) with its output
    appended to ``log``; stop it after ``timeout`` seconds.  Returns the wall seconds and a
    note for the report: empty when it exited 0, else its exit code and ``log``, or that it
    timed out."""
    started = time.monotonic()
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=our_env(), cwd=cwd,
                                   start_new_session=True)
        try:
            code: int | None = process.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_processes([process])
            code = None
    wall = time.monotonic() - started
    note = "" if code == 0 else (f"hpo-coord exited {code}; see {log}" if code is not None else "timed out")
    return wall, note


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) process ``pid`` has used, all its threads and the children
    it has waited for included; NaN if unknown."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's children that have been waited for."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def workdir(keep: Path | None = None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="hpo-bench-") as tmp:
        yield Path(tmp)


# -- the report ----------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def header_lines(*, script: str, server: str | None, start: Start, extra: Sequence[str] = ()) -> list[str]:
    lines = [
        f"- Date: {start.date} (start)",
        f"- Machine: {machine()}; load average at start: {start.load}",
        f"- This project: {our_versions()}",
    ]
    if server:
        lines.append(f"- Server: {server}")
    lines += list(extra)
    lines.append(f"- Command: `{command_line(script)}`")
    return lines


def section(*, script: str, server: str | None, start: Start, extra: Sequence[str],
            headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A report section's body: the header lines (see :func:`header_lines`), then the table."""
    lines = header_lines(script=script, server=server, start=start, extra=extra)
    return "\n".join(lines) + "\n\n" + table(headers, rows) + "\n"


def publish(path: Path, title: str, body: str, *, quick: bool) -> None:
    """Append ``body`` to the report under ``title`` (marked a quick smoke run when ``quick``)
    and print it."""
    append_report(path, title + (" (quick smoke run)" if quick else ""), body)
    print(body)


def append_report(path: Path, title: str, body: str) -> None:
    """Append a section to the report, creating it with the intro when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"\n## {title}\n\n{body.strip()}\n"
    if not path.exists() or not path.read_text().strip():
        path.write_text(REPORT_INTRO)
    with open(path, "a") as out:
        out.write(text)
    print(f"appended '{title}' to {path}", flush=True)


def mark(value: str, ok: bool | None) -> str:
    """A table cell with a miss marked."""
    if ok is None:
        return value
    return value if ok else f"{value} **MISS**"
