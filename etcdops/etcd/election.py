"""Electing the one taker of a job inside etcd: a key created only if absent, attached to a lease
that a daemon thread keeps alive while the job runs.

python3-etcd3's Lock does not fit: it has no keep-alive (a job that outlives the TTL loses the
lock without knowing) and its context manager enters the block after a timeout even when the
lock was never acquired. Here the key is written by one transaction (compare create_revision ==
0, then put with the lease), so of any number of nodes asking at once exactly one wins, and the
others read who did in the same transaction. A taker that dies stops renewing: etcd deletes the
key when the lease expires, and the job can be taken again.

The keys live under /etcdops/periods/<cluster>/ (election_key), and their values are JSON that
names the holder (Holder): a node that finds a key taken can say by whom.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from etcdops.errors import EtcdopsError
from etcdops.etcd.connection import rpc_error
from etcdops.etcd.lease import LeaseCalls
from etcdops.etcd.rpc import import_etcdrpc, import_grpc

# renewals per TTL: two can fail (a member restarting, a slow leader election) before it lapses
_RENEWALS_PER_TTL = 3
# the pause before trying again after a renewal that no member confirmed
_RETRY_PAUSE = 1.0
# the shortest call a renewal makes, at or past the expiry: a member that answers at once may
# still confirm the lease
_LAST_CALL = 0.05
# the keep-alive thread is told to stop before the lease is revoked or handed over; a renewal
# in flight then is harmless (it renews a lease that is about to go)
_STOP_WAIT = 1.0


KEY_PREFIX = "/etcdops/periods/"


def election_key(cluster: str, *job: str) -> bytes:
    """The election key of one cluster's job: /etcdops/periods/<cluster>/<job>/..."""
    return "/".join((KEY_PREFIX + cluster, *job)).encode()


@dataclass(frozen=True)
class Holder:
    """Who holds an election key, as its value says: the node and since when; a job that keeps
    its key as a record once done (a period's backup) adds what it made and when it ended."""

    host: str
    pid: int
    started_at: datetime | None
    backup_id: str | None = None
    finished_at: datetime | None = None

    @classmethod
    def me(cls, started_at: datetime) -> Holder:
        return cls(socket.gethostname(), os.getpid(), started_at)

    @property
    def who(self) -> str:
        """The node in a message: "cp-2 (pid 4242)"."""
        return f"{self.host} (pid {self.pid})"

    @property
    def since(self) -> str:
        """" since <start>" for a message, or nothing when the value did not say."""
        return f" since {self.started_at:%Y-%m-%d %H:%M:%S}Z" if self.started_at else ""

    def to_json(self) -> bytes:
        return json.dumps(self.as_dict(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, value: bytes) -> Holder:
        """The holder a key's value names; a value that is not ours still names something."""
        try:
            doc = json.loads(value)
            return cls(
                str(doc["host"]), int(doc["pid"]), _moment(doc.get("started_at")),
                doc.get("backup_id"), _moment(doc.get("finished_at")),
            )
        except (ValueError, TypeError, KeyError):
            return cls(f"an unknown holder ({value[:80]!r})", 0, None)

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host, "pid": self.pid,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "backup_id": self.backup_id,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


def _moment(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


@dataclass(frozen=True)
class Taken:
    """Someone else holds the key: its value as they wrote it, and when it was created."""

    value: bytes
    create_revision: int


class KeptAlive:
    """A lease renewed on a daemon thread until stop(); `lost` says why it could not be renewed.

    Each renewal is a one-shot keep-alive on the first member that answers, so a member that
    dies costs one renewal, not the lease. Each call is bounded by a third of the TTL and by
    the time the lease has left: a member that accepts connections but never answers (stopped,
    or stalled on its disk) is left for the next one before the lease runs out, and is then
    asked last. The lease counts as lost when etcd says it no longer exists, or when no renewal
    was confirmed by its last known expiry: on_lost is called then, not when a call ends.

    The thread runs in a copy of the starting thread's context, so that what on_lost logs
    carries the run's fields (report.log_scope) as the rest of the run does.
    """

    def __init__(
        self, session: ElectionCalls, lease: int, ttl: int, granted_at: float,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.lease = lease
        self.ttl = ttl
        self.lost: str | None = None
        self._session = session
        self._expires = granted_at + ttl
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run,), name=f"lease-{lease:x}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Renew no more (the lease lives on until revoked or until its TTL runs out)."""
        self._stop.set()
        self._thread.join(_STOP_WAIT)

    def _run(self) -> None:
        interval = self.ttl / _RENEWALS_PER_TTL
        renew_at = time.monotonic() + interval
        failure = "no renewal was tried"
        # wakes to renew, or at the expiry when every renewal since the last one failed
        while not self._stop.wait(max(min(renew_at, self._expires) - time.monotonic(), 0.0)):
            if time.monotonic() >= self._expires:
                self._lose(f"lease {self.lease:x} could not be renewed before it expired: "
                           f"{failure}")
                return
            asked = time.monotonic()
            try:
                ttl = self._renew(interval)
            except Exception as exc:  # anything: this thread must not die with a traceback
                if self._stop.is_set():
                    return  # the session may be closing under the last renewal
                failure = exc.message if isinstance(exc, EtcdopsError) else repr(exc)
                # soon again, rather than a whole interval: the lease may have little time left
                renew_at = time.monotonic() + min(interval, _RETRY_PAUSE)
                continue
            if ttl <= 0:
                self._lose(f"lease {self.lease:x} expired or was revoked before it was renewed")
                return
            self._expires = asked + ttl
            renew_at = asked + interval

    def _renew(self, bound: float) -> int:
        """One renewal on the first member that answers in time: the lease's TTL afterwards."""
        cap = min(self._session.config.command_timeout, bound)

        def call(url: str) -> int:
            # past the expiry a member is still asked briefly: a TTL it returns is etcd's word
            # that the lease lives (its clock, not this estimate, is what expires it)
            timeout = max(min(cap, self._expires - time.monotonic()), _LAST_CALL)
            return self._session.keep_alive(url, [self.lease], timeout).get(self.lease, 0)

        return self._session._first_answer("a lease keep-alive", call)

    def _lose(self, why: str) -> None:
        if self._stop.is_set():
            return  # stopped on purpose: whatever became of the lease is the owner's to say
        self.lost = why
        if self._on_lost is not None:
            self._on_lost(why)


class Term:
    """Our hold on an election key: the key and the value it was created with, and its lease
    kept alive."""

    def __init__(
        self, session: ElectionCalls, key: bytes, value: bytes, create_revision: int,
        kept: KeptAlive,
    ) -> None:
        self.key = key
        self.value = value
        self.create_revision = create_revision
        self.kept = kept
        self._session = session

    @property
    def lease(self) -> int:
        return self.kept.lease

    @property
    def lost(self) -> str | None:
        """Why the lease could not be kept alive (another node may hold the key since), or None."""
        return self.kept.lost

    def release(self) -> None:
        """Give the key up at once (revoking the lease deletes it): another node may take it."""
        self.kept.stop()
        self._session.revoke_lease(self.lease)

    def let_go(self) -> str | None:
        """release() at the end of a job, whatever ended it: None once released, else why not
        (the key then goes when its lease expires). Raises nothing, so that the job's own
        outcome or error is what its caller sees."""
        expires = f"it is free once its lease of {self.kept.ttl}s expires"
        try:
            self.release()
        except EtcdopsError as exc:
            return f"{exc.message}; {expires}"
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                self.kept.stop()  # a second signal: the lease expires on its own
            return f"interrupted; {expires}"
        return None

    def settle(self, value: bytes, ttl: float) -> bool:
        """Keep the key, with a new value, for ttl seconds more, as a record that the job is
        done; False when it is no longer ours (the lease was lost and the key expired or was
        taken by another node), and then nothing is written."""
        self.kept.stop()
        lease, _ = self._session.grant_lease(ttl)
        try:
            kept = self._session.replace_if_created_at(self.key, value, self.create_revision, lease)
        except BaseException:
            self._session.revoke_lease(lease)
            raise
        if not kept:
            self._session.revoke_lease(lease)
        # the key moved to the new lease, or is not ours: the old lease holds nothing to keep
        self._session.revoke_lease(self.lease)
        return kept


class ElectionCalls(LeaseCalls):
    """Leases granted and revoked, keys created only if absent: the calls of an election."""

    def campaign(
        self, key: bytes, value: bytes, ttl: float,
        on_lost: Callable[[str], None] | None = None,
    ) -> Term | Taken:
        """Take the key if no one holds it, under a lease renewed until the Term is released or
        settled; or who holds it. on_lost is called (on the keep-alive thread) if the lease is
        lost before then."""
        asked = time.monotonic()
        lease, granted = self.grant_lease(ttl)
        try:
            claim = self.put_if_absent(key, value, lease)
        except BaseException:
            self.revoke_lease(lease)
            raise
        if isinstance(claim, Taken):
            self.revoke_lease(lease)
            return claim
        return Term(self, key, value, claim, KeptAlive(self, lease, granted, asked, on_lost))

    def grant_lease(self, ttl: float) -> tuple[int, int]:
        """A new lease of at least ttl seconds (etcd's TTLs are whole seconds): its id and TTL."""
        etcdrpc = import_etcdrpc()
        request = etcdrpc.LeaseGrantRequest(TTL=math.ceil(ttl))

        def call(url: str) -> Any:
            return self._unary(url, "Lease", "LeaseGrant", request, "a lease grant")

        response = self._first_answer("a lease grant", call)
        if response.error:
            raise EtcdopsError(f"etcd refused a lease of {request.TTL}s: {response.error}")
        return int(response.ID), int(response.TTL)

    def revoke_lease(self, lease: int) -> bool:
        """Revoke a lease, deleting the keys attached to it; False when it was already gone."""
        grpc, etcdrpc = import_grpc(), import_etcdrpc()
        request = etcdrpc.LeaseRevokeRequest(ID=lease)
        timeout = self.config.command_timeout

        def call(url: str) -> bool:
            connection = self._connection(url)
            try:
                connection.stub("Lease").LeaseRevoke(
                    request, timeout=timeout, metadata=connection.metadata
                )
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return False  # expired, or revoked by a retry of this very call
                raise rpc_error(exc, url, "a lease revoke", timeout, self.config.user) from exc
            return True

        return self._first_answer("a lease revoke", call)

    def put_if_absent(self, key: bytes, value: bytes, lease: int) -> int | Taken:
        """Create the key with the lease unless it exists: the create revision when it was
        created, else who holds it (read in the same transaction)."""
        etcdrpc = import_etcdrpc()
        request = etcdrpc.TxnRequest(
            compare=[etcdrpc.Compare(
                key=key, target=etcdrpc.Compare.CREATE, result=etcdrpc.Compare.EQUAL,
                create_revision=0,
            )],
            success=[etcdrpc.RequestOp(
                request_put=etcdrpc.PutRequest(key=key, value=value, lease=lease)
            )],
            failure=[etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key))],
        )

        def call(url: str) -> Any:
            return self._unary(url, "KV", "Txn", request, f"the election of {key.decode()}")

        response = self._first_answer("a transaction", call)
        if response.succeeded:
            return int(response.header.revision)
        kv = response.responses[0].response_range.kvs[0]
        if kv.value == value and kv.lease == lease:
            # a member that timed out had applied our put before the next one was asked
            return int(kv.create_revision)
        return Taken(bytes(kv.value), int(kv.create_revision))

    def replace_if_created_at(
        self, key: bytes, value: bytes, create_revision: int, lease: int
    ) -> bool:
        """Put a new value and lease on the key if it is still the one created at that revision
        (not expired, nor taken since by someone else); whether it was."""
        etcdrpc = import_etcdrpc()
        request = etcdrpc.TxnRequest(
            compare=[etcdrpc.Compare(
                key=key, target=etcdrpc.Compare.CREATE, result=etcdrpc.Compare.EQUAL,
                create_revision=create_revision,
            )],
            success=[etcdrpc.RequestOp(
                request_put=etcdrpc.PutRequest(key=key, value=value, lease=lease)
            )],
        )

        def call(url: str) -> Any:
            return self._unary(url, "KV", "Txn", request, f"the update of {key.decode()}")

        # a retry after a put that was applied compares true again and writes the same again
        return bool(self._first_answer("a transaction", call).succeeded)

    def holder(self, key: bytes) -> Taken | None:
        """Who holds an election key, or None when no one does."""
        etcdrpc = import_etcdrpc()
        request = etcdrpc.RangeRequest(key=key)

        def call(url: str) -> Any:
            return self._unary(url, "KV", "Range", request, f"a read of {key.decode()}")

        kvs = self._first_answer("Range", call).kvs
        return Taken(bytes(kvs[0].value), int(kvs[0].create_revision)) if kvs else None
