"""MongoDB URLs, credentials and connections.

Accepted URLs, parsed and checked with pymongo's own URI parser:

* every form MongoDB's drivers accept: ``mongodb://[user[:password]@]host[:port][,host[:port]...][/DB][?options]``
  (a replica set's seed list with ``replicaSet=...``, ``authSource=...``, TLS options, ...)
  and ``mongodb+srv://[user[:password]@]host[/DB][?options]`` (the servers come from DNS
  when connecting; parsing does no DNS lookup).  Options pass through to pymongo
  unchanged.  ``DB.collection`` in the path names the jobs collection, as in the drivers.
* hyperopt's ``mongo://host:port/DB/jobs`` (the last path part is the jobs collection).

A user authenticates against the URL's ``authSource`` option, else the database the
path names, else ``admin``, as in the drivers.

The scheme is case-insensitive.  User and password must be percent-encoded, as the
drivers require (``urllib.parse.quote_plus``).  The database defaults to ``hpo``.  A
password can also come from ``HPO_MONGO_PASSWORD`` or from a file named by
``HPO_MONGO_PASSWORD_FILE`` (or ``--mongo-password-file``), so it never has to appear in
a command line.  :func:`mask` hides passwords in anything printed or logged.

Writes are durable by default: :func:`connect` asks for ``w="majority", journal=True``
(acknowledged once journaled, on a replica set by a majority of members), so a result the
store acknowledged survives a crash of the server.  A URL that sets ``w`` or ``journal``
itself gets exactly what it asks for.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, unquote

import pymongo
from pymongo.database import Database
from pymongo.errors import ConfigurationError, InvalidURI, OperationFailure, PyMongoError
from pymongo.uri_parser import parse_uri, parse_userinfo, split_hosts, split_options

from jobstore.errors import AuthenticationFailed, BadUrl, DatabaseUnreachable

DEFAULT_DATABASE = "hpo"
DEFAULT_TIMEOUT_S = 5.0
URL_ENV = "HPO_MONGO_URL"
PASSWORD_ENV = "HPO_MONGO_PASSWORD"
PASSWORD_FILE_ENV = "HPO_MONGO_PASSWORD_FILE"
AUTHENTICATION_FAILED = 18
"""The server's error code for a wrong user or password."""
DURABLE_WRITES: dict[str, object] = {"w": "majority", "journal": True}
"""The write concern :func:`connect` uses unless the URL sets these options itself."""

_CLIENT_SCHEME = {"mongodb": "mongodb", "mongodb+srv": "mongodb+srv", "mongo": "mongodb"}
_URL_TAIL = re.compile(r"://\S*")
"""From a URL's ``://`` to the next whitespace: where credentials can be."""
_SECRET_OPTIONS = {
    "tlscertificatekeyfilepassword=": re.compile(r"(?i)(tlsCertificateKeyFilePassword=)[^&\s]*"),
    "aws_session_token:": re.compile(r"(?i)(AWS_SESSION_TOKEN:)[^,&\s]*"),
}
"""URL options whose values are secrets, by their lower-cased names.

Every regular expression :func:`mask` runs (these and :data:`_URL_TAIL`) is a literal
followed by one character class repeated, so a match never backtracks, the URL tails
it examines are disjoint, and masking takes linear time."""
_MIN_SECRET_LEN = 4
_secrets: set[str] = set()


def _mask_url_tail(match: re.Match[str]) -> str:
    """A URL's tail with the password in its user part replaced by ``***``.  The user
    part ends at the tail's last ``@`` (a password may hold an unescaped ``@``; an ``@``
    in an option value hides more than the password, never less)."""
    tail = match.group()
    at = tail.rfind("@")
    colon = tail.find(":", 3, at) if at > 0 else -1
    return tail if colon < 0 else f"{tail[:colon + 1]}***{tail[at:]}"


def mask(text: str) -> str:
    """``text`` with every URL's password, every secret URL option and every password
    this process was given (environment, file) replaced by ``***``; linear time."""
    if "@" in text:
        text = _URL_TAIL.sub(_mask_url_tail, text)
    lowered = text.lower()
    for name, pattern in _SECRET_OPTIONS.items():
        if name in lowered:
            text = pattern.sub(r"\g<1>***", text)
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


def _remember_secret(password: str) -> None:
    """Have :func:`mask` hide ``password`` (and its percent-encoded form) anywhere, also
    outside a URL (passwords shorter than four characters only inside URLs)."""
    for form in (password, quote(password, safe="")):
        if len(form) >= _MIN_SECRET_LEN:
            _secrets.add(form)


@dataclass(frozen=True)
class MongoTarget:
    """Where the jobs live: a client URL (no database path), a database, a collection."""

    client_url: str
    database: str
    jobs_collection: str = "jobs"
    url_options: frozenset[str] = field(default=frozenset())
    """The (lower-cased) names of the options the URL sets."""
    auth_source: str | None = None
    """The database a user authenticates against when the URL names a user and a
    database but sets no ``authSource``: that database, as the drivers do (they fall
    back to ``admin`` only when the path names none)."""

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


def _check_with_pymongo(scheme: str, userinfo: str | None, hosts: str, database: str, query: str,
                        shown: str) -> dict[str, object]:
    """Check each part with pymongo's parser (no DNS lookup); the parsed options."""
    if userinfo is not None:
        try:
            _remember_secret(parse_userinfo(userinfo)[1])
        except InvalidURI as exc:
            raise BadUrl(
                f"bad user or password in {shown} ({exc}): the user must not be empty, and both must "
                "percent-encode @ : / ? # [ ] and % (e.g. @ as %40; urllib.parse.quote_plus does it), "
                "or put the password in $HPO_MONGO_PASSWORD or a file (--mongo-password-file)"
            ) from None
    srv = scheme == "mongodb+srv"
    try:
        nodes = split_hosts(hosts, default_port=None if srv else 27017)
    except ValueError as exc:
        what = "bad port" if "port" in str(exc).lower() else "bad host"
        raise BadUrl(f"{what} in {shown}: {exc}") from None
    except ConfigurationError:
        raise BadUrl(f"empty host in {shown} (a doubled or trailing comma in the host list?)") from None
    if srv and (len(nodes) != 1 or nodes[0][1] is not None):
        raise BadUrl(f"mongodb+srv:// URLs name one host and no port (DNS lists the servers), not {shown}")
    try:
        parse_uri(f"mongodb://localhost/{database}")
    except InvalidURI as exc:
        raise BadUrl(f"bad database name in {shown}: {exc}") from None
    try:
        if srv:  # parse_uri would look the host up in DNS; MongoClient does that when connecting
            return dict(split_options(query)) if query else {}
        return dict(parse_uri(f"mongodb://{hosts}/?{query}")["options"])
    except (InvalidURI, ConfigurationError, ValueError, TypeError, OSError) as exc:
        raise BadUrl(f"invalid option in {shown}: {mask(str(exc))}") from None


def parse_url(url: str, password_file: Path | None = None) -> MongoTarget:
    """Parse ``url`` (see the module docstring).

    Raises:
        BadUrl: the URL's scheme or shape is wrong; the message (password masked) says
            what and shows an example.
    """
    if not url or not url.strip():
        raise BadUrl("the MongoDB URL is empty; use e.g. mongodb://localhost:27017/hpo")
    url = url.strip()
    shown = repr(mask(url))
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _CLIENT_SCHEME:
        raise BadUrl(
            f"unsupported URL scheme in {shown}; use mongodb://host:port[,host:port...]/DB, "
            "mongodb+srv://host/DB (or hyperopt's mongo://host:port/DB/jobs)"
        )
    # Split as pymongo does: options after the first "?", the path after the first "/",
    # the user part before the last "@".
    before_query, _, query = rest.partition("?")
    authority, _, path = before_query.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if not hosts:
        raise BadUrl(f"no host in {shown}; use e.g. mongodb://localhost:27017/hpo")
    names = [p for p in path.split("/") if p]
    jobs = None
    if scheme == "mongo":
        if len(names) == 2:
            jobs = unquote(names.pop())
        elif len(names) != 1:
            raise BadUrl(f"hyperopt URLs look like mongo://host:port/DB/jobs, not {shown}")
    elif len(names) > 1:
        raise BadUrl(f"{shown} has more than a database name in its path")
    database, dot, collection = unquote(names[0] if names else "").partition(".")
    password = _password_from_environment(password_file)
    if password is not None:
        user = userinfo.partition(":")[0]
        if not at or not user:
            raise BadUrl(
                "a MongoDB password was given (environment or file) but the URL names no "
                "user; put the user in the URL: mongodb://USER@host:port/DB"
            )
        _remember_secret(password)
        userinfo = f"{user}:{quote(password, safe='')}"
    options = _check_with_pymongo(scheme, userinfo if at else None, hosts, database, query, shown)
    credentials = f"{userinfo}@" if at else ""
    client_url = f"{_CLIENT_SCHEME[scheme]}://{credentials}{hosts}/" + (f"?{query}" if query else "")
    url_options = frozenset(name.lower() for name in options)
    # A mongodb+srv:// host's DNS TXT record may set authSource; pymongo applies it
    # only when the client is not given one, so the path default is left to pymongo there.
    auth_source = (database if at and database and scheme != "mongodb+srv"
                   and "authsource" not in url_options else None)
    return MongoTarget(client_url=client_url, database=database or DEFAULT_DATABASE,
                       jobs_collection=jobs or (collection if dot and collection else "jobs"),
                       url_options=url_options, auth_source=auth_source)


def connect(target: MongoTarget, timeout_s: float = DEFAULT_TIMEOUT_S) -> Database:
    """A handle on the target database, after checking that the server answers.

    Its writes use :data:`DURABLE_WRITES` for each option the URL does not set.
    pymongo reconnects by itself later; :class:`jobstore.store.Store` runs operations
    under its retry policy to ride out outages.

    Raises:
        BadUrl: pymongo rejected the URL or its options.
        AuthenticationFailed: the server refused the user or password.
        DatabaseUnreachable: no answer within ``timeout_s`` seconds, or at once when
            every host refuses the connection (nothing listens there).
    """
    durable = {k: v for k, v in DURABLE_WRITES.items() if k.lower() not in target.url_options}
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(
            target.client_url,
            serverSelectionTimeoutMS=int(timeout_s * 1000),
            connectTimeoutMS=int(timeout_s * 1000),
            appname="hpo-queue",
            **durable,
            **({"authSource": target.auth_source} if target.auth_source else {}),
        )
    except (InvalidURI, ConfigurationError, ValueError, TypeError, OSError) as exc:
        raise BadUrl(f"invalid MongoDB URL {target.display}: {mask(str(exc))}") from None
    if _refused_everywhere(target, timeout_s):
        client.close()
        raise DatabaseUnreachable(
            f"cannot reach MongoDB at {target.display}: connection refused (nothing listens "
            "there); check that the server runs and the host and port are right"
        )
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        client.close()
        if isinstance(exc, OperationFailure) and exc.code == AUTHENTICATION_FAILED:
            raise _authentication_failed(target) from None
        reason = mask(str(exc)).split(", Timeout:")[0].split(", full error:")[0]
        raise DatabaseUnreachable(
            f"cannot reach MongoDB at {target.display} within {timeout_s:.0f} s ({reason}); "
            "check that the server runs and the URL, user and password are right"
        ) from None
    return client[target.database]


def _authentication_failed(target: MongoTarget) -> AuthenticationFailed:
    """The error for a user or password the server refused: who, where, and what to check."""
    scheme, _, rest = target.client_url.partition("://")
    authority, _, query = rest.partition("?")
    userinfo, _, hosts = authority.rstrip("/").rpartition("@")
    user = unquote(userinfo.partition(":")[0])
    source = target.auth_source or (split_options(query).get("authsource") if query else None) or "admin"
    where = f"{scheme}://{hosts}/{target.database}"
    return AuthenticationFailed(
        f"authentication failed for user {user} on {where}: check the password (--mongo-password-file, "
        f"${PASSWORD_ENV}, ${PASSWORD_FILE_ENV} or the URL) and that the user exists in database "
        f"{source!r} (the URL's authSource option; default: the URL's database, else admin)"
    )


def _refused_everywhere(target: MongoTarget, timeout_s: float) -> bool:
    """True when every host of a ``mongodb://`` URL refuses a TCP connection: nothing
    listens, so there is no point waiting.  pymongo itself retries a refused connection
    until its server-selection timeout, the whole ``timeout_s``.  Hosts that do not
    answer at all, unix sockets and ``mongodb+srv://`` URLs (hosts from DNS) are left to
    pymongo."""
    if not target.client_url.startswith("mongodb://"):
        return False
    for host, port in parse_uri(target.client_url)["nodelist"]:
        if host.endswith(".sock"):
            return False
        try:
            with socket.create_connection((host, port), timeout=min(timeout_s, 1.0)):
                return False
        except ConnectionRefusedError:
            continue
        except OSError:  # a timeout, an unknown host: pymongo reports it
            return False
    return True


def server_time(db: Database) -> datetime:
    """The database server's clock (``hello.localTime``, naive UTC): what leases,
    expiry and run timestamps are measured against, so worker clocks do not matter."""
    return db.client.admin.command("hello")["localTime"]


def url_from_environment(url: str | None) -> str | None:
    """``url`` if given, else ``$HPO_MONGO_URL``, else None."""
    return url or os.environ.get(URL_ENV) or None
