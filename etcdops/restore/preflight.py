"""A restore's dry run: every check a restore makes before it reads, and what it would do.

`etcdops restore --dry-run` (and `dr run --dry-run`, through each member's command prefix)
answers without reading the backup's object or standard input and without creating anything:
the member flags, the data dir (and where the one there would be moved), etcdutl and whether it
bumps, the backup located by its manifest, the identity against the backup's recipients, and
the free space on the data dir's filesystem. A refusal is the restore's own error and exit code.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from etcdops.backup.manifest import Manifest
from etcdops.backup.readback import locate
from etcdops.config import Config
from etcdops.errors import CryptoError, StorageError, ToolError
from etcdops.etcd.binaries import find_binary
from etcdops.report import Reporter
from etcdops.restore.datadir import Target, aside_path
from etcdops.restore.member import STDIN_REF, RestoreRequest, bump_flags_for, check_request
from etcdops.restore.membership import Membership
from etcdops.restore.revision import FLAGS, STAGING, etcdutl_bumps
from etcdops.stores.configured import Stores
from etcdops.units import format_size


@dataclass(frozen=True)
class DryRun:
    """What a restore would do, from every check it can make without reading the backup or
    changing anything: the refusals are a real restore's own errors."""

    request: RestoreRequest
    member: Membership
    target: Target
    aside: Path | None  # where the data dir there would be moved, if one is there
    free_bytes: int  # on the data dir's filesystem, where the restore works
    etcdutl: Path
    etcdutl_bumps: bool
    revision: str  # the method the restore would use, or how it would decide
    backup: dict[str, object]  # what was located (never downloaded)
    space_needed: int | None  # None: the snapshot's size is not known before reading it
    warnings: tuple[str, ...]

    @property
    def enough_space(self) -> bool | None:
        """Whether the free space covers what the restore writes beside the data dir."""
        return None if self.space_needed is None else self.free_bytes >= self.space_needed

    def as_dict(self) -> dict[str, object]:
        """The JSON form of a dry run."""
        member = self.member
        return {
            "dry_run": True,
            "data_dir": str(self.target.path),
            "occupied": self.target.occupied,
            "moved_aside_to": None if self.aside is None else str(self.aside),
            "free_bytes": self.free_bytes,
            "space_needed": self.space_needed,
            "enough_space": self.enough_space,
            "etcdutl": {"path": str(self.etcdutl), "bump_revision": self.etcdutl_bumps},
            "revision": self.revision,
            "name": member.name,
            "peer_urls": list(member.peer_urls),
            "initial_cluster": member.initial_cluster,
            "members": list(member.members),
            # a restore without a token makes a new one: none exists before it runs
            "initial_cluster_token": self.request.token,
            "token_generated": self.request.token is None,
            "backup": self.backup,
            "warnings": list(self.warnings),
        }


def dry_run(
    config: Config, request: RestoreRequest, reporter: Reporter, *, stores: Stores | None = None,
    snapshot_size: int | None = None,
) -> DryRun:
    """Check every prerequisite of restore_member without reading the backup or changing
    anything: the member flags, the data dir, etcdutl, the backup located (its manifest only),
    the identity against its recipients, and the free space; REF '-' reads no standard input
    (snapshot_size: what will come there, for the space check)."""
    member, target, etcdutl = check_request(config, request)
    flags = bump_flags_for(etcdutl, request.bump_revision)
    parent = target.path.parent
    read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
    if read_only or not os.access(parent, os.W_OK | os.X_OK):
        # the error a real restore gets when it creates its working directory there
        reason = os.strerror(errno.EROFS if read_only else errno.EACCES)
        raise StorageError(
            f"cannot create a temporary directory in {parent}: {reason}",
            "it must be writable, with room for the snapshot",
        )
    backup, size, created = _locate(config, request, reporter, stores, snapshot_size)
    if flags:
        revision = f"{FLAGS} (by {request.bump_revision or config.restore.bump_revision:,})"
    elif request.bump_revision == 0:
        revision = "none (--bump-revision 0)"
    elif len(member.members) > 1:
        revision = ("none: one member of several restored on its own gets no staging etcd "
                    "(restart what watches, or restore them all with dr run)")
    elif created and config.restore.bump_budget > 0 and _has_etcd():
        revision = (f"{STAGING} if the snapshot's compaction samples give a write rate and the "
                    "gap fits [restore] bump_budget, else none (restart what watches)")
    else:
        revision = "none (restart what watches: see the warning a restore gives)"
    # the plain snapshot and the restored data dir; while a staging etcd runs, its data dir
    # and its snapshot too (the plain one goes once the staged one is there)
    needed = None if size is None else size * (3 if revision.startswith(STAGING) else 2)
    free = shutil.disk_usage(parent).free
    short = needed is not None and free < needed
    return DryRun(
        request=request, member=member, target=target,
        aside=aside_path(target.path, datetime.now(UTC)) if target.occupied else None,
        free_bytes=free, etcdutl=etcdutl, etcdutl_bumps=etcdutl_bumps(etcdutl),
        revision=revision, backup=backup, space_needed=needed,
        warnings=(f"{parent} has {format_size(free)} free; the restore needs about "
                  f"{format_size(needed or 0)} there",) if short else (),
    )


def _has_etcd() -> bool:
    """Whether a staging etcd can run here (etcd runs in a container on many hosts)."""
    try:
        find_binary("etcd")
    except ToolError:
        return False
    return True


def _locate(
    config: Config, request: RestoreRequest, reporter: Reporter, stores: Stores | None,
    stdin_size: int | None,
) -> tuple[dict[str, object], int | None, bool]:
    """The backup a restore would read first (its manifest, not its object), its snapshot's
    size if known, and whether it has a manifest (a creation time); the identity is checked
    against the backup's recipients."""
    if request.ref == STDIN_REF:
        return ({"source": "standard input", "read": False, "snapshot_size": stdin_size},
                stdin_size, False)
    sources, notes = locate(config, request.ref, reporter, store=request.store, stores=stores)
    first = sources[0]
    manifest = first.manifest
    if first.encrypted:
        _check_identity(config, first.label, manifest)
    size = manifest.snapshot_size if manifest else (None if first.encrypted else first.size)
    return {
        "id": manifest.id if manifest else None,
        "source": first.label,
        "store": first.store,
        "good_copies": [source.store or source.label for source in sources],
        "snapshot_size": size,
        "stored_size": first.size,
        "notes": notes,
    }, size, manifest is not None


def _check_identity(config: Config, label: str, manifest: Manifest | None) -> None:
    """The configured identity is readable and, where a manifest says, one of the recipients."""
    from etcdops.crypto.keys import configured_identities

    identities = configured_identities(config.encryption)
    if manifest is None:
        return  # a bare encrypted file names its recipients only in its header
    ours = {identity.recipient().fingerprint() for identity in identities}
    if ours.isdisjoint(manifest.encryption.get("recipients", ())):
        raise CryptoError(
            f"no identity given matches the recipients of {label} (its manifest's list)",
            "set [encryption] identity_file to the identity of one of the backup's recipients",
        )
