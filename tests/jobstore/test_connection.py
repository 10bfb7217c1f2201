"""URLs, credentials and connection errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jobstore.connection import connect, mask, parse_url
from jobstore.embedded import free_port
from jobstore.errors import BadUrl, DatabaseUnreachable


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


def test_unreachable_server_fails_fast_with_a_masked_message() -> None:
    target = parse_url(f"mongodb://bob:hunter2@127.0.0.1:{free_port()}/db")
    started = time.monotonic()
    with pytest.raises(DatabaseUnreachable) as caught:
        connect(target, timeout_s=1.0)
    assert time.monotonic() - started < 10
    assert "hunter2" not in str(caught.value)
    assert "cannot reach MongoDB at mongodb://bob:***@127.0.0.1" in str(caught.value)


def test_tls_options_pass_through_to_pymongo(tmp_path: Path) -> None:
    with pytest.raises(BadUrl, match="invalid MongoDB URL .*tlscafile file is not readable"):
        connect(parse_url(f"mongodb://localhost/db?tls=true&tlsCAFile={tmp_path}/missing.pem"))
