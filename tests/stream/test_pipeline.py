"""The one encode and the one decode chain: what one writes, the other reads back, checked."""

import _thread
import hashlib
import os
import threading

import pytest

from etcdops.crypto.age import Identity
from etcdops.errors import CryptoError, IntegrityError
from etcdops.stream.pipeline import SnapshotDecoder, SnapshotEncoder
from etcdops.stream.writers import AgeEncrypt
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


# --- the decoder's threads: failures reach the caller, and no way out leaves one running --------

DECODER_THREADS = ("etcdops-zstd", "etcdops-plaintext")


def decoder_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in DECODER_THREADS]


def big_backup(identity: Identity, megabytes: int = 24) -> tuple[bytes, bytes]:
    """A snapshot of several MiB (more than the hand-offs' queues hold) and its stored form."""
    snapshot = snapshot_bytes(bbolt_db(os.urandom(1 << 20) * megabytes))
    return snapshot, encode(snapshot, [identity.recipient()])[2]


def write_in_blocks(decoder: SnapshotDecoder, stored: bytes) -> None:
    for start in range(0, len(stored), 1 << 20):
        decoder.write(stored[start : start + (1 << 20)])


def test_the_plaintext_is_checked_and_written_on_a_thread_of_its_own():
    identity = Identity.generate()
    snapshot, stored = big_backup(identity)
    writers = set()

    class Recording(Sink):
        def write(self, data, /):
            writers.add(threading.current_thread().name)
            return super().write(data)

    sink = Recording()
    with SnapshotDecoder(sink, [identity], "big") as decoder:
        write_in_blocks(decoder, stored)
        decoder.finish()
    assert decoder.verify() == hashlib.sha256(snapshot[:-32]).hexdigest()
    assert bytes(sink.data) == snapshot
    assert writers == {"etcdops-plaintext"}
    assert decoder_threads() == []


def test_corrupt_zstd_inside_good_age_is_the_same_integrity_error_in_the_callers_thread():
    identity = Identity.generate()
    encrypted = Sink()
    encrypt = AgeEncrypt(encrypted, [identity.recipient()])
    encrypt.write(os.urandom(3 << 20))  # authentic, so age passes it on, but no zstd frame
    encrypt.close()
    decoder = SnapshotDecoder(Sink(), [identity], "the decrypted contents of x")
    with pytest.raises(IntegrityError, match="compressed snapshot is corrupt"):
        write_in_blocks(decoder, bytes(encrypted.data))
        decoder.finish()
    assert decoder_threads() == []


def test_a_failing_sink_fails_the_decode_and_stops_every_thread():
    identity = Identity.generate()
    _, stored = big_backup(identity)

    class Full:
        def write(self, data, /):
            raise OSError(28, "No space left on device")

    decoder = SnapshotDecoder(Full(), [identity], "big")
    with pytest.raises(OSError, match="No space left"):
        write_in_blocks(decoder, stored)
        decoder.finish()
    assert decoder_threads() == []


def test_an_interrupt_while_the_threads_hold_blocks_stops_them_before_the_block_ends():
    identity = Identity.generate()
    _, stored = big_backup(identity)
    written = []

    class InterruptingSink:
        def write(self, data, /):
            if not written:
                _thread.interrupt_main()  # as Ctrl-C, or SIGTERM in the CLI, would
            written.append(len(data))
            return len(data)

    with pytest.raises(KeyboardInterrupt), SnapshotDecoder(
        InterruptingSink(), [identity], "big"
    ) as decoder:
        for _ in range(1000):  # written again and again: only the interrupt ends this
            write_in_blocks(decoder, stored)
    assert decoder_threads() == []
    after = len(written)
    decoder.abandon()  # harmless again
    assert len(written) == after  # nothing reaches the sink once the block is left
