"""``--out`` of the monitoring commands: a wrong kind of path is a one-line user error.

The path is checked before the database is reached (the URL below has no server), so
the user learns of the mistake at once and nothing is written.
"""

from __future__ import annotations

from pathlib import Path

from tests.coordinator.test_bad_input import Ran, assert_user_error
from tests.support.processes import run_cli

NO_SERVER = "mongodb://127.0.0.1:1/x"


def invoke(*args: str) -> Ran:
    """``hpo-coord ARGS`` as a process (the monitoring commands are added by ``main``)."""
    done = run_cli("coordinator", *args)
    return Ran(done.returncode, done.stdout, done.stderr)


def test_plot_out_an_existing_file(tmp_path: Path) -> None:
    existing = tmp_path / "figures.png"
    existing.write_bytes(b"keep me")
    result = invoke("plot", "--out", str(existing), "--mongo", NO_SERVER)
    assert_user_error(result, f"--out {existing} is a file", "give a directory")
    assert existing.read_bytes() == b"keep me"


def test_space_out_an_existing_file(tmp_path: Path) -> None:
    existing = tmp_path / "prior"
    existing.write_text("keep me")
    result = invoke("space", "--exp", "quadratic", "--out", str(existing))
    assert_user_error(result, f"--out {existing} is a file")
    assert existing.read_text() == "keep me"


def test_trials_out_a_directory(tmp_path: Path) -> None:
    result = invoke("trials", "--out", str(tmp_path), "--mongo", NO_SERVER)
    assert_user_error(result, f"--out {tmp_path} is a directory", "give a file name")


def test_trials_out_under_a_file(tmp_path: Path) -> None:
    blocking = tmp_path / "exports"
    blocking.write_text("keep me")
    result = invoke("trials", "--out", str(blocking / "sub" / "t.csv"), "--mongo", NO_SERVER)
    assert_user_error(result, f"{blocking} is a file, not a directory")
    assert blocking.read_text() == "keep me"


def test_plot_out_under_a_file(tmp_path: Path) -> None:
    blocking = tmp_path / "figures"
    blocking.write_text("keep me")
    result = invoke("plot", "--out", str(blocking / "run"), "--mongo", NO_SERVER)
    assert_user_error(result, f"{blocking} is a file, not a directory")
    assert blocking.read_text() == "keep me"
