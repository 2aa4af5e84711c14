"""Verifying a backup: the full integrity read, or a restore drill that proves it restores.

A drill does on loopback what a recovery would do: decode the backup with every check into a
0700 scratch directory, `etcdutl snapshot restore` it into a scratch data dir, boot a throwaway
single-member etcd there, count its keys by resource type and namespace (keys only, a page at a
time), compare the total with the manifest, extract the files it carries ([backup]
include_files) into the scratch directory and check them against the manifest, and remove it
all: etcd stopped and every scratch directory gone, on every way out (errors, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from etcdops.backup.readback import SnapshotStatus, snapshot_status
from etcdops.config import Config, EtcdConfig
from etcdops.errors import IntegrityError
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.local import LocalEtcd
from etcdops.metrics import job_metrics
from etcdops.report import Reporter
from etcdops.restore.files import restore_files
from etcdops.restore.inventory import Inventory
from etcdops.restore.plaintext import Plaintext, plaintext_snapshot, scratch_directory
from etcdops.restore.staging import restore_into, start_throwaway, throwaway_member
from etcdops.stores.configured import Stores, open_stores

if TYPE_CHECKING:
    from etcdops.restore.point_plan import PointTarget

PHASES = ("decode", "restore", "start", "inventory", "files")
MEMBER_NAME = "etcdops-drill"
# keys per Range page: a thousand Kubernetes keys are well under grpc's 4 MiB message limit
_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Drill:
    """What the restored, running copy of a backup held, and how long each phase took."""

    revision: int  # the restored member's revision
    counted_at: int  # the revision its keys were counted at
    inventory: Inventory
    manifest_keys: int | None  # live keys at the manifest's revision; None: nothing to compare
    phases: dict[str, float]
    notes: tuple[str, ...]  # what the operator should know about how it was counted
    problems: tuple[str, ...]  # why the backup is not verified, if it is not
    files: tuple[str, ...] = ()  # the included files extracted and checked

    def as_dict(self) -> dict[str, object]:
        """The JSON form of a drill."""
        return {
            "revision": self.revision,
            "counted_at_revision": self.counted_at,
            "keys": self.inventory.total,
            "manifest_keys": self.manifest_keys,
            "phases": {name: round(seconds, 3) for name, seconds in self.phases.items()},
            "inventory": self.inventory.as_dict(),
            "notes": list(self.notes),
            "problems": list(self.problems),
            "files": list(self.files),
        }


@dataclass(frozen=True)
class VerifyResult:
    """Whether a backup is verified, and how: an integrity read, or a restore drill too."""

    status: SnapshotStatus
    drill: Drill | None = None

    @property
    def verified(self) -> bool:
        """An integrity read that returned passed every check; a drill must also add up."""
        return self.drill is None or not self.drill.problems

    @property
    def how(self) -> str:
        """The checks that verified it, in an operator's words."""
        checks = ", ".join(self.status.checks)
        if self.drill is None:
            return f"integrity read ({checks})"
        against = " against the manifest" if self.drill.manifest_keys is not None else ""
        files = "; included files checked" if self.drill.files else ""
        return (
            f"restore drill ({checks}; etcdutl snapshot restore; a throwaway etcd started; "
            f"keys counted{against}{files})"
        )

    def as_dict(self) -> dict[str, object]:
        """The JSON form: the verdict first, then what was read, then the drill if there was one."""
        return {"verified": self.verified, "how": self.how} | self.status.as_dict() | {
            "drill": self.drill.as_dict() if self.drill else None,
        }


def verify_backup(
    config: Config,
    ref: str,
    reporter: Reporter,
    *,
    drill: bool = False,
    store: str | None = None,
    stores: Stores | None = None,
    under: Path | None = None,
    point: PointTarget | None = None,
) -> VerifyResult:
    """Verify a backup (REF: 'latest', an id or prefix, or a file) with every check, and with
    drill=True by restoring it and counting what a throwaway etcd then serves. `under` is where
    the drill's scratch directories go (default: the system's temporary directory). point:
    drill that point in time instead (REF names its base; etcdops.restore.point)."""
    if point is not None and not drill:
        from etcdops.errors import UsageError

        raise UsageError("a point in time is verified by a drill", "add --drill")
    if not drill:
        return VerifyResult(snapshot_status(config, ref, reporter, store=store, stores=stores))
    with job_metrics(config, "drill") as metrics:
        metrics.set("verified", 0)  # until it is: a drill that fails on its way did not verify
        result = _drill(config, ref, reporter, store, stores, under, point)
        metrics.set("verified", result.verified)
        if not result.verified:
            metrics.failed()
        return result


def _drill(
    config: Config, ref: str, reporter: Reporter, store: str | None, stores: Stores | None,
    under: Path | None, point: PointTarget | None,
) -> VerifyResult:
    # found before anything is downloaded: a host without etcdutl or etcd cannot drill at all
    etcdutl = find_binary("etcdutl", config.etcd.etcdutl)
    find_binary("etcd")
    phases = _Phases()
    with scratch_directory(under, "drill", reporter) as scratch:
        member = throwaway_member(scratch, config, MEMBER_NAME)
        with _snapshot(config, ref, reporter, store, stores, under, point) as plain:
            phases.lap("decode")
            restore_into(etcdutl, plain.path, plain.status.source, member, reporter)
        # the plaintext snapshot is gone now: only the restored data dir holds the cluster
        phases.lap("restore")
        try:
            reporter.event(f"starting a throwaway etcd on {member.client_url}")
            start_throwaway(member)
            phases.lap("start")
            counted = _count(member, plain.status, reporter, config.etcd)
            phases.lap("inventory")
            files = _check_files(config, ref, plain.status, scratch, reporter, stores)
            phases.lap("files")
        finally:
            member.stop()
    return VerifyResult(plain.status, counted.drill(phases.times, files))


@contextlib.contextmanager
def _snapshot(
    config: Config, ref: str, reporter: Reporter, store: str | None, stores: Stores | None,
    under: Path | None, point: PointTarget | None,
) -> Iterator[Plaintext]:
    """The plain snapshot a drill restores: the backup's, or the point in time staged from it
    (its status then names the point's revision and key count, which the drill checks)."""
    if point is None:
        with plaintext_snapshot(
            config, ref, reporter, store=store, stores=stores, under=under
        ) as plain:
            yield plain
        return
    from etcdops.restore.point import stage_point
    from etcdops.restore.point_plan import plan_point

    stores = stores or open_stores(config)
    if store is not None:
        stores = stores.only(store)
    plan = plan_point(config, point, stores, reporter, base_ref=ref)
    with scratch_directory(under, "point", reporter) as work:
        staged = stage_point(config, plan, stores, work, reporter)
        yield Plaintext(staged.path, staged.status)


class _Phases:
    """Each phase's wall time, measured from the end of the one before."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._mark = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.times[name] = now - self._mark
        self._mark = now


@dataclass(frozen=True)
class _Counted:
    revision: int
    counted_at: int
    inventory: Inventory
    manifest_keys: int | None
    notes: tuple[str, ...]
    problems: tuple[str, ...]

    def drill(self, phases: dict[str, float], files: _Files) -> Drill:
        return Drill(
            self.revision, self.counted_at, self.inventory, self.manifest_keys, dict(phases),
            self.notes + files.notes, self.problems + files.problems, files.paths,
        )


@dataclass(frozen=True)
class _Files:
    paths: tuple[str, ...]
    notes: tuple[str, ...]
    problems: tuple[str, ...]


def _check_files(
    config: Config, ref: str, status: SnapshotStatus, scratch: Path, reporter: Reporter,
    stores: Stores | None,
) -> _Files:
    """The included files, extracted into the scratch directory from the copy the snapshot came
    from and checked against the manifest; a mismatch makes the backup unverified."""
    # the very backup and copy just drilled, even if 'latest' has moved on since
    same = status.backup_id if status.store is not None and status.backup_id else ref
    try:
        result = restore_files(
            config, same, scratch / "files", reporter, store=status.store, stores=stores
        )
    except IntegrityError as exc:
        return _Files((), (), (exc.message,))
    paths = tuple(file.path for file in result.files)
    if not paths:
        return _Files((), ("no included files in this backup",), ())
    against = " against the manifest" if result.backup_id else " (no manifest to compare with)"
    return _Files(paths, (f"{len(paths)} included files extracted and checked{against}",), ())


def _count(
    member: LocalEtcd, status: SnapshotStatus, reporter: Reporter, source: EtcdConfig
) -> _Counted:
    """Count the restored keys at the manifest's revision (what its key count means), or at
    the restored revision when there is no manifest or that revision is not there to read."""
    from etcdops.etcd.session import EtcdSession

    # a backup of an etcd with auth enabled restores with auth enabled and the source's users
    auth = {"user": source.user, "password": source.password,
            "password_file": source.password_file}
    with EtcdSession(member.etcd_config(command_timeout=60.0, **auth)) as session:
        revision = session.status(member.client_url).revision
        notes: list[str] = []
        problems: list[str] = []
        at, expected = revision, None
        if status.backup_id is None or status.revision is None or status.keys is None:
            notes.append("no manifest: the key total has nothing to be compared with")
        elif revision < status.revision:
            problems.append(
                f"the restored revision {revision} is below the manifest's {status.revision}"
            )
        elif not session.readable_at(status.revision):
            notes.append(
                f"the manifest's revision {status.revision} is compacted in this snapshot: keys "
                f"counted at revision {revision}, not compared with the manifest"
            )
        else:
            at, expected = status.revision, status.keys
        reporter.event(f"counting keys at revision {at}")
        inventory = Inventory()
        for page in session.key_pages(_PAGE_SIZE, revision=at):
            inventory.add(page)
    if expected is not None and inventory.total != expected:
        problems.append(
            f"the restored etcd holds {inventory.total} keys at revision {at}; the manifest "
            f"says {expected}"
        )
    return _Counted(revision, at, inventory, expected, tuple(notes), tuple(problems))
