"""A host-local lock so that two runs of one job on a host never overlap.

flock is released by the kernel when the process dies, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from etcdops.config import Config
from etcdops.errors import LockedError, StorageError
from etcdops.stores.local import file_in_the_way


def job_lock(config: Config, job: str) -> HostLock:
    """The host lock of one job of one cluster, in its [local] dir: two clusters that one host
    serves (each its own config) may share the directory and never block each other."""
    name = f".etcdops-{config.cluster}-{job.replace(' ', '-')}.lock"
    return HostLock(config.local.dir / name, f"{job} of cluster {config.cluster}")


class HostLock:
    """Exclusive, non-blocking lock on a file; LockedError names the holder."""

    def __init__(self, path: Path, job: str) -> None:
        self.path = path
        self.job = job
        self._fd: int | None = None

    def __enter__(self) -> HostLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            blocker = file_in_the_way(self.path.parent)
            raise StorageError(
                f"cannot create lock file {self.path}: "
                + (f"{blocker} is a file, not a directory" if blocker else str(exc.strerror)),
                "check that the directory exists and is writable",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"another {self.job} is running on this host "
                f"(lock {self.path} held by pid {holder})",
                "wait for it to finish; the lock is released when that process exits",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
