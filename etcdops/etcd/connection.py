"""Connections to etcd with TLS, auth and timeouts, and what a grpc failure means to an operator.

`Connections` opens one channel per endpoint on first use, authenticates it, and runs a call on
one named member (`_unary`) or on the first member that answers (`_first_answer`). The calls
themselves live by etcd service in kv.py, maintenance.py and cluster.py, and session.py puts
them together. Every grpc failure is turned into an EtcdopsError here (`rpc_error`, and
`dial_error` for a channel that never connected), so messages name the endpoint and say what
to check.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

from etcdops.config import EtcdConfig
from etcdops.errors import ConfigError, EtcdopsError, EtcdUnavailableError
from etcdops.etcd.rpc import import_etcdrpc, import_grpc

ENDPOINT_HINT = "check [etcd] endpoints / ETCDCTL_ENDPOINTS and that etcd is running"
AUTH_HINT = "check [etcd] user / ETCDCTL_USER and password_file (or ETCDCTL_PASSWORD)"
TLS_HINT = (
    "check [etcd] cacert / cert / key (ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY) and that "
    "the endpoint scheme matches the server (https:// for TLS)"
)
DEFAULT_CLIENT_PORT = 2379

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
_TLS_FAILURES = {
    "CERTIFICATE_VERIFY_FAILED": "the server's certificate is not signed by the configured CA",
    "BAD_CERTIFICATE": "the server wants a client certificate it trusts",
    "CERTIFICATE_REQUIRED": "the server wants a client certificate it trusts",
    "WRONG_VERSION_NUMBER": "the server does not speak TLS (use http://)",
}
# etcd's status codes are shared by several of its errors (api/v3rpc/rpctypes/error.go): within
# a code only the message tells them apart
_AUTH_FAILURES = ("authentication failed", "user name is empty")  # INVALID_ARGUMENT
_COMPACTED = "has been compacted"  # OUT_OF_RANGE, as is "a future revision"
_NOSPACE = "database space exceeded"  # RESOURCE_EXHAUSTED, as is "too many requests"
_AUTH_NOT_ENABLED = "authentication is not enabled"  # FAILED_PRECONDITION

T = TypeVar("T")


class RevisionCompacted(EtcdopsError):
    """A call named a revision that etcd has already compacted away."""


class Unreachable(EtcdUnavailableError):
    """The endpoint did not answer at all: another endpoint may serve the call instead."""


@dataclass
class Connection:
    """One member's channel, the auth token its calls carry, and the stubs made on it."""

    channel: Any
    metadata: tuple[tuple[str, str], ...] = ()
    stubs: dict[str, Any] = field(default_factory=dict)

    def stub(self, name: str) -> Any:
        """The stub of one etcd service (KV, Maintenance, Cluster, Auth...) on this channel."""
        etcdrpc = import_etcdrpc()
        if name not in self.stubs:
            self.stubs[name] = getattr(etcdrpc, f"{name}Stub")(self.channel)
        return self.stubs[name]


class Connections:
    """Connections to the configured etcd endpoints, opened on first use and closed together."""

    def __init__(self, config: EtcdConfig, endpoints: Sequence[str] | None = None) -> None:
        # etcdctl's rule for endpoints without a scheme: TLS when TLS files are configured
        self._tls = config.cacert is not None or config.cert is not None
        self.config = config
        self.endpoints = tuple(
            normalize_endpoint(e, self._tls)
            for e in (config.endpoints if endpoints is None else endpoints)
        )
        if not self.endpoints:
            raise ConfigError("no etcd endpoints configured", ENDPOINT_HINT)
        self._connections: dict[str, Connection] = {}
        self._down: set[str] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection (and so cancel any stream still open)."""
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            connection.channel.close()

    def _url(self, endpoint: str) -> str:
        return normalize_endpoint(endpoint, self._tls)

    def _unary(
        self, url: str, service: str, method: str, request: Any, what: str,
        timeout: float | None = None,
    ) -> Any:
        grpc = import_grpc()
        connection = self._connection(url)
        timeout = timeout or self.config.command_timeout
        try:
            return getattr(connection.stub(service), method)(
                request, timeout=timeout, metadata=connection.metadata
            )
        except grpc.RpcError as exc:
            raise rpc_error(exc, url, what, timeout, self.config.user) from exc

    def _first_answer(self, what: str, call: Callable[[str], T]) -> T:
        # members that failed earlier in this session go last, so one dead member does not
        # cost a dial timeout on every call
        ordered = sorted(self.endpoints, key=lambda url: url in self._down)
        failures: list[str] = []
        for url in ordered:
            try:
                result = call(url)
            except Unreachable as exc:
                self._down.add(url)
                failures.append(exc.message)
                continue
            self._down.discard(url)
            return result
        raise EtcdUnavailableError(
            f"no etcd endpoint answered {what}: " + "; ".join(failures), ENDPOINT_HINT
        )

    def _connection(self, url: str) -> Connection:
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

    def _connect(self, url: str) -> Connection:
        grpc = import_grpc()
        target = urlsplit(url).netloc
        if url.startswith("https://"):
            channel = grpc.secure_channel(target, self._tls_credentials(), options=_CHANNEL_OPTIONS)
        else:
            channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        connection = Connection(channel)
        try:
            self._wait_ready(connection, url)
            connection.metadata = self._authenticate(connection, url)
        except BaseException:
            channel.close()
            raise
        return connection

    def _wait_ready(self, connection: Connection, url: str) -> None:
        grpc, etcdrpc = import_grpc(), import_etcdrpc()
        dial = self.config.dial_timeout
        status = connection.stub("Maintenance").Status
        # A call that waits for the channel, not grpc.channel_ready_future: that subscribes to
        # the channel's connectivity, polled on a thread of grpc's own, which raises "Cannot
        # monitor channel state: Channel closed!" into stderr when the channel is closed at
        # the wrong moment (grpc/grpc#18995): a traceback an operator must never see.
        try:
            status(etcdrpc.StatusRequest(), timeout=dial, wait_for_ready=True)
            return
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.DEADLINE_EXCEEDED):
                return  # the member answered (a refusal is for the calls to say): connected
        # waiting only says "not ready"; a fail-fast call returns grpc's last connect error,
        # which tells a refused connection from a TLS or DNS problem
        try:
            status(etcdrpc.StatusRequest(), timeout=_PROBE_TIMEOUT)
            return
        except grpc.RpcError as exc:
            details = exc.details() or ""
        raise dial_error(url, details, dial)

    def _authenticate(self, connection: Connection, url: str) -> tuple[tuple[str, str], ...]:
        grpc, etcdrpc = import_grpc(), import_etcdrpc()
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
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and _AUTH_NOT_ENABLED in (
                exc.details() or ""
            ):
                return ()  # as etcdctl does: credentials for a cluster without auth are unused
            timeout = self.config.command_timeout
            raise rpc_error(exc, url, "authentication", timeout, self.config.user) from exc
        # simple tokens are per member, so each connection authenticates on its own
        return (("token", response.token),)

    def _tls_credentials(self) -> Any:
        grpc = import_grpc()
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


def dial_error(url: str, details: str, dial: float) -> EtcdopsError:
    """Why a connection failed, from grpc's last connect error, in the operator's terms."""
    # a channel that never connected has no status from etcd: grpc's text is all there is
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
    return Unreachable(f"etcd at {url} is unreachable: {reason} within {dial:g}s", ENDPOINT_HINT)


def rpc_error(exc: Any, url: str, what: str, timeout: float, user: str | None) -> EtcdopsError:
    """The operator's view of a grpc error: names the endpoint and what to check."""
    grpc = import_grpc()
    codes = grpc.StatusCode
    code, details = exc.code(), exc.details() or ""
    lowered = details.lower()
    if code == codes.DEADLINE_EXCEEDED:
        return Unreachable(
            f"etcd at {url} did not finish {what} within {timeout:g}s",
            "the member may be overloaded or without a leader; if it is only slow, raise "
            "the timeout in [etcd]",
        )
    who = f"user {user!r}" if user else "no user"
    if code == codes.PERMISSION_DENIED:
        return EtcdUnavailableError(
            f"etcd at {url} refused {what} to {who}: permission denied",
            "snapshot, defrag and alarms are admin calls: use a user with the root role",
        )
    if code == codes.UNAUTHENTICATED or (
        code == codes.INVALID_ARGUMENT and any(marker in lowered for marker in _AUTH_FAILURES)
    ):
        return EtcdUnavailableError(
            f"etcd at {url} refused {what}: authentication failed as {who} ({details})", AUTH_HINT
        )
    if code == codes.OUT_OF_RANGE and _COMPACTED in lowered:
        return RevisionCompacted(f"etcd at {url} refused {what}: {details}")
    if code == codes.UNAVAILABLE:
        return Unreachable(f"etcd at {url} could not serve {what}: {details}", ENDPOINT_HINT)
    if code == codes.RESOURCE_EXHAUSTED and _NOSPACE in lowered:
        return EtcdUnavailableError(
            f"etcd at {url} refused {what}: {details} (NOSPACE alarm)",
            "compact and defragment etcd (etcdctl compact / defrag), then disarm the alarm",
        )
    return EtcdUnavailableError(f"etcd at {url} failed {what}: {details} ({code.name})")


def normalize_endpoint(endpoint: str, tls: bool) -> str:
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
