"""Copying backups to the stores that lack them, and checking each copy before it counts.

The replica region gets a server-side copy from the primary (no bytes through this host); a
store that can only be reached through this host (local -> S3) gets a streamed copy whose
sha256 is checked against the manifest before it is committed. Either way the manifest is
written last, so a copy that failed halfway is never listed as a backup, and a check record
after it says how the copy was checked. Only a verified copy is a source for a server-side copy
(no bytes pass this host to check); a streamed copy checks its bytes on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from etcdops.backup.catalog import Catalog, CatalogEntry
from etcdops.backup.checks import AS_WRITTEN, COPIED, try_record
from etcdops.backup.manifest import Manifest
from etcdops.errors import EtcdopsError, IntegrityError, UsageError
from etcdops.report import Reporter
from etcdops.stores.base import Store, server_side_copier
from etcdops.stores.configured import Stores
from etcdops.stream.writers import Digest

COPY_BLOCK = 1 << 20


def copy_backup(
    manifest: Manifest, source: Store, target: Store, reporter: Reporter, *,
    verified_source: bool = True,
) -> None:
    """Put one backup into target, checked, manifest last (verified_source: whether the
    source's bytes are known to be the manifest's, so that S3 may copy them unseen)."""
    key = manifest.object_key
    copier = server_side_copier(source, target) if verified_source else None
    server_side = copier is not None
    if copier is not None:
        copier.copy_from(source, key, manifest.object_size)
    else:
        _stream_copy(manifest, source, target, reporter)
    info = target.head(key)
    if info is None or info.size != manifest.object_size:
        found = "nothing" if info is None else f"{info.size} bytes"
        target.delete(key)
        raise IntegrityError(
            f"copy of backup {manifest.id} to {target.name} holds {found}, "
            f"expected {manifest.object_size} bytes",
            "run 'etcdops snapshot replicate --missing' again",
        )
    target.put_bytes(manifest.manifest_key, manifest.to_json())
    try_record(target, manifest, manifest.check_key, COPIED if server_side else AS_WRITTEN)
    reporter.event(f"backup {manifest.id} copied from {source.name} to {target.name}")


def _stream_copy(manifest: Manifest, source: Store, target: Store, reporter: Reporter) -> None:
    with target.open_writer(manifest.object_key) as writer:
        digest = Digest(writer)
        with source.open_reader(manifest.object_key) as reader, reporter.progress(
            f"copy to {target.name}", total=manifest.object_size
        ) as bar:
            while block := reader.read(COPY_BLOCK):
                digest.write(block)
                bar.advance(len(block))
        if (digest.size, digest.hexdigest()) != (manifest.object_size, manifest.object_sha256):
            raise IntegrityError(
                f"backup {manifest.id} in {source.name} does not match its manifest",
                "check it with 'etcdops snapshot status'; copy from another store",
            )


@dataclass
class ReplicationReport:
    copied: list[tuple[str, str]] = field(default_factory=list)  # (backup id, store)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (id, store, error)
    already: int = 0

    @property
    def failures(self) -> dict[str, str]:
        """Per store, why a copy to it failed (the last failure, when several did)."""
        return {store: error for _, store, error in self.failed}

    def as_dict(self) -> dict[str, object]:
        """The JSON form of a replication."""
        return {
            "copied": [{"id": i, "store": s} for i, s in self.copied],
            "failed": [{"id": i, "store": s, "error": e} for i, s, e in self.failed],
            "already_present": self.already,
        }


def replicate(
    stores: Stores, cluster: str, reporter: Reporter, *, ref: str | None = None
) -> ReplicationReport:
    """Copy to primary and replica each good backup (or the one named) they do not hold yet."""
    targets = stores.copy_targets
    if not targets:
        raise UsageError(
            "no S3 store is configured, so there is nowhere to replicate to",
            "configure [s3] (and [s3.replica]) in etcdops.toml",
        )
    held = {name: _good_by_id(Catalog(store, cluster)) for name, store in stores.items()}
    wanted = sorted({i for entries in held.values() for i in entries})
    if ref is not None:
        wanted = [i for i in wanted if i.startswith(ref)] if ref != "latest" else wanted[-1:]
        if len(wanted) != 1:
            raise UsageError(
                f"'{ref}' names {len(wanted)} backups held in a good state",
                "give a backup id from 'etcdops snapshot list --store all'",
            )
    report = ReplicationReport()
    for backup_id in wanted:
        for target in targets:
            if backup_id in held[target]:
                report.already += 1
                continue
            source, entry = _source(stores, held, backup_id, target)
            assert entry.manifest is not None  # a good entry has a manifest it can trust
            try:
                copy_backup(entry.manifest, stores[source], stores[target], reporter,
                            verified_source=entry.verified)
            except EtcdopsError as exc:
                report.failed.append((backup_id, target, str(exc)))
                continue
            report.copied.append((backup_id, target))
            held[target][backup_id] = entry
    return report


def _good_by_id(catalog: Catalog) -> dict[str, CatalogEntry]:
    return {e.id: e for e in catalog.entries() if e.good}


def _source(
    stores: Stores, held: dict[str, dict[str, CatalogEntry]], backup_id: str, target: str
) -> tuple[str, CatalogEntry]:
    """Where to copy a backup from: a verified copy the target copies server-side (no bytes
    through this host), else the first copy in read order (the local one when there is one),
    streamed through this host, which checks its bytes on the way."""
    copies = {name: held[name][backup_id] for name in stores if backup_id in held.get(name, {})}
    for name, entry in copies.items():
        if entry.verified and server_side_copier(stores[name], stores[target]):
            return name, entry
    return next(iter(copies.items()))
