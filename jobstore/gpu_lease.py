"""GPU leases: each worker process claims its own GPU(s) through MongoDB.

Workers see every GPU of their host (``docker compose up --scale worker=N`` with
``count: all``, or several ``hpo-worker`` processes on one bare-metal host); each one
leases GPUs by UUID in the ``gpu_leases`` collection and then pins itself to them with
``CUDA_VISIBLE_DEVICES``.  Finding the host's GPUs and pinning are the worker's
(:mod:`worker.gpus`); this module holds the leases only.  One document per GPU::

    {_id: "GPU-<uuid>", index: 0, name: "NVIDIA H200", memory_mib: 143771,
     holder: "<worker id>" | None, host: "<hostname>" | None, token: "<hex>" | None,
     acquired: <date>, expires: <date>}

A GPU is free when ``expires`` is not after the server's clock: a released lease has
``expires`` at the epoch, and a crashed worker's lease lapses ``ttl`` seconds after its
last renewal.  Every expiry is computed and compared with the *server's* time
(``$$NOW`` in pipeline updates, ``hello.localTime`` in filters), never a worker's clock.

Claiming a GPU is a single ``update_one`` whose filter requires the lease to be free, so
two workers can never both win it.  Each acquisition gets a fresh random ``token``;
renewing and releasing match on it, so a worker whose lease lapsed and was taken over
can neither extend nor free the new holder's lease.

Database operations are retried under the store's :class:`jobstore.retry.RetryPolicy`
(a claim is repeatable under its token, so a retry after a lost reply keeps the GPU),
except :meth:`GpuLease.renew`, which the worker's heartbeat calls (it skips a beat on a
transient error rather than block), and :meth:`GpuLease.release`, which is best effort
on the way out (a lease not released lapses ``ttl`` seconds after its last renewal).

Typical use by a worker (see :class:`GpuLease` for the contracts)::

    lease = GpuLease(db, worker_id, gpus=discover_gpus(), count=gpus_per_worker)
    leased = wait_for_gpus(lease, stop=shutdown_event)    # None: asked to stop
    ...                                                   # heartbeat: lease.renew()
    lease.release()
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from jobstore.connection import server_time
from jobstore.retry import RetryPolicy, database_display

log = logging.getLogger(__name__)

LEASES = "gpu_leases"
"""Name of the lease collection."""

DEFAULT_TTL = 30.0
"""Seconds a lease lasts without renewal; renew at least every ``ttl / 3`` seconds."""

_FREE = datetime(1970, 1, 1)
"""``expires`` of a GPU nobody holds."""


class NoFreeGpu(RuntimeError):
    """Fewer free GPUs on this host than the worker needs; the message says who holds them."""


@dataclass(frozen=True)
class Gpu:
    """One physical GPU of this host, as the worker found it (:mod:`worker.gpus`)."""

    index: int
    """nvidia-smi's index (PCI bus order); informational only, leases use the UUID."""
    uuid: str
    """``GPU-…`` UUID, unique across hosts; also what ``CUDA_VISIBLE_DEVICES`` takes."""
    name: str
    memory_mib: int | None


def _uuids(gpus: Sequence[Gpu]) -> list[str]:
    return [gpu.uuid for gpu in gpus]


def ensure_indexes(db: Database) -> None:
    """Create the lease collection's indexes (idempotent; not retried).

    Claims, renewals and releases go by ``_id``; ``expires`` serves a monitoring
    query for the leases in force (``{expires: {$gt: <now>}}``).
    """
    db[LEASES].create_index("expires")


class GpuLease:
    """The GPUs one worker process holds: acquire, renew from the heartbeat, release.

    ``count`` GPUs are leased all-or-nothing from ``gpus``, which must all be on this host.  ``count=0``, or a host without GPUs, is CPU mode:
    :meth:`acquire` returns an empty tuple (with a warning when GPUs were wanted),
    :meth:`renew` returns True and :meth:`release` does nothing.

    Methods are thread-safe: the heartbeat thread may call :meth:`renew` while the main
    thread calls :meth:`acquire` or :meth:`release`.  :meth:`acquire` retries under
    ``retry`` (default: the default outage limit); other database errors
    propagate as :class:`pymongo.errors.PyMongoError` (or
    :class:`jobstore.retry.DatabaseOutage`); a lease that could not be released lapses
    by itself ``ttl`` seconds after its last renewal.

    Raises:
        ValueError: ``ttl`` is not positive, or ``count`` is negative or larger than the
            number of GPUs on a host that has some (such a request could never be met).
    """

    def __init__(
        self,
        db: Database,
        worker_id: str,
        *,
        gpus: Sequence[Gpu],
        count: int = 1,
        host: str | None = None,
        ttl: float = DEFAULT_TTL,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.gpus: tuple[Gpu, ...] = tuple(gpus)
        if count < 0:
            raise ValueError(f"cannot lease {count} GPUs")
        if ttl <= 0:
            raise ValueError(f"a lease must last some time, not {ttl} s")
        if 0 < len(self.gpus) < count:
            raise ValueError(
                f"{count} GPUs per worker requested but this host has only {len(self.gpus)}"
            )
        self.worker_id = worker_id
        self.count = count
        self.host = host or socket.gethostname()
        self.ttl = ttl
        self._leases = db[LEASES]
        self._db = db
        self._retry = retry or RetryPolicy(server=database_display(db))
        self._lock = threading.Lock()
        self._indexed = False
        self._token: str | None = None
        self._leased: tuple[Gpu, ...] = ()

    @property
    def cpu_only(self) -> bool:
        """True when this worker runs on the CPU (``count=0`` or no GPU on the host)."""
        return self.count == 0 or not self.gpus

    @property
    def leased(self) -> tuple[Gpu, ...]:
        """The GPUs held now (empty before :meth:`acquire`, after :meth:`release`)."""
        return self._leased

    def acquire(self) -> tuple[Gpu, ...]:
        """Lease ``count`` free GPUs of this host, or none at all.

        Returns the leased GPUs in index order (empty in CPU mode); they stay leased for
        ``ttl`` seconds unless renewed.  GPUs are claimed one at a time; if another
        worker wins one of them first, the ones already claimed are released again.

        Raises:
            NoFreeGpu: fewer than ``count`` GPUs are free right now; try again later
                (:func:`wait_for_gpus` does).
            RuntimeError: this object already holds a lease.
        """
        with self._lock:
            if self._leased:
                raise RuntimeError(f"worker {self.worker_id} already holds {self._describe()}")
            if self.cpu_only:
                if self.count:
                    log.warning("no GPU on this host: worker %s runs on the CPU", self.worker_id)
                return ()
            if not self._indexed:
                self._retry(lambda: ensure_indexes(self._db), "creating indexes")
                self._indexed = True
            now = self._retry(lambda: server_time(self._db), "reading the server clock")
            docs = self._retry(lambda: {doc["_id"]: doc for doc in self._leases.find({"_id": {"$in": _uuids(self.gpus)}})},
                               "reading the GPU leases")
            for gpu in self.gpus:
                if gpu.uuid not in docs:
                    self._retry(lambda g=gpu: self._register(g), "registering a GPU")
            free = [g for g in self.gpus if g.uuid not in docs or docs[g.uuid]["expires"] <= now]
            if len(free) < self.count:
                raise NoFreeGpu(self._busy_message(docs, now, len(free)))
            token = uuid.uuid4().hex
            claimed = []
            for gpu in free:
                if self._retry(lambda g=gpu: self._claim(g, token, now), "leasing a GPU"):
                    claimed.append(gpu)
                    if len(claimed) == self.count:
                        self._token, self._leased = token, tuple(claimed)
                        log.info("worker %s leased %s", self.worker_id, self._describe())
                        return self._leased
            self._free(token, claimed)
            raise NoFreeGpu(
                f"need {self.count} free GPU(s) on host {self.host}; other workers took "
                "the free ones first"
            )

    def renew(self) -> bool:
        """Extend the lease to ``ttl`` seconds from now (server time).

        Returns False when the lease was lost: another worker took over at least one
        of the GPUs after this lease lapsed, or it was released.  The GPU may then be
        in use by someone else: stop using it, :meth:`release` what is left, and exit
        or lease again in a fresh process (CUDA cannot change GPUs within a process).
        Returns True when nothing is leased (CPU mode, before acquire, after release).
        Not retried: a transient error reaches the caller (the heartbeat skips a beat).
        """
        with self._lock:
            if not self._leased:
                return True
            result = self._leases.update_many(
                {"_id": {"$in": _uuids(self._leased)}, "token": self._token},
                [{"$set": {"expires": {"$add": ["$$NOW", int(self.ttl * 1000)]}}}],
            )
            if result.matched_count == len(self._leased):
                return True
            log.warning("worker %s lost its lease on %s", self.worker_id, self._describe())
            return False

    def release(self) -> None:
        """Free the GPUs this object leased (those still held under its token); idempotent."""
        with self._lock:
            if not self._leased:
                return
            self._free(self._token, self._leased)
            log.info("worker %s released %s", self.worker_id, self._describe())
            self._token, self._leased = None, ()

    def _register(self, gpu: Gpu) -> None:
        """Create ``gpu``'s lease document, free, unless another worker just did."""
        try:
            self._leases.update_one(
                {"_id": gpu.uuid},
                {"$setOnInsert": {
                    "index": gpu.index, "name": gpu.name, "memory_mib": gpu.memory_mib,
                    "holder": None, "host": None, "token": None, "expires": _FREE,
                }},
                upsert=True,
            )
        except DuplicateKeyError:
            pass  # a concurrent upsert created it: the document exists, which is all we need

    def _claim(self, gpu: Gpu, token: str, now: datetime) -> bool:
        """Atomically take ``gpu`` if its lease expired by ``now`` (server time), or is
        held under ``token`` already (a retry after a lost reply)."""
        result = self._leases.update_one(
            {"_id": gpu.uuid, "$or": [{"expires": {"$lte": now}}, {"token": token}]},
            [{"$set": {
                "holder": {"$literal": self.worker_id},
                "host": {"$literal": self.host},
                "token": token,
                "acquired": "$$NOW",
                "expires": {"$add": ["$$NOW", int(self.ttl * 1000)]},
            }}],
        )
        return result.matched_count == 1

    def _free(self, token: str | None, gpus: Sequence[Gpu]) -> None:
        if gpus:
            self._leases.update_many(
                {"_id": {"$in": _uuids(gpus)}, "token": token},
                {"$set": {"holder": None, "host": None, "token": None, "expires": _FREE}},
            )

    def _busy_message(self, docs: Mapping[str, Mapping[str, Any]], now: datetime, free: int) -> str:
        held = ", ".join(
            f"{g.uuid} (index {g.index}) held by {docs[g.uuid]['holder']} on "
            f"{docs[g.uuid]['host']} until {docs[g.uuid]['expires']:%H:%M:%S} UTC"
            for g in self.gpus
            if g.uuid in docs and docs[g.uuid]["expires"] > now
        )
        return (
            f"need {self.count} free GPU(s) on host {self.host}, {free} of "
            f"{len(self.gpus)} free: {held}"
        )

    def _describe(self) -> str:
        return "GPU(s) " + ", ".join(f"{g.index}:{g.uuid}" for g in self._leased)


def wait_for_gpus(
    lease: GpuLease,
    *,
    stop: threading.Event | None = None,
    poll_interval: float = 5.0,
    log_interval: float = 60.0,
) -> tuple[Gpu, ...] | None:
    """Block until ``lease.acquire()`` succeeds and return its GPUs.

    Retries every ``poll_interval`` seconds (±50 % jitter, so waiting workers do not
    poll in step), logs a warning naming the holders at once and then at most every
    ``log_interval`` seconds.  Returns None as soon as ``stop`` is set (shutdown while
    waiting).  Errors other than :class:`NoFreeGpu` propagate.
    """
    stop = stop or threading.Event()
    last_log: float | None = None
    while not stop.is_set():
        try:
            return lease.acquire()
        except NoFreeGpu as exc:
            now = time.monotonic()
            if last_log is None or now - last_log >= log_interval:
                log.warning("worker %s is waiting for a free GPU: %s", lease.worker_id, exc)
                last_log = now
        stop.wait(poll_interval * random.uniform(0.5, 1.5))
    return None
