"""zstd skippable frames: every zstd decoder passes over them, and LeadingFrames reads ours from
the start of a stream and stops at the first real frame."""

import os
import struct
import subprocess

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from etcdops.crypto.age import Identity
from etcdops.errors import IntegrityError
from etcdops.stream.frames import FRAME_MAGIC, LeadingFrames, skippable_frame
from etcdops.stream.pipeline import SnapshotDecoder, SnapshotEncoder
from etcdops.stream.writers import ZstdDecompress
from tests.stream.test_pipeline import Sink
from tests.stream.test_writers import bbolt_db, feed, snapshot_bytes

TAG = b"test-tag/"


def foreign(magic: int, payload: bytes) -> bytes:
    """Someone else's skippable frame."""
    return struct.pack("<II", magic, len(payload)) + payload


def test_zstd_decoders_yield_only_the_content_behind_the_frames():
    content = os.urandom(5000) * 20
    stream = (skippable_frame(TAG, b"ours") + foreign(0x184D2A50, b"theirs")
              + zstandard.ZstdCompressor(level=3).compress(content))
    plain = Sink()
    decompress = ZstdDecompress(plain)
    feed(decompress, stream, list(range(0, len(stream), 11)))
    decompress.close()
    assert bytes(plain.data) == content
    cli = subprocess.run(["zstd", "-d", "-c"], input=stream, capture_output=True, check=True)
    assert cli.stdout == content


@settings(max_examples=60, deadline=None)
@given(ours=st.binary(max_size=3000), theirs=st.binary(max_size=300),
       cuts=st.lists(st.integers(0, 4000), max_size=10))
def test_leading_frames_keeps_ours_skips_others_and_stops_at_the_first_real_frame(
    ours, theirs, cuts
):
    tail = zstandard.ZstdCompressor().compress(b"snapshot" * 100)
    stream = (foreign(0x184D2A5A, theirs)
              + foreign(FRAME_MAGIC, b"not-our-tag" + theirs)  # our magic, someone else's data
              + skippable_frame(TAG, ours) + tail)
    frames = LeadingFrames(TAG, 4000, "test")
    feed(frames, stream, cuts)
    assert frames.done
    assert frames.payloads == [ours]


def test_what_follows_the_first_real_frame_is_neither_read_nor_kept():
    frames = LeadingFrames(TAG, 100, "test")
    frames.write(skippable_frame(TAG, b"x") + b"\x28\xb5\x2f\xfd" + os.urandom(1000))
    assert frames.done and frames.payloads == [b"x"]
    frames.write(skippable_frame(TAG, b"after the snapshot frame: not ours to read"))
    assert frames.payloads == [b"x"]


def test_a_stream_without_frames_is_done_at_its_first_bytes():
    frames = LeadingFrames(TAG, 100, "test")
    frames.write(zstandard.ZstdCompressor().compress(b"plain"))
    assert frames.done and frames.payloads == []


def test_a_frame_of_ours_larger_than_the_limit_is_refused_before_it_is_buffered():
    frames = LeadingFrames(TAG, 100, "the test object")
    header = struct.pack("<II", FRAME_MAGIC, len(TAG) + 10**9)
    with pytest.raises(IntegrityError, match="the test object: its included files frame claims "
                                             "1000000000 bytes, more than the 100"):
        frames.write(header + TAG)


def test_a_stream_that_ends_inside_a_frame_is_truncated():
    frames = LeadingFrames(TAG, 100, "the test object")
    frames.write(skippable_frame(TAG, b"0123456789")[:-3])
    with pytest.raises(IntegrityError, match="the test object ends inside a skippable frame"):
        frames.close()


def test_a_frame_too_large_for_its_size_field_is_refused():
    class Huge(bytes):
        def __len__(self):
            return 1 << 32

    with pytest.raises(ValueError, match="at most 4294967295 bytes"):
        skippable_frame(b"", Huge())


def test_an_encoders_preamble_is_inside_age_and_the_decoder_yields_the_snapshot_alone():
    identity = Identity.generate()
    snapshot = snapshot_bytes(bbolt_db(os.urandom(200_000)))
    preamble = skippable_frame(TAG, b"files")
    sink = Sink()
    encoder = SnapshotEncoder(sink, [identity.recipient()], 1, "test", preamble=preamble)
    encoder.write(snapshot)
    db_sha256 = encoder.close()
    assert b"files" not in sink.data  # encrypted with the rest
    assert encoder.plain.size == len(snapshot)  # the snapshot's size, not the frames'

    plain = Sink()
    decoder = SnapshotDecoder(plain, [identity], "test")
    decoder.write(bytes(sink.data))
    decoder.finish()
    assert decoder.verify() == db_sha256
    assert bytes(plain.data) == snapshot
