"""A loopback TCP proxy that can damage what a real server sends, for fault tests.

It sits between etcdops and a real etcd (or S3 server) and, on the server-to-client direction,
can flip one byte at an offset, cut the connection after a number of bytes, or slow the stream.
Nothing is mocked: the client and the server speak their real protocols through it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class Faults:
    flip_at: int | None = None  # flip one byte at this offset of the server's reply stream
    cut_after: int | None = None  # close both sides once the server has sent this many bytes
    delay_per_chunk: float = 0.0  # seconds to sleep per forwarded chunk from the server


class FaultProxy:
    """Listens on 127.0.0.1:<port> and forwards every connection to target."""

    def __init__(self, target_host: str, target_port: int, faults: Faults | None = None) -> None:
        self.target = (target_host, target_port)
        self.faults = faults or Faults()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.server_bytes = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_server:
                    data = self._damage(data)
                    if data is None:
                        break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _damage(self, data: bytes) -> bytes | None:
        faults = self.faults
        with self._lock:
            start = self.server_bytes
            self.server_bytes += len(data)
        if faults.delay_per_chunk:
            time.sleep(faults.delay_per_chunk)
        if faults.cut_after is not None and self.server_bytes > faults.cut_after:
            return None
        if faults.flip_at is not None and start <= faults.flip_at < start + len(data):
            damaged = bytearray(data)
            damaged[faults.flip_at - start] ^= 0x5A
            return bytes(damaged)
        return data

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()
