"""A segment in a store: sealed (zstd, then age to the configured recipients) once, published
in each store (object, then manifest, last), and read back with every check.

The chain is the backup's (etcdops.stream.pipeline's Encoder and Decoder). A segment is
seconds of changes, kilobytes to a few megabytes, so it is sealed and read whole in memory:
the same stored bytes then go to every store (the manifests compare equal, and a store that
failed is caught up from them), and a reader bounds what it accepts by max_bytes before
buffering more.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from etcdops import __version__
from etcdops.errors import EtcdopsError, IntegrityError, NotFoundError
from etcdops.etcd.watch import Revision
from etcdops.journal.manifest import MANIFEST_SUFFIX, SegmentManifest, chain_prefix, segment_key
from etcdops.journal.segment import SegmentBuffer, decode
from etcdops.stores.base import Store
from etcdops.stream.pipeline import Decoder, Encoder
from etcdops.stream.writers import Digest

if TYPE_CHECKING:
    from etcdops.crypto.age import Identity, Recipient

# What a reader accepts, stored or plain: far above a segment cut at [journal] max_bytes (a
# single revision can exceed the cut, but etcd bounds a request to 1.5 MiB by default)
MAX_SEGMENT_BYTES = 64 << 20


@dataclass(frozen=True)
class SealedSegment:
    """A segment ready to publish: its manifest and the stored (encrypted) bytes it describes."""

    manifest: SegmentManifest
    stored: bytes


def seal(
    buffer: SegmentBuffer, *, cluster: str, base_backup_id: str, follows: int,
    recipients: Sequence[Recipient], level: int,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SealedSegment:
    """Compress and encrypt a filled segment that follows revision `follows` of its chain (the
    previous segment's last revision, or the base backup's); ValueError when it does not."""
    plain = buffer.data()
    if buffer.first_revision != follows + 1:
        raise ValueError(
            f"a segment from revision {buffer.first_revision} cannot follow revision {follows}"
        )
    assert buffer.last_revision is not None and buffer.first_seen and buffer.last_seen
    sink = io.BytesIO()
    encoder = Encoder(sink, recipients, level)
    digest = Digest(encoder)
    digest.write(plain)
    encoder.close()
    manifest = SegmentManifest(
        cluster=cluster,
        base_backup_id=base_backup_id,
        previous_revision=follows,
        first_revision=buffer.first_revision,
        last_revision=buffer.last_revision,
        revisions=buffer.revisions,
        events=buffer.events,
        first_change_at=buffer.first_seen,
        last_change_at=buffer.last_seen,
        plain_size=digest.size,
        plain_sha256=digest.hexdigest(),
        object_key=segment_key(
            "", cluster, base_backup_id, buffer.first_revision, buffer.last_revision
        ),
        object_size=encoder.stored.size,
        object_sha256=encoder.stored.hexdigest(),
        compression={"format": "zstd", "level": level},
        encryption={
            "format": "age-encryption.org/v1",
            "recipients": [r.fingerprint() for r in recipients],
        },
        created_at=clock(),
        tool_version=__version__,
    )
    return SealedSegment(manifest, sink.getvalue())


def publish(store: Store, sealed: SealedSegment) -> None:
    """Write the segment's object, then its manifest: only then does the segment exist."""
    manifest = sealed.manifest
    store.put_bytes(manifest.object_key, sealed.stored)
    try:
        store.put_bytes(manifest.manifest_key, manifest.to_json())
    except BaseException:
        # an object without a manifest is not a segment: do not leave it behind
        with contextlib.suppress(EtcdopsError):
            store.delete(manifest.object_key)
        raise


def chain_manifests(
    store: Store, cluster: str, base_backup_id: str
) -> tuple[list[SegmentManifest], list[IntegrityError]]:
    """The manifests of one chain in a store, in revision order, and the ones that are damaged
    (unreadable, or not the manifest their key names)."""
    manifests, damaged = [], []
    for info in store.list(chain_prefix("", cluster, base_backup_id)):
        if not info.key.endswith(MANIFEST_SUFFIX):
            continue
        try:
            manifests.append(read_manifest(store, info.key, cluster))
        except IntegrityError as exc:
            damaged.append(exc)
    return manifests, damaged


def read_manifest(store: Store, key: str, cluster: str) -> SegmentManifest:
    """The segment manifest stored at key; IntegrityError when it is unreadable or describes
    another segment or cluster than its key names (NotFoundError when it is gone)."""
    source = store.describe(key)
    manifest = SegmentManifest.from_json(store.get_bytes(key), source)
    if manifest.manifest_key != key or manifest.cluster != cluster:
        raise IntegrityError(
            f"segment manifest {source} describes {manifest.name} of cluster "
            f"{manifest.cluster}, stored elsewhere",
            "the manifest was moved or copied by hand; remove it",
        )
    return manifest


def delete_chain(store: Store, manifest_keys: Sequence[str], other_keys: Sequence[str]) -> None:
    """Delete a chain's files: its segments' manifests, then every other file of its folder
    (the objects, now without manifests, and anything else left there), in a request per
    1,000 keys where the store can (an hour's chain is 1,440 files). The manifests go newest
    first: in the local store what is left at any moment is the start of the chain; S3 keeps
    no order within a request, so a prune stopped mid-request may leave a hole, which no
    restore crosses (etcdops.journal.chain) and which the next prune deletes with the rest."""
    store.delete_many(sorted(manifest_keys, reverse=True))  # zero-padded names: newest last
    store.delete_many(other_keys)


def read_segment(
    store: Store, manifest: SegmentManifest, identities: Sequence[Identity],
    max_bytes: int = MAX_SEGMENT_BYTES,
) -> list[Revision]:
    """The revisions of one stored segment, after every check: the stored bytes' size and
    sha256, age's authentication, the plain bytes' size and sha256, the format, and the
    revisions and changes the manifest names. IntegrityError names the segment and the store;
    a store that cannot be read is a StorageError, a wrong key a CryptoError."""
    label = f"{manifest.name} in the {store.name} store"
    try:
        return _read(store, manifest, identities, max_bytes, label)
    except IntegrityError as exc:
        if exc.message.startswith(label):
            raise
        raise IntegrityError(f"{label} is damaged: {exc.message}", _HINT) from exc


_HINT = "read the segment from another store; a hole in every store ends the chain there"


def _read(
    store: Store, manifest: SegmentManifest, identities: Sequence[Identity], max_bytes: int,
    label: str,
) -> list[Revision]:
    for what, size in (("stored", manifest.object_size), ("plain", manifest.plain_size)):
        if size > max_bytes:
            raise IntegrityError(
                f"{label}: its manifest claims {size} {what} bytes, more than the {max_bytes} "
                "a segment may hold", _HINT,
            )
    try:
        with store.open_reader(manifest.object_key) as reader:
            stored = reader.read(manifest.object_size + 1)
    except NotFoundError as exc:
        raise IntegrityError(f"{label} has a manifest but no object", _HINT) from exc
    if len(stored) != manifest.object_size:
        raise IntegrityError(
            f"{label} is {'longer' if len(stored) > manifest.object_size else 'shorter'} than "
            f"its manifest's {manifest.object_size} bytes", _HINT,
        )
    if hashlib.sha256(stored).hexdigest() != manifest.object_sha256:
        raise IntegrityError(f"{label}: its bytes do not match its manifest's sha256", _HINT)
    plain = _Bounded(manifest.plain_size, label)
    decoder = Decoder(plain, identities, what="segment")
    decoder.write(stored)
    decoder.finish()
    data = plain.getvalue()
    if hashlib.sha256(data).hexdigest() != manifest.plain_sha256:
        raise IntegrityError(f"{label}: its content does not match its manifest's sha256", _HINT)
    revisions = list(decode(data, label))
    found = (revisions[0].revision, revisions[-1].revision, len(revisions),
             sum(len(r.changes) for r in revisions))
    said = (manifest.first_revision, manifest.last_revision, manifest.revisions, manifest.events)
    if found != said:
        raise IntegrityError(
            f"{label} holds revisions {found[0]} to {found[1]} ({found[2]} revisions, {found[3]} "
            f"changes), its manifest says {said[0]} to {said[1]} ({said[2]}, {said[3]})", _HINT,
        )
    return revisions


class _Bounded(io.BytesIO):
    """The plain bytes, refused beyond the size the manifest names (a bomb stops at once)."""

    def __init__(self, limit: int, label: str) -> None:
        super().__init__()
        self._limit = limit
        self._label = label

    def write(self, data: bytes, /) -> int:
        if self.tell() + len(data) > self._limit:
            raise IntegrityError(
                f"{self._label}: it decompresses to more than its manifest's {self._limit} bytes",
                _HINT,
            )
        return super().write(data)
