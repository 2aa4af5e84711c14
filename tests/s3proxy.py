"""An HTTP proxy in front of the moto server that fails chosen S3 requests, for fault tests.

tests/faultproxy.py damages a TCP byte stream; S3 faults are per request (a 500 on the second
part, a reset during one PUT), so this proxy understands HTTP just enough to pick requests out.
Everything else is forwarded to moto as it came, bodies streamed in blocks.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BLOCK = 1 << 16
# headers that describe one hop, not the request: the proxy speaks its own HTTP on each side
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade", "expect"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names in lower case

    def param(self, name: str) -> str | None:
        """One query parameter, e.g. partNumber."""
        values = parse_qs(self.query, keep_blank_values=True).get(name)
        return values[0] if values else None


Match = Callable[[Request], bool]


def upload_part(number: int) -> Match:
    """Matches the PUT of one part of a multipart upload (not a part copy)."""
    return lambda r: (
        r.method == "PUT"
        and r.param("partNumber") == str(number)
        and "x-amz-copy-source" not in r.headers
    )


def complete_upload(r: Request) -> bool:
    """Matches CompleteMultipartUpload."""
    return r.method == "POST" and r.param("uploadId") is not None


def list_uploads(r: Request) -> bool:
    """Matches ListMultipartUploads (GET /bucket?uploads)."""
    return r.method == "GET" and r.param("uploads") is not None


def put_object(r: Request) -> bool:
    """Matches PutObject: a PUT that is neither a part nor a copy."""
    return (r.method == "PUT" and r.param("partNumber") is None
            and "x-amz-copy-source" not in r.headers)


def delete_objects(r: Request) -> bool:
    """Matches DeleteObjects (POST /bucket?delete)."""
    return r.method == "POST" and r.param("delete") is not None


def delete_object(r: Request) -> bool:
    """Matches DeleteObject."""
    return r.method == "DELETE" and r.param("uploadId") is None


def carries_checksum(r: Request) -> bool:
    """Matches any request with an S3 flexible-checksum header (x-amz-checksum-*, including
    x-amz-checksum-mode on reads, or x-amz-sdk-checksum-algorithm)."""
    return any(name.startswith("x-amz-checksum") or name == "x-amz-sdk-checksum-algorithm"
               for name in r.headers)


# S3's own words for the refusals S3-compatible servers answer (AWS, MinIO, Ceph, R2 alike)
NOT_IMPLEMENTED = "A header you provided implies functionality that is not implemented"
ACCESS_DENIED = "Access Denied"


@dataclass
class _Rule:
    match: Match
    # fail, answer (a body of the test's own, not forwarded), reset, drop (forward, then reset
    # instead of replying), delay or hang
    action: str
    nth: int
    times: int
    status: int = 500
    code: str = "InternalError"
    message: str = "injected by S3FaultProxy"
    seconds: float = 0.0
    body: bytes = b""
    seen: int = 0

    def fires(self, request: Request) -> bool:
        if not self.match(request):
            return False
        self.seen += 1
        return self.nth <= self.seen < self.nth + self.times


class S3FaultProxy:
    """Listens on 127.0.0.1:<port> and forwards every request to the S3 server at target_url."""

    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        self._target = (target.hostname or "127.0.0.1", target.port or 80)
        self._rules: list[_Rule] = []
        self._released = threading.Event()  # lets hung requests go when the proxy closes
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._in_flight = 0
        self.requests: list[Request] = []  # every request seen, in arrival order
        self.peak_in_flight = 0  # most requests being forwarded at once
        self.is_down = False
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def fail(self, match: Match, *, nth: int = 1, times: int = 1, status: int = 500,
             code: str = "InternalError", message: str = "injected by S3FaultProxy") -> None:
        """Answer an S3 error (500 InternalError by default) to the nth matching request and
        the times-1 matching requests after it."""
        self._add(_Rule(match, "fail", nth, times, status=status, code=code, message=message))

    def refuse(self, match: Match, status: int, code: str, message: str) -> None:
        """Answer every matching request with an S3 error, as a server that does not implement
        the call (501 NotImplemented) or credentials that may not make it (403 AccessDenied)."""
        self.fail(match, times=1 << 62, status=status, code=code, message=message)

    def answer(self, match: Match, body: str, *, nth: int = 1) -> None:
        """Answer the nth matching request with 200 and this XML body instead of forwarding it,
        as S3 answers what moto never does (a DeleteObjects result that names keys it kept)."""
        self._add(_Rule(match, "answer", nth, 1, status=200, body=body.encode()))

    def reset(self, match: Match, *, nth: int = 1, times: int = 1,
              after_forward: bool = False) -> None:
        """Reset the connection halfway through the body of the nth matching request, or, with
        after_forward, once the server has handled it (the reply is lost)."""
        self._add(_Rule(match, "drop" if after_forward else "reset", nth, times))

    def delay(self, match: Match, seconds: float) -> None:
        """Hold every matching request this long before forwarding it (a slow link)."""
        self._add(_Rule(match, "delay", 1, 1 << 62, seconds=seconds))

    def hang(self, match: Match = lambda r: True, *, nth: int = 1) -> None:
        """From the nth matching request on, take each matching request and never answer it
        (nor read its body), as a stopped server would: the client waits until it times out."""
        self._add(_Rule(match, "hang", nth, 1 << 62))

    def down(self) -> None:
        """Refuse everything from now on: stop listening and reset open connections on use."""
        self.is_down = True
        self._server.shutdown()
        self._server.server_close()

    def close(self) -> None:
        """Stop, and drop the connections clients keep open."""
        self._released.set()
        if not self.is_down:
            self.down()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def count(self, match: Match) -> int:
        """How many requests seen so far match."""
        with self._lock:
            return sum(1 for request in self.requests if match(request))

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _rule_for(self, request: Request) -> _Rule | None:
        with self._lock:
            self.requests.append(request)
            # every rule counts its own matches, so rules do not shift each other's nth
            firing = [rule for rule in self._rules if rule.fires(request)]
        return firing[0] if firing else None

    @contextlib.contextmanager
    def _forwarding(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 for keep-alive and for the "100 Continue" botocore waits for before a body
    protocol_version = "HTTP/1.1"
    proxy: S3FaultProxy

    def setup(self) -> None:
        super().setup()
        with self.proxy._lock:
            self.proxy._connections.add(self.connection)

    def finish(self) -> None:
        with self.proxy._lock:
            self.proxy._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        pass  # tests read proxy.requests; per-request lines on stderr are noise

    def _handle(self) -> None:
        if self.proxy.is_down:
            return self._reset()
        url = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(self.command, url.path, url.query, headers)
        length = int(self.headers.get("Content-Length") or 0)
        rule = self.proxy._rule_for(request)
        action = rule.action if rule else "forward"
        if action == "reset":
            self._drain(length // 2)
            return self._reset()
        if action == "hang":
            self.proxy._released.wait()
            with contextlib.suppress(OSError):  # close() may have shut the connection already
                self._reset()
            return None
        if action == "fail":
            assert rule is not None
            self._drain(length)
            return self._send_error(rule.status, rule.code, rule.message)
        if action == "answer":
            assert rule is not None
            self._drain(length)
            return self._send_body(rule.status, rule.body)
        with self.proxy._forwarding():
            if rule is not None and action == "delay":
                time.sleep(rule.seconds)
            self._forward(length, lose_reply=action == "drop")

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    def _forward(self, length: int, *, lose_reply: bool) -> None:
        upstream = http.client.HTTPConnection(*self.proxy._target, timeout=60)
        try:
            # the client signed its own Host header: pass it on unchanged
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.endheaders()
            remaining = length
            while remaining:
                block = self.rfile.read(min(BLOCK, remaining))
                if not block:
                    raise ConnectionError("the client closed the connection mid-body")
                upstream.send(block)
                remaining -= len(block)
            response = upstream.getresponse()
            if lose_reply:
                response.read()
                return self._reset()
            self.send_response_only(response.status, response.reason)
            body_length = response.getheader("Content-Length")
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            body = b""
            if body_length is None:  # moto replies without a length only for small bodies
                body = response.read()
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            while block := response.read(BLOCK):
                self.wfile.write(block)
        finally:
            upstream.close()

    def _drain(self, length: int) -> None:
        while length > 0:
            block = self.rfile.read(min(BLOCK, length))
            if not block:
                return
            length -= len(block)

    def _send_error(self, status: int, code: str, message: str) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<Resource>{urlsplit(self.path).path}</Resource>"
            "<RequestId>s3faultproxy</RequestId></Error>"
        ).encode()
        # a HEAD's answer has no body, as S3's (botocore then knows the status alone)
        if self.command == "HEAD":
            body = b""
        self._send_body(status, body)

    def _send_body(self, status: int, body: bytes) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        """Close with a TCP RST, as a crashed server or a middlebox would."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # close the descriptor itself: rfile holds a reference that would keep it open
        os.close(self.connection.detach())
