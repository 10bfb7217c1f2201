"""An injected failing client: a real pymongo database whose collections fail on demand.

``FlakyDatabase(db)`` behaves as ``db`` (a real database on the test server), except
that while ``failures`` is positive each call of a collection method named in
``methods`` first counts ``failures`` down by one and raises ``AutoReconnect`` (a
transient error) without reaching the server.  With ``after=True`` a write reaches
the server first and the error comes after it, as when a reply is lost.
"""

from __future__ import annotations

from collections.abc import Collection as Names
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import AutoReconnect

READS = frozenset({"find", "find_one", "count_documents", "distinct", "aggregate"})
WRITES = frozenset({"update_one", "update_many", "insert_many", "insert_one", "delete_many",
                    "find_one_and_update", "create_indexes", "create_index"})


class FlakyDatabase:
    """``db`` with collection calls that fail ``failures`` times (see the module doc)."""

    def __init__(self, db: Database, failures: int = 0, methods: Names[str] = READS | WRITES,
                 *, after: bool = False, collections: Names[str] | None = None) -> None:
        self._db = db
        self.failures = failures
        self.methods = frozenset(methods)
        self.after = after
        self.collections = None if collections is None else frozenset(collections)
        self.failed: list[str] = []
        """``collection.method`` of each call that failed, in order."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def __getitem__(self, name: str) -> "FlakyCollection":
        return FlakyCollection(self._db[name], self)


class FlakyCollection:
    """One collection of a :class:`FlakyDatabase`."""

    def __init__(self, collection: Collection, flaky: FlakyDatabase) -> None:
        self._collection = collection
        self._flaky = flaky

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._collection, name)
        flaky = self._flaky
        chosen = flaky.collections is None or self._collection.name in flaky.collections
        if name not in flaky.methods or not chosen:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if flaky.failures <= 0:
                return attribute(*args, **kwargs)
            flaky.failures -= 1
            flaky.failed.append(f"{self._collection.name}.{name}")
            if flaky.after:
                attribute(*args, **kwargs)
            raise AutoReconnect(f"injected: {self._collection.name}.{name} lost its connection")

        return call
