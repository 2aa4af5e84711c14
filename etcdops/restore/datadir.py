"""The target data dir: checked before any work, swapped in by rename at the very end.

Nothing is ever deleted: an existing data dir is moved aside as `<dir>.etcdops-<UTC time>`
and the restored one, built in a directory beside it (the same filesystem, so renames are
atomic), is renamed into place. Until that last step the target is untouched, so any failure
or interruption before it leaves the host as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from etcdops.errors import LockedError, StorageError, UsageError
from etcdops.stores.local import fsync_dir


@dataclass(frozen=True)
class Target:
    path: Path  # absolute, symlinks resolved: the directory etcd really uses
    occupied: bool  # exists and is not empty: it is moved aside


def check_target(data_dir: Path) -> Target:
    """Refuse, before anything is read, a data dir that cannot be replaced by a rename."""
    path = data_dir.expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UsageError(
            f"--data-dir {path} is a file, not a directory",
            "give the directory etcd's --data-dir names (absent, empty or a data dir to move "
            "aside), or move that file away",
        )
    if not path.parent.is_dir():
        raise UsageError(
            f"the parent of --data-dir {path} does not exist",
            f"create {path.parent}, or check the path",
        )
    if is_mount_point(path):
        raise StorageError(
            f"--data-dir {path} is a mount point: it can neither be moved aside nor replaced",
            f"restore into a new directory below it (e.g. {path / 'data'}) and point etcd's "
            "--data-dir there",
        )
    occupied = path.is_dir() and any(path.iterdir())
    if occupied:
        _refuse_if_in_use(path)
    return Target(path, occupied)


def is_mount_point(path: Path) -> bool:
    """Whether something is mounted at path (absolute, resolved): /proc/self/mountinfo where it
    exists, since os.path.ismount misses a bind mount from the same filesystem."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
            points = {_unescape(line.split()[4]) for line in info if line.strip()}
    except OSError:
        return os.path.ismount(path)
    return str(path) in points


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for escaped, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"),
                          ("\\134", "\\")):
        field = field.replace(escaped, char)
    return field


def _refuse_if_in_use(path: Path) -> None:
    """A running etcd holds a lock on its newest WAL file; its data dir is not ours to move."""
    wal = sorted((path / "member" / "wal").glob("*.wal"))
    if not wal:
        return
    try:
        fd = os.open(wal[-1], os.O_RDWR)
    except OSError:
        return  # unreadable here: the rename at the end reports what is wrong
    try:
        # etcd takes an open-file-description lock where Linux has them (a POSIX record lock
        # conflicts with it), flock() elsewhere (which only flock() sees): try both
        for lock in (fcntl.lockf, fcntl.flock):
            try:
                lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK):
                    raise
                raise LockedError(
                    f"an etcd is running on {path} (it holds a lock on {wal[-1].name})",
                    "stop that etcd first: a restore replaces its data dir",
                ) from None
    except OSError:
        return  # locks unsupported here: nothing to learn from them
    finally:
        os.close(fd)  # closing drops the locks taken, if any


def aside_path(path: Path, moment: datetime) -> Path:
    """Where an existing data dir goes: beside it, named for the time, never over anything."""
    base = f"{path.name}.etcdops-{moment:%Y%m%dT%H%M%SZ}"
    candidate, number = path.with_name(base), 1
    while candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = path.with_name(f"{base}-{number}")
    return candidate


def swap_in(built: Path, target: Target, moment: datetime) -> Path | None:
    """Move an occupied target aside and rename built into its place (mode 0700, as etcd
    wants); the aside path, if any. On any failure the target is put back as it was."""
    built.chmod(0o700)
    aside = aside_path(target.path, moment) if target.occupied else None
    try:
        if aside is not None:
            os.rename(target.path, aside)
        # onto an absent or empty directory, rename replaces it; onto a non-empty one it fails
        os.rename(built, target.path)
        fsync_dir(target.path.parent)
    except BaseException as exc:
        if aside is not None and aside.exists() and not target.path.exists():
            with contextlib.suppress(OSError):
                os.rename(aside, target.path)
        if isinstance(exc, OSError):
            kept = (
                f"the old data dir is at {aside}, move it back by hand"
                if aside is not None and aside.exists() else "nothing was changed"
            )
            raise StorageError(
                f"cannot put the restored data dir in place at {target.path}: "
                f"{exc.strerror or exc}",
                f"{kept}; check the directory and its parent's permissions",
            ) from exc
        raise
    return aside
