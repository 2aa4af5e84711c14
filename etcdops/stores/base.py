"""The one interface every store (local directory, S3) implements.

Stores move bytes by key. They know nothing of etcd, encryption or manifests: the catalogue
decides what the keys mean.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol

from etcdops.errors import UsageError

_KEY = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime
    # Changes whenever the object is rewritten, whatever its new bytes: S3's ETag, a file's
    # inode, size and times. A check of the bytes holds only while the fingerprint it saw does.
    # None where a store cannot say (writes in progress).
    fingerprint: str | None = None


class ObjectWriter(Protocol):
    """An object being written: invisible under its key until commit()."""

    def write(self, data: bytes, /) -> object: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class Store(Protocol):
    name: str
    # whether ObjectInfo.fingerprint is the backend's own digest of the bytes (S3's ETag), so
    # that an unchanged fingerprint vouches for unchanged bytes; a file's stat does not
    fingerprint_is_digest: bool

    def open_writer(
        self, key: str, expected_size: int | None = None, *,
        waiting: Callable[[str], None] | None = None,
    ) -> ObjectWriter:
        """Start writing an object, invisible until commit(). expected_size sizes the writes;
        waiting, when given, is told what a writer that must wait on its backend waits for."""
        ...

    def open_reader(self, key: str) -> BinaryIO: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def unfinished(self, prefix: str) -> list[ObjectInfo]:
        """Writes begun and never committed nor aborted (a process killed mid-write), by the key
        they were writing, in key order: they hold space, and no listing of objects shows them."""
        ...

    def abort_unfinished(self, key: str) -> None:
        """Drop every unfinished write to key, and what it holds."""
        ...

    def describe(self, key: str) -> str: ...


def check_key(key: str) -> str:
    """Reject keys that could escape a store's root or mean different things in different stores."""
    if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise UsageError(f"invalid object key {key!r}", "keys are relative paths of [A-Za-z0-9._-]")
    return key
