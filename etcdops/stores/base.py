"""The one interface every store (local directory, S3) implements.

Stores move bytes by key. They know nothing of etcd, encryption or manifests: the catalogue
decides what the keys mean.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import BinaryIO, Protocol, TypeVar, cast

from etcdops.errors import UsageError

T = TypeVar("T")
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
    """An object being written: invisible under its key until commit(). As a context manager
    it commits on a clean exit and aborts on any other."""

    def write(self, data: bytes, /) -> object: ...

    def commit(self) -> None: ...

    def abort(self) -> object: ...

    def __enter__(self) -> ObjectWriter: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class _Committable(Protocol):
    def commit(self) -> None: ...

    def abort(self) -> object: ...


class CommitOnExit:
    """What makes an object writer a context manager: commit on a clean exit, abort on any
    other (an exception or an interrupt), so that no caller repeats commit / except: abort."""

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self: _Committable, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


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

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove objects (missing ones are not an error), in as few requests as the backend
        allows. The local store removes them in the order given; S3 promises no order within
        one request of up to 1,000 keys, so callers must not rely on it."""
        ...

    def unfinished(self, prefix: str) -> list[ObjectInfo]:
        """Writes begun and never committed nor aborted (a process killed mid-write), by the key
        they were writing, in key order: they hold space, and no listing of objects shows them."""
        ...

    def abort_unfinished(self, key: str) -> None:
        """Drop every unfinished write to key, and what it holds."""
        ...

    def describe(self, key: str) -> str: ...


class ServerSideCopy(Protocol):
    """An optional capability of a store: copying another store's object into itself without
    the bytes passing through this host (S3's CopyObject between buckets)."""

    def can_copy_from(self, source: Store) -> bool:
        """Whether copy_from() reaches source's objects."""
        ...

    def copy_from(self, source: Store, key: str, size: int) -> None:
        """Copy source's object at key (of the size the caller expects) to the same key here."""
        ...


def server_side_copier(source: Store, target: Store) -> ServerSideCopy | None:
    """target, when it can copy source's objects server-side; None when the bytes must be
    streamed through this host."""
    can_copy_from = getattr(target, "can_copy_from", None)
    if can_copy_from is None or not can_copy_from(source):
        return None
    return cast(ServerSideCopy, target)


def check_key(key: str) -> str:
    """Reject keys that could escape a store's root or mean different things in different stores."""
    if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise UsageError(f"invalid object key {key!r}", "keys are relative paths of [A-Za-z0-9._-]")
    return key
