import hashlib
import io
import json
import os
import struct

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
    Search,
    SnapshotTrailerCheck,
    ZstdCompress,
    ZstdDecompress,
)


def fnv1a64(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def bbolt_db(body: bytes) -> bytes:
    """body behind a first page laid out as bbolt writes it: page 0, a meta page, checksummed."""
    meta = struct.pack("<IIII", 0xED0CDAED, 2, 4096, 0) + struct.pack("<QQQQQ", 3, 0, 2, 5, 7)
    return struct.pack("<QHHI", 0, 0x04, 0, 0) + meta + struct.pack("<Q", fnv1a64(meta)) + body


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
    db = bbolt_db(db)
    data = snapshot_bytes(db)
    out = io.BytesIO()
    check = SnapshotTrailerCheck(out)
    feed(check, data, [c for c in cuts if c <= len(data)])
    assert check.verify("test") == hashlib.sha256(db).hexdigest()
    assert out.getvalue() == data
    assert check.size == len(data)


def test_trailer_check_rejects_flipped_byte_and_truncation():
    data = bytearray(snapshot_bytes(bbolt_db(os.urandom(100_000))))
    data[5000] ^= 1
    check = SnapshotTrailerCheck(Discard())
    check.write(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        check.verify("snap")
    truncated = SnapshotTrailerCheck(Discard())
    truncated.write(snapshot_bytes(bbolt_db(os.urandom(100_000)))[:-10])
    with pytest.raises(IntegrityError):
        truncated.verify("snap")
    short = SnapshotTrailerCheck(Discard())
    short.write(b"x" * 20)
    with pytest.raises(IntegrityError, match="too short"):
        short.verify("snap")


def test_a_real_snapshots_first_page_passes(tmp_path):
    # the first 80 bytes of a snapshot etcd 3.5.1 streamed: page 0, meta flag, magic, version 2
    head = bytes.fromhex(
        "00000000000000000400000000000000edda0ced020000000010000000000000"
        "03000000000000000000000000000000ffffffffffffffff0500000000000000"
        "07000000000000008223f0fbb7b2717b"
    )
    db = head + bytes(16384 - len(head))
    check = SnapshotTrailerCheck(Discard(), "real")
    check.write(snapshot_bytes(db))
    assert check.verify() == hashlib.sha256(db).hexdigest()


def _manifest_like() -> bytes:
    return json.dumps({"schema_version": 1, "id": "20270101T000000Z-abcdef"}).encode() * 40


@pytest.mark.parametrize("what", ["random bytes", "zeros", "a manifest", "bad checksum",
                                  "bbolt version 1"])
def test_what_is_not_an_etcd_snapshot_fails_even_with_a_matching_trailer(what):
    good = bbolt_db(os.urandom(4000))
    db = {
        "random bytes": os.urandom(5000),
        "zeros": bytes(5000),
        "a manifest": _manifest_like(),
        "bad checksum": good[:40] + bytes([good[40] ^ 1]) + good[41:],
        "bbolt version 1": good[:20] + struct.pack("<I", 1) + good[24:],
    }[what]
    check = SnapshotTrailerCheck(Discard(), "thing.db")
    # the verdict comes with the first page: nothing past it is read or passed on
    with pytest.raises(IntegrityError, match="thing.db is not an etcd snapshot"):
        for start in range(0, len(db) + 32, 7):
            check.write(snapshot_bytes(db)[start:start + 7])
            assert check.size < 100


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
    # zero pages compress hugely
    plain = snapshot_bytes(bbolt_db(os.urandom(300_000) + bytes(20 << 20)))
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


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200),
    needle=st.binary(min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_search_finds_the_needle_however_the_stream_is_cut_and_passes_every_byte(
    data, needle, cuts
):
    passed = io.BytesIO()
    search = Search(needle).over(passed)
    start = 0
    for cut in sorted(cuts) + [len(data)]:
        search.write(data[start:max(start, cut)])
        start = max(start, cut)
    assert search.found == (needle in data)
    assert passed.getvalue() == data


def test_search_starts_anew_over_another_attempt():
    search = Search(b"needle")
    search.over(io.BytesIO()).write(b"a needle here")
    assert search.found
    search.over(io.BytesIO()).write(b"nothing")
    assert not search.found
