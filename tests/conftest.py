"""Shared fixtures: a real MongoDB-protocol server for the whole session.

``HPO_TEST_MONGO_URL`` (a real mongod, e.g. ``mongodb://localhost:27017``) is used when
set; otherwise a SecantusDB server is started on a free loopback port for the session.
Each test gets its own database name on that server, dropped afterwards.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pymongo
import pytest

from jobstore.embedded import EmbeddedServer


def with_database(url: str, database: str) -> str:
    """``url`` with its database path replaced by ``database`` (query kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


@pytest.fixture(scope="session")
def mongo_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's server, without a database name."""
    external = os.environ.get("HPO_TEST_MONGO_URL")
    if external:
        yield external
        return
    root = tmp_path_factory.mktemp("mongo")
    # Without --sync-on-commit: nothing here needs to survive a crash of this server
    # (durability is tested on private servers), and syncing at every commit made a
    # write-heavy module 1.6x slower on the 2-core machine.
    with EmbeddedServer(root / "data", sync_on_commit=False) as server:
        yield server.url


@pytest.fixture
def db_url(mongo_server_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the session's server, as a ``mongodb://host:port/DB`` URL."""
    slug = re.sub(r"[^A-Za-z0-9]", "_", request.node.name)[:40]
    name = f"t_{slug}_{uuid.uuid4().hex[:6]}"
    yield with_database(mongo_server_url, name)
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_server_url)
    client.drop_database(name)
    client.close()


@pytest.fixture
def db(db_url: str) -> Iterator[pymongo.database.Database]:
    """A pymongo handle on the test's database."""
    client: pymongo.MongoClient = pymongo.MongoClient(db_url)
    yield client.get_default_database()
    client.close()


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A server of the test's own, for tests that stop and restart it."""
    server = EmbeddedServer(tmp_path / "private-db")
    server.start()
    yield server
    server.stop()
