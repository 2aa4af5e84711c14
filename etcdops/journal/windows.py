"""`snapshot list` with the journal: per backup, the window its chain can restore, and the gaps
between chains.

A restore reads a chain's segments from every store (etcdops.restore.point), so a chain's
window here is that of its segments in all the stores listed together: from the base backup's
time and revision to the last change of the last segment before any hole. A gap is where a
chain ends before the next base begins (the journal started a new chain after a compaction or
lag, or stopped): the points between cannot be restored. Cheap: one listing of the journal per
store and one manifest per chain (etcdops.journal.listing), no segment body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from etcdops.backup.catalog import BackupView, Listing, list_backups
from etcdops.errors import StorageError
from etcdops.journal.chain import ChainWindow, window
from etcdops.journal.listing import ChainFolder, ListedSegment, change_time, list_chains
from etcdops.stores.base import Store


@dataclass(frozen=True)
class ChainView:
    """One backup's chain across the stores listed."""

    base_backup_id: str
    base_created_at: datetime
    window: ChainWindow[ListedSegment]
    # when the journal saw the window's last change (None: only the base, or its manifest
    # could not be read in any store)
    last_change_at: datetime | None
    listed_last_revision: int | None  # the last revision any segment names, holes or not
    segments: dict[str, int]  # per store, the segments it holds

    @property
    def journaled(self) -> bool:
        """Some store holds a segment of the chain."""
        return self.listed_last_revision is not None

    def as_dict(self) -> dict[str, object]:
        """The chain as `list -o json` prints it under the backup's `journal`."""
        return {
            "from": self.base_created_at.isoformat(),
            "until": self.last_change_at.isoformat() if self.last_change_at else None,
            "last_revision": self.window.last_revision,
            "segments": len(self.window.path),
            "listed_last_revision": self.listed_last_revision,
            "holes": [{"first_revision": h.first_revision, "last_revision": h.last_revision,
                       "reason": h.reason} for h in self.window.holes],
            "stores": self.segments,
        }


@dataclass(frozen=True)
class Gap:
    """Revisions no chain covers between one chain's end and the next base."""

    after: str  # the backup whose chain ends
    before: str  # the next backup
    first_revision: int
    last_revision: int
    since: datetime  # the last change the ending chain holds
    until: datetime  # the next backup's time

    def as_dict(self) -> dict[str, object]:
        return {"after": self.after, "before": self.before,
                "first_revision": self.first_revision, "last_revision": self.last_revision,
                "since": self.since.isoformat(), "until": self.until.isoformat()}


@dataclass(frozen=True)
class JournalListing:
    """The catalogue (etcdops.backup.catalog.Listing) with the journal's windows and gaps."""

    listing: Listing
    chains: dict[str, ChainView]  # by base backup id, for the backups listed
    gaps: list[Gap]
    orphans: dict[str, list[str]] = field(default_factory=dict)  # store -> chains without base
    unreadable: dict[str, str] = field(default_factory=dict)  # store -> why its journal is not

    @property
    def failures(self) -> dict[str, str]:
        """Per store, why it (or its journal) could not be listed."""
        return self.listing.failures | {
            name: f"its journal: {why}" for name, why in self.unreadable.items()
            if name not in self.listing.failures
        }

    def as_dict(self) -> dict[str, object]:
        """The listing's JSON with, per backup, `journal` (its chain's window, or null), and
        the gaps and the orphan chains."""
        doc = self.listing.as_dict()
        for backup in doc["backups"]:  # type: ignore[union-attr]
            chain = self.chains.get(backup["id"])
            backup["journal"] = chain.as_dict() if chain else None
        doc["journal_gaps"] = [gap.as_dict() for gap in self.gaps]
        doc["orphan_chains"] = self.orphans
        doc["unreachable"] = self.failures
        return doc


def list_with_chains(
    stores: Mapping[str, Store], cluster: str, *, show_all: bool = False
) -> JournalListing:
    """Every backup in the stores with its chain's window, and the gaps between chains."""
    listing = list_backups(stores, cluster, show_all=show_all)
    folders: dict[str, dict[str, ChainFolder]] = {}
    unreadable: dict[str, str] = {}
    for name in listing.listed:
        try:
            folders[name] = list_chains(stores[name], cluster)
        except StorageError as exc:
            unreadable[name] = str(exc)
    views = listing.survey.backups
    chains = {}
    for view in views:
        held = {name: found[view.manifest.id] for name, found in folders.items()
                if view.manifest.id in found}
        if held:
            chains[view.manifest.id] = _chain_view(stores, cluster, view, held)
    based = {view.manifest.id for view in views}
    orphans = {name: sorted(base for base in found if base not in based)
               for name, found in folders.items()}
    return JournalListing(listing, chains, gaps([v for v in views if v.good_in], chains),
                          {n: o for n, o in orphans.items() if o}, unreadable)


def _chain_view(
    stores: Mapping[str, Store], cluster: str, view: BackupView, held: dict[str, ChainFolder]
) -> ChainView:
    """A backup's chain from the segments any store lists (a segment in two stores once)."""
    union: dict[str, ListedSegment] = {}
    for folder in held.values():
        union.update((s.object_key, s) for s in folder.segments)
    found = window(view.manifest.id, view.manifest.etcd.revision, list(union.values()))
    last = None
    if found.path:
        end = found.path[-1]
        for name, folder in held.items():
            if end not in folder.segments:
                continue
            try:
                last = change_time(stores[name], cluster, end)
            except StorageError:
                continue  # another store's copy of the manifest says the same
            if last is not None:
                break
    return ChainView(
        view.manifest.id, view.manifest.created_at, found, last,
        max((s.last_revision for s in union.values()), default=None),
        {name: len(folder.segments) for name, folder in held.items()},
    )


def gaps(views: Sequence[BackupView], chains: Mapping[str, ChainView]) -> list[Gap]:
    """Where a chain ends before the next base begins, history by history (the backups of one
    etcd cluster ID: a restored cluster starts a new history whose revisions are not comparable
    with the old one's), oldest history first."""
    histories: dict[str, list[BackupView]] = {}
    for view in sorted(views, key=lambda v: v.manifest.created_at):
        histories.setdefault(view.manifest.etcd.cluster_id, []).append(view)
    return [gap for history in histories.values() for gap in _gaps_of(history, chains)]


def _gaps_of(views: Sequence[BackupView], chains: Mapping[str, ChainView]) -> list[Gap]:
    """The gaps of one history, in revision order: walking the backups by revision, the
    furthest revision restorable so far (a chain's end, or a base's own revision) against the
    next base's. Only an end a chain reached counts: backups without a journal are not gaps."""
    gaps_found = []
    reach: tuple[int, str, datetime] | None = None  # the furthest chain end: revision, id, time
    furthest = 0
    for view in sorted(views, key=lambda v: (v.manifest.etcd.revision, v.manifest.created_at)):
        revision = view.manifest.etcd.revision
        if reach is not None and reach[0] == furthest and furthest + 1 < revision:
            gaps_found.append(Gap(reach[1], view.manifest.id, furthest + 1, revision - 1,
                                  reach[2], view.manifest.created_at))
        chain = chains.get(view.manifest.id)
        end = chain.window.last_revision if chain else revision
        if chain and chain.journaled and end >= furthest:
            reach = (end, view.manifest.id, chain.last_change_at or view.manifest.created_at)
        furthest = max(furthest, end, revision)
    return gaps_found
