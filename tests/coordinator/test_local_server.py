"""Local mode: ``hpo-coord start`` without a database, and the commands that look at it afterwards."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console

from coordinator.local_server import open_for_reading, serve_for_start
from jobstore.embedded import EmbeddedServer, free_port, port_is_free
from user_errors import UserError
from tests.support.processes import RECORDING, run_cli, start_coordinator, stop, wait_for


def _one_line_error(result, message: str) -> None:  # noqa: ANN001 - a CompletedProcess
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr


def test_after_a_local_run_the_monitoring_commands_find_its_data(tmp_path: Path) -> None:
    port = str(free_port())
    done = run_cli("coordinator", "start", "--exp", "quadratic", "--max-evals", "4", "--local-workers", "1",
                   "--local-port", port, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"at mongodb://127.0.0.1:{port}/hpo" in done.stdout
    assert not (tmp_path / ".hpo" / "server.json").exists()

    status = run_cli("coordinator", "status", cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "reading the local data in .hpo through a server started for this command" in status.stderr
    assert "4 of 4 done" in status.stdout
    best = run_cli("coordinator", "best", cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    assert isinstance(json.loads(best.stdout), float)  # stdout holds the params only
    elsewhere = run_cli("coordinator", "runs", "--local-dir", str(tmp_path / ".hpo"), cwd=tmp_path.parent)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "quadratic" in elsewhere.stdout
    assert not (tmp_path / ".hpo" / "server.json").exists()  # the command's server stopped with it

    _one_line_error(run_cli("coordinator", "status", cwd=tmp_path.parent),
                    "hpo-coord status needs a database: pass --mongo URL or set $HPO_MONGO_URL "
                    "(no local data in .hpo either; --local-dir names another directory)")


def test_a_second_start_in_the_same_directory_is_refused_in_one_line_and_status_attaches(
    tmp_path: Path
) -> None:
    port = str(free_port())
    log = tmp_path / "first.log"
    first = start_coordinator(None, "--exp", "recording", "--objective", RECORDING, "--max-evals", "3",
                              "--local-port", port, log=log, cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / ".hpo" / "server.json").exists(), what="the local server")
        wait_for(lambda: "more workers can attach" in log.read_text(), what="the first coordinator")
        second = run_cli("coordinator", "start", "--exp", "recording", "--objective", RECORDING,
                         "--run", "other", "--local-port", str(free_port()), cwd=tmp_path)
        _one_line_error(second, f"the local data in .hpo is in use by process {first.pid} "
                        f"(server mongodb://127.0.0.1:{port}/hpo)")
        assert len(second.stderr.strip().splitlines()) <= 3  # one message, wrapped at most
        status = run_cli("coordinator", "status", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert f"through its running server mongodb://127.0.0.1:{port}/hpo" in status.stderr
        assert "run recording" in status.stdout
    finally:
        assert stop(first) in (0, 130), log.read_text()


@contextmanager
def _unresponsive(server: EmbeddedServer) -> Iterator[None]:
    """``server`` stopped (SIGSTOP) inside the block: it holds its data but answers
    nothing, as a server too busy to reply in time."""
    assert server.pid is not None
    os.killpg(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(server.pid, signal.SIGCONT)


def test_a_server_too_slow_to_answer_still_gets_a_second_start_refused_and_status_attached(
    tmp_path: Path
) -> None:
    """Before, a server that did not answer a ping within 2 s counted as gone: a second
    start went on to start another server over the same data, which the storage lock
    refused with a message about the lock instead of naming the process in the way."""
    local = tmp_path / ".hpo"
    first = serve_for_start(local, free_port())
    try:
        with _unresponsive(first):
            with pytest.raises(UserError, match=f"in use by process {os.getpid()} "
                                                f"\\(server mongodb://127.0.0.1:{first.port}/hpo\\)"):
                serve_for_start(local, free_port())
            console = Console(record=True, width=300)
            assert open_for_reading(local, console) == (f"{first.url}/hpo", None)
            assert "through its running server" in console.export_text()
        (local / "server.json").unlink()  # a server that has not recorded itself: still starting
        with pytest.raises(UserError, match="in use by a server that has not recorded its address"):
            serve_for_start(local, free_port())
    finally:
        first.stop()
    # a record left behind, naming a live owner (a reused pid): the data is free all the same
    (local / "server.json").write_text(json.dumps({"port": first.port, "pid": 1, "owner": os.getpid()}))
    serve_for_start(local, free_port()).stop()


def test_a_port_taken_by_another_program_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free(port)
        _one_line_error(run_cli("coordinator", "start", "--exp", "quadratic", "--local-port", str(port),
                                cwd=tmp_path),
                        f"port {port} of 127.0.0.1 is taken by another program; give the local server "
                        "another with --local-port")
    assert not (tmp_path / ".hpo" / "server.json").exists()


def test_a_port_in_time_wait_is_free_for_the_server() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first: its end lingers in TIME_WAIT
        client.close()
    with socket.socket() as plain:
        try:
            plain.bind(("127.0.0.1", port))
            lingering = False
        except OSError:
            lingering = True
    assert lingering, "the test did not leave the port in TIME_WAIT"
    assert port_is_free(port)
