"""Talking to etcd: connections with TLS, auth and timeouts, the calls etcdops needs, and errors.

This is the only module of etcdops that touches etcd3 and grpc, and it imports them inside
functions so that `etcdops --help` stays instant. Every grpc failure is turned into an
EtcdopsError in one place (`_rpc_error`), so messages name the endpoint and say what to check.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from etcdops.config import EtcdConfig
from etcdops.errors import ConfigError, EtcdopsError, EtcdUnavailableError, IntegrityError

ENDPOINT_HINT = "check [etcd] endpoints / ETCDCTL_ENDPOINTS and that etcd is running"
AUTH_HINT = "check [etcd] user / ETCDCTL_USER and password_file (or ETCDCTL_PASSWORD)"
TLS_HINT = (
    "check [etcd] cacert / cert / key (ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY) and that "
    "the endpoint scheme matches the server (https:// for TLS)"
)
DEFAULT_CLIENT_PORT = 2379

# etcd 3.5 sends these fields, but the protos of python3-etcd3 predate them: they arrive as
# unknown fields, read by number (see etcd's api/etcdserverpb/rpc.proto).
_STATUS_RAFT_APPLIED_INDEX = 7
_STATUS_ERRORS = 8
_STATUS_DB_SIZE_IN_USE = 9
_STATUS_IS_LEARNER = 10
_MEMBER_IS_LEARNER = 5
_ALARM_KINDS = {1: "NOSPACE", 2: "CORRUPT"}  # CORRUPT is also newer than those protos
_PROBE_TIMEOUT = 0.5
# grpc.experimental.ChannelOptions.SingleThreadedUnaryStream: read a server stream on the
# calling thread instead of through a polling thread and a condition variable per message.
# A snapshot is 32,768 messages per GiB; measured, this takes a third off the receive's CPU.
# A fixed 1 MiB flow-control window instead of BDP probing: probing grows the window (and what
# grpc buffers) while the pipeline is busy, and added threads and ~20 MiB to some saves' peak
# RSS (125-131 MiB with the fixed window against 128-148 without, same wall time). 1 MiB is
# still 100 MB/s at a 10 ms round trip, and etcd members sit much closer than that.
_CHANNEL_OPTIONS = [
    ("SingleThreadedUnaryStream", 1),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 1 << 20),
]
_GRPC_ENVIRONMENT = {
    # grpc's C core logs failed TLS handshakes to stderr; etcdops reports them itself, once
    "GRPC_VERBOSITY": "ERROR",
    # grpc's EventEngine client reads the socket on a thread of its own and wakes the caller
    # once per message; the iomgr client it replaces reads in the caller's thread. Over a
    # snapshot's 32,768 messages per GiB that is a third of the receive's CPU (measured, 5 + 5
    # alternated 1 GiB receives: 4.6 -> 3.1 s) and 7 % of a 1 GiB save to two regions (4 + 4
    # alternated: 22.2 -> 20.6 s), CPU that a control-plane host would rather give to etcd.
    "GRPC_EXPERIMENTS": "-event_engine_client",
}
_TLS_FAILURES = {
    "CERTIFICATE_VERIFY_FAILED": "the server's certificate is not signed by the configured CA",
    "BAD_CERTIFICATE": "the server wants a client certificate it trusts",
    "CERTIFICATE_REQUIRED": "the server wants a client certificate it trusts",
    "WRONG_VERSION_NUMBER": "the server does not speak TLS (use http://)",
}

T = TypeVar("T")


@dataclass(frozen=True)
class MemberStatus:
    """What one member says about itself (Maintenance.Status)."""

    endpoint: str
    member_id: int
    cluster_id: int
    leader_id: int
    version: str
    db_size: int
    db_size_in_use: int
    revision: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    errors: tuple[str, ...]
    is_learner: bool

    @property
    def is_leader(self) -> bool:
        """Whether this member is the raft leader (defrag does the leader last)."""
        return self.leader_id != 0 and self.member_id == self.leader_id


@dataclass(frozen=True)
class Member:
    """One entry of the cluster's member list."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


@dataclass(frozen=True)
class Alarm:
    """A raised alarm: NOSPACE (quota reached, writes refused) or CORRUPT."""

    member_id: int
    kind: str


@dataclass(frozen=True)
class KeyValue:
    """One key and its value, as Range returns it."""

    key: bytes
    value: bytes


class RevisionCompacted(EtcdopsError):
    """A call named a revision that etcd has already compacted away."""


@dataclass(frozen=True)
class SnapshotSource:
    """The member a snapshot came from, and its status just before streaming began."""

    endpoint: str
    status: MemberStatus


class _Unreachable(EtcdUnavailableError):
    """The endpoint did not answer at all: another endpoint may serve the call instead."""


@dataclass
class _Connection:
    channel: Any
    metadata: tuple[tuple[str, str], ...] = ()
    stubs: dict[str, Any] = field(default_factory=dict)

    def stub(self, name: str) -> Any:
        etcdrpc = _etcdrpc()
        if name not in self.stubs:
            self.stubs[name] = getattr(etcdrpc, f"{name}Stub")(self.channel)
        return self.stubs[name]


class SnapshotStream(Iterator[bytes]):
    """The raw snapshot as it arrives, checked to be complete when the stream ends."""

    def __init__(
        self, source: SnapshotSource, call: Any, on_error: Callable[[Any], EtcdopsError]
    ) -> None:
        self.source = source
        self.bytes_received = 0
        self._call = call
        self._on_error = on_error
        self._remaining: int | None = None
        self._finished = False

    def __next__(self) -> bytes:
        grpc = _grpc()
        if self._finished:
            raise StopIteration
        try:
            response = next(self._call)
        except StopIteration:
            self._finished = True
            self._check_complete()
            raise
        except grpc.RpcError as exc:
            self._finished = True
            raise self._on_error(exc) from exc
        self._remaining = response.remaining_bytes
        self.bytes_received += len(response.blob)
        return response.blob

    def close(self) -> None:
        """Stop the stream early (the server stops sending)."""
        self._finished = True
        self._call.cancel()

    def _check_complete(self) -> None:
        # etcd says on every message how much is still to come: a stream that ends without the
        # last message saying 0 lost data, even though grpc reported a clean end
        if self._remaining is None:
            missing = "no data at all"
        elif self._remaining != 0:
            missing = f"{self._remaining} bytes missing"
        else:
            return
        raise IntegrityError(
            f"snapshot stream from {self.source.endpoint} ended early: {missing}",
            "take the snapshot again; if it keeps failing, check that member's log and disk",
        )


class EtcdSession:
    """Connections to the configured etcd endpoints, opened on first use and closed together."""

    def __init__(self, config: EtcdConfig, endpoints: Sequence[str] | None = None) -> None:
        # etcdctl's rule for endpoints without a scheme: TLS when TLS files are configured
        self._tls = config.cacert is not None or config.cert is not None
        self.config = config
        self.endpoints = tuple(
            _normalize(e, self._tls) for e in (config.endpoints if endpoints is None else endpoints)
        )
        if not self.endpoints:
            raise ConfigError("no etcd endpoints configured", ENDPOINT_HINT)
        self._connections: dict[str, _Connection] = {}
        self._down: set[str] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> EtcdSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection (and so cancel any stream still open)."""
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            connection.channel.close()

    def status(self, endpoint: str) -> MemberStatus:
        """Status of one member: leader, revision, raft indexes, db size and size in use."""
        etcdrpc = _etcdrpc()
        url = _normalize(endpoint, self._tls)
        response = self._unary(url, "Maintenance", "Status", etcdrpc.StatusRequest(), "Status")
        extra = _unknown_fields(response)
        return MemberStatus(
            endpoint=url,
            member_id=response.header.member_id,
            cluster_id=response.header.cluster_id,
            leader_id=response.leader,
            version=response.version,
            db_size=response.dbSize,
            db_size_in_use=extra.get(_STATUS_DB_SIZE_IN_USE, [0])[-1],
            revision=response.header.revision,
            raft_index=response.raftIndex,
            raft_term=response.raftTerm,
            raft_applied_index=extra.get(_STATUS_RAFT_APPLIED_INDEX, [0])[-1],
            errors=tuple(e.decode("utf-8", "replace") for e in extra.get(_STATUS_ERRORS, [])),
            is_learner=bool(extra.get(_STATUS_IS_LEARNER, [0])[-1]),
        )

    def statuses(self) -> list[MemberStatus]:
        """Status of every configured endpoint, asked in parallel; any unreachable one fails it."""
        with ThreadPoolExecutor(max_workers=len(self.endpoints)) as pool:
            futures = [pool.submit(self.status, endpoint) for endpoint in self.endpoints]
        results: list[MemberStatus] = []
        unreachable: list[EtcdUnavailableError] = []
        for future in futures:
            try:
                results.append(future.result())
            except _Unreachable as exc:
                unreachable.append(exc)
        if unreachable:
            raise EtcdUnavailableError(
                f"{len(unreachable)} of {len(self.endpoints)} etcd endpoints did not answer: "
                + "; ".join(exc.message for exc in unreachable),
                ENDPOINT_HINT,
            )
        return results

    def members(self) -> list[Member]:
        """The cluster's member list, from the first endpoint that answers."""
        etcdrpc = _etcdrpc()

        def call(url: str) -> Any:
            request = etcdrpc.MemberListRequest()
            return self._unary(url, "Cluster", "MemberList", request, "MemberList")

        response = self._first_answer("MemberList", call)
        return [
            Member(
                id=member.ID,
                name=member.name,
                peer_urls=tuple(member.peerURLs),
                client_urls=tuple(member.clientURLs),
                is_learner=bool(_unknown_fields(member).get(_MEMBER_IS_LEARNER, [0])[-1]),
            )
            for member in response.members
        ]

    def alarms(self) -> list[Alarm]:
        """Every alarm raised in the cluster (etcd keeps them cluster-wide)."""
        etcdrpc = _etcdrpc()

        def call(url: str) -> Any:
            request = etcdrpc.AlarmRequest(
                action=etcdrpc.AlarmRequest.GET, memberID=0, alarm=etcdrpc.NONE
            )
            return self._unary(url, "Maintenance", "Alarm", request, "Alarm list")

        response = self._first_answer("Alarm list", call)
        return [
            Alarm(member_id=a.memberID, kind=_ALARM_KINDS.get(a.alarm, f"UNKNOWN({a.alarm})"))
            for a in response.alarms
        ]

    def count_keys(self, revision: int | None = None) -> int:
        """How many keys the whole keyspace holds (at a revision), without reading any value."""
        etcdrpc = _etcdrpc()

        def call(url: str) -> Any:
            # key and range_end "\0" mean every key; count_only returns no key-values
            request = etcdrpc.RangeRequest(
                key=b"\0", range_end=b"\0", count_only=True, revision=revision or 0
            )
            return self._unary(url, "KV", "Range", request, "key count")

        return int(self._first_answer("key count", call).count)

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> int:
        """Write key-values in one transaction (one raft entry); returns the new revision."""
        # a member that timed out may have applied the puts before the next one is asked:
        # writing the same values twice is harmless for the sample data this serves
        etcdrpc = _etcdrpc()

        def call(url: str) -> Any:
            request = etcdrpc.TxnRequest(
                success=[
                    etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value))
                    for key, value in items
                ]
            )
            return self._unary(url, "KV", "Txn", request, f"a transaction of {len(items)} puts")

        return int(self._first_answer("put", call).header.revision)

    def get_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under a prefix, in key order, and the store's revision when it was read."""
        etcdrpc = _etcdrpc()
        request = etcdrpc.RangeRequest(key=prefix, range_end=_prefix_end(prefix))

        def call(url: str) -> Any:
            return self._unary(url, "KV", "Range", request, f"a read of {prefix!r}")

        response = self._first_answer("Range", call)
        kvs = [KeyValue(kv.key, kv.value) for kv in response.kvs]
        return kvs, int(response.header.revision)

    def delete_keys(self, keys: Sequence[bytes]) -> int:
        """Delete exact keys in one transaction (etcd allows deletes under NOSPACE)."""
        etcdrpc = _etcdrpc()
        request = etcdrpc.TxnRequest(
            success=[
                etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key))
                for key in keys
            ]
        )

        def call(url: str) -> Any:
            return self._unary(url, "KV", "Txn", request, f"a transaction of {len(keys)} deletes")

        return int(self._first_answer("delete", call).header.revision)

    def compact(self, revision: int, *, physical: bool, timeout: float) -> bool:
        """Drop history before revision, cluster-wide; False when etcd had already dropped it."""
        etcdrpc = _etcdrpc()
        request = etcdrpc.CompactionRequest(revision=revision, physical=physical)

        def call(url: str) -> bool:
            what = f"compaction to revision {revision}"
            try:
                self._unary(url, "KV", "Compact", request, what, timeout=timeout)
            except RevisionCompacted:
                return False  # kube-apiserver (or another node) compacted further already
            return True

        return self._first_answer("Compact", call)

    def oldest_revision(self, current: int) -> int:
        """The oldest revision etcd still keeps (1 until the first compaction)."""
        # etcd 3.5 does not report its compaction revision over gRPC; a read at a revision fails
        # exactly when that revision was compacted away, so bisect on that (about 30 tiny reads)
        etcdrpc = _etcdrpc()

        def readable(revision: int) -> bool:
            request = etcdrpc.RangeRequest(key=b"\0", revision=revision, count_only=True)

            def call(url: str) -> bool:
                try:
                    self._unary(url, "KV", "Range", request, f"a read at revision {revision}")
                except RevisionCompacted:
                    return False
                return True

            return self._first_answer("Range", call)

        unreadable, oldest = 0, current
        while oldest - unreadable > 1:
            middle = (unreadable + oldest) // 2
            if readable(middle):
                oldest = middle
            else:
                unreadable = middle
        return oldest

    def defragment(self, endpoint: str, timeout: float) -> None:
        """Defragment one member's backend; it blocks that member (and only it) while it runs."""
        etcdrpc = _etcdrpc()
        url = _normalize(endpoint, self._tls)
        request = etcdrpc.DefragmentRequest()
        self._unary(url, "Maintenance", "Defragment", request, "defragmentation", timeout=timeout)

    def disarm(self, alarm: Alarm) -> None:
        """Clear a raised alarm once its cause is gone, so the cluster accepts writes again."""
        etcdrpc = _etcdrpc()
        kind = next(code for code, name in _ALARM_KINDS.items() if name == alarm.kind)
        request = etcdrpc.AlarmRequest(
            action=etcdrpc.AlarmRequest.DEACTIVATE, memberID=alarm.member_id, alarm=kind
        )

        def call(url: str) -> Any:
            return self._unary(url, "Maintenance", "Alarm", request, f"disarming {alarm.kind}")

        self._first_answer("Alarm disarm", call)

    def snapshot_stream(self, endpoint: str | None = None) -> SnapshotStream:
        """Stream a snapshot from one member (the first that answers), without buffering it."""
        etcdrpc = _etcdrpc()

        def open_stream(url: str) -> SnapshotStream:
            status = self.status(url)
            connection = self._connection(url)
            call = connection.stub("Maintenance").Snapshot(
                etcdrpc.SnapshotRequest(),
                timeout=self.config.snapshot_timeout,
                metadata=connection.metadata,
            )
            timeout, user = self.config.snapshot_timeout, self.config.user
            return SnapshotStream(
                SnapshotSource(url, status),
                call,
                lambda exc: _rpc_error(exc, url, "the snapshot", timeout, user),
            )

        if endpoint is not None:
            return open_stream(_normalize(endpoint, self._tls))
        return self._first_answer("Snapshot", open_stream)

    def _unary(
        self, url: str, service: str, method: str, request: Any, what: str,
        timeout: float | None = None,
    ) -> Any:
        grpc = _grpc()
        connection = self._connection(url)
        timeout = timeout or self.config.command_timeout
        try:
            return getattr(connection.stub(service), method)(
                request, timeout=timeout, metadata=connection.metadata
            )
        except grpc.RpcError as exc:
            raise _rpc_error(exc, url, what, timeout, self.config.user) from exc

    def _first_answer(self, what: str, call: Callable[[str], T]) -> T:
        # members that failed earlier in this session go last, so one dead member does not
        # cost a dial timeout on every call
        ordered = sorted(self.endpoints, key=lambda url: url in self._down)
        failures: list[str] = []
        for url in ordered:
            try:
                result = call(url)
            except _Unreachable as exc:
                self._down.add(url)
                failures.append(exc.message)
                continue
            self._down.discard(url)
            return result
        raise EtcdUnavailableError(
            f"no etcd endpoint answered {what}: " + "; ".join(failures), ENDPOINT_HINT
        )

    def _connection(self, url: str) -> _Connection:
        with self._lock:
            connection = self._connections.get(url)
        if connection is not None:
            return connection
        connection = self._connect(url)
        with self._lock:
            existing = self._connections.setdefault(url, connection)
        if existing is not connection:  # another thread connected first
            connection.channel.close()
        return existing

    def _connect(self, url: str) -> _Connection:
        grpc = _grpc()
        target = urlsplit(url).netloc
        if url.startswith("https://"):
            channel = grpc.secure_channel(target, self._tls_credentials(), options=_CHANNEL_OPTIONS)
        else:
            channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        connection = _Connection(channel)
        try:
            self._wait_ready(connection, url)
            connection.metadata = self._authenticate(connection, url)
        except BaseException:
            channel.close()
            raise
        return connection

    def _wait_ready(self, connection: _Connection, url: str) -> None:
        grpc, etcdrpc = _grpc(), _etcdrpc()
        dial = self.config.dial_timeout
        try:
            grpc.channel_ready_future(connection.channel).result(timeout=dial)
            return
        except grpc.FutureTimeoutError:
            pass
        # the ready future only says "not ready"; a fail-fast call returns grpc's last connect
        # error, which tells a refused connection from a TLS or DNS problem
        try:
            connection.stub("Maintenance").Status(etcdrpc.StatusRequest(), timeout=_PROBE_TIMEOUT)
            return
        except grpc.RpcError as exc:
            details = exc.details() or ""
        raise _dial_error(url, details, dial)

    def _authenticate(self, connection: _Connection, url: str) -> tuple[tuple[str, str], ...]:
        grpc, etcdrpc = _grpc(), _etcdrpc()
        if not self.config.user:
            return ()
        try:
            password = self.config.resolved_password()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the etcd password file {self.config.password_file}: {exc.strerror}",
                "check [etcd] password_file and its permissions",
            ) from exc
        if password is None:
            raise ConfigError(
                f"[etcd] user {self.config.user!r} is set but no password is configured",
                "set [etcd] password_file, or ETCDCTL_PASSWORD / ETCDOPS_ETCD_PASSWORD",
            )
        request = etcdrpc.AuthenticateRequest(name=self.config.user, password=password)
        try:
            response = connection.stub("Auth").Authenticate(
                request, timeout=self.config.command_timeout
            )
        except grpc.RpcError as exc:
            if "authentication is not enabled" in (exc.details() or ""):
                return ()  # as etcdctl does: credentials for a cluster without auth are unused
            timeout = self.config.command_timeout
            raise _rpc_error(exc, url, "authentication", timeout, self.config.user) from exc
        # simple tokens are per member, so each connection authenticates on its own
        return (("token", response.token),)

    def _tls_credentials(self) -> Any:
        grpc = _grpc()
        if (self.config.cert is None) != (self.config.key is None):
            raise ConfigError(
                "[etcd] cert and key must be set together for client-certificate auth",
                "set both [etcd] cert and key (ETCDCTL_CERT / ETCDCTL_KEY), or neither",
            )
        files = {}
        for name in ("cacert", "cert", "key"):
            path = getattr(self.config, name)
            try:
                files[name] = path.read_bytes() if path is not None else None
            except OSError as exc:
                raise ConfigError(
                    f"cannot read [etcd] {name} {path}: {exc.strerror}",
                    "check the path and its permissions",
                ) from exc
        # no cacert means the system's trust store, as etcdctl does
        return grpc.ssl_channel_credentials(
            root_certificates=files["cacert"],
            private_key=files["key"],
            certificate_chain=files["cert"],
        )


def prepare_grpc_environment() -> None:
    """Give grpc etcdops' settings where the environment has none; before grpc is imported.

    grpc's C core reads them once, when grpc is first imported.
    """
    for name, value in _GRPC_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def _grpc() -> Any:
    prepare_grpc_environment()
    import grpc

    return grpc


def _etcdrpc() -> Any:
    _grpc()  # etcd3 imports grpc: the environment above must be set first
    from etcd3 import etcdrpc

    return etcdrpc


def _unknown_fields(message: Any) -> dict[int, list[Any]]:
    from google.protobuf.unknown_fields import UnknownFieldSet

    fields: dict[int, list[Any]] = {}
    for unknown in UnknownFieldSet(message):
        fields.setdefault(unknown.field_number, []).append(unknown.data)
    return fields


def _dial_error(url: str, details: str, dial: float) -> EtcdopsError:
    """Why a connection failed, from grpc's last connect error, in the operator's terms."""
    reason = details.rsplit("last error: ", 1)[-1]
    reason = re.sub(r"^\w+: ipv[46]:\S+: ", "", reason)  # "UNKNOWN: ipv4:127.0.0.1:2379: "
    lowered = reason.lower()
    if any(marker in lowered for marker in ("handshake", "ssl", "tls")):
        openssl = re.search(r"OPENSSL_internal:(.*?)(?:: OK)?$", reason)
        detail = openssl.group(1) if openssl else reason
        meaning = next((text for code, text in _TLS_FAILURES.items() if code in detail), None)
        return EtcdUnavailableError(
            f"TLS handshake with etcd at {url} failed: "
            + (f"{meaning} ({detail})" if meaning else detail),
            TLS_HINT,
        )
    if "socket closed" in lowered and url.startswith("http://"):
        return EtcdUnavailableError(
            f"etcd at {url} closed the plaintext connection: does it serve TLS only?", TLS_HINT
        )
    if "connection refused" in lowered:
        reason = "connection refused"
    elif "deadline" in lowered or not reason:
        reason = "no answer"
    return _Unreachable(f"etcd at {url} is unreachable: {reason} within {dial:g}s", ENDPOINT_HINT)


def _rpc_error(exc: Any, url: str, what: str, timeout: float, user: str | None) -> EtcdopsError:
    """The operator's view of a grpc error: names the endpoint and what to check."""
    grpc = _grpc()
    code, details = exc.code(), exc.details() or ""
    lowered = details.lower()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return _Unreachable(
            f"etcd at {url} did not finish {what} within {timeout:g}s",
            "the member may be overloaded or without a leader; if it is only slow, raise "
            "the timeout in [etcd]",
        )
    who = f"user {user!r}" if user else "no user"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return EtcdUnavailableError(
            f"etcd at {url} refused {what} to {who}: permission denied",
            "snapshot, defrag and alarms are admin calls: use a user with the root role",
        )
    if code == grpc.StatusCode.UNAUTHENTICATED or any(
        marker in lowered
        for marker in ("authentication failed", "user name is empty", "invalid auth token")
    ):
        return EtcdUnavailableError(
            f"etcd at {url} refused {what}: authentication failed as {who} ({details})", AUTH_HINT
        )
    if code == grpc.StatusCode.OUT_OF_RANGE and "has been compacted" in lowered:
        return RevisionCompacted(f"etcd at {url} refused {what}: {details}")
    if code == grpc.StatusCode.UNAVAILABLE:
        return _Unreachable(f"etcd at {url} could not serve {what}: {details}", ENDPOINT_HINT)
    if "database space exceeded" in lowered:
        return EtcdUnavailableError(
            f"etcd at {url} refused {what}: {details} (NOSPACE alarm)",
            "compact and defragment etcd (etcdctl compact / defrag), then disarm the alarm",
        )
    return EtcdUnavailableError(f"etcd at {url} failed {what}: {details} ({code.name})")


def _prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes a Range cover every key starting with prefix (as etcdctl does)."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"  # a prefix of only 0xff bytes: every key from it to the end
    end[-1] += 1
    return bytes(end)


def _normalize(endpoint: str, tls: bool) -> str:
    """scheme://host:port for an endpoint given as a URL or as host:port (etcdctl accepts both)."""
    text = endpoint.strip()
    if "://" not in text:
        text = ("https://" if tls else "http://") + text
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ConfigError(
            f"invalid etcd endpoint {endpoint!r}",
            "write endpoints as http://host:port or https://host:port",
        )
    netloc = parts.netloc if port else f"{parts.netloc}:{DEFAULT_CLIENT_PORT}"
    return f"{parts.scheme}://{netloc}"
