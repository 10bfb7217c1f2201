"""Entrypoint of local/secantusdb:test, the test stand-in for the mongo image.

Does what the mongo image's entrypoint does with this project's docker-compose.yml: on
the first start of an empty /data/db it starts the server without authentication on
localhost, creates the root user from MONGO_INITDB_ROOT_USERNAME/PASSWORD and runs the
init step, then serves on 0.0.0.0:27017 with authentication required.

The init step: the mongo image runs deploy/compose/mongo-init/create-app-user.js with
mongosh, which this image does not have; the same user (HPO_MONGO_USER, readWrite on
HPO_MONGO_DB, in the admin database) is created here with pymongo.

--standalone: without it SecantusDB advertises itself as a one-member replica set at
0.0.0.0:27017, which other containers cannot connect to.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pymongo
from pymongo.errors import PyMongoError

DATA = Path("/data/db")
INITIALIZED = DATA / ".hpo-test-initialized"
SERVER = ["secantusd-py", "--port", "27017", "--storage-path", str(DATA), "--standalone",
          "--log-level", "WARNING"]


def required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"secantusdb-entrypoint: {name} must be set (see .env.example)")
    return value


def initialize() -> None:
    root_user = required("MONGO_INITDB_ROOT_USERNAME")
    root_password = required("MONGO_INITDB_ROOT_PASSWORD")
    app_user = required("HPO_MONGO_USER")
    app_password = required("HPO_MONGO_PASSWORD")
    app_db = os.environ.get("HPO_MONGO_DB") or "hpo"
    server = subprocess.Popen([*SERVER, "--host", "127.0.0.1"])
    client: pymongo.MongoClient = pymongo.MongoClient(
        "mongodb://127.0.0.1:27017", serverSelectionTimeoutMS=1000
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client.admin.command("ping")
                break
            except PyMongoError:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit("secantusdb-entrypoint: the server did not start for initialisation")
                time.sleep(0.2)
        client.admin.command("createUser", root_user, pwd=root_password, roles=["root"])
        client.admin.command(
            "createUser", app_user, pwd=app_password, roles=[{"role": "readWrite", "db": app_db}]
        )
        print(f"secantusdb-entrypoint: created root user {root_user} and user {app_user} "
              f"with readWrite on {app_db}", flush=True)
    finally:
        client.close()
        server.terminate()
        server.wait(30)
    INITIALIZED.touch()


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    if not INITIALIZED.exists():
        initialize()
    os.execvp(SERVER[0], [*SERVER, "--host", "0.0.0.0", "--auth"])


if __name__ == "__main__":
    main()
