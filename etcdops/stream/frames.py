"""zstd skippable frames: data that rides in a compressed stream without being part of its content.

A skippable frame is a 4-byte little-endian magic in 0x184D2A50..0x184D2A5F, a 4-byte
little-endian size, then that many bytes. Every zstd decoder (the CLI, libzstd's streaming
decoder, hence python-zstandard) skips them, so frames placed before a snapshot's zstd frame
leave `age -d | zstd -d` yielding the snapshot alone. A tag at the start of the payload tells our
frames from anyone else's.
"""

from __future__ import annotations

import struct

from etcdops.errors import IntegrityError

SKIPPABLE_FIRST = 0x184D2A50
SKIPPABLE_LAST = 0x184D2A5F
# one magic of the sixteen for etcdops; the payload's tag makes it ours, not the magic alone
FRAME_MAGIC = 0x184D2A5E
MAX_FRAME_PAYLOAD = 0xFFFFFFFF  # the size field's 4 bytes
_HEADER = struct.Struct("<II")


def skippable_frame(tag: bytes, payload: bytes) -> bytes:
    """One skippable frame holding tag + payload."""
    size = len(tag) + len(payload)
    if size > MAX_FRAME_PAYLOAD:
        raise ValueError(f"a skippable frame holds at most {MAX_FRAME_PAYLOAD} bytes, not {size}")
    return _HEADER.pack(FRAME_MAGIC, size) + tag + payload


class LeadingFrames:
    """A writer that reads the skippable frames at the start of a zstd stream and stops at the
    first other frame (`done`), so that a reader of a large object can stop there too.

    The payloads of frames that carry `tag` are kept (tag removed) in `payloads`, refusing one
    larger than `limit` before it is buffered; other skippable frames are passed over unread.
    """

    def __init__(self, tag: bytes, limit: int, source: str) -> None:
        self._tag = tag
        self._limit = limit
        self._source = source
        self._buffer = bytearray()
        self._skip = 0  # bytes still to pass over in a frame that is not ours
        self.payloads: list[bytes] = []
        self.done = False

    def write(self, data: bytes, /) -> int:
        if self.done:
            return len(data)
        view = memoryview(data)
        if self._skip:
            passed = min(self._skip, len(view))
            self._skip -= passed
            view = view[passed:]
        self._buffer += view
        while not self.done and not self._skip and self._take_frame():
            pass
        return len(data)

    def _take_frame(self) -> bool:
        """Consume one complete frame (or decide to skip it) from the buffer; False when more
        bytes are needed first."""
        if len(self._buffer) < _HEADER.size:
            return False
        magic, size = _HEADER.unpack_from(self._buffer)
        if not SKIPPABLE_FIRST <= magic <= SKIPPABLE_LAST:
            self.done = True
            self._buffer = bytearray()
            return False
        # lengths and slices of the tag only: a payload of many chunks is never copied whole
        # until it is complete
        available = len(self._buffer) - _HEADER.size
        tag = self._tag
        ours = magic == FRAME_MAGIC and size >= len(tag)
        if ours and available < len(tag):
            return False
        if not ours or self._buffer[_HEADER.size : _HEADER.size + len(tag)] != tag:
            self._skip = max(0, size - available)
            del self._buffer[: _HEADER.size + size]
            return True
        if size - len(tag) > self._limit:
            raise IntegrityError(
                f"{self._source}: its included files frame claims {size - len(tag)} bytes, more "
                f"than the {self._limit} etcdops ever writes",
                "this copy is damaged; use another copy of the backup",
            )
        if available < size:
            return False
        self.payloads.append(bytes(self._buffer[_HEADER.size + len(tag) : _HEADER.size + size]))
        del self._buffer[: _HEADER.size + size]
        return True

    def close(self) -> None:
        """At the end of the stream: a frame cut short means the stream was truncated."""
        if not self.done and (self._buffer or self._skip):
            raise IntegrityError(
                f"{self._source} ends inside a skippable frame",
                "this copy is truncated; use another copy of the backup",
            )
