"""The catalogue: which backups a store holds, found through their manifests."""

from __future__ import annotations

from dataclasses import dataclass

from etcdops.errors import IntegrityError, NotFoundError, UsageError
from etcdops.manifest import MANIFEST_SUFFIX, Manifest, snapshots_prefix
from etcdops.stores.base import Store


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
        if ref == "latest":
            good = [e for e in entries if e.good]
            if not good:
                raise NotFoundError(
                    f"no complete backup of cluster '{self.cluster}' in {self.store.name} store",
                    "take one with 'etcdops snapshot save'",
                )
            return good[-1]
        matches = [e for e in entries if e.manifest.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFoundError(
                f"no backup '{ref}' of cluster '{self.cluster}' in {self.store.name} store",
                "run 'etcdops snapshot list' to see the backup ids, or give a file path",
            )
        raise UsageError(
            f"'{ref}' matches {len(matches)} backups",
            "give more of the id (see 'etcdops snapshot list')",
        )
