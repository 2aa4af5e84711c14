"""The one encode and the one decode chain: how a stored object is made and read back.

encode: [etcd snapshot check ->] zstd -> age -> sha256 and size of the stored bytes -> sink
decode: sha256 and size of the stored bytes -> age -> zstd [-> etcd snapshot check] -> sink

(Encoder and Decoder are the plain chains; the Snapshot ones add etcd's checks: the journal's
segments use the plain ones. A snapshot is decoded on three threads, a restore's largest
cost after etcdutl: see SnapshotDecoder.)

An encoder's preamble (zstd skippable frames, etcdops.stream.frames) goes into age ahead of the
first compressed byte: inside the same encryption, and skipped by every zstd decoder.

Every user (save, read-back, a streamed copy's check, the journal's segments) builds its chain
here, so the order of the stages and of their closing lives in one place.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Self

from etcdops.stream.handoff import Handoff
from etcdops.stream.writers import (
    AgeDecrypt,
    AgeEncrypt,
    Digest,
    SnapshotTrailerCheck,
    Writer,
    ZstdCompress,
    ZstdDecompress,
)

if TYPE_CHECKING:
    from etcdops.crypto.age import Identity, Recipient


class Encoder:
    """Plain bytes in, compressed and encrypted bytes to sink; `stored` counts and hashes them."""

    def __init__(
        self, sink: Writer, recipients: Sequence[Recipient], level: int, preamble: bytes = b""
    ) -> None:
        self.stored = Digest(sink)
        self._encrypt = AgeEncrypt(self.stored, recipients)
        if preamble:
            self._encrypt.write(preamble)
        self._compress = ZstdCompress(self._encrypt, level)

    def write(self, data: bytes, /) -> int:
        return self._compress.write(data)

    def close(self) -> None:
        """Write the last compressed frame and the last encrypted chunk."""
        self._compress.close()
        self._encrypt.close()


class SnapshotEncoder:
    """An etcd snapshot in, checked as it passes (bbolt's first page, etcd's sha256 trailer),
    then encoded; `plain` and `stored` count what went in and what came out."""

    def __init__(
        self, sink: Writer, recipients: Sequence[Recipient], level: int, source: str,
        preamble: bytes = b"",
    ) -> None:
        self._encoder = Encoder(sink, recipients, level, preamble)
        self.stored = self._encoder.stored
        self.plain = SnapshotTrailerCheck(self._encoder, source)

    def write(self, data: bytes, /) -> int:
        return self.plain.write(data)

    def close(self) -> str:
        """The database's sha256, checked against etcd's trailer before the encoding ends."""
        db_sha256 = self.plain.verify()
        self._encoder.close()
        return db_sha256


class _Abandonable(abc.ABC):
    """A chain with threads of its own, which every way out must stop before its sink goes."""

    @abc.abstractmethod
    def abandon(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abandon()

    @contextlib.contextmanager
    def _abandoned_on_failure(self) -> Iterator[None]:
        """A failure raised here has stopped the threads already, wherever it was caught."""
        try:
            yield
        except BaseException:
            self.abandon()
            raise


class Decoder(_Abandonable):
    """Stored bytes in (counted and hashed as they come, in `stored`), decrypted and
    decompressed on the way to sink; `what` names the content in a zstd error.

    threaded: zstd and what follows it run on a thread of their own (a Handoff after age), so
    that a large object's reading, hashing and decryption overlap its decompression. A write or
    finish that fails has stopped that thread already; whoever gives up for another reason
    (Ctrl-C, a failed read) calls abandon() before the sink goes away, or uses the decoder as a
    context manager, which does.
    """

    def __init__(
        self, sink: Writer, identities: Sequence[Identity], what: str = "snapshot", *,
        threaded: bool = False,
    ) -> None:
        self._decompress = ZstdDecompress(sink, what)
        self._handoff = Handoff(self._decompress, "etcdops-zstd") if threaded else None
        self._decrypt = AgeDecrypt(self._handoff or self._decompress, identities)
        self.stored = Digest(self._decrypt)

    def write(self, data: bytes, /) -> int:
        with self._abandoned_on_failure():
            return self.stored.write(data)

    def finish(self) -> None:
        """End decryption (age authenticates the last chunk here) and decompression."""
        with self._abandoned_on_failure():
            self._decrypt.close()
            if self._handoff is not None:
                self._handoff.close()  # zstd's thread is done: its close is this thread's
            self._decompress.close()

    def abandon(self) -> None:
        """Stop the decoder's thread, if any, without finishing; harmless after finish()."""
        if self._handoff is not None:
            self._handoff.abandon()


class SnapshotDecoder(_Abandonable):
    """Stored bytes in (hashed as they come), decrypted and decompressed when identities are
    given (None: a plain snapshot file), then checked as an etcd snapshot on the way to sink.

    Three threads share the work, each joined to the next by a bounded Handoff: the caller's
    reads the object, hashes it and decrypts it; one decompresses; one hashes the plaintext for
    etcd's trailer and writes it to sink. Each stage's C code (OpenSSL's sha256, zstd,
    ChaCha20-Poly1305, the file write) releases the GIL on a whole buffer, so they overlap on
    as many cores as there are. Failures and abandon() behave as Decoder's.
    """

    def __init__(
        self, sink: Writer, identities: Sequence[Identity] | None, source: str
    ) -> None:
        self.plain = SnapshotTrailerCheck(sink, source)
        self._handoff = Handoff(self.plain, "etcdops-plaintext")
        self._decoder = (
            Decoder(self._handoff, identities, threaded=True) if identities is not None else None
        )
        self.stored = self._decoder.stored if self._decoder else Digest(self._handoff)

    def write(self, data: bytes, /) -> int:
        with self._abandoned_on_failure():
            if self._decoder is not None:
                return self._decoder.write(data)
            return self.stored.write(data)

    def finish(self) -> None:
        """End decryption (age authenticates the last chunk here) and decompression, and wait
        until sink has every byte."""
        with self._abandoned_on_failure():
            if self._decoder is not None:
                self._decoder.finish()
            self._handoff.close()

    def verify(self) -> str:
        """The database's sha256; IntegrityError when it does not match etcd's trailer."""
        return self.plain.verify()

    def abandon(self) -> None:
        """Stop the decoder's threads without finishing, the one writing to sink first;
        harmless after finish()."""
        self._handoff.abandon()
        if self._decoder is not None:
            self._decoder.abandon()
