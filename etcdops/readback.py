"""Reading backups back: integrity status, and fetching a plain snapshot that etcdutl restores.

A backup is read in one streaming pass: stored bytes (hashed against the manifest) -> age
decryption (authenticated) -> zstd -> etcd's sha256 trailer check -> a sink.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from etcdops.catalog import Catalog
from etcdops.config import Config
from etcdops.errors import CryptoError, EtcdopsError, IntegrityError, UsageError
from etcdops.manifest import MANIFEST_SUFFIX, OBJECT_SUFFIX, Manifest
from etcdops.report import Reporter
from etcdops.stores.local import AtomicFile, LocalStore
from etcdops.stream.writers import (
    AgeDecrypt,
    Digest,
    Discard,
    SnapshotTrailerCheck,
    Writer,
    ZstdDecompress,
)

if TYPE_CHECKING:
    from etcdops.crypto.age import Identity

READ_SIZE = 1 << 20
AGE_MAGIC = b"age-encryption.org/v1\n"


@dataclass(frozen=True)
class BackupSource:
    """Where a backup's bytes come from, and its manifest when there is one."""

    label: str
    size: int
    opener: Callable[[], BinaryIO] = field(repr=False)
    path: Path | None = None
    manifest: Manifest | None = None
    encrypted: bool = True


@dataclass(frozen=True)
class SnapshotStatus:
    source: str
    kind: str  # "backup", "encrypted file" or "plain snapshot"
    backup_id: str | None
    created_at: str | None
    revision: int | None
    keys: int | None
    keys_counted: str | None  # what `keys` counts: live keys, or etcdutl's bbolt entries
    snapshot_size: int
    stored_size: int
    db_sha256: str
    checks: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        """The JSON form of a status report."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__} | {
            "integrity": "ok",
            "checks": list(self.checks),
        }


def locate(config: Config, ref: str) -> BackupSource:
    """A backup id (or unique prefix, or 'latest') in the local store, or a file path."""
    path = Path(ref)
    if path.is_file():
        return _file_source(path)
    if os.sep in ref or ref.endswith((".db", OBJECT_SUFFIX)):
        raise UsageError(f"file {ref} does not exist", "check the path")
    store = LocalStore(config.local.dir)
    entry = Catalog(store, config.cluster).resolve(ref)
    manifest = entry.manifest
    if not entry.good:
        raise IntegrityError(
            f"backup {manifest.id} in {store.name} store is damaged: {entry.problem}",
            "use another backup ('etcdops snapshot list')",
        )
    return BackupSource(
        label=f"backup {manifest.id}",
        size=manifest.object_size,
        opener=lambda: store.open_reader(manifest.object_key),
        manifest=manifest,
    )


def _file_source(path: Path) -> BackupSource:
    with path.open("rb") as handle:
        encrypted = handle.read(len(AGE_MAGIC)) == AGE_MAGIC
    manifest = None
    if encrypted and path.name.endswith(OBJECT_SUFFIX):
        beside = path.with_name(path.name.removesuffix(OBJECT_SUFFIX) + MANIFEST_SUFFIX)
        if beside.is_file():
            manifest = Manifest.from_json(beside.read_bytes(), str(beside))
    return BackupSource(
        label=str(path),
        size=path.stat().st_size,
        opener=lambda: path.open("rb"),
        path=path,
        manifest=manifest,
        encrypted=encrypted,
    )


@dataclass(frozen=True)
class _Decoded:
    stored: Digest
    plain: SnapshotTrailerCheck
    db_sha256: str
    checks: tuple[str, ...]


def _read(config: Config, source: BackupSource, sink: Writer, reporter: Reporter) -> _Decoded:
    """Decode a source end to end into sink, checking everything there is to check."""
    plain = SnapshotTrailerCheck(sink)
    closers: list[AgeDecrypt | ZstdDecompress] = []
    first: Writer = plain
    identities: list[Identity] = []
    if source.encrypted:
        from etcdops.keys import configured_identities

        identities = configured_identities(config.encryption)
        decompress = ZstdDecompress(plain)
        decrypt = AgeDecrypt(decompress, identities)
        closers = [decrypt, decompress]
        first = decrypt
    stored = Digest(first)
    try:
        with source.opener() as reader, reporter.progress("reading", total=source.size) as bar:
            while block := reader.read(READ_SIZE):
                stored.write(block)
                bar.advance(len(block))
        for closer in closers:
            closer.close()
    except CryptoError as exc:
        raise _damage_or_wrong_key(exc, source, identities) from exc
    db_sha256 = plain.verify(source.label)
    checks = ["age authentication", "etcd sha256 trailer"] if source.encrypted else [
        "etcd sha256 trailer"
    ]
    if source.manifest is not None:
        _compare(source.manifest, source.label, stored, plain, db_sha256)
        checks.append("manifest sizes and sha256")
    return _Decoded(stored, plain, db_sha256, tuple(checks))


def _damage_or_wrong_key(
    error: CryptoError, source: BackupSource, identities: list[Identity]
) -> EtcdopsError:
    """Tell a damaged header from a wrong key, which age alone cannot: the manifest knows."""
    if source.manifest is None:
        return error
    ours = {identity.recipient().fingerprint() for identity in identities}
    if ours.isdisjoint(source.manifest.encryption.get("recipients", ())):
        return error
    return IntegrityError(
        f"{source.label}: the age header is damaged (the identity given is one of this backup's "
        "recipients, yet it cannot open the header)",
        "use another copy of this backup, or an older backup",
    )


def _compare(
    manifest: Manifest, label: str, stored: Digest, plain: SnapshotTrailerCheck, db_sha256: str
) -> None:
    expected = {
        "stored size": (manifest.object_size, stored.size),
        "stored sha256": (manifest.object_sha256, stored.hexdigest()),
        "snapshot size": (manifest.snapshot_size, plain.size),
        "database sha256": (manifest.snapshot_db_sha256, db_sha256),
    }
    for what, (want, got) in expected.items():
        if want != got:
            raise IntegrityError(
                f"{label}: {what} is {got}, its manifest says {want}",
                "this copy is damaged or not the backup its manifest describes; use another copy",
            )


def _status(source: BackupSource, decoded: _Decoded, **found: int) -> SnapshotStatus:
    manifest = source.manifest
    kind = "backup" if manifest else ("encrypted file" if source.encrypted else "plain snapshot")
    return SnapshotStatus(
        source=source.label,
        kind=kind,
        backup_id=manifest.id if manifest else None,
        created_at=manifest.created_at.isoformat() if manifest else None,
        revision=found.get("revision", manifest.etcd.revision if manifest else None),
        keys=found.get("keys", manifest.etcd.keys if manifest else None),
        keys_counted=(
            "bbolt entries, as etcdutl counts them" if "keys" in found
            else "live keys at the revision" if manifest else None
        ),
        snapshot_size=decoded.plain.size,
        stored_size=decoded.stored.size,
        db_sha256=decoded.db_sha256,
        checks=decoded.checks,
    )


def snapshot_status(config: Config, ref: str, reporter: Reporter) -> SnapshotStatus:
    """Read a backup or snapshot file end to end and report what it is and that it is intact."""
    source = locate(config, ref)
    decoded = _read(config, source, Discard(), reporter)
    if source.encrypted or source.path is None:
        return _status(source, decoded)
    # A plain snapshot has no manifest: etcdutl reads its revision and key count from bbolt.
    from etcdops.etcd.etcdutl import snapshot_status as etcdutl_status

    found = etcdutl_status(source.path, config.etcd.etcdutl)
    decoded = _Decoded(
        decoded.stored, decoded.plain, decoded.db_sha256,
        decoded.checks + ("etcdutl snapshot status",),
    )
    return _status(source, decoded, revision=found.revision, keys=found.total_keys)


def fetch_snapshot(
    config: Config, ref: str, out: Path, reporter: Reporter, *, force: bool = False
) -> SnapshotStatus:
    """Write the plain snapshot of a backup to out, only once every check has passed."""
    source = locate(config, ref)
    if not source.encrypted:
        raise UsageError(f"{source.label} is already a plain snapshot", "use it as it is")
    if out.exists() and not force:
        raise UsageError(f"{out} already exists", "choose another --out path or pass --force")
    target = AtomicFile(out)
    try:
        decoded = _read(config, source, target, reporter)
        target.commit()
    except BaseException:
        target.abort()
        raise
    return _status(source, decoded)
