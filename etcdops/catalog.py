"""The catalogue: which backups a store holds, found through their manifests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from etcdops.errors import IntegrityError, NotFoundError, StorageError, UsageError
from etcdops.manifest import (
    MANIFEST_SUFFIX,
    OBJECT_SUFFIX,
    Manifest,
    backup_id_of,
    backup_id_time,
    snapshots_prefix,
)
from etcdops.stores.base import ObjectInfo, Store


@dataclass(frozen=True)
class CatalogEntry:
    manifest: Manifest
    store: str
    problem: str | None  # None when the object is present with the manifest's size

    @property
    def good(self) -> bool:
        return self.problem is None


class Catalog:
    """Backups of one cluster in one store, newest last."""

    def __init__(self, store: Store, cluster: str, prefix: str = "") -> None:
        self.store = store
        self.cluster = cluster
        self.prefix = snapshots_prefix(prefix, cluster)

    def entries(self) -> list[CatalogEntry]:
        """Every backup whose manifest exists, checked against its object's presence and size."""
        objects = {info.key: info for info in self.store.list(self.prefix)}
        entries = []
        for key in objects:
            if not key.endswith(MANIFEST_SUFFIX):
                continue
            try:
                manifest = Manifest.from_json(self.store.get_bytes(key), self.store.describe(key))
            except (IntegrityError, NotFoundError):
                continue  # deleted under us, or damaged: not a backup we can vouch for
            info = objects.get(manifest.object_key)
            if info is None:
                problem = "object missing"
            elif info.size != manifest.object_size:
                problem = f"object is {info.size} bytes, manifest says {manifest.object_size}"
            else:
                problem = None
            entries.append(CatalogEntry(manifest, self.store.name, problem))
        entries.sort(key=lambda e: (e.manifest.created_at, e.manifest.id))
        return entries

    def resolve(self, ref: str) -> CatalogEntry:
        """The backup a reference names: an id, a unique id prefix, or 'latest' (newest good)."""
        entries = self.entries()
        backup_id = resolve_ref(
            [(e.manifest.id, e.good) for e in entries], ref, f"{self.store.name} store"
        )
        return next(e for e in entries if e.manifest.id == backup_id)

    def unfinished(self) -> list[ObjectInfo]:
        """Writes of this cluster's backups that never finished (a save killed mid-write), each
        dated by its latest sign of life: the store's time (a local file's last write, an
        upload's start) or the start of the save its backup id records, whichever is later.
        A store's date alone is not enough: moto, for one, dates every upload in 2010."""
        found = []
        for info in self.store.unfinished(self.prefix):
            started = backup_id_time(backup_id_of(info.key))
            latest = max(info.modified, started) if started else info.modified
            found.append(ObjectInfo(info.key, info.size, latest))
        return found

    def incomplete(self) -> list[ObjectInfo]:
        """Objects without a manifest: saves or copies that did not finish."""
        objects = list(self.store.list(self.prefix))
        manifests = {i.key for i in objects if i.key.endswith(MANIFEST_SUFFIX)}
        return [
            info for info in objects
            if info.key.endswith(OBJECT_SUFFIX)
            and info.key.removesuffix(OBJECT_SUFFIX) + MANIFEST_SUFFIX not in manifests
        ]


def resolve_ref(backups: Sequence[tuple[str, bool]], ref: str, where: str) -> str:
    """The id a reference names among (id, good) pairs sorted oldest first."""
    if ref == "latest":
        good = [backup_id for backup_id, ok in backups if ok]
        if not good:
            raise NotFoundError(
                f"no complete backup in {where}", "take one with 'etcdops snapshot save'"
            )
        return good[-1]
    matches = sorted({backup_id for backup_id, _ in backups if backup_id.startswith(ref)})
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFoundError(
            f"no backup '{ref}' in {where}",
            "run 'etcdops snapshot list --store all' to see the backup ids, or give a file path",
        )
    raise UsageError(
        f"'{ref}' matches {len(matches)} backups",
        "give more of the id (see 'etcdops snapshot list')",
    )


@dataclass(frozen=True)
class BackupView:
    """One backup across stores: its manifest and, per store holding it, its condition."""

    manifest: Manifest
    copies: dict[str, str | None]  # store name -> problem, None when the copy is good

    @property
    def good_in(self) -> list[str]:
        return [name for name, problem in self.copies.items() if problem is None]


def combined_view(
    stores: dict[str, Store], cluster: str
) -> tuple[list[BackupView], dict[str, StorageError]]:
    """Every backup in any store (newest last), and the stores that could not be listed."""
    views: dict[str, BackupView] = {}
    unreachable: dict[str, StorageError] = {}
    for name, store in stores.items():
        try:
            entries = Catalog(store, cluster).entries()
        except StorageError as exc:
            unreachable[name] = exc
            continue
        for entry in entries:
            view = views.setdefault(entry.manifest.id, BackupView(entry.manifest, {}))
            view.copies[name] = entry.problem
    ordered = sorted(views.values(), key=lambda v: (v.manifest.created_at, v.manifest.id))
    return ordered, unreachable
