"""The one encode and the one decode chain: how a stored object is made and read back.

encode: [etcd snapshot check ->] zstd -> age -> sha256 and size of the stored bytes -> sink
decode: sha256 and size of the stored bytes -> age -> zstd [-> etcd snapshot check] -> sink

(Encoder and Decoder are the plain chains; the Snapshot ones add etcd's checks: the journal's
segments use the plain ones.)

An encoder's preamble (zstd skippable frames, etcdops.stream.frames) goes into age ahead of the
first compressed byte: inside the same encryption, and skipped by every zstd decoder.

Every user (save, read-back, a streamed copy's check, the journal's segments) builds its chain
here, so the order of the stages and of their closing lives in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

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


class Decoder:
    """Stored bytes in (counted and hashed as they come, in `stored`), decrypted and
    decompressed on the way to sink; `what` names the content in a zstd error."""

    def __init__(
        self, sink: Writer, identities: Sequence[Identity], what: str = "snapshot"
    ) -> None:
        self._decompress = ZstdDecompress(sink, what)
        self._decrypt = AgeDecrypt(self._decompress, identities)
        self.stored = Digest(self._decrypt)

    def write(self, data: bytes, /) -> int:
        return self.stored.write(data)

    def finish(self) -> None:
        """End decryption (age authenticates the last chunk here) and decompression."""
        self._decrypt.close()
        self._decompress.close()


class SnapshotDecoder:
    """Stored bytes in (hashed as they come), decrypted and decompressed when identities are
    given (None: a plain snapshot file), then checked as an etcd snapshot on the way to sink."""

    def __init__(
        self, sink: Writer, identities: Sequence[Identity] | None, source: str
    ) -> None:
        self.plain = SnapshotTrailerCheck(sink, source)
        self._decoder = Decoder(self.plain, identities) if identities is not None else None
        self.stored = self._decoder.stored if self._decoder else Digest(self.plain)

    def write(self, data: bytes, /) -> int:
        return self.stored.write(data)

    def finish(self) -> None:
        """End decryption (age authenticates the last chunk here) and decompression."""
        if self._decoder is not None:
            self._decoder.finish()

    def verify(self) -> str:
        """The database's sha256; IntegrityError when it does not match etcd's trailer."""
        return self.plain.verify()
