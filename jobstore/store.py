"""One handle on the database: :class:`Store`.

A program opens the store once, from the URL, the password source and its options
(:meth:`Store.open`), and hands that one object to everything that touches the
database: the coordinator, the workers, ``MongoTrials``, the monitoring commands, and
(through :meth:`Store.child_environment`) the local worker processes.  The store holds

* the pymongo ``Database`` and where it came from (:class:`jobstore.connection.MongoTarget`),
* the collection names (the jobs collection may be named in the URL:
  ``mongodb://host/DB.coll`` or ``mongo://host/DB/coll``),
* the retry policy (:class:`jobstore.retry.RetryPolicy`: backoff, and the outage limit
  the caller chose when opening the store), which every typed store below applies
  inside its methods, so call sites read as plain calls,
* and the typed stores, one per collection, each the only writer of its collection:
  :attr:`queue` (jobs, :mod:`jobstore.queue`), :attr:`runs` (:mod:`jobstore.runs`),
  :attr:`workers` (:mod:`jobstore.workers`), GPU leases (:meth:`gpu_lease`,
  :mod:`jobstore.gpu_lease`), and the read-only :attr:`view`
  (:class:`jobstore.view.ReadOnlyView`) the monitoring commands read through.

Typed stores are made on first use and kept: one queue per store, so a claim retried
after a lost reply is recognised (see :mod:`jobstore.queue`).  A store with another
outage limit over the same connection is :meth:`Store.with_outage_limit`.

A store opened from a URL owns its client: :meth:`Store.close` (or leaving a ``with``
block) closes it.  A store made over a ``Database`` the caller passed leaves that
client to the caller.
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from pymongo.database import Database

from jobstore import schema as s
from jobstore.connection import (
    DEFAULT_TIMEOUT_S,
    PASSWORD_FILE_ENV,
    URL_ENV,
    MongoTarget,
    connect,
    parse_url,
    server_time,
)
from jobstore.gpu_lease import GpuLease
from jobstore.queue import JobQueue
from jobstore.retry import DEFAULT_GIVE_UP_S, RetryPolicy, database_display
from jobstore.runs import RunStore
from jobstore.view import ReadOnlyView
from jobstore.workers import WorkerRegistry


class Store:
    """The database, its collection names, the retry policy and the typed stores.

    Args:
        db: the database (any object with pymongo's ``Database`` interface; tests pass
            a wrapper that injects failures).
        jobs_collection: the jobs collection's name.
        retry: the retry policy every typed store applies (default: the default
            outage limit, naming ``db``'s server).
        url: the URL the store was opened from (password in it, if any, kept only for
            :meth:`child_environment`).
        password_file: the file the password was read from, if one was given.
        target: the parsed URL.
        owns_client: whether :meth:`close` closes ``db``'s client (true for
            :meth:`open`'s stores, which made it).
    """

    def __init__(self, db: Database, *, jobs_collection: str = s.JOBS, retry: RetryPolicy | None = None,
                 url: str | None = None, password_file: Path | None = None,
                 target: MongoTarget | None = None, owns_client: bool = False) -> None:
        self.db = db
        self.owns_client = owns_client
        self.jobs_collection = jobs_collection
        self.retry = retry or RetryPolicy(server=database_display(db))
        self.url = url
        self.password_file = password_file
        self.target = target

    @classmethod
    def open(cls, url: str, password_file: Path | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S,
             outage_limit: float | None = DEFAULT_GIVE_UP_S, longer: str | None = None) -> "Store":
        """Parse ``url`` (password from ``password_file`` or the environment, see
        :mod:`jobstore.connection`), connect, and return the store.

        ``outage_limit`` is how long an operation may keep failing before
        :class:`jobstore.retry.DatabaseOutage` (None: no limit); ``longer`` tells the
        user how to allow a longer outage.

        Raises:
            BadUrl: the URL or the password file is wrong.
            DatabaseUnreachable: no answer within ``timeout_s`` seconds.
        """
        target = parse_url(url, password_file)
        db = connect(target, timeout_s)
        return cls(db, jobs_collection=target.jobs_collection,
                   retry=RetryPolicy(give_up_after=outage_limit, server=target.display, longer=longer),
                   url=url, password_file=password_file, target=target, owns_client=True)

    def close(self) -> None:
        """Close the client this store opened (:meth:`open`); afterwards every operation
        on it, and on stores :meth:`with_outage_limit` made from it, raises pymongo's
        ``InvalidOperation``.  A store that does not own its client (made over a
        ``Database`` the caller passed, or by :meth:`with_outage_limit`) leaves it
        open.  Idempotent."""
        if self.owns_client:
            self.db.client.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def server(self) -> str:
        """The server and database for messages (password masked)."""
        return self.retry.server or database_display(self.db)

    def with_outage_limit(self, seconds: float | None, longer: str | None = None) -> "Store":
        """A store on the same connection whose operations give up after ``seconds`` of
        outage (None: never); its typed stores are its own.  It does not own the
        connection: closing it leaves the connection open, closing this store closes
        the connection of both."""
        return Store(self.db, jobs_collection=self.jobs_collection, retry=self.retry.with_limit(seconds, longer),
                     url=self.url, password_file=self.password_file, target=self.target)

    @cached_property
    def queue(self) -> JobQueue:
        """The jobs collection's queue operations."""
        return JobQueue(self.db, self.jobs_collection, retry=self.retry)

    @cached_property
    def runs(self) -> RunStore:
        """The ``runs`` collection."""
        return RunStore(self.db, self.jobs_collection, retry=self.retry)

    @cached_property
    def workers(self) -> WorkerRegistry:
        """The ``workers`` collection."""
        return WorkerRegistry(self.db, retry=self.retry)

    @cached_property
    def view(self) -> ReadOnlyView:
        """The read-only queries of the monitoring commands."""
        return ReadOnlyView(self.db, self.jobs_collection, retry=self.retry)

    def gpu_lease(self, worker_id: str, **options: Any) -> GpuLease:
        """A :class:`jobstore.gpu_lease.GpuLease` for ``worker_id`` in the ``gpu_leases``
        collection (``options``: its keyword arguments), under this store's policy."""
        return GpuLease(self.db, worker_id, retry=self.retry, **options)

    def server_time(self) -> datetime:
        """The server's clock (naive UTC), retried."""
        return self.retry(lambda: server_time(self.db), "reading the server clock")

    def child_environment(self) -> dict[str, str]:
        """The environment variables that let a child process open this same store
        (``$HPO_MONGO_URL``, and ``$HPO_MONGO_PASSWORD_FILE`` when the password came
        from a file), so credentials never go on a command line.  A password from
        ``$HPO_MONGO_PASSWORD`` or ``$HPO_MONGO_PASSWORD_FILE`` reaches the child with
        the inherited environment.

        Raises:
            ValueError: the store was not opened from a URL.
        """
        if self.url is None:
            raise ValueError("this store was made from a Database handle, not opened from a URL; "
                             "child processes cannot open it")
        env = {URL_ENV: self.url}
        if self.password_file is not None:
            env[PASSWORD_FILE_ENV] = os.fspath(Path(self.password_file).resolve())
        return env
