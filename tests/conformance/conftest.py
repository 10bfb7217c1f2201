"""The conformance job's fixtures: every test here runs with hyperopt's seams swapped
for this project's (tests/conformance/plumbing.py), and leaves the process as it was."""

from __future__ import annotations

import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance import plumbing

HYPEROPT_TESTS = "hyperopt.tests.integration.test_mongoexp"
# hyperopt's main_worker_helper installs handlers for these in the calling process.
WORKER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


@pytest.fixture(autouse=True)
def this_project_in_hyperopt_s_seams(
    monkeypatch: pytest.MonkeyPatch, mongo_server_url: str, tmp_path: Path
) -> Iterator[None]:
    prefix = f"hc{uuid.uuid4().hex[:8]}_"
    plumbing.install(sys.modules[HYPEROPT_TESTS], monkeypatch, mongo_server_url, prefix, tmp_path)
    handlers = {signum: signal.getsignal(signum) for signum in WORKER_SIGNALS}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
