"""A store in a local directory, with the same crash-safety promises as the S3 store.

An object is written under a hidden temporary name, fsynced, renamed into place and its
directory fsynced: after a crash a key either holds its complete object or does not exist.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from etcdops.errors import NotFoundError, StorageError
from etcdops.stores.base import CommitOnExit, ObjectInfo, check_key

_TEMP_PREFIX = ".tmp-"
_TEMP_TOKEN_HEX = 12


def _temp_path(path: Path) -> Path:
    """Where path is written before it is committed: beside it, under a hidden unique name."""
    return path.with_name(f"{_TEMP_PREFIX}{secrets.token_hex(_TEMP_TOKEN_HEX // 2)}-{path.name}")


# only names _temp_path() makes: a stray ".tmp-x" of someone else's is neither listed nor parsed
_TEMP_GLOB = f"{_TEMP_PREFIX}{'[0-9a-f]' * _TEMP_TOKEN_HEX}-?*"


def _target_of(temp: Path) -> Path:
    """The path a temporary file of _temp_path() was to become."""
    return temp.with_name(temp.name[len(_TEMP_PREFIX) + _TEMP_TOKEN_HEX + 1:])


SYNC_EVERY = 32 << 20


def file_in_the_way(path: Path) -> Path | None:
    """The file that stands where path or one of its parents should be a directory, if any."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def _not_a_directory(action: str, path: Path, blocker: Path) -> StorageError:
    return StorageError(
        f"cannot {action} {path}: {blocker} is a file, not a directory",
        "point [local] dir at a directory, or move that file aside",
    )


def _storage_error(action: str, path: Path, exc: OSError) -> StorageError:
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and (blocker := file_in_the_way(path.parent)):
        return _not_a_directory(action, path, blocker)
    hint = {
        28: "free space on that filesystem or point [local] dir elsewhere",
        13: "run as a user that can write there, or change [local] dir",
        30: "the filesystem is read-only; point [local] dir at a writable one",
    }.get(exc.errno or 0, "check the directory, its permissions and free space")
    return StorageError(f"cannot {action} {path}: {exc.strerror or exc}", hint)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in this directory survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _BackgroundSync:
    """fdatasync a file from a thread of its own whenever asked, without making anyone wait.

    Syncing as the file grows means commit()'s fsync finds little left to write: without it,
    a 1 GiB backup waited over a second at the end for the page cache to reach the disk.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._wanted = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="etcdops-sync", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        self._stopping = True
        self._wanted.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping:
                return
            with contextlib.suppress(OSError):  # commit()'s own fsync reports any error
                os.fdatasync(self._fd)


class AtomicFile(CommitOnExit):
    """A file that appears at its path only when commit() has made it durable (durable=False:
    only complete, for a scratch file read at once and gone with its directory, where syncing
    would only make its reader wait)."""

    def __init__(self, path: Path, mode: int = 0o600, *, durable: bool = True) -> None:
        self.path = path
        self._durable = durable
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._temp = _temp_path(path)
            fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except OSError as exc:
            raise _storage_error("create", path, exc) from exc
        file = None
        try:
            file = self._file = os.fdopen(fd, "wb", buffering=1 << 20)
            self._unsynced = 0
            self._sync = _BackgroundSync(fd)
        except BaseException:
            # an interrupt before the caller holds the writer: no one else could drop the file
            if file is None:
                os.close(fd)
            else:
                file.close()
            self._temp.unlink()
            raise

    def write(self, data: bytes, /) -> int:
        try:
            written = self._file.write(data)
            self._unsynced += written
            if self._durable and self._unsynced >= SYNC_EVERY:
                self._unsynced = 0
                self._file.flush()
                self._sync.request()
            return written
        except OSError as exc:
            self.abort()
            raise _storage_error("write", self.path, exc) from exc

    def commit(self) -> None:
        """Flush, fsync and rename into place."""
        self._sync.stop()
        try:
            self._file.flush()
            if self._durable:
                os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._temp, self.path)
            if self._durable:
                fsync_dir(self.path.parent)
        except OSError as exc:
            self.abort()
            raise _storage_error("write", self.path, exc) from exc

    def abort(self) -> None:
        """Drop the partial file; safe to call more than once."""
        self._sync.stop()
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._temp.unlink()


class LocalStore:
    """Objects as files below one root directory."""

    def __init__(self, root: Path, name: str = "local") -> None:
        self.root = root
        self.name = name
        self.fingerprint_is_digest = False

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def describe(self, key: str) -> str:
        """Where an object lives, for messages."""
        return str(self._path(key))

    def open_writer(
        self, key: str, expected_size: int | None = None, *,
        waiting: Callable[[str], None] | None = None,
    ) -> AtomicFile:
        """Start writing an object; it exists only after commit() (a local disk neither needs
        the size hint nor keeps anyone waiting)."""
        return AtomicFile(self._path(key))

    def open_reader(self, key: str) -> BinaryIO:
        """Read an object as a stream."""
        path = self._path(key)
        try:
            return path.open("rb")
        except FileNotFoundError as exc:
            raise NotFoundError(f"{path} does not exist", "run 'etcdops snapshot list'") from exc
        except OSError as exc:
            raise _storage_error("read", path, exc) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object (a manifest) atomically."""
        with self.open_writer(key) as writer:
            writer.write(data)

    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole."""
        with self.open_reader(key) as reader:
            return reader.read()

    def head(self, key: str) -> ObjectInfo | None:
        """Size and time of an object, or None when it does not exist."""
        path = self._path(key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _storage_error("stat", path, exc) from exc
        # any rewrite moves ctime (a `cp` over the file keeps its inode and size), a new file
        # has a new inode: a file's bytes are never read to fingerprint it
        fingerprint = f"{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}-{stat.st_ctime_ns}"
        return ObjectInfo(
            key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC), fingerprint
        )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every complete object whose key starts with prefix, in key order."""
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            if blocker := file_in_the_way(base):
                raise _not_a_directory("list", base, blocker)
            return
        try:
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames.sort()
                for filename in sorted(filenames):
                    if filename.startswith(_TEMP_PREFIX):
                        continue
                    path = Path(dirpath, filename)
                    key = path.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        info = self.head(key)
                        if info is not None:
                            yield info
        except OSError as exc:
            raise _storage_error("list", base, exc) from exc

    def unfinished(self, prefix: str) -> list[ObjectInfo]:
        """Temporary files that no commit renamed nor abort removed (a process killed mid-write)."""
        found = []
        for path in self.root.rglob(_TEMP_GLOB):
            key = _target_of(path).relative_to(self.root).as_posix()
            if not key.startswith(prefix):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # committed or aborted meanwhile
            except OSError as exc:
                raise _storage_error("stat", path, exc) from exc
            found.append(ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)))
        return sorted(found, key=lambda info: (info.key, info.modified))

    def abort_unfinished(self, key: str) -> None:
        """Remove the temporary files of every unfinished write to key."""
        path = self._path(key)
        for temp in path.parent.glob(_TEMP_GLOB):
            if _target_of(temp) != path:
                continue
            try:
                temp.unlink()
            except FileNotFoundError:
                continue  # committed or aborted meanwhile
            except OSError as exc:
                raise _storage_error("delete", temp, exc) from exc

    def delete(self, key: str) -> None:
        """Remove an object; removing a missing one is not an error."""
        self.delete_many([key])

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove objects in the order given (missing ones are not an error), each directory
        synced once after its last removal."""
        changed: dict[Path, None] = {}
        try:
            for key in keys:
                path = self._path(key)
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise _storage_error("delete", path, exc) from exc
                changed[path.parent] = None
        except BaseException:
            # what was removed before the failure stays removed; the failure is what is told
            with contextlib.suppress(OSError):
                for directory in changed:
                    fsync_dir(directory)
            raise
        for directory in changed:
            fsync_dir(directory)
