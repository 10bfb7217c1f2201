"""``hpo-coord dashboard`` as a process: refusals, serving, and live events."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from pymongo.database import Database

from jobstore.embedded import free_port
from jobstore.fatal import EXIT_THREAD_DIED
from tests.coordinator.test_bad_input import Ran, assert_user_error
from tests.support.dashboard import RUN, finish_next, seed
from tests.support.processes import run_cli, start_dashboard, stop, wait_for

NO_SERVER = "mongodb://127.0.0.1:1/x"


def invoke(*args: str, env: dict[str, str] | None = None) -> Ran:
    done = run_cli("coordinator", "dashboard", *args, env=env)
    return Ran(done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::"])
def test_non_local_bind_needs_a_token(host: str) -> None:
    assert_user_error(invoke("--host", host, "--mongo", NO_SERVER), f"--host {host} is not a loopback address",
                      "--token", "HPO_DASHBOARD_TOKEN")


def test_token_from_the_environment_allows_a_non_local_bind() -> None:
    result = invoke("--host", "0.0.0.0", "--mongo", NO_SERVER, "--connect-timeout", "0.5",
                    env={"HPO_DASHBOARD_TOKEN": "tok"})
    assert result.returncode == 2 and "not a loopback" not in result.stdout + result.stderr
    assert "127.0.0.1:1" in result.stdout + result.stderr


def test_without_a_database_or_local_data_says_what_to_pass(tmp_path: Path) -> None:
    assert_user_error(invoke("--local-dir", str(tmp_path / "nothing")), "hpo-coord dashboard needs a database",
                      "--mongo", f"no local data in {tmp_path / 'nothing'}")


def test_unknown_run_lists_the_runs(db: Database, db_url: str) -> None:
    seed(db, done=1, errors=0, new=1)
    assert_user_error(invoke("--run", "nope", "--mongo", db_url), "unknown run 'nope'", RUN)


@pytest.fixture
def served(db: Database, db_url: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    seed(db, done=3, errors=1, new=3)
    port = free_port()
    process = start_dashboard(db_url, port, "--log-level", "info", log=tmp_path / "dashboard.log")
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(base + "/api/runs").status_code == 200
        except httpx.TransportError:
            assert process.poll() is None, (tmp_path / "dashboard.log").read_text()
            return False

    wait_for(up, 60, "the dashboard to answer")
    yield base, process
    stop(process)


def test_serves_the_run_pushes_a_finished_trial_and_stops_with_a_page_open(
        served: tuple[str, subprocess.Popen[bytes]], db: Database) -> None:
    served, process = served
    assert [r["run"] for r in httpx.get(served + "/api/runs").json()["runs"]] == [RUN]
    with httpx.stream("GET", served + "/api/events", params={"key": RUN}, timeout=60) as events:
        lines = events.iter_lines()
        assert next(lines) == "event: hello"
        hello = json.loads(next(lines).removeprefix("data: "))
        assert hello["mode"] == "change stream"
        tid, _ = finish_next(db)
        deadline = time.monotonic() + 60  # ticks arrive every second, so a missed change ends here
        for line in lines:
            assert time.monotonic() < deadline, "no change event after the trial finished"
            if line == "event: change":
                assert json.loads(next(lines).removeprefix("data: ")) == {"key": RUN}
                break
        rows = httpx.get(served + f"/api/runs/{RUN}/trials", params={"state": "done"}).json()["rows"]
        assert tid in [r["tid"] for r in rows]
        # SIGTERM while a page's event stream is open: uvicorn shuts down and re-raises the
        # signal (-SIGTERM); a server waiting for the stream to end is killed (-SIGKILL)
        assert stop(process) == -signal.SIGTERM


def test_ctrl_c_with_a_page_open_ends_its_event_stream_and_exits_cleanly(
        served: tuple[str, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) while a page's event stream is open: the stream ends and the
    dashboard exits 0 without an error.  It used to wait out the graceful-shutdown limit,
    then cancel the stream, logging ERROR and a traceback, and cut the stream off."""
    base, process = served
    with httpx.stream("GET", base + "/api/events", params={"key": RUN}, timeout=60) as events:
        lines = events.iter_lines()
        assert next(lines) == "event: hello"
        process.send_signal(signal.SIGINT)
        rest = list(lines)  # the stream ends: its last event and a clean end of the body
    assert all(line.startswith(("event: ", "data: ")) or line == "" for line in rest)
    assert process.wait(60) == 0
    log = (tmp_path / "dashboard.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log


def test_the_access_log_does_not_show_the_token(db: Database, db_url: str, tmp_path: Path) -> None:
    """``--log-level debug`` logs every request with its query: the token opened with
    (``?token=``) stood in the log for anyone who reads it."""
    seed(db, done=1, errors=0, new=1)
    port, token = free_port(), "tok-in-log-7f3a"
    log = tmp_path / "dashboard.log"
    process = start_dashboard(db_url, port, "--log-level", "debug", "--token", token, log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        def answered() -> bool:
            try:
                return httpx.get(base + "/api/runs", params={"token": token, "x": "1"}).status_code == 200
            except httpx.TransportError:
                assert process.poll() is None, log.read_text()
                return False

        wait_for(answered, 60, "the dashboard to answer")
        assert httpx.get(base + f"/runs/{RUN}", params={"token": token}).status_code == 303
        wait_for(lambda: '" 303' in log.read_text(), 30, "the access log line of the redirect")
    finally:
        stop(process)
    text = log.read_text()
    assert "GET /api/runs?token=***&x=1 HTTP/1.1" in text and token not in text, text


def test_without_a_token_a_request_for_another_host_name_is_refused(
        served: tuple[str, subprocess.Popen[bytes]]) -> None:
    """DNS rebinding: another site's page, its host name pointed at 127.0.0.1, would read the runs."""
    base, _ = served
    assert httpx.get(base + "/api/runs", headers={"Host": "rebound.example:8080"}).status_code == 403
    assert httpx.get(base + "/api/runs").status_code == 200


def test_a_dying_feed_thread_takes_the_dashboard_down_loudly(db: Database, db_url: str, tmp_path: Path) -> None:
    seed(db, done=1, errors=0, new=1)
    port = free_port()
    log = tmp_path / "dashboard.log"
    process = start_dashboard(db_url, port, "--polling", "--objective", "tests.support.faults:sleeper", log=log,
                              env={"HPO_TEST_FAULT": "dashboard-feed"})
    try:
        def watched() -> bool:  # the feed polls a run once a page follows it
            try:
                with httpx.stream("GET", f"http://127.0.0.1:{port}/api/events", params={"key": RUN}, timeout=5) as events:
                    for _ in events.iter_lines():
                        pass
            except httpx.TransportError:
                pass
            return process.poll() is not None

        wait_for(watched, 60, "the dashboard to exit")
    finally:
        code = stop(process)
    text = log.read_text()
    assert code == EXIT_THREAD_DIED, text
    assert "the dashboard change feed thread died" in text and "injected fault: dashboard-feed" in text, text
    assert "CRITICAL" in text and "Traceback" in text, text
