"""Segments in real stores (a local directory, moto's S3): sealed, published, read back, and
every kind of damage caught and named."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pyrage
import pytest
import zstandard
from pyrage import x25519

from etcdops.crypto.age import Identity
from etcdops.errors import CryptoError, IntegrityError, StorageError
from etcdops.etcd.watch import Revision
from etcdops.journal.chain import window
from etcdops.journal.segment import SegmentBuffer, decode
from etcdops.journal.store import (
    SealedSegment,
    chain_manifests,
    publish,
    read_segment,
    seal,
)
from etcdops.stores.base import Store
from etcdops.stores.local import LocalStore
from tests.fixtures.s3 import S3Env
from tests.journal.samples import BASE, EVERY_KIND, put

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    from etcdops.stores.s3 import S3Store

    s3: S3Env = request.getfixturevalue("s3")
    return S3Store(s3.primary, "primary")


def sealed_of(revisions, identity, follows, cluster="prod", base=BASE) -> SealedSegment:
    moments = iter(NOW + timedelta(seconds=s) for s in range(1000))
    buffer = SegmentBuffer(clock=lambda: next(moments))
    for revision in revisions:
        buffer.add(revision)
    return seal(buffer, cluster=cluster, base_backup_id=base, follows=follows,
                recipients=[identity.recipient()], level=3, clock=lambda: NOW + timedelta(1))


def test_round_trip_of_every_kind_of_change(store, identity):
    sealed = sealed_of(EVERY_KIND, identity, follows=99)
    publish(store, sealed)
    manifest = sealed.manifest
    assert (manifest.first_revision, manifest.last_revision, manifest.previous_revision) == (
        100, 103, 99)
    assert (manifest.revisions, manifest.events) == (4, 6)
    assert manifest.first_change_at == NOW and manifest.last_change_at == NOW + timedelta(0, 3)
    assert manifest.compression == {"format": "zstd", "level": 3}
    assert manifest.encryption["recipients"] == [identity.recipient().fingerprint()]
    stored = store.get_bytes(manifest.object_key)
    assert manifest.object_size == len(stored)
    assert manifest.object_sha256 == hashlib.sha256(stored).hexdigest()
    # the manifest is the one published, and the segment reads back whole
    [listed], damaged = chain_manifests(store, "prod", BASE)
    assert listed == manifest and damaged == []
    assert read_segment(store, listed, [identity]) == EVERY_KIND


def test_stock_age_and_zstd_read_the_documented_format(tmp_path, identity):
    store = LocalStore(tmp_path)
    sealed = sealed_of(EVERY_KIND, identity, follows=99)
    publish(store, sealed)
    stored = (tmp_path / sealed.manifest.object_key).read_bytes()
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(
        pyrage.decrypt(stored, [x25519.Identity.from_str(str(identity))])
    )
    assert plain.startswith(b"etcdops-journal/1\n")
    assert hashlib.sha256(plain).hexdigest() == sealed.manifest.plain_sha256
    assert len(plain) == sealed.manifest.plain_size
    assert list(decode(plain, "rage's output")) == EVERY_KIND


def test_a_chain_of_segments_in_a_store_proves_its_window(tmp_path, identity):
    store = LocalStore(tmp_path)
    follows = 99
    for revisions in ([EVERY_KIND[0]], EVERY_KIND[1:3], [EVERY_KIND[3]]):
        sealed = sealed_of(revisions, identity, follows)
        publish(store, sealed)
        follows = sealed.manifest.last_revision
    manifests, damaged = chain_manifests(store, "prod", BASE)
    result = window(BASE, 99, manifests)
    assert (result.last_revision, result.findings, damaged) == (103, (), [])
    assert [r for m in result.path for r in read_segment(store, m, [identity])] == EVERY_KIND


def test_a_damaged_or_misplaced_manifest_is_listed_as_damaged(tmp_path, identity):
    store = LocalStore(tmp_path)
    first = sealed_of([EVERY_KIND[0]], identity, follows=99)
    second = sealed_of(EVERY_KIND[1:], identity, follows=100)
    publish(store, first)
    publish(store, second)
    (tmp_path / first.manifest.manifest_key).write_bytes(b"{}")
    # a manifest copied by hand under another segment's name
    wrong = second.manifest.manifest_key.replace("00000000000000000103", "00000000000000000104")
    (tmp_path / wrong).write_bytes(second.manifest.to_json())
    manifests, damaged = chain_manifests(store, "prod", BASE)
    assert manifests == [second.manifest]
    unreadable, misplaced = damaged
    assert unreadable.message.startswith(
        f"segment manifest {store.describe(first.manifest.manifest_key)} is unreadable")
    assert misplaced.message == (
        f"segment manifest {store.describe(wrong)} describes segment 101-103 of chain {BASE} "
        "of cluster prod, stored elsewhere"
    )


def flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("offset", [0, 40, -20, -1])
def test_a_corrupted_stored_byte_is_an_integrity_error_naming_the_segment(
    tmp_path, identity, offset
):
    store = LocalStore(tmp_path)
    sealed = sealed_of(EVERY_KIND, identity, follows=99)
    publish(store, sealed)
    flip(tmp_path / sealed.manifest.object_key, offset)
    with pytest.raises(IntegrityError) as info:
        read_segment(store, sealed.manifest, [identity])
    assert info.value.message == (
        f"segment 100-103 of chain {BASE} in the local store: its bytes do not match its "
        "manifest's sha256"
    )


def resealed(store, sealed, stored):
    """The same segment with other stored bytes, and a manifest that vouches for them: what
    only the checks past the sha256 can catch."""
    manifest = dataclasses.replace(
        sealed.manifest, object_size=len(stored),
        object_sha256=hashlib.sha256(stored).hexdigest(),
    )
    publish(store, SealedSegment(manifest, stored))
    return manifest


def test_age_catches_what_the_manifest_vouches_for(tmp_path, identity):
    store = LocalStore(tmp_path)
    sealed = sealed_of(EVERY_KIND, identity, follows=99)
    stored = bytearray(sealed.stored)
    stored[-5] ^= 0x01
    manifest = resealed(store, sealed, bytes(stored))
    with pytest.raises(IntegrityError) as info:
        read_segment(store, manifest, [identity])
    assert info.value.message.startswith(
        f"segment 100-103 of chain {BASE} in the local store is damaged: ")
    assert "authentication" in info.value.message  # age's, on the last chunk


def test_content_other_than_the_manifest_says_is_refused(tmp_path, identity):
    store = LocalStore(tmp_path)
    real = sealed_of(EVERY_KIND, identity, follows=99)
    # other revisions, sealed for real, under the first one's manifest
    other = sealed_of(
        [Revision(100, (put(100, b"a"),)), Revision(101, (put(101, b"b"),))], identity, 99
    )
    manifest = resealed(store, real, other.stored)
    with pytest.raises(IntegrityError, match="its content does not match its manifest's sha256"):
        read_segment(store, manifest, [identity])
    manifest = resealed(store, dataclasses.replace(real, manifest=dataclasses.replace(
        real.manifest, plain_sha256=other.manifest.plain_sha256,
        plain_size=other.manifest.plain_size)), other.stored)
    with pytest.raises(IntegrityError, match=r"holds revisions 100 to 101 \(2 revisions, 2 "
                                             r"changes\), its manifest says 100 to 103"):
        read_segment(store, manifest, [identity])


def test_more_plain_bytes_than_the_manifest_says_stop_at_its_size(tmp_path, identity):
    store = LocalStore(tmp_path)
    sealed = sealed_of(EVERY_KIND, identity, follows=99)
    manifest = resealed(store, dataclasses.replace(sealed, manifest=dataclasses.replace(
        sealed.manifest, plain_size=100)), sealed.stored)
    with pytest.raises(IntegrityError, match="decompresses to more than its manifest's 100"):
        read_segment(store, manifest, [identity])


def test_a_manifest_claiming_too_much_is_refused_before_reading(tmp_path, identity):
    store = LocalStore(tmp_path)
    sealed = sealed_of(EVERY_KIND, identity, follows=99)
    publish(store, sealed)
    with pytest.raises(IntegrityError, match="more than the 1000 a segment may hold"):
        read_segment(store, sealed.manifest, [identity], max_bytes=1000)


def test_a_truncated_or_missing_object(tmp_path, identity):
    store = LocalStore(tmp_path)
    sealed = sealed_of(EVERY_KIND, identity, follows=99)
    publish(store, sealed)
    path = tmp_path / sealed.manifest.object_key
    path.write_bytes(sealed.stored[:-1])
    with pytest.raises(IntegrityError, match="is shorter than its manifest's"):
        read_segment(store, sealed.manifest, [identity])
    path.unlink()
    with pytest.raises(IntegrityError, match="has a manifest but no object"):
        read_segment(store, sealed.manifest, [identity])


def test_a_wrong_key_is_a_crypto_error(tmp_path, identity):
    store = LocalStore(tmp_path)
    sealed = sealed_of(EVERY_KIND, identity, follows=99)
    publish(store, sealed)
    with pytest.raises(CryptoError):
        read_segment(store, sealed.manifest, [Identity.generate()])


def test_a_failed_manifest_write_leaves_no_object(tmp_path, identity):
    store = LocalStore(tmp_path)
    sealed = sealed_of(EVERY_KIND, identity, follows=99)
    # a directory where the manifest goes: the write fails as a full or read-only disk would
    (tmp_path / sealed.manifest.manifest_key).mkdir(parents=True)
    with pytest.raises(StorageError):
        publish(store, sealed)
    assert not (tmp_path / sealed.manifest.object_key).exists()


def test_seal_refuses_a_segment_that_does_not_follow_its_chain(identity):
    with pytest.raises(ValueError, match="from revision 100 cannot follow revision 98"):
        sealed_of(EVERY_KIND, identity, follows=98)
