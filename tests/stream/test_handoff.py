import io
import os
import threading

import pytest

from etcdops.stream.handoff import Handoff


def test_every_byte_arrives_in_order():
    out = io.BytesIO()
    handoff = Handoff(out)
    chunks = [bytes([i % 251]) * (1 + i * 37 % 40000) for i in range(2000)]
    for chunk in chunks:
        handoff.write(chunk)
    handoff.close()
    assert out.getvalue() == b"".join(chunks)


def test_downstream_failure_reaches_the_writer_and_close():
    class Failing:
        def __init__(self):
            self.seen = 0

        def write(self, data):
            self.seen += len(data)
            if self.seen > 1 << 20:
                raise OSError(28, "No space left on device")

    handoff = Handoff(Failing())
    with pytest.raises(OSError, match="No space"):
        for _ in range(100_000):  # far more than the queue holds: the writer must not hang
            handoff.write(b"x" * 32768)
    with pytest.raises(OSError, match="No space"):
        handoff.close()


def test_abandon_with_a_stuck_downstream_returns_and_writes_nothing_more():
    release = threading.Event()
    written = []

    class Slow:
        def write(self, data):
            release.wait(5)
            written.append(len(data))

    handoff = Handoff(Slow())
    for _ in range(100):
        handoff.write(b"y" * 32768)
    release.set()
    handoff.abandon()
    assert sum(written) < 100 * 32768  # what was still queued was dropped, not written
    handoff.abandon()  # a second call is harmless


def test_large_slices_are_handed_over_as_they_are_and_small_ones_joined():
    received = []

    class Keeping:
        def write(self, data):
            received.append(data)

    handoff = Handoff(Keeping())
    large = [os.urandom(600_000) for _ in range(3)]
    small = [b"s" * 32768 for _ in range(40)]  # etcd's message size: joined into 1 MiB blocks
    for piece in [large[0], *small, large[1], large[2]]:
        handoff.write(piece)
    handoff.close()
    assert b"".join(received) == b"".join([large[0], *small, large[1], large[2]])
    assert received[0] is large[0] and received[-2] is large[1] and received[-1] is large[2]
    assert [len(block) for block in received[1:-2]] == [32 * 32768, 8 * 32768]
