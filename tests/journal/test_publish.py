"""The journal's publisher on a local store and moto's S3 behind a fault proxy: a failing
store is caught up in order, from the local copy beyond its bound, without holding up the
local store, and nothing is lost."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from etcdops.crypto.age import Identity
from etcdops.etcd.watch import Revision
from etcdops.journal.chain import window
from etcdops.journal.publish import Publisher
from etcdops.journal.segment import SegmentBuffer
from etcdops.journal.store import SealedSegment, chain_manifests, seal
from etcdops.stores.local import LocalStore
from tests.fixtures.waiting import wait_for
from tests.journal.samples import BASE, put
from tests.s3proxy import put_object

SEGMENTS = 8


def sealed_segments(identity: Identity) -> list[SealedSegment]:
    """SEGMENTS consecutive segments of chain BASE (base revision 99), ten revisions each."""
    segments = []
    for index in range(SEGMENTS):
        buffer = SegmentBuffer()
        first = 100 + 10 * index
        for revision in range(first, first + 10):
            buffer.add(Revision(revision, (put(revision, f"/k/{revision}".encode(),
                                               b"v" * 2000),)))
        segments.append(seal(buffer, cluster="prod", base_backup_id=BASE, follows=first - 1,
                             recipients=[identity.recipient()], level=1))
    return segments


@pytest.fixture
def stores(s3, s3_proxy, tmp_path):
    from etcdops.stores.s3 import S3Store

    proxy = s3_proxy()
    primary = dataclasses.replace(s3.primary, endpoint_url=proxy.url)
    return proxy, {"local": LocalStore(tmp_path / "local", "local"),
                   "primary": S3Store(primary, "primary")}


def reach(store) -> int:
    manifests, damaged = chain_manifests(store, "prod", BASE)
    assert damaged == []
    found = window(BASE, 99, manifests)
    assert found.holes == ()
    return found.last_revision


def test_a_failing_store_is_caught_up_in_order_from_the_local_copy_beyond_its_bound(stores):
    proxy, named = stores
    failing = threading.Event()
    failing.set()
    proxy.fail(lambda r: failing.is_set() and put_object(r), times=1 << 62)
    segments = sealed_segments(Identity.generate())
    publisher = Publisher(named, held=2)
    try:
        for sealed in segments:
            publisher.submit(sealed)  # never waits on the failing primary
        wait_for(lambda: reach(named["local"]) == 179, "the local store holds every segment")
        wait_for(lambda: publisher.counts["primary"].failures >= 2, "the primary failing")
        # bounded: the primary's queue holds the bytes of two segments, the rest by manifest
        assert publisher.held_bytes("primary") <= 2 * max(len(s.stored) for s in segments)
        assert publisher.counts["primary"].pending == SEGMENTS
        assert reach(named["primary"]) == 99
        failing.clear()
        assert publisher.drain(30) == {}
    finally:
        publisher.close()
    counts = publisher.counts["primary"]
    assert (counts.published, counts.pending, counts.last_error) == (SEGMENTS, 0, None)
    assert counts.bytes == sum(len(s.stored) for s in segments)
    for sealed in segments:  # the same stored bytes and manifests in both stores
        for store in named.values():
            assert store.get_bytes(sealed.manifest.object_key) == sealed.stored
            assert store.get_bytes(sealed.manifest.manifest_key) == sealed.manifest.to_json()


def test_the_local_queue_never_drops_bytes_it_makes_the_caller_wait(tmp_path):
    local = LocalStore(tmp_path / "local", "local")
    blocker = tmp_path / "local" / "prod"
    blocker.parent.mkdir()
    blocker.write_text("")  # a file where the cluster's folder goes: every write fails (root too)
    segments = sealed_segments(Identity.generate())
    publisher = Publisher({"local": local}, held=2)
    submitted = threading.Event()

    def submit_all() -> None:
        for sealed in segments:
            publisher.submit(sealed)
        submitted.set()

    try:
        threading.Thread(target=submit_all, daemon=True).start()
        wait_for(lambda: publisher.counts["local"].failures >= 1, "the local store failing")
        assert not submitted.wait(1.0)  # held at the bound: the journal waits, and lags
        assert publisher.counts["local"].pending == 2
        blocker.unlink()
        wait_for(submitted.is_set, "every segment submitted")
        assert publisher.drain(30) == {}
    finally:
        publisher.close()
    assert reach(local) == 179
