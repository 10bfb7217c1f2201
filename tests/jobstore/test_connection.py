"""URLs, credentials and connection errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

from jobstore.connection import connect, mask, parse_url
from jobstore.embedded import EmbeddedServer, free_port
from jobstore.errors import AuthenticationFailed, BadUrl, DatabaseUnreachable
from tests.support.ports import refusing_port


def test_mongodb_url_with_database_and_options() -> None:
    target = parse_url("mongodb://u:p@db.example:27017/exp?tls=true&authSource=admin")
    assert target.database == "exp"
    assert target.jobs_collection == "jobs"
    assert target.client_url == "mongodb://u:p@db.example:27017/?tls=true&authSource=admin"


def test_hyperopt_url_names_the_jobs_collection() -> None:
    target = parse_url("mongo://localhost:1234/foo_db/jobs")
    assert (target.client_url, target.database, target.jobs_collection) == (
        "mongodb://localhost:1234/", "foo_db", "jobs")


def test_database_defaults_to_hpo() -> None:
    assert parse_url("mongodb://localhost").database == "hpo"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("http://localhost/db", "unsupported URL scheme"),
        ("mongodb:///db", "no host"),
        ("mongodb://localhost:notaport/db", "bad port"),
        ("mongo://localhost/a/b/c", "mongo://host:port/DB/jobs"),
        ("mongodb://localhost/a/b", "more than a database name"),
    ],
)
def test_malformed_urls_are_explained(url: str, message: str) -> None:
    with pytest.raises(BadUrl, match=message):
        parse_url(url)


def test_password_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr/t@x\n")
    target = parse_url("mongodb://alice@h:1/db", password_file=secret)
    assert target.client_url == "mongodb://alice:s3cr%2Ft%40x@h:1/"
    assert "s3cr" not in target.display
    monkeypatch.setenv("HPO_MONGO_PASSWORD", "envpw")
    assert "alice:envpw@" in parse_url("mongodb://alice@h:1/db").client_url


def test_password_without_user_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_MONGO_PASSWORD", "pw")
    with pytest.raises(BadUrl, match="names no user"):
        parse_url("mongodb://h:1/db")


def test_missing_password_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BadUrl, match="cannot read the MongoDB password file"):
        parse_url("mongodb://a@h/db", password_file=tmp_path / "nope")


def test_mask_hides_passwords() -> None:
    assert mask("failed: mongodb://bob:hunter2@host:1/db and mongo://x:y@z/db/jobs") == (
        "failed: mongodb://bob:***@host:1/db and mongo://x:***@z/db/jobs")


def test_refused_connection_fails_at_once_with_a_masked_message() -> None:
    with refusing_port() as port, pytest.raises(DatabaseUnreachable) as caught:
        connect(parse_url(f"mongodb://bob:hunter2@127.0.0.1:{port}/db"), timeout_s=60)
    # pymongo alone waits out the whole timeout on a refused connection, then names no
    # cause: the cause in the message shows the refusal was seen at once
    assert "hunter2" not in str(caught.value)
    assert "cannot reach MongoDB at mongodb://bob:***@127.0.0.1" in str(caught.value)
    assert "connection refused (nothing listens there)" in str(caught.value)


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A server requiring authentication, with user alice (password "right") in admin
    and user bob (password "bobs") in hpo."""
    port = free_port()
    with EmbeddedServer(tmp_path / "auth-db", port=port, sync_on_commit=False) as open_server:
        client: pymongo.MongoClient = pymongo.MongoClient(open_server.url)
        client.admin.command("createUser", "alice", pwd="right", roles=["root"])
        client.hpo.command("createUser", "bob", pwd="bobs", roles=["readWrite"])
        client.close()
    with EmbeddedServer(tmp_path / "auth-db", port=port, sync_on_commit=False, auth=True) as server:
        yield server


def test_a_wrong_password_is_named_as_such(auth_server: EmbeddedServer, tmp_path: Path) -> None:
    host = auth_server.url.removeprefix("mongodb://")
    db = connect(parse_url(f"mongodb://alice:right@{host}/hpo?authSource=admin"))
    assert db.name == "hpo"
    db.client.close()
    secret = tmp_path / "password"
    secret.write_text("wrong-one\n")
    for url, password_file in ((f"mongodb://alice:wrong-one@{host}/hpo?authSource=admin", None),
                               (f"mongodb://alice@{host}/hpo?authSource=admin", secret)):
        with pytest.raises(AuthenticationFailed) as caught:
            connect(parse_url(url, password_file), timeout_s=30)
        message = str(caught.value)
        assert message.startswith(f"authentication failed for user alice on mongodb://{host}/hpo: ")
        assert "in database 'admin'" in message
        assert "wrong-one" not in message and "full error" not in message


def test_users_authenticate_against_the_urls_database_unless_authsource_says_otherwise(
        auth_server: EmbeddedServer) -> None:
    """As the MongoDB drivers do: the path's database is the default authSource, admin
    only when the path names none."""
    host = auth_server.url.removeprefix("mongodb://")
    for url in (f"mongodb://bob:bobs@{host}/hpo", f"mongo://bob:bobs@{host}/hpo/jobs",
                f"mongodb://bob:bobs@{host}/hpo.jobs", f"mongodb://alice:right@{host}",
                f"mongodb://alice:right@{host}/hpo?authSource=admin"):
        connect(parse_url(url), timeout_s=30).client.close()
    with pytest.raises(AuthenticationFailed, match="in database 'hpo'"):
        connect(parse_url(f"mongodb://alice:right@{host}/hpo"), timeout_s=30)
    with pytest.raises(AuthenticationFailed, match="in database 'admin'"):
        connect(parse_url(f"mongodb://bob:bobs@{host}/hpo?authSource=admin"), timeout_s=30)


def test_tls_options_pass_through_to_pymongo(tmp_path: Path) -> None:
    with pytest.raises(BadUrl, match="invalid option in .*tlscafile file is not readable"):
        parse_url(f"mongodb://localhost/db?tls=true&tlsCAFile={tmp_path}/missing.pem")


# -- every URL form the MongoDB drivers accept (issue 12) ----------------------------------

SEED_LIST = ("mongodb://hpo:pw@mongo-0.mongo:27017,mongo-1.mongo:27017,mongo-2.mongo:27017/hpo"
             "?replicaSet=rs0&authSource=admin")


def test_replica_set_seed_list_from_the_deployment_guide() -> None:
    target = parse_url(SEED_LIST)
    assert (target.database, target.jobs_collection) == ("hpo", "jobs")
    assert target.client_url == ("mongodb://hpo:pw@mongo-0.mongo:27017,mongo-1.mongo:27017,mongo-2.mongo:27017/"
                                 "?replicaSet=rs0&authSource=admin")
    assert target.display == "mongodb://hpo:***@mongo-0.mongo:27017,mongo-1.mongo:27017,mongo-2.mongo:27017/hpo"


def test_seed_list_takes_the_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_MONGO_PASSWORD", "p@ss:w/rd")
    target = parse_url("mongodb://hpo@h1,h2:27018,[::1]:27019/hpo?replicaSet=rs0")
    assert target.client_url == "mongodb://hpo:p%40ss%3Aw%2Frd@h1,h2:27018,[::1]:27019/?replicaSet=rs0"


def test_srv_url_is_parsed_without_a_dns_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    import dns.resolver

    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError("parse_url must not resolve DNS")

    monkeypatch.setattr(dns.resolver, "resolve", no_dns)
    target = parse_url("mongodb+srv://USER:PASS@cluster.example.net/hpo?retryWrites=true&w=majority")
    assert (target.database, target.jobs_collection) == ("hpo", "jobs")
    assert target.client_url == "mongodb+srv://USER:PASS@cluster.example.net/?retryWrites=true&w=majority"
    assert target.display == "mongodb+srv://USER:***@cluster.example.net/hpo"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mongodb+srv://cluster.example.net:27017/hpo", r"mongodb\+srv:// URLs name one host and no port"),
        ("mongodb+srv://a.example.net,b.example.net/hpo", r"mongodb\+srv:// URLs name one host and no port"),
        ("mongodb://h1:27017,h2:port/db", "bad port"),
        ("mongodb://h1:27017,,h2/db", "empty host"),
        ("mongodb://h1/db?w=sometimes&journal=perhaps", "invalid option in"),
        ("mongodb://h1/db?srvMaxHosts=2", "invalid option in"),
    ],
)
def test_malformed_driver_urls_are_explained(url: str, message: str) -> None:
    with pytest.raises(BadUrl, match=message):
        parse_url(url)


def test_options_pass_through_unchanged(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")
    url = ("mongodb://h1:1,h2:2/db?replicaSet=rs0&readPreference=secondaryPreferred&tls=true"
           f"&tlsCAFile={tmp_path}/ca.pem&appName=my%20app&retryWrites=false&maxPoolSize=5")
    assert parse_url(url).client_url == "mongodb://h1:1,h2:2/?" + url.split("?", 1)[1]


def test_scheme_is_case_insensitive_and_no_database_or_slash_is_fine() -> None:
    target = parse_url("MongoDB://Alice:pw@H1:1,h2:2?authSource=admin")
    assert target.client_url == "mongodb://Alice:pw@H1:1,h2:2/?authSource=admin"
    assert target.database == "hpo"


def test_database_dot_collection_names_the_jobs_collection() -> None:
    target = parse_url("mongodb://h/exp.myjobs")
    assert (target.database, target.jobs_collection) == ("exp", "myjobs")


def test_hyperopt_url_with_credentials_and_options() -> None:
    target = parse_url("mongo://u:p%40w@h1:1,h2:2/foo/trials?authSource=admin")
    assert (target.client_url, target.database, target.jobs_collection) == (
        "mongodb://u:p%40w@h1:1,h2:2/?authSource=admin", "foo", "trials")


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://:s3cretPW@host/db",          # empty user
        "mongodb://u:s3cret@PW@host/db",        # unescaped @ in the password
        "mongodb://u:s3cret:PW@host/db",        # unescaped : in the password
    ],
)
def test_bad_credentials_are_explained_with_the_password_masked(url: str) -> None:
    with pytest.raises(BadUrl, match="percent-encode") as caught:
        parse_url(url)
    assert "s3cret" not in str(caught.value) and "PW" not in str(caught.value)


def test_every_error_message_masks_the_password() -> None:
    for url in ("MONGODB://coord:s3cretPW@h:port/db", "mongodb://coord:s3cretPW@h/a/b",
                "mongo://coord:s3cretPW@h/a/b/c", "MONGODB://coord:s3cretPW@h:1/db?journal=bad",
                "mongodb+srv://coord:s3cretPW@h:1/db", "mongodb://coord:s3cretPW@/db"):
        with pytest.raises(BadUrl) as caught:
            parse_url(url)
        assert "s3cretPW" not in str(caught.value), str(caught.value)
        assert "***" in str(caught.value), str(caught.value)


# -- masking ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("MONGODB://coord:PW@h:1/db", "MONGODB://coord:***@h:1/db"),
        ("Mongo://coord:PW@h/db/jobs", "Mongo://coord:***@h/db/jobs"),
        ("mongodb://:PW@host", "mongodb://:***@host"),
        ("mongodb://u:p@ss@word@host:1/db", "mongodb://u:***@host:1/db"),
        ("mongodb://u:a/b?c@host/db", "mongodb://u:***@host/db"),
        ("mongodb+srv://u:PW@cluster.example.net/hpo", "mongodb+srv://u:***@cluster.example.net/hpo"),
        (SEED_LIST, SEED_LIST.replace(":pw@", ":***@")),
        ("--mongo 'mongodb://u:PW@h/db' --run r", "--mongo 'mongodb://u:***@h/db' --run r"),
        ("(mongodb://u:PW@h:1)", "(mongodb://u:***@h:1)"),
        ("a mongodb://alice@h/db without password", "a mongodb://alice@h/db without password"),
        ("h/db?tls=true&tlsCertificateKeyFilePassword=PW&x=1", "h/db?tls=true&tlsCertificateKeyFilePassword=***&x=1"),
        ("authMechanismProperties=AWS_SESSION_TOKEN:PW,X:1", "authMechanismProperties=AWS_SESSION_TOKEN:***,X:1"),
        ("http://proxyuser:PW@proxy:3128", "http://proxyuser:***@proxy:3128"),
        ("two: mongodb://a:PW@h1 and mongodb://b:PW@h2", "two: mongodb://a:***@h1 and mongodb://b:***@h2"),
    ],
)
def test_mask_hides_every_form_of_password(text: str, masked: str) -> None:
    assert mask(text) == masked


def test_mask_hides_a_password_given_outside_the_url(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("Zq9-file-secret\n")
    parse_url("mongodb://alice@h:1/db", password_file=secret)
    assert mask("auth failed for alice with Zq9-file-secret") == "auth failed for alice with ***"


TWO_MB = 2 * 1024 * 1024


@pytest.mark.parametrize(
    "text",
    [
        "a" * TWO_MB,                                   # quadratic for the old regex
        ("mongodb://u" * TWO_MB)[:TWO_MB],
        "mongodb://u:" + "@" * TWO_MB,
        ("://@ " * TWO_MB)[:TWO_MB],
        "failed at mongodb://u:pw@h/db: " + repr(list(range(400_000)))[:TWO_MB],
    ],
    ids=["long-word", "repeated-scheme", "many-at", "many-tokens", "long-message"],
)
def test_mask_of_adversarial_text_ends_and_masks(text: str) -> None:
    """Linear time, shown without a clock: on these 2 MB inputs a pattern that
    backtracks (quadratic or worse) would run for hours, far past the suite's
    per-test timeout, which then fails the test; mask still hides the password."""
    masked = mask(text)
    assert "pw@" not in masked


def _seed_list(server_url: str, database: str) -> tuple[str, str | None]:
    """The server given twice (as 127.0.0.1 and as localhost), and its replica set name."""
    from urllib.parse import urlsplit

    parts = urlsplit(server_url)
    with pymongo.MongoClient(server_url) as client:
        set_name = client.admin.command("hello").get("setName")
    hosts = f"127.0.0.1:{parts.port},localhost:{parts.port}"
    return f"mongodb://{hosts}/{database}" + (f"?{parts.query}" if parts.query else ""), set_name


def test_seed_list_url_against_the_running_server(mongo_server_url: str, db_url: str) -> None:
    """Two seeds for one server, with and without the replica set's name: the driver
    finds the one server (SecantusDB calls itself the primary of replica set "secantus")."""
    database = db_url.rsplit("/", 1)[1]
    url, set_name = _seed_list(mongo_server_url, database)
    urls = [url]
    if set_name:
        urls.append(url + ("&" if "?" in url else "?") + f"replicaSet={set_name}")
    for n, variant in enumerate(urls):
        db = connect(parse_url(variant), timeout_s=5)
        try:
            db.jobs.insert_one({"n": n})
            assert db.jobs.count_documents({"n": n}) == 1
            assert db.write_concern.document == {"w": "majority", "j": True}
        finally:
            db.client.close()


def test_wrong_replica_set_name_is_reported_as_unreachable(mongo_server_url: str) -> None:
    url, _ = _seed_list(mongo_server_url, "db")
    with pytest.raises(DatabaseUnreachable, match='replica set name "not-this-one"'):
        connect(parse_url(url + ("&" if "?" in url else "?") + "replicaSet=not-this-one"), timeout_s=1)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"w": "majority", "j": True}),
        ("?w=1", {"w": 1, "j": True}),
        ("?journal=false&w=1", {"w": 1, "j": False}),
    ],
)
def test_writes_are_durable_unless_the_url_says_otherwise(mongo_server_url: str, query: str,
                                                         expected: dict[str, object]) -> None:
    url, _ = _seed_list(mongo_server_url, "db")
    separator = "&" if "?" in url and query else ""
    db = connect(parse_url(url + (separator + query[1:] if separator else query)), timeout_s=5)
    try:
        assert db.write_concern.document == expected
    finally:
        db.client.close()
