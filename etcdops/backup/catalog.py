"""The catalogue: which backups a store holds, found through their manifests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from etcdops.backup.checks import CheckRecord, judge
from etcdops.backup.manifest import (
    MANIFEST_SUFFIX,
    OBJECT_SUFFIX,
    BackupKeys,
    Manifest,
    backup_id_of,
    backup_id_time,
    snapshots_prefix,
)
from etcdops.backup.retention import Condition
from etcdops.errors import (
    FeatureUnavailable,
    IntegrityError,
    NotFoundError,
    StorageError,
    UsageError,
)
from etcdops.stores.base import ObjectInfo, Store


@dataclass(frozen=True)
class CatalogEntry:
    """One backup's copy in one store, as the files there under its own name show it."""

    id: str  # from the manifest's own key, never from what the manifest says
    store: str
    keys: BackupKeys  # the files that belong to this id and location: what a delete removes
    created_at: datetime
    condition: Condition  # VERIFIED, UNCHECKED or DAMAGED
    problem: str | None  # why it is not verified; None when it is
    manifest: Manifest | None  # None when the manifest is unreadable or names another backup
    check: CheckRecord | None = None  # the copy's last check, when one is recorded

    @property
    def good(self) -> bool:
        """Complete: worth reading (a read checks every byte), though not verified unless
        `verified` says so."""
        return self.condition is not Condition.DAMAGED

    @property
    def verified(self) -> bool:
        """Its bytes were checked against its manifest and have not changed since: the only
        copies that count for retention, health and 'latest'."""
        return self.condition is Condition.VERIFIED

    def as_dict(self) -> dict[str, object]:
        """The copy's condition and last check, as `list -o json` prints it under `copies`."""
        check = self.check
        return {
            "condition": self.condition.value,
            "problem": self.problem,
            "checked_at": check.checked_at.isoformat() if check else None,
            "method": check.method if check else None,
        }


class Catalog:
    """Backups of one cluster in one store, newest last."""

    def __init__(self, store: Store, cluster: str, prefix: str = "") -> None:
        self.store = store
        self.cluster = cluster
        self.prefix = snapshots_prefix(prefix, cluster)
        # optional features the store could not serve, one line each: the operator's warnings
        self.warnings: list[str] = []

    def entries(self) -> list[CatalogEntry]:
        """Every backup whose manifest exists, verified or why not; a manifest that cannot be
        read, or that names another backup than its own key, is a damaged entry of its own."""
        objects = {info.key: info for info in self.store.list(self.prefix)}
        entries = []
        for key, info in objects.items():
            if not key.endswith(MANIFEST_SUFFIX):
                continue
            keys = BackupKeys.of(key)
            try:
                manifest = Manifest.from_json(self.store.get_bytes(key), self.store.describe(key))
            except NotFoundError:
                continue  # deleted under us
            except IntegrityError as exc:
                entries.append(self._untrusted(keys, info, f"manifest unreadable: {exc.__cause__}"))
                continue
            named = [f"id {manifest.id}"] if manifest.id != keys.id else []
            if manifest.object_key != keys.object:
                named.append(f"object {manifest.object_key}")
            if named:
                # trusting it would read, keep or delete another backup's files in its name
                entries.append(self._untrusted(
                    keys, info, f"manifest names another backup: {', '.join(named)}"
                ))
                continue
            entries.append(self._entry(keys, manifest, objects))
        entries.sort(key=lambda e: (e.created_at, e.id))
        return entries

    def _entry(
        self, keys: BackupKeys, manifest: Manifest, objects: dict[str, ObjectInfo]
    ) -> CatalogEntry:
        info = objects.get(keys.object)
        record, record_problem = self._check_record(keys, objects)
        if info is None:
            condition, problem = Condition.DAMAGED, "object missing"
        elif info.size != manifest.object_size:
            condition = Condition.DAMAGED
            problem = f"object is {info.size} bytes, manifest says {manifest.object_size}"
        elif record_problem:
            condition, problem = Condition.UNCHECKED, record_problem
        else:
            condition, problem = judge(manifest, info, record)
        return CatalogEntry(
            keys.id, self.store.name, keys, manifest.created_at, condition, problem, manifest,
            record,
        )

    def _check_record(
        self, keys: BackupKeys, objects: dict[str, ObjectInfo]
    ) -> tuple[CheckRecord | None, str | None]:
        if keys.check not in objects:
            return None, None
        try:
            return CheckRecord.from_json(self.store.get_bytes(keys.check)), None
        except NotFoundError:
            return None, None
        except ValueError as exc:
            return None, str(exc)

    def _untrusted(self, keys: BackupKeys, manifest: ObjectInfo, problem: str) -> CatalogEntry:
        # dated like an unfinished write: nothing in the manifest can be believed, its date
        # included, and it must not go before a save that could still be writing it is over
        created = _last_sign_of_life(keys.object, manifest.modified)
        return CatalogEntry(
            keys.id, self.store.name, keys, created, Condition.DAMAGED, problem, None
        )

    def unfinished(self) -> list[ObjectInfo]:
        """Writes of this cluster's backups that never finished (a save killed mid-write), each
        dated by its latest sign of life. None, and why in warnings, when the store cannot list
        them (an S3-compatible server without ListMultipartUploads): they only cost space, and
        nothing that needs the backups may stall on them."""
        try:
            found = self.store.unfinished(self.prefix)
        except FeatureUnavailable as exc:
            if str(exc) not in self.warnings:
                self.warnings.append(str(exc))
            return []
        return [
            ObjectInfo(info.key, info.size, _last_sign_of_life(info.key, info.modified))
            for info in found
        ]

    def incomplete(self) -> list[ObjectInfo]:
        """Objects without a manifest: saves or copies that did not finish."""
        objects = list(self.store.list(self.prefix))
        manifests = {i.key for i in objects if i.key.endswith(MANIFEST_SUFFIX)}
        return [
            info for info in objects
            if info.key.endswith(OBJECT_SUFFIX)
            and BackupKeys.of(info.key).manifest not in manifests
        ]


def _last_sign_of_life(key: str, store_time: datetime) -> datetime:
    """When a backup's file was last worked on, as best it can be told without its manifest:
    the store's time (a local file's last write, an upload's start) or the start of the save
    its backup id records, whichever is later. A store's date alone is not enough: moto, for
    one, dates every upload in 2010."""
    started = backup_id_time(backup_id_of(key))
    return max(store_time, started) if started else store_time


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
    """One backup across stores: its manifest and, per store holding it, that store's copy."""

    manifest: Manifest
    entries: dict[str, CatalogEntry]  # store name -> its copy

    @property
    def copies(self) -> dict[str, str | None]:
        """Per store, why its copy is not verified; None when it is."""
        return {name: entry.problem for name, entry in self.entries.items()}

    @property
    def good_in(self) -> list[str]:
        """Stores with a complete copy, worth reading (reading checks every byte)."""
        return [name for name, entry in self.entries.items() if entry.good]

    @property
    def verified_in(self) -> list[str]:
        """Stores whose copy's bytes are known to match the manifest."""
        return [name for name, entry in self.entries.items() if entry.verified]

    @property
    def verified(self) -> bool:
        """Every copy listed is verified."""
        return len(self.verified_in) == len(self.entries)

    def as_dict(self) -> dict[str, object]:
        """The backup as `list -o json` prints it."""
        manifest = self.manifest
        return {
            "id": manifest.id,
            "created_at": manifest.created_at.isoformat(),
            "revision": manifest.etcd.revision,
            "keys": manifest.etcd.keys,
            "snapshot_size": manifest.snapshot_size,
            "stored_size": manifest.object_size,
            "stores": self.copies,
            "verified": self.verified,
            "copies": {name: entry.as_dict() for name, entry in self.entries.items()},
        }


@dataclass
class Survey:
    """What every store holds: backups (newest last), manifests that cannot be trusted, and
    the stores that could not be listed."""

    backups: list[BackupView] = field(default_factory=list)
    damaged: dict[str, list[CatalogEntry]] = field(default_factory=dict)  # per store listed
    unreachable: dict[str, StorageError] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        """One line per manifest that hides its backup: it is in no list of backups."""
        return [
            f"damaged manifest in {name}: {entry.id} ({entry.problem}); it is not counted "
            "as a backup, and prune removes it once older than keep_within"
            for name, entries in self.damaged.items() for entry in entries
        ]


def survey_stores(stores: Mapping[str, Store], cluster: str) -> Survey:
    """Every backup in any store, each copy verified or why not."""
    views: dict[str, BackupView] = {}
    result = Survey()
    for name, store in stores.items():
        try:
            entries = Catalog(store, cluster).entries()
        except StorageError as exc:
            result.unreachable[name] = exc
            continue
        result.damaged[name] = [e for e in entries if e.manifest is None]
        for entry in entries:
            if entry.manifest is not None:
                view = views.setdefault(entry.id, BackupView(entry.manifest, {}))
                view.entries[name] = entry
    result.backups = sorted(views.values(), key=lambda v: (v.manifest.created_at, v.manifest.id))
    return result


def combined_view(
    stores: Mapping[str, Store], cluster: str
) -> tuple[list[BackupView], dict[str, StorageError]]:
    """Every backup in any store (newest last), and the stores that could not be listed."""
    found = survey_stores(stores, cluster)
    return found.backups, found.unreachable


@dataclass(frozen=True)
class Listing:
    """`snapshot list`: every backup across the stores listed and, with show_all, what is not
    a backup yet (objects without a manifest, writes that never finished)."""

    survey: Survey
    listed: list[str]  # the stores asked for that could be listed
    show_all: bool
    incomplete: dict[str, list[str]] = field(default_factory=dict)  # store -> object keys
    unfinished: dict[str, list[ObjectInfo]] = field(default_factory=dict)
    # what show_all could not look at, one line each (a store that cannot list unfinished writes)
    warnings: list[str] = field(default_factory=list)

    @property
    def failures(self) -> dict[str, str]:
        """Per store, why it could not be listed."""
        return {name: str(exc) for name, exc in self.survey.unreachable.items()}

    def as_dict(self) -> dict[str, object]:
        """The JSON form of the listing."""
        found = self.survey
        doc: dict[str, object] = {
            "backups": [view.as_dict() for view in found.backups],
            "damaged": {
                name: [{"id": e.id, "manifest_key": e.keys.manifest, "problem": e.problem}
                       for e in entries]
                for name, entries in found.damaged.items()
            },
            "unreachable": self.failures,
        }
        if self.show_all:
            doc["incomplete"] = self.incomplete
            doc["unfinished"] = {
                name: [{"key": i.key, "last_active_at": i.modified.isoformat()} for i in infos]
                for name, infos in self.unfinished.items()
            }
            doc["warnings"] = self.warnings
        return doc


def list_backups(stores: Mapping[str, Store], cluster: str, *, show_all: bool = False) -> Listing:
    """Every backup in the stores, each copy verified or why not; with show_all, also what
    saves and copies left unfinished (they hold space that no backup accounts for)."""
    found = survey_stores(stores, cluster)
    listed = [name for name in stores if name not in found.unreachable]
    listing = Listing(found, listed, show_all)
    if show_all:
        for name in listed:
            catalog = Catalog(stores[name], cluster)
            listing.incomplete[name] = [info.key for info in catalog.incomplete()]
            listing.unfinished[name] = catalog.unfinished()
            listing.warnings.extend(catalog.warnings)
    return listing
