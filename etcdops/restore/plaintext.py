"""A backup decoded into a plain snapshot that exists only inside a private temporary directory.

etcdutl needs the snapshot as a file, and that file is the whole cluster in the clear (Secrets
included). It lives in a fresh 0700 directory that is removed on every way out of the block:
a normal end, an error, Ctrl-C, and SIGTERM (which the CLI turns into KeyboardInterrupt).
SIGKILL and power loss are the ways out no block sees: the directory holds a lock while its
block runs, and the next scratch directory made in the same place removes every one whose
lock nobody holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from etcdops.backup.readback import SnapshotStatus, decode_snapshot
from etcdops.config import Config
from etcdops.errors import StorageError, UsageError
from etcdops.report import Reporter
from etcdops.stores.configured import Stores

SNAPSHOT_NAME = "snapshot.db"
PREFIX = ".etcdops-"
# held (flock) by the process whose block uses the directory; a lock, not a pid, because a
# hardened unit sees no other unit's processes (ProtectProc=invisible) and pids are reused
_OWNER_LOCK = ".in-use"


class Plaintext(NamedTuple):
    path: Path  # the plain snapshot, etcd's sha256 trailer included: etcdutl restores it as is
    status: SnapshotStatus  # what was read, from which store, and which copies failed first


@contextlib.contextmanager
def scratch_directory(under: Path | None, label: str, reporter: Reporter) -> Iterator[Path]:
    """A new directory of mode 0700 (in `under`, default the system's temporary directory),
    removed with everything in it when the block ends, however it ends."""
    if under is not None and not under.is_dir():
        raise UsageError(f"{under} is not a directory", "create it, or choose another place")
    where = under or Path(tempfile.gettempdir())
    remove_abandoned(where, reporter)
    try:
        # mkdtemp creates the directory 0700 under a name no other process can have taken
        directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{label}-", dir=under))
        owner = os.open(directory / _OWNER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StorageError(
            f"cannot create a temporary directory in {where}: {exc.strerror or exc}",
            "it must be writable, with room for the snapshot",
        ) from exc
    try:
        fcntl.flock(owner, fcntl.LOCK_EX)
        yield directory
    finally:
        _remove(directory, reporter)
        os.close(owner)


def remove_abandoned(where: Path, reporter: Reporter) -> None:
    """Remove the scratch directories in `where` that a killed run left (their lock free): they
    may hold a plaintext snapshot or a restored data dir. Only directories with etcdops' lock
    file are touched, never a moved-aside data dir (DIR.etcdops-<time>)."""
    for candidate in sorted(where.glob(f"{PREFIX}*")):
        try:
            owner = os.open(candidate / _OWNER_LOCK, os.O_RDWR)
        except OSError:
            continue  # not a scratch directory of this etcdops, or being removed
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(owner)
            continue  # its run is alive
        try:
            reporter.event(f"removing {candidate}, left by a run that was killed (it may hold a "
                           "plaintext snapshot)")
            _remove(candidate, reporter)
        finally:
            os.close(owner)


def _remove(directory: Path, reporter: Reporter) -> None:
    failures: list[str] = []
    # onerror, not 3.12's onexc: etcdops runs on 3.11
    shutil.rmtree(directory, onerror=lambda _f, path, info: failures.append(f"{path}: {info[1]}"))
    if failures:
        # nothing can be done here but say it: it may hold a plaintext snapshot
        reporter.event(f"could not remove {directory} (remove it by hand): {failures[0]}")


@contextlib.contextmanager
def plaintext_snapshot(
    config: Config,
    ref: str,
    reporter: Reporter,
    *,
    store: str | None = None,
    stores: Stores | None = None,
    under: Path | None = None,
) -> Iterator[Plaintext]:
    """Decode REF (`latest`, an id or prefix, or a file) with every check (object sha256, age,
    zstd, etcd's trailer, the manifest), trying each store's copy in turn as status does, into
    a plain snapshot that is gone when the block ends. `store` reads one store only; `under` is
    where the private directory goes (beside a data dir keeps a large snapshot off /tmp)."""
    with scratch_directory(under, "plaintext", reporter) as directory:
        path = directory / SNAPSHOT_NAME
        status = decode_snapshot(config, ref, path, reporter, store=store, stores=stores)
        yield Plaintext(path, status)
