"""Pass-through writers that snapshot bytes flow through, one stage each.

A pipeline is a chain of writers ending in a sink (a file, an upload, or nothing). Each stage
holds at most a chunk or two, so memory stays flat whatever the snapshot size.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from etcdops.errors import IntegrityError

if TYPE_CHECKING:
    from etcdops.crypto.age import Identity, Recipient

TRAILER_SIZE = 32
# bbolt's first page: its header and the meta page up to and including the meta's checksum
BBOLT_HEAD_SIZE = 80
_BBOLT_META_PAGE = 0x04
_BBOLT_MAGIC = 0xED0CDAED
_BBOLT_VERSION = 2
# Output slices handed downstream by the decompressor: large enough to be cheap, small enough
# that a block of zero pages (which zstd shrinks a thousandfold) never balloons in memory.
DECOMPRESS_WRITE_SIZE = 1 << 20


class Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Discard:
    """A sink that drops everything: for checks that read a backup without keeping it."""

    def write(self, data: bytes, /) -> int:
        return len(data)


class Search:
    """Whether a byte string occurs in a stream (across writes too), found as the stream passes
    on to another writer, so that nothing has to read it again."""

    def __init__(self, needle: bytes) -> None:
        self.needle = needle
        self.found = False
        self._tail = b""
        self._downstream: Writer = Discard()

    def over(self, downstream: Writer) -> Search:
        """This search started anew, passing every byte on to downstream: one per attempt of a
        read that may be tried again from another copy."""
        self.found, self._tail, self._downstream = False, b"", downstream
        return self

    def write(self, data: bytes, /) -> int:
        if not self.found:
            keep = len(self.needle) - 1  # the needle's start may end one write
            self.found = self.needle in self._tail + data[:keep] or self.needle in data
            if keep:
                self._tail = data[-keep:] if len(data) >= keep else (self._tail + data)[-keep:]
        self._downstream.write(data)
        return len(data)


class Digest:
    """Counts and hashes what passes, to compare a stored object with its manifest."""

    def __init__(self, downstream: Writer) -> None:
        self._downstream = downstream
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._hash.update(data)
        self.size += len(data)
        self._downstream.write(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class SnapshotTrailerCheck:
    """Checks that a stream is an etcd snapshot, passing every byte on: bbolt's first page, then
    the sha256 trailer etcd appends.

    etcd's snapshot is the bbolt database followed by 32 bytes of sha256 over the database;
    etcdctl does not check it when saving, etcdutl does when restoring. Checking it as the bytes
    flow means a torn or corrupted snapshot is caught before the backup counts as taken. The
    trailer alone would pass any file that ends in the sha256 of the rest, so the first page must
    also be the meta page bbolt writes; what is not is refused before anything past it moves on.
    """

    def __init__(self, downstream: Writer, source: str = "the snapshot stream") -> None:
        self._downstream = downstream
        self._source = source
        self._hash = hashlib.sha256()
        self._tail = b""
        self._head = b""
        self.size = 0

    def write(self, data: bytes, /) -> int:
        if len(self._head) < BBOLT_HEAD_SIZE:
            self._head += data[: BBOLT_HEAD_SIZE - len(self._head)]
            if len(self._head) == BBOLT_HEAD_SIZE and (problem := _bbolt_head_problem(self._head)):
                raise IntegrityError(
                    f"{self._source} is not an etcd snapshot: {problem}",
                    "an etcd snapshot is what 'etcdctl snapshot save' or 'etcdops snapshot fetch' "
                    "writes; check that this is the file or backup you meant",
                )
        self.size += len(data)
        if len(data) >= TRAILER_SIZE:
            self._hash.update(self._tail)
            view = memoryview(data)
            self._hash.update(view[:-TRAILER_SIZE])
            self._tail = bytes(view[-TRAILER_SIZE:])
        else:
            joined = self._tail + data
            self._hash.update(joined[:-TRAILER_SIZE])
            self._tail = joined[-TRAILER_SIZE:]
        self._downstream.write(data)
        return len(data)

    def verify(self, source: str | None = None) -> str:
        """The database's sha256 in hex; IntegrityError when the trailer does not match."""
        source = source or self._source
        if self.size < BBOLT_HEAD_SIZE + TRAILER_SIZE:
            raise IntegrityError(
                f"{source} is too short to be an etcd snapshot ({self.size} bytes)",
                "take a new snapshot; this one is truncated",
            )
        digest = self._hash.digest()
        if digest != self._tail:
            raise IntegrityError(
                f"{source} failed etcd's sha256 check: the database does not match its trailer",
                "the snapshot is corrupt or truncated; take a new one or use an older backup",
            )
        return digest.hex()


def _bbolt_head_problem(head: bytes) -> str | None:
    """Why the first bytes of a database are not bbolt's first meta page, None when they are.

    bbolt's layout (little-endian): a 16-byte page header (id u64, flags u16, count u16,
    overflow u32), then the meta (magic u32, version u32, page size u32, flags u32, root bucket
    2 x u64, freelist, pgid, txid u64) and its checksum, FNV-1a 64 over the meta before it.
    """
    page_id, page_flags = struct.unpack_from("<QH", head, 0)
    magic, version = struct.unpack_from("<II", head, 16)
    (checksum,) = struct.unpack_from("<Q", head, BBOLT_HEAD_SIZE - 8)
    if page_id != 0 or page_flags != _BBOLT_META_PAGE or magic != _BBOLT_MAGIC:
        return "it does not begin with a bbolt meta page (etcd's database format)"
    if version != _BBOLT_VERSION:
        return f"its bbolt format version is {version}, not {_BBOLT_VERSION}"
    if checksum != _fnv1a64(head[16 : BBOLT_HEAD_SIZE - 8]):
        return "the checksum of its bbolt meta page does not match"
    return None


def _fnv1a64(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


class ZstdCompress:
    """zstd compression in the calling thread.

    Single-threaded on purpose: the save pipeline already runs on its own thread beside the gRPC
    receive, and zstd's own worker threads would double the memory (about 60 MiB more, measured)
    without making a save faster.
    """

    def __init__(self, downstream: Writer, level: int) -> None:
        import zstandard

        self._flush_frame = zstandard.FLUSH_FRAME
        self._writer = zstandard.ZstdCompressor(level=level).stream_writer(
            downstream, closefd=False
        )

    def write(self, data: bytes, /) -> int:
        return self._writer.write(data)

    def close(self) -> None:
        self._writer.flush(self._flush_frame)


class ZstdDecompress:
    """zstd decompression with bounded output slices; `what` names the content in its error."""

    def __init__(self, downstream: Writer, what: str = "snapshot") -> None:
        import zstandard

        self._what = what
        self._error = zstandard.ZstdError
        self._writer = zstandard.ZstdDecompressor().stream_writer(
            downstream, write_size=DECOMPRESS_WRITE_SIZE, closefd=False
        )

    def write(self, data: bytes, /) -> int:
        try:
            return self._writer.write(data)
        except self._error as exc:
            raise IntegrityError(
                f"compressed {self._what} is corrupt: {exc}",
                "use another copy of this backup or an older backup",
            ) from exc

    def close(self) -> None:
        self._writer.flush()


class AgeEncrypt:
    """age encryption to the configured recipients."""

    def __init__(self, downstream: Writer, recipients: Sequence[Recipient]) -> None:
        from etcdops.crypto.age import Encryptor

        self._downstream = downstream
        self._encryptor = Encryptor(recipients)

    def write(self, data: bytes, /) -> int:
        out = self._encryptor.update(data)
        if out:
            self._downstream.write(out)
        return len(data)

    def close(self) -> None:
        self._downstream.write(self._encryptor.finish())


class AgeDecrypt:
    """age decryption; nothing unauthenticated is passed on."""

    def __init__(self, downstream: Writer, identities: Sequence[Identity]) -> None:
        from etcdops.crypto.age import Decryptor

        self._downstream = downstream
        self._decryptor = Decryptor(identities)

    def write(self, data: bytes, /) -> int:
        out = self._decryptor.update(data)
        if out:
            self._downstream.write(out)
        return len(data)

    def close(self) -> None:
        out = self._decryptor.finish()
        if out:
            self._downstream.write(out)
