import hashlib
import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcdops.crypto.age import Identity
from etcdops.errors import IntegrityError
from etcdops.stream.writers import (
    AgeDecrypt,
    AgeEncrypt,
    Digest,
    Discard,
    SnapshotTrailerCheck,
    ZstdCompress,
    ZstdDecompress,
)


def snapshot_bytes(db: bytes) -> bytes:
    return db + hashlib.sha256(db).digest()


def feed(writer, data: bytes, cuts: list[int]) -> None:
    start = 0
    for cut in sorted(cuts) + [len(data)]:
        writer.write(data[start:cut])
        start = max(start, cut)


@settings(max_examples=60, deadline=None)
@given(db=st.binary(min_size=1, max_size=3000), cuts=st.lists(st.integers(0, 3100), max_size=8))
def test_trailer_check_accepts_any_slicing(db, cuts):
    data = snapshot_bytes(db)
    out = io.BytesIO()
    check = SnapshotTrailerCheck(out)
    feed(check, data, [c for c in cuts if c <= len(data)])
    assert check.verify("test") == hashlib.sha256(db).hexdigest()
    assert out.getvalue() == data
    assert check.size == len(data)


def test_trailer_check_rejects_flipped_byte_and_truncation():
    data = bytearray(snapshot_bytes(os.urandom(100_000)))
    data[5000] ^= 1
    check = SnapshotTrailerCheck(Discard())
    check.write(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        check.verify("snap")
    truncated = SnapshotTrailerCheck(Discard())
    truncated.write(snapshot_bytes(os.urandom(100_000))[:-10])
    with pytest.raises(IntegrityError):
        truncated.verify("snap")
    short = SnapshotTrailerCheck(Discard())
    short.write(b"x" * 20)
    with pytest.raises(IntegrityError, match="too short"):
        short.verify("snap")


def test_digest_counts_and_hashes():
    out = io.BytesIO()
    digest = Digest(out)
    digest.write(b"abc")
    digest.write(b"def")
    assert digest.size == 6
    assert digest.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()
    assert out.getvalue() == b"abcdef"


def test_full_chain_round_trip_and_bounded_decompressed_slices():
    identity = Identity.generate()
    plain = snapshot_bytes(os.urandom(300_000) + bytes(20 << 20))  # zero pages compress hugely
    stored = io.BytesIO()
    encrypt = AgeEncrypt(stored, [identity.recipient()])
    compress = ZstdCompress(encrypt, level=3)
    for start in range(0, len(plain), 32768):
        compress.write(plain[start:start + 32768])
    compress.close()
    encrypt.close()
    assert len(stored.getvalue()) < len(plain) // 10

    sizes: list[int] = []

    class Recorder:
        def write(self, data):
            sizes.append(len(data))

    check = SnapshotTrailerCheck(Recorder())
    decompress = ZstdDecompress(check)
    decrypt = AgeDecrypt(decompress, [identity])
    data = stored.getvalue()
    for start in range(0, len(data), 1 << 20):
        decrypt.write(data[start:start + (1 << 20)])
    decrypt.close()
    decompress.close()
    assert check.verify("round trip") == hashlib.sha256(plain[:-32]).hexdigest()
    assert sum(sizes) == len(plain)
    assert max(sizes) <= 1 << 20


def test_corrupt_compressed_data_is_an_integrity_error():
    decompress = ZstdDecompress(Discard())
    with pytest.raises(IntegrityError, match="corrupt"):
        decompress.write(b"\x28\xb5\x2f\xfd" + b"\xff" * 64)
