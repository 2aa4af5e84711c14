"""A store's journal chains from one listing of its keys: what each chain holds and how far it
reaches, cheaply (no segment body is read; a manifest only where a time is wanted).

A day of journal is some 17,000 segments: reading every manifest would cost as many requests
per store. The key names already say each segment's chain and revisions
(etcdops.journal.manifest), so one listing gives every chain's extent, and its window and holes
(etcdops.journal.chain.window over the names); the times the journal saw come from the
manifests of a chain's first and last segments. Retention and `snapshot list` read chains so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from etcdops.errors import IntegrityError, NotFoundError
from etcdops.journal.chain import ChainWindow, Finding, window
from etcdops.journal.manifest import (
    MANIFEST_SUFFIX,
    SegmentKeys,
    SegmentManifest,
    journal_prefix,
    revisions_of,
)
from etcdops.journal.store import delete_chain, read_manifest
from etcdops.stores.base import Store


@dataclass(frozen=True)
class ListedSegment:
    """A segment known from its manifest's key: its chain and revisions, not its bytes."""

    base_backup_id: str
    first_revision: int
    last_revision: int
    object_key: str
    manifest_key: str
    last_change_at: None = None  # a listing does not say; the segment's manifest does

    @property
    def name(self) -> str:
        return f"segment {self.first_revision}-{self.last_revision} of chain {self.base_backup_id}"


@dataclass(frozen=True)
class ChainFolder:
    """One chain's folder in one store, as its keys show it."""

    base_backup_id: str
    segments: tuple[ListedSegment, ...]  # those with a manifest, in revision order
    others: tuple[str, ...]  # every other file (objects, leftovers): deleted after the manifests
    stored_bytes: int
    newest_write: datetime  # the store's time of the folder's latest file

    def delete(self, store: Store) -> None:
        """Delete the chain's every file, its manifests first (etcdops.journal.store)."""
        delete_chain(store, [s.manifest_key for s in self.segments], self.others)


def list_chains(store: Store, cluster: str) -> dict[str, ChainFolder]:
    """Every chain folder of the cluster in a store, by base backup id: one listing."""
    prefix = journal_prefix("", cluster)
    files: dict[str, list[tuple[str, int, datetime]]] = {}
    for info in store.list(prefix):
        base = info.key[len(prefix):].split("/", 1)[0]
        files.setdefault(base, []).append((info.key, info.size, info.modified))
    return {base: _folder(base, found) for base, found in files.items()}


def _folder(base: str, files: list[tuple[str, int, datetime]]) -> ChainFolder:
    segments, others = [], []
    for key, _, _ in files:
        if key.endswith(MANIFEST_SUFFIX) and _is_segment_key(key):
            first, last = revisions_of(key)
            keys = SegmentKeys.of(key)
            segments.append(ListedSegment(base, first, last, keys.object, keys.manifest))
        else:
            others.append(key)
    segments.sort(key=lambda s: (s.first_revision, s.last_revision))
    return ChainFolder(
        base, tuple(segments), tuple(others), sum(size for _, size, _ in files),
        max(modified for _, _, modified in files),
    )


def _is_segment_key(key: str) -> bool:
    try:
        SegmentKeys.of(key)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ChainSummary:
    """One chain in one store: its extent from the listing, its times from two manifests."""

    folder: ChainFolder
    window: ChainWindow[ListedSegment]  # from the base's revision, or the first segment's
    first_change_at: datetime | None  # the first segment's first change, when readable
    # the newest segment's last change; the store's time of the folder's latest file when its
    # manifest cannot be read or there is no segment (the latest sign of life: retention must
    # not date a chain too early)
    last_change_at: datetime
    notes: tuple[str, ...]  # manifests that could not be read

    @property
    def base_backup_id(self) -> str:
        return self.folder.base_backup_id

    @property
    def segments(self) -> tuple[ListedSegment, ...]:
        return self.folder.segments

    @property
    def holes(self) -> tuple[Finding, ...]:
        return self.window.holes

    def as_dict(self) -> dict[str, object]:
        """The chain as prune's JSON shows it."""
        segments = self.segments
        return {
            "base_backup_id": self.base_backup_id,
            "segments": len(segments),
            "first_revision": segments[0].first_revision if segments else None,
            "last_revision": max(s.last_revision for s in segments) if segments else None,
            "provable_revision": self.window.last_revision,
            "first_change_at": _time(self.first_change_at),
            "last_change_at": _time(self.last_change_at),
            "stored_bytes": self.folder.stored_bytes,
            "holes": [hole.reason for hole in self.holes],
            "notes": list(self.notes),
        }


def summarise(
    store: Store, cluster: str, folder: ChainFolder, base_revision: int | None
) -> ChainSummary:
    """A chain folder's window and times: base_revision is the base backup's (None when the
    store holds no readable manifest of it: the window then starts at the first segment)."""
    segments = folder.segments
    start = base_revision if base_revision is not None else (
        segments[0].first_revision - 1 if segments else 0)
    notes: list[str] = []
    first = _readable(store, cluster, segments[0], notes) if segments else None
    newest = max(segments, key=lambda s: (s.last_revision, s.first_revision), default=None)
    last = (first if newest is None or newest is segments[0] else
            _readable(store, cluster, newest, notes))
    return ChainSummary(
        folder, window(folder.base_backup_id, start, segments),
        first.first_change_at if first else None,
        last.last_change_at if last else folder.newest_write,
        tuple(notes),
    )


def change_time(store: Store, cluster: str, segment: ListedSegment) -> datetime | None:
    """When the journal saw a listed segment's last change, or None when its manifest cannot
    be read."""
    found = _readable(store, cluster, segment, [])
    return found.last_change_at if found else None


def _readable(
    store: Store, cluster: str, segment: ListedSegment, notes: list[str]
) -> SegmentManifest | None:
    """A listed segment's manifest, or None with why in notes."""
    try:
        return read_manifest(store, segment.manifest_key, cluster)
    except (IntegrityError, NotFoundError) as exc:
        notes.append(exc.message)
        return None


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
