"""age's payload: STREAM, a file cut into 64 KiB chunks, each sealed with ChaCha20-Poly1305
under a counter nonce whose last byte marks the final chunk, so that a cut, a reordering or an
appended chunk fails authentication."""

from __future__ import annotations

from collections.abc import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from etcdops.crypto.age_header import DAMAGED_HINT, TAG_LEN
from etcdops.errors import IntegrityError

CHUNK = 64 * 1024
ENC_CHUNK = CHUNK + TAG_LEN

TRUNCATED_HINT = "the copy is incomplete (interrupted transfer?); fetch it again or use a replica"


def chunk_nonce(counter: int, last: bool) -> bytes:
    """The nonce of chunk number counter: big-endian, its last byte 1 for the final chunk."""
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class HoldBack:
    """Cuts a stream into fixed-size chunks, keeping the newest one until more data shows it
    is not the final chunk (STREAM marks the final chunk, so that cannot be decided early)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pending = bytearray()

    def feed(
        self, data: bytes | bytearray | memoryview
    ) -> Iterator[bytes | bytearray | memoryview]:
        """Yield every chunk that more data is now known to follow."""
        view = memoryview(data)
        pos = 0
        pending = self._pending
        if pending:
            pos = min(self._size - len(pending), len(view))
            pending += view[:pos]
            if pos == len(view):
                return
            # A new buffer rather than clear(): the caller may still hold the yielded one.
            self._pending = bytearray()
            yield pending
        while len(view) - pos > self._size:
            yield view[pos : pos + self._size]
            pos += self._size
        self._pending += view[pos:]

    def tail(self) -> bytearray:
        """The last chunk (at most `size` bytes, possibly empty), once the stream has ended."""
        return self._pending


class PayloadOpener:
    """Decrypts and authenticates the STREAM payload that follows the header and nonce."""

    def __init__(self, payload_key: bytes) -> None:
        self._aead = ChaCha20Poly1305(payload_key)
        self._chunks = HoldBack(ENC_CHUNK)
        self._counter = 0

    def update(self, *parts: bytes | bytearray | memoryview) -> bytes:
        """The plaintext of every chunk that more data is now known to follow."""
        chunks = (chunk for part in parts for chunk in self._chunks.feed(part))
        return b"".join([self._open_middle(chunk) for chunk in chunks])

    def finish(self) -> bytes:
        """The final chunk's plaintext, once the payload has ended; fails if it was cut."""
        chunk = self._chunks.tail()
        if len(chunk) < TAG_LEN:
            raise IntegrityError(
                f"age file is truncated: chunk {self._counter} is cut short", TRUNCATED_HINT
            )
        plaintext = self._open(chunk, last=True)
        if plaintext is None:
            if len(chunk) == ENC_CHUNK and self._open(chunk, last=False) is not None:
                raise IntegrityError(
                    f"age file is truncated: it ends after chunk {self._counter} "
                    "without a final chunk",
                    TRUNCATED_HINT,
                )
            raise self._tampered()
        if not plaintext and self._counter:
            raise IntegrityError("age file is invalid: its final chunk is empty", DAMAGED_HINT)
        return plaintext

    def _open_middle(self, chunk: bytes | bytearray | memoryview) -> bytes:
        plaintext = self._open(chunk, last=False)
        if plaintext is None:
            if self._open(chunk, last=True) is not None:
                raise IntegrityError(
                    "age file has data after its final chunk (appended or spliced)",
                    DAMAGED_HINT,
                )
            raise self._tampered()
        self._counter += 1
        return plaintext

    def _open(self, chunk: bytes | bytearray | memoryview, last: bool) -> bytes | None:
        try:
            return self._aead.decrypt(chunk_nonce(self._counter, last), chunk, None)
        except InvalidTag:
            return None

    def _tampered(self) -> IntegrityError:
        return IntegrityError(
            f"age payload chunk {self._counter} failed authentication: the data was modified",
            DAMAGED_HINT,
        )
