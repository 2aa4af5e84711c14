"""Where a journal starts: the full backup it extends, and how far its chain already reaches.

The base is the newest verified full backup in the shared store (the primary; the local one
when no primary is configured or it holds none), so that any node that takes the journal over
extends the same backup. The chain's reach is the furthest window (etcdops.journal.chain) any of
the primary and local stores proves: the run resumes after it, and each store that proves less
is owed the segments it lacks, copied from the one that has them.

A base is of one history: the etcd cluster ID its manifest records. A restore of the cluster
(a new cluster token) starts a new history under a new ID, usually at a lower revision than the
old history's backups and chains: revisions of two histories are not comparable, so a journal
extends only a base of the cluster ID it watches (newest_base's cluster_id).

A long chain's next base is taken beside the watch (BackgroundSave), and counts as one only once
the shared store holds it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from etcdops.backup.catalog import Catalog, CatalogEntry
from etcdops.backup.manifest import Manifest
from etcdops.backup.save import SaveResult, save_snapshot
from etcdops.config import Config
from etcdops.errors import EtcdopsError, StorageError
from etcdops.journal.chain import window
from etcdops.journal.manifest import SegmentManifest
from etcdops.journal.store import chain_manifests
from etcdops.report import Reporter
from etcdops.stores.configured import LOCAL, PRIMARY, Stores

log = logging.getLogger("etcdops.journal")


@dataclass(frozen=True)
class Base:
    """A full backup a chain extends."""

    backup_id: str
    revision: int
    created_at: datetime
    cluster_id: str  # etcd's cluster ID when the backup was taken (hex: backup.manifest.etcd_id)


@dataclass(frozen=True)
class Resume:
    """How far a chain reaches, and what each store lacks of it."""

    reach: int  # every revision from the base's to it is in some store's path
    segments: int  # segments of the furthest path
    owed: dict[str, list[SegmentManifest]]  # per store, the segments it lacks, in order


# where a base is looked for, in order: the shared store first (health reads chains the same way)
BASE_STORES = (PRIMARY, LOCAL)


def newest_base(stores: Stores, cluster: str, cluster_id: str | None = None) -> Base | None:
    """The newest verified full backup of the shared store (of etcd cluster cluster_id, when
    given; a store without one gives way to the next), or None when there is none."""
    for name in BASE_STORES:
        if name not in stores:
            continue
        try:
            entries = Catalog(stores[name], cluster).entries()
        except StorageError as exc:
            log.warning("journal: the %s store's backups cannot be listed: %s", name, exc.message)
            continue
        newest = newest_verified(entries, cluster_id)
        if newest is not None:
            return newest
    return None


def newest_verified(
    entries: Iterable[CatalogEntry], cluster_id: str | None = None
) -> Base | None:
    """The newest verified backup among one store's copies (of etcd cluster cluster_id, when
    given): the base a journal extends. Newest by revision: within one history it orders
    backups as etcd ordered their contents, whatever the clocks of the hosts that took them."""
    verified = [e for e in entries if e.verified and e.manifest is not None
                and cluster_id in (None, e.manifest.etcd.cluster_id)]
    if not verified:
        return None
    newest = max(verified, key=lambda e: (e.manifest.etcd.revision, e.created_at))
    return base_of(newest.manifest)


def base_of(manifest: Manifest) -> Base:
    """The base a full backup's manifest makes."""
    return Base(manifest.id, manifest.etcd.revision, manifest.created_at,
                manifest.etcd.cluster_id)


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


def not_shared(saved: SaveResult, stores: Stores) -> str | None:
    """Why a new backup is not fit to be a chain's base, or None: it is not in the shared
    store. A node taking the journal over looks for its base there and would not find it, nor
    extend its chain, and a replay from that store would find no base under the chain."""
    shared = next((name for name in BASE_STORES if name in stores), None)
    if shared is None or shared in saved.stored:
        return None
    return (f"backup {saved.manifest.id} is not in the {shared} store "
            f"({saved.failures.get(shared, 'not stored')})")


class BackgroundSave:
    """A full backup taken on a thread of its own while the watch goes on, for the chain of one
    base: its result is that chain's alone, whatever ended the chain meanwhile."""

    def __init__(self, config: Config, reporter: Reporter, stores: Stores, chain: Base) -> None:
        self.chain = chain
        self.base: Base | None = None
        self.problem: str | None = None
        self._thread = threading.Thread(target=self._save, args=(config, reporter, stores),
                                        name="journal-long-chain-backup", daemon=True)
        self._thread.start()

    def _save(self, config: Config, reporter: Reporter, stores: Stores) -> None:
        try:
            saved = save_snapshot(config, reporter, stores=stores)
        except Exception as exc:  # said by the chain that waits for it, never a thread's trace
            self.problem = exc.message if isinstance(exc, EtcdopsError) else repr(exc)
            return
        # the chain this one would go on to can wait for the next backup: this chain goes on
        self.problem = not_shared(saved, stores)
        if self.problem is None:
            self.base = base_of(saved.manifest)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
