"""Where a journal starts: the full backup it extends, and how far its chain already reaches.

The base is the newest verified full backup in the shared store (the primary; the local one
when no primary is configured or it holds none), so that any node that takes the journal over
extends the same backup. The chain's reach is the furthest window (etcdops.journal.chain) any of
the primary and local stores proves: the run resumes after it, and each store that proves less
is owed the segments it lacks, copied from the one that has them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from etcdops.backup.catalog import Catalog, CatalogEntry
from etcdops.backup.manifest import Manifest
from etcdops.errors import StorageError
from etcdops.journal.chain import window
from etcdops.journal.manifest import SegmentManifest
from etcdops.journal.store import chain_manifests
from etcdops.stores.configured import LOCAL, PRIMARY, Stores

log = logging.getLogger("etcdops.journal")


@dataclass(frozen=True)
class Base:
    """A full backup a chain extends."""

    backup_id: str
    revision: int
    created_at: datetime


@dataclass(frozen=True)
class Resume:
    """How far a chain reaches, and what each store lacks of it."""

    reach: int  # every revision from the base's to it is in some store's path
    segments: int  # segments of the furthest path
    owed: dict[str, list[SegmentManifest]]  # per store, the segments it lacks, in order


# where a base is looked for, in order: the shared store first (health reads chains the same way)
BASE_STORES = (PRIMARY, LOCAL)


def newest_base(stores: Stores, cluster: str) -> Base | None:
    """The newest verified full backup of the shared store, or None when there is none."""
    for name in BASE_STORES:
        if name not in stores:
            continue
        try:
            entries = Catalog(stores[name], cluster).entries()
        except StorageError as exc:
            log.warning("journal: the %s store's backups cannot be listed: %s", name, exc.message)
            continue
        newest = newest_verified(entries)
        if newest is not None:
            return newest
    return None


def newest_verified(entries: Iterable[CatalogEntry]) -> Base | None:
    """The newest verified backup among one store's copies: the base a journal extends."""
    verified = [e for e in entries if e.verified and e.manifest is not None]
    if not verified:
        return None
    newest = max(verified, key=lambda e: (e.manifest.etcd.revision, e.created_at))
    return base_of(newest.manifest)


def base_of(manifest: Manifest) -> Base:
    """The base a full backup's manifest makes."""
    return Base(manifest.id, manifest.etcd.revision, manifest.created_at)


def resume_point(stores: Stores, cluster: str, base: Base) -> Resume:
    """How far the base's chain reaches across the stores, and the segments each one lacks."""
    paths: dict[str, tuple[SegmentManifest, ...]] = {}
    reaches: dict[str, int] = {}
    for name in stores:
        try:
            manifests, damaged = chain_manifests(stores[name], cluster, base.backup_id)
        except StorageError as exc:
            log.warning("journal: the %s store's chain %s cannot be listed: %s", name,
                        base.backup_id, exc.message)
            continue
        for problem in damaged:
            log.warning("journal: %s", problem.message)
        found = window(base.backup_id, base.revision, manifests)
        paths[name], reaches[name] = found.path, found.last_revision
    # the replica is a copy: resuming after what only it holds would leave the others a
    # chain this host cannot copy to them from its own disk, so it only ever receives
    leading = [name for name in BASE_STORES if name in reaches]
    if not leading:
        return Resume(base.revision, 0, {})
    best = max(leading, key=lambda name: reaches[name])
    path = paths[best]
    owed = {
        name: [m for m in path if m.last_revision > reaches.get(name, base.revision)]
        for name in stores if name != best
    }
    return Resume(reaches[best], len(path), {name: m for name, m in owed.items() if m})
