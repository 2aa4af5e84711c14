"""The one encode and the one decode chain: what one writes, the other reads back, checked."""

import os

import pytest

from etcdops.crypto.age import Identity
from etcdops.errors import CryptoError, IntegrityError
from etcdops.stream.pipeline import SnapshotDecoder, SnapshotEncoder
from tests.stream.test_writers import bbolt_db, snapshot_bytes


class Sink:
    def __init__(self):
        self.data = bytearray()

    def write(self, data, /):
        self.data += data
        return len(data)


def encode(snapshot, recipients):
    sink = Sink()
    encoder = SnapshotEncoder(sink, recipients, 1, "test snapshot")
    for start in range(0, len(snapshot), 65536):
        encoder.write(snapshot[start : start + 65536])
    return encoder, encoder.close(), bytes(sink.data)


def test_what_the_encoder_stores_the_decoder_gives_back_with_every_count_equal():
    identity = Identity.generate()
    db = bbolt_db(os.urandom(300_000))
    snapshot = snapshot_bytes(db)
    encoder, db_sha256, stored = encode(snapshot, [identity.recipient()])
    assert (encoder.plain.size, encoder.stored.size) == (len(snapshot), len(stored))
    assert stored.startswith(b"age-encryption.org/v1\n")

    plain = Sink()
    decoder = SnapshotDecoder(plain, [identity], "the decrypted contents of test")
    decoder.write(stored)
    decoder.finish()
    assert decoder.verify() == db_sha256
    assert bytes(plain.data) == snapshot
    assert (decoder.stored.size, decoder.stored.hexdigest()) == (
        encoder.stored.size, encoder.stored.hexdigest()
    )


def test_a_plain_snapshot_is_decoded_without_age_or_zstd():
    snapshot = snapshot_bytes(bbolt_db(b"x" * 5000))
    decoder = SnapshotDecoder(Sink(), None, "snap.db")
    decoder.write(snapshot)
    decoder.finish()
    assert decoder.plain.size == decoder.stored.size == len(snapshot)
    decoder.verify()


def test_the_encoder_refuses_a_torn_snapshot_before_its_encoding_ends():
    identity = Identity.generate()
    torn = snapshot_bytes(bbolt_db(b"y" * 5000))[:-1]
    sink = Sink()
    encoder = SnapshotEncoder(sink, [identity.recipient()], 1, "snapshot from etcd-1")
    encoder.write(torn)
    with pytest.raises(IntegrityError, match="snapshot from etcd-1 failed etcd's sha256 check"):
        encoder.close()
    # the age stream was never finished: nothing written decrypts as a whole
    decoder = SnapshotDecoder(Sink(), [identity], "torn")
    decoder.write(bytes(sink.data))
    with pytest.raises((CryptoError, IntegrityError)):
        decoder.finish()
