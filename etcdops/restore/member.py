"""Restore one etcd member from a backup: the first step of a disaster recovery.

download -> object sha256 -> age -> zstd -> etcd's trailer -> a plain snapshot in a 0700
directory beside the data dir -> `etcdutl snapshot restore` into a new directory there ->
the old data dir moved aside, the new one renamed into place. Everything that can be refused
(the member flags, the data dir, etcdutl) is checked before a byte is read; until the final
rename the data dir is untouched, and the working directory goes on every way out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from etcdops.config import Config
from etcdops.errors import Interrupted
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.etcdutl import run_etcdutl
from etcdops.report import Reporter
from etcdops.restore.datadir import check_target, swap_in
from etcdops.restore.membership import Membership, membership
from etcdops.restore.plaintext import Plaintext, plaintext_snapshot, scratch_directory
from etcdops.restore.revision import RevisionPlan, plan_revision
from etcdops.stores.configured import Stores

# an 8 GiB database (the seed's quota) on a slow disk takes minutes; an hour means stuck
ETCDUTL_TIMEOUT = 3600.0
BUILT_NAME = "data"


@dataclass(frozen=True)
class RestoreRequest:
    """What the operator asks for: the backup, the data dir, the member's place."""

    ref: str  # 'latest', a backup id or unique prefix, or a file
    data_dir: Path
    name: str
    initial_cluster: str
    peer_urls: str  # --initial-advertise-peer-urls, comma-separated
    token: str | None = None  # None: a new one, to give every other member of the recovery
    store: str | None = None  # read only this store; None: local, primary, then replica


@dataclass(frozen=True)
class RestoreResult:
    backup_id: str | None  # None for a snapshot file without a manifest
    source: str  # what was read, in words
    store: str | None
    fallbacks: tuple[str, ...]  # copies tried first that failed, and why
    data_dir: Path
    moved_aside: Path | None  # where the data dir that was there went
    member: Membership
    revision: int | None  # the snapshot's
    revision_plan: RevisionPlan
    etcdutl: Path
    durations: dict[str, float]  # download_decode, etcdutl, total (seconds)
    warnings: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        """The JSON form of a restore."""
        return {
            "backup_id": self.backup_id,
            "source": self.source,
            "store": self.store,
            "fallbacks": list(self.fallbacks),
            "data_dir": str(self.data_dir),
            "moved_aside": None if self.moved_aside is None else str(self.moved_aside),
            "name": self.member.name,
            "peer_urls": list(self.member.peer_urls),
            "initial_cluster": self.member.initial_cluster,
            "initial_cluster_token": self.member.token,
            "token_generated": self.member.token_generated,
            "revision": self.revision_plan.as_dict(self.revision),
            "etcdutl": str(self.etcdutl),
            "durations": self.durations,
            "warnings": list(self.warnings),
        }


def restore_member(
    config: Config, request: RestoreRequest, reporter: Reporter, *, stores: Stores | None = None
) -> RestoreResult:
    """Restore one member's data dir from a backup; the old data dir is moved aside."""
    started = time.monotonic()
    member = membership(
        request.name, request.initial_cluster, request.peer_urls, request.token, config.cluster
    )
    target = check_target(request.data_dir)
    etcdutl = find_binary("etcdutl", config.etcd.etcdutl)
    plan = plan_revision(etcdutl, config.restore)
    try:
        with scratch_directory(target.path.parent, f"restore-{target.path.name}", reporter) as work:
            built = work / BUILT_NAME
            reading = time.monotonic()
            with plaintext_snapshot(
                config, request.ref, reporter, store=request.store, stores=stores, under=work
            ) as plain:
                decoded = time.monotonic()
                revision = _revision(plain, config)
                bump = f"the revision bumped by {plan.bump:,}" if plan.bump else "no revision bump"
                reporter.event(f"restoring member {member.name} with {etcdutl} ({bump})")
                run_etcdutl(
                    etcdutl,
                    ["snapshot", "restore", str(plain.path), "--data-dir", str(built),
                     *member.etcdutl_flags(), *plan.flags],
                    timeout=ETCDUTL_TIMEOUT,
                )
            restored = time.monotonic()  # the plaintext is gone from here on
            aside = swap_in(built, target, datetime.now(UTC))
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; {target.path} is as it was, and the restore's temporary files "
            "are removed"
        ) from None
    if aside is not None:
        reporter.event(f"moved the data dir that was there to {aside}")
    status = plain.status
    return RestoreResult(
        backup_id=status.backup_id,
        source=status.source,
        store=status.store,
        fallbacks=status.fallbacks,
        data_dir=target.path,
        moved_aside=aside,
        member=member,
        revision=revision,
        revision_plan=plan,
        etcdutl=etcdutl,
        durations={
            "download_decode": round(decoded - reading, 3),
            "etcdutl": round(restored - decoded, 3),
            "total": round(time.monotonic() - started, 3),
        },
        warnings=status.warnings + ((plan.warning,) if plan.warning else ()),
    )


def _revision(plain: Plaintext, config: Config) -> int | None:
    """The snapshot's revision: the manifest's, or etcd's own reading of a bare snapshot."""
    if plain.status.revision is not None:
        return plain.status.revision
    from etcdops.etcd.etcdutl import snapshot_status

    return snapshot_status(plain.path, config.etcd.etcdutl).revision
