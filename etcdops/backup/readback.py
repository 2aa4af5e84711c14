"""Reading backups back: integrity status, and fetching a plain snapshot that etcdutl restores.

A backup is read in one streaming pass: stored bytes (hashed against the manifest) -> age
decryption (authenticated) -> zstd -> etcd's sha256 trailer check -> a sink, on three threads
(etcdops.stream.pipeline.SnapshotDecoder).
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from etcdops.backup.catalog import combined_view, resolve_ref
from etcdops.backup.manifest import MANIFEST_SUFFIX, OBJECT_SUFFIX, Manifest
from etcdops.config import Config
from etcdops.errors import (
    CryptoError,
    EtcdopsError,
    IntegrityError,
    NotFoundError,
    StorageError,
    UsageError,
)
from etcdops.report import Reporter
from etcdops.stores.base import Store
from etcdops.stores.configured import Stores, open_stores
from etcdops.stores.local import AtomicFile
from etcdops.stream.pipeline import SnapshotDecoder
from etcdops.stream.writers import Digest, Discard, Search, SnapshotTrailerCheck, Writer

if TYPE_CHECKING:
    from etcdops.crypto.age import Identity

T = TypeVar("T")
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
    store: str | None = None


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
    store: str | None  # which store the copy that was read came from
    fallbacks: tuple[str, ...]  # copies that were tried first and failed, and why
    warnings: tuple[str, ...] = ()  # what the operator should fix although the read succeeded

    def as_dict(self) -> dict[str, object]:
        """The JSON form of a status report."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__} | {
            "integrity": "ok",
            "checks": list(self.checks),
            "fallbacks": list(self.fallbacks),
            "warnings": list(self.warnings),
        }


def locate(
    config: Config, ref: str, reporter: Reporter, *, store: str | None = None,
    stores: Stores | None = None,
) -> tuple[list[BackupSource], list[str]]:
    """Where to read a backup from, in the order to try: a file path, or an id (or unique
    prefix, or 'latest') in each store of the topology (default: config's) holding a good copy,
    in its read order; and a note for each store that could not even be listed."""
    if is_file_ref(ref):
        return [_file_source(Path(ref))], []
    stores = stores or open_stores(config)
    if store is not None:
        stores = stores.only(store)
    views, unreachable = combined_view(stores, config.cluster)
    notes = [f"{name} store could not be listed ({e.message})" for name, e in unreachable.items()]
    for note in notes:
        reporter.event(note)
    if not views and unreachable:
        raise next(iter(unreachable.values()))
    where = " or ".join(f"{name} store" for name in stores)
    try:
        backup_id = resolve_ref([(v.manifest.id, bool(v.good_in)) for v in views], ref, where)
    except NotFoundError as exc:
        if Path(ref).exists():
            raise NotFoundError(
                exc.message,
                f"a bare name is a backup reference; to read the file {ref} here, write './{ref}'",
            ) from None
        raise
    view = next(v for v in views if v.manifest.id == backup_id)
    if not view.good_in:
        problems = "; ".join(f"{name}: {problem}" for name, problem in view.copies.items())
        raise IntegrityError(
            f"backup {backup_id} has no good copy ({problems})",
            "use another backup ('etcdops snapshot list --store all')",
        )
    return [_store_source(stores[name], view.manifest) for name in view.good_in], notes


def is_file_ref(ref: str) -> bool:
    """Whether a REF names a file: a path with a '/', or a name with a '.', which no backup id
    has; 'latest' and every other bare name are backup references, whatever files exist."""
    return "/" in ref or os.sep in ref or "." in ref


def _store_source(store: Store, manifest: Manifest) -> BackupSource:
    return BackupSource(
        label=f"backup {manifest.id} in {store.name} store",
        size=manifest.object_size,
        opener=lambda: store.open_reader(manifest.object_key),
        manifest=manifest,
        store=store.name,
    )


def first_good(
    located: tuple[list[BackupSource], list[str]],
    attempt: Callable[[BackupSource], T],
    reporter: Reporter,
) -> tuple[BackupSource, T, list[str]]:
    """Try each copy in turn: a copy that is unreachable or damaged gives way to the next.
    When none can be read, the error names the backup and every copy's failure."""
    sources, notes = located
    fallbacks = list(notes)
    failed: list[tuple[BackupSource, StorageError | IntegrityError]] = []
    for index, source in enumerate(sources):
        try:
            return source, attempt(source), fallbacks
        except (StorageError, IntegrityError) as exc:
            failed.append((source, exc))
            if index == len(sources) - 1:
                raise _no_good_copy(failed, notes) from exc
            note = f"{source.label} failed ({exc.message}); reading {sources[index + 1].label}"
            reporter.event(note)
            fallbacks.append(note)
    raise AssertionError("locate() returns at least one source")


def _no_good_copy(
    failed: list[tuple[BackupSource, StorageError | IntegrityError]], notes: list[str]
) -> EtcdopsError:
    """Every copy of a backup failed: one error naming the backup and each copy's failure."""
    source, last = failed[-1]
    if source.manifest is None or source.store is None:
        return last  # a file: its own error says it all
    copies = [
        f"{s.store} store: {'damaged' if isinstance(e, IntegrityError) else 'unreadable'} "
        f"({e.message.removeprefix(f'{s.label}: ')})"
        for s, e in failed
    ]
    damaged = any(isinstance(e, IntegrityError) for _, e in failed)
    cls = IntegrityError if damaged else StorageError
    other = "" if len(failed) > 1 else ", or a copy in a store not read (leave out --from)"
    return cls(
        f"backup {source.manifest.id} could not be read from any store: "
        + "; ".join(copies + notes),
        f"use an older backup (`etcdops snapshot list --store all` lists them){other}",
    )


def _file_source(path: Path) -> BackupSource:
    if not path.exists():
        raise UsageError(f"file {path} does not exist", "check the path")
    if not path.is_file():
        raise UsageError(
            f"{path} {_what_it_is(path)}, not a snapshot file",
            "give the path of a plain snapshot or of a backup's .db.zst.age file",
        )
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


def _what_it_is(path: Path) -> str:
    """What stands at a path that exists but is not a regular file, in an operator's words."""
    mode = path.stat().st_mode
    kinds = [
        (stat.S_ISDIR, "is a directory"),
        (stat.S_ISCHR, "is a character device"),
        (stat.S_ISBLK, "is a block device"),
        (stat.S_ISFIFO, "is a named pipe"),
        (stat.S_ISSOCK, "is a socket"),
    ]
    return next((what for test, what in kinds if test(mode)), "is not a regular file")


@dataclass(frozen=True)
class _Decoded:
    stored: Digest
    plain: SnapshotTrailerCheck
    db_sha256: str
    checks: tuple[str, ...]


def _read(config: Config, source: BackupSource, sink: Writer, reporter: Reporter) -> _Decoded:
    """Decode a source end to end into sink, checking everything there is to check."""
    identities: list[Identity] = []
    if source.encrypted:
        from etcdops.crypto.keys import configured_identities

        identities = configured_identities(config.encryption)
    # past age and zstd, a snapshot check failing means the backup holds something else
    decoder = SnapshotDecoder(
        sink, identities if source.encrypted else None,
        f"the decrypted contents of {source.label}" if source.encrypted else source.label,
    )
    stored, plain = decoder.stored, decoder.plain
    try:
        # the decoder's threads stop before this returns or raises, so before sink goes away
        with decoder, source.opener() as reader, reporter.progress(
            "reading", total=source.size
        ) as bar:
            while block := reader.read(READ_SIZE):
                decoder.write(block)
                bar.advance(len(block))
            decoder.finish()
    except CryptoError as exc:
        raise damage_or_wrong_key(exc, source, identities) from exc
    db_sha256 = decoder.verify()
    checks = ["age authentication", "etcd sha256 trailer"] if source.encrypted else [
        "etcd sha256 trailer"
    ]
    if source.manifest is not None:
        _compare(source.manifest, source.label, stored, plain, db_sha256)
        checks.append("manifest sizes and sha256")
    return _Decoded(stored, plain, db_sha256, tuple(checks))


def damage_or_wrong_key(
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


def _status(
    config: Config, source: BackupSource, decoded: _Decoded, fallbacks: list[str]
) -> SnapshotStatus:
    manifest = source.manifest
    warnings: tuple[str, ...] = ()
    if source.encrypted:
        from etcdops.crypto.keys import identity_file_warning

        exposed = identity_file_warning(config.encryption)
        warnings = (exposed,) if exposed else ()
    kind = "backup" if manifest else ("encrypted file" if source.encrypted else "plain snapshot")
    return SnapshotStatus(
        source=source.label,
        kind=kind,
        backup_id=manifest.id if manifest else None,
        created_at=manifest.created_at.isoformat() if manifest else None,
        revision=manifest.etcd.revision if manifest else None,
        keys=manifest.etcd.keys if manifest else None,
        keys_counted="live keys at the revision" if manifest else None,
        snapshot_size=decoded.plain.size,
        stored_size=decoded.stored.size,
        db_sha256=decoded.db_sha256,
        checks=decoded.checks,
        store=source.store,
        fallbacks=tuple(fallbacks),
        warnings=warnings,
    )


def snapshot_status(
    config: Config, ref: str, reporter: Reporter, *, store: str | None = None,
    stores: Stores | None = None,
) -> SnapshotStatus:
    """Read a backup or snapshot file end to end and report what it is and that it is intact."""
    located = locate(config, ref, reporter, store=store, stores=stores)
    if located[0][0].manifest is None:
        return _status_from_etcdutl(config, located, reporter)
    source, decoded, fallbacks = first_good(
        located, lambda s: _read(config, s, Discard(), reporter), reporter
    )
    return _status(config, source, decoded, fallbacks)


def _status_from_etcdutl(
    config: Config, located: tuple[list[BackupSource], list[str]], reporter: Reporter
) -> SnapshotStatus:
    """A file without a manifest: etcdutl reads its revision and key count from bbolt, with
    etcd's own code rather than a second bbolt reader here. An encrypted file is decoded for it,
    in the same pass as its checks, into a 0700 directory removed on every way out."""
    from etcdops.etcd.etcdutl import snapshot_status as etcdutl_status

    source = located[0][0]
    if source.path is None:
        raise AssertionError("only a file comes without a manifest")
    if source.encrypted:
        with tempfile.TemporaryDirectory(prefix=".etcdops-status-") as private:
            plain = Path(private) / "snapshot.db"
            status = _decode_into(config, located, plain, reporter)
            try:
                found = etcdutl_status(plain, config.etcd.etcdutl)
            except IntegrityError as exc:
                raise IntegrityError(f"{source.label}: {exc.message}", exc.hint) from exc
    else:
        status = _status(config, source, _read(config, source, Discard(), reporter), located[1])
        found = etcdutl_status(source.path, config.etcd.etcdutl)
    return dataclasses.replace(
        status, revision=found.revision, keys=found.total_keys,
        keys_counted="bbolt entries, as etcdutl counts them",
        checks=status.checks + ("etcdutl snapshot status",),
    )


def fetch_snapshot(
    config: Config,
    ref: str,
    out: Path,
    reporter: Reporter,
    *,
    force: bool = False,
    store: str | None = None,
    stores: Stores | None = None,
) -> SnapshotStatus:
    """Write the plain snapshot of a backup to out, only once every check has passed."""
    if out.exists() and not force:
        raise UsageError(f"{out} already exists", "choose another --out path or pass --force")
    located = locate(config, ref, reporter, store=store, stores=stores)
    first = located[0][0]
    if not first.encrypted:
        _read(config, first, Discard(), reporter)  # what is no snapshot must not be told "use it"
        raise UsageError(f"{first.label} is already a plain snapshot (checked)", "use it as it is")

    return _decode_into(config, located, out, reporter)


def decode_snapshot(
    config: Config, ref: str, out: Path, reporter: Reporter, *, store: str | None = None,
    stores: Stores | None = None, search: Search | None = None,
) -> SnapshotStatus:
    """Write the checked plain snapshot of a backup, or of a snapshot file (encrypted or plain),
    to out: what a restore or a drill hands to etcdutl. Copies are tried as for status, and out
    appears only once every check has passed. search, when given, looks at the plain bytes as
    they are written (search.found: whether the copy written holds its needle)."""
    # a scratch file that etcdutl reads at once and that goes with its directory: not synced
    return _decode_into(
        config, locate(config, ref, reporter, store=store, stores=stores), out, reporter,
        durable=False, search=search,
    )


def _decode_into(
    config: Config, located: tuple[list[BackupSource], list[str]], out: Path, reporter: Reporter,
    *, durable: bool = True, search: Search | None = None,
) -> SnapshotStatus:
    def attempt(source: BackupSource) -> _Decoded:
        with AtomicFile(out, durable=durable) as target:
            return _read(config, source, search.over(target) if search else target, reporter)

    source, decoded, fallbacks = first_good(located, attempt, reporter)
    return _status(config, source, decoded, fallbacks)
