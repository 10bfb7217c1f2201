"""MongoDB URLs, credentials and connections.

Accepted URLs:

* ``mongodb://[user[:password]@]host[:port][/DB][?options]`` and ``mongodb+srv://...``;
  options (``tls=true``, ``tlsCAFile=...``, ``authSource=...``, ...) pass through to
  pymongo unchanged.
* hyperopt's ``mongo://host:port/DB/jobs`` (the last path part is the jobs collection).

The database defaults to ``hpo``.  A password can also come from ``HPO_MONGO_PASSWORD``
or from a file named by ``HPO_MONGO_PASSWORD_FILE`` (or ``--mongo-password-file``), so
it never has to appear in a command line.  :func:`mask` hides passwords in anything
printed or logged.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pymongo
from pymongo.database import Database
from pymongo.errors import ConfigurationError, InvalidURI, PyMongoError

from jobstore.errors import BadUrl, DatabaseUnreachable

DEFAULT_DATABASE = "hpo"
DEFAULT_TIMEOUT_S = 5.0
URL_ENV = "HPO_MONGO_URL"
PASSWORD_ENV = "HPO_MONGO_PASSWORD"
PASSWORD_FILE_ENV = "HPO_MONGO_PASSWORD_FILE"

_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z+]+://[^:/@\s]+:)(?P<pw>[^@\s]*)(?P<tail>@)")


def mask(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _PASSWORD_IN_URL.sub(r"\g<head>***\g<tail>", text)


@dataclass(frozen=True)
class MongoTarget:
    """Where the jobs live: a client URL (no database path), a database, a collection."""

    client_url: str
    database: str
    jobs_collection: str = "jobs"

    @property
    def display(self) -> str:
        """The URL with its password masked, for messages and logs."""
        return mask(f"{self.client_url.split('?')[0].rstrip('/')}/{self.database}")


def _password_from_environment(password_file: Path | None) -> str | None:
    file_name = password_file or os.environ.get(PASSWORD_FILE_ENV)
    if file_name:
        path = Path(file_name)
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise BadUrl(f"cannot read the MongoDB password file {path}: {exc.strerror}") from None
    return os.environ.get(PASSWORD_ENV) or None


def parse_url(url: str, password_file: Path | None = None) -> MongoTarget:
    """Parse ``url`` (see the module docstring).

    Raises:
        BadUrl: the URL's scheme or shape is wrong; the message shows an example.
    """
    if not url or not url.strip():
        raise BadUrl("the MongoDB URL is empty; use e.g. mongodb://localhost:27017/hpo")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("mongodb", "mongodb+srv", "mongo"):
        raise BadUrl(
            f"unsupported URL scheme in {mask(url)!r}; use mongodb://host:port/DB "
            "(or hyperopt's mongo://host:port/DB/jobs)"
        )
    if not parts.hostname:
        raise BadUrl(f"no host in {mask(url)!r}; use e.g. mongodb://localhost:27017/hpo")
    try:
        _ = parts.port  # urllib checks the port only when it is read
    except ValueError:
        raise BadUrl(f"bad port in {mask(url)!r}; the port must be a number") from None
    path = [p for p in parts.path.split("/") if p]
    jobs = "jobs"
    if parts.scheme == "mongo":
        if len(path) == 2:
            jobs = path.pop()
        elif len(path) != 1:
            raise BadUrl(f"hyperopt URLs look like mongo://host:port/DB/jobs, not {mask(url)!r}")
    elif len(path) > 1:
        raise BadUrl(f"{mask(url)!r} has more than a database name in its path")
    database = unquote(path[0]) if path else DEFAULT_DATABASE
    netloc = parts.netloc
    password = _password_from_environment(password_file)
    if password is not None:
        if parts.username is None:
            raise BadUrl(
                "a MongoDB password was given (environment or file) but the URL names no "
                "user; put the user in the URL: mongodb://USER@host:port/DB"
            )
        host = netloc.rpartition("@")[2]
        netloc = f"{quote(unquote(parts.username), safe='')}:{quote(password, safe='')}@{host}"
    scheme = "mongodb" if parts.scheme == "mongo" else parts.scheme
    client_url = urlunsplit((scheme, netloc, "/", parts.query, ""))
    return MongoTarget(client_url=client_url, database=database, jobs_collection=jobs)


def connect(target: MongoTarget, timeout_s: float = DEFAULT_TIMEOUT_S) -> Database:
    """A handle on the target database, after checking that the server answers.

    pymongo reconnects by itself later; callers wrap operations in
    :func:`jobstore.retry.retrying` to ride out outages.

    Raises:
        BadUrl: pymongo rejected the URL or its options.
        DatabaseUnreachable: no answer within ``timeout_s`` seconds.
    """
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(
            target.client_url,
            serverSelectionTimeoutMS=int(timeout_s * 1000),
            connectTimeoutMS=int(timeout_s * 1000),
            appname="hpo-queue",
        )
    except (InvalidURI, ConfigurationError, ValueError, TypeError, OSError) as exc:
        raise BadUrl(f"invalid MongoDB URL {target.display}: {mask(str(exc))}") from None
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        client.close()
        reason = mask(str(exc)).split(", Timeout:")[0]
        raise DatabaseUnreachable(
            f"cannot reach MongoDB at {target.display} within {timeout_s:.0f} s ({reason}); "
            "check that the server runs and the URL, user and password are right"
        ) from None
    return client[target.database]


def server_time(db: Database) -> datetime:
    """The database server's clock (``hello.localTime``, naive UTC): what leases,
    expiry and run timestamps are measured against, so worker clocks do not matter."""
    return db.client.admin.command("hello")["localTime"]


def url_from_environment(url: str | None) -> str | None:
    """``url`` if given, else ``$HPO_MONGO_URL``, else None."""
    return url or os.environ.get(URL_ENV) or None

