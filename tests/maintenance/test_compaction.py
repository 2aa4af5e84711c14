"""Compaction from (time, revision) samples kept in etcd, on a real etcd with an injected clock."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import etcd3
import grpc
import pytest
from etcd3 import etcdrpc

from etcdops.config import CompactionConfig
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from etcdops.maintenance import compaction
from etcdops.maintenance.compaction import Sample, choose_sample, compact, obsolete_samples

PREFIX = "/etcdops/compaction/"
CONFIG = CompactionConfig(retain=300.0, prefix=PREFIX)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def session(etcd_single: LocalCluster):
    with EtcdSession(etcd_single.etcd_config()) as session:
        yield session


@pytest.fixture
def client(etcd_single: LocalCluster, etcd3_client: Callable[[str], etcd3.Etcd3Client]):
    return etcd3_client(etcd_single.client_urls[0])


def readable_at(client: etcd3.Etcd3Client, key: str, revision: int) -> bytes | None:
    """The value of key at revision; raises if that revision was compacted."""
    response = client.kvstub.Range(etcdrpc.RangeRequest(key=key.encode(), revision=revision))
    return response.kvs[0].value if response.kvs else None


def compacted_away(client: etcd3.Etcd3Client, revision: int) -> bool:
    try:
        readable_at(client, "/any", revision)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.OUT_OF_RANGE
        return True
    return False


def stored_samples(client: etcd3.Etcd3Client) -> list[tuple[bytes, int]]:
    """(key, recorded revision) of every sample, oldest first."""
    return sorted(
        (meta.key, json.loads(value)["revision"]) for value, meta in client.get_prefix(PREFIX)
    )


# --- the choice, without etcd -------------------------------------------------------------------


def test_choose_the_newest_sample_at_least_retain_old() -> None:
    samples = [Sample(100.0, 10, b"a"), Sample(200.0, 20, b"b"), Sample(390.0, 30, b"c")]
    assert choose_sample(samples, now=400.0, retain=300.0) == samples[0]  # 300s old exactly
    assert choose_sample(samples, now=499.0, retain=300.0) == samples[0]
    assert choose_sample(samples, now=500.0, retain=300.0) == samples[1]
    assert choose_sample(samples, now=399.0, retain=300.0) is None
    assert choose_sample(samples, now=390.0, retain=0.0) == samples[2]


def test_obsolete_samples_are_the_older_ones_and_the_overflow(monkeypatch) -> None:
    samples = [Sample(float(t), t, f"k{t}".encode()) for t in range(10)]
    assert obsolete_samples(samples, samples[4]) == samples[:4]
    assert obsolete_samples(samples, None) == []
    in_memory = Sample(10.0, 10, None)  # never stored, never deleted
    assert obsolete_samples([*samples, in_memory], in_memory) == samples
    monkeypatch.setattr(compaction, "MAX_SAMPLES", 3)
    # keep the next one to be chosen (the oldest) and the newest: thin out in between
    assert obsolete_samples(samples, samples[4]) == samples[:4] + samples[5:8]
    assert obsolete_samples(samples, None) == samples[1:8]


# --- on a real etcd -----------------------------------------------------------------------------


def test_the_first_run_only_takes_a_sample(session, client) -> None:
    result = compact(session, CONFIG, clock=Clock(), host="node-a")
    assert not result.compacted and result.target_revision is None
    assert "no sample is 5m00s old yet" in result.reason
    assert result.sample_stored
    [(key, revision)] = stored_samples(client)
    assert key.startswith(PREFIX.encode()) and key.endswith(b"-node-a")
    # the revision read before the clock, not the one the sample's own write created
    assert revision == result.current_revision
    [(_, meta)] = client.get_prefix(PREFIX)
    assert meta.mod_revision == revision + 1
    assert not compacted_away(client, 1)


def test_compacts_to_the_newest_sample_old_enough(session, client) -> None:
    clock = Clock()
    client.put("/registry/pods/default/web", "v1")
    first = compact(session, CONFIG, clock=clock, host="node-a")
    [(_, sample_revision)] = stored_samples(client)
    client.put("/registry/pods/default/web", "v2")  # after the sample
    clock.now += 200
    compact(session, CONFIG, clock=clock, host="node-a")
    clock.now += 200  # the first sample is 400s old, the second 200s
    result = compact(session, CONFIG, clock=clock, host="node-a")

    assert result.compacted
    assert result.target_revision == sample_revision
    assert result.oldest_revision_before == 1
    assert result.revisions_dropped == sample_revision - 1
    assert compacted_away(client, sample_revision - 1)
    # the state as of the sample is still there, and every change after it
    assert readable_at(client, "/registry/pods/default/web", sample_revision) == b"v1"
    assert client.get("/registry/pods/default/web")[0] == b"v2"
    assert first.current_revision == sample_revision
    # nothing older than the chosen sample was stored, so nothing was deleted yet
    assert result.samples_deleted == 0
    assert len(stored_samples(client)) == 3

    clock.now += 200  # now the second sample (400s old) is the one
    later = compact(session, CONFIG, clock=clock, host="node-a")
    assert later.compacted and later.target_revision > sample_revision
    assert later.samples_deleted == 1  # the first: a newer sample is old enough now
    assert sample_revision not in [revision for _, revision in stored_samples(client)]


def test_a_revision_already_compacted_is_a_no_op(session, client) -> None:
    clock = Clock()
    compact(session, CONFIG, clock=clock, host="node-a")
    client.put("/registry/pods/default/web", "v1")
    # kube-apiserver compacts every five minutes, here past the sample
    current = client.get_response("/").header.revision
    client.compact(current)
    clock.now += 600
    result = compact(session, CONFIG, clock=clock, host="node-a")
    assert not result.compacted
    assert result.oldest_revision_before == current
    assert "keeps no history before revision" in result.reason
    assert "compacted by another run or by kube-apiserver" in result.reason
    assert result.revisions_dropped == 0


def test_dry_run_writes_no_sample_and_compacts_nothing(session, client) -> None:
    clock = Clock()
    client.put("/registry/pods/default/web", "v1")
    compact(session, CONFIG, clock=clock, host="node-a")
    before = stored_samples(client)
    clock.now += 600
    result = compact(session, CONFIG, clock=clock, host="node-a", dry_run=True)
    assert result.dry_run and not result.compacted and not result.sample_stored
    assert result.reason.startswith(f"would compact to revision {before[0][1]}")
    assert stored_samples(client) == before
    assert not compacted_away(client, 1)


def test_retain_zero_compacts_to_this_run_sample(session, client) -> None:
    client.put("/registry/pods/default/web", "v1")
    client.put("/registry/pods/default/web", "v2")
    result = compact(session, CONFIG, retain=0.0, physical=True, clock=Clock(), host="node-a")
    assert result.compacted and result.physical
    assert result.target_revision == result.current_revision
    assert compacted_away(client, result.current_revision - 1)


def test_two_nodes_at_once_keep_both_samples(session, client, etcd_single) -> None:
    clock = Clock()
    errors: list[BaseException] = []

    def run(host: str) -> None:
        try:
            with EtcdSession(etcd_single.etcd_config()) as own:
                for _ in range(5):
                    compact(own, CONFIG, clock=clock, host=host)
        except BaseException as exc:  # reported below: a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(host,)) for host in ("node-a", "node-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    samples = stored_samples(client)
    # one key per node and moment: the same clock on both, so each node rewrote its own key
    assert [key.rsplit(b"-", 1)[1] for key, _ in samples] == [b"a", b"b"]
    clock.now += 301
    result = compact(session, CONFIG, clock=clock, host="node-c")
    assert result.target_revision == max(revision for _, revision in samples)


def test_samples_stay_bounded(session, client, monkeypatch) -> None:
    monkeypatch.setattr(compaction, "MAX_SAMPLES", 4)
    clock = Clock()
    for _ in range(8):
        compact(session, CONFIG, clock=clock, host="node-a")
        clock.now += 10  # far younger than retain: nothing is ever chosen
    assert len(stored_samples(client)) == 4


def test_under_nospace_the_run_uses_the_current_revision(
    etcd_tiny_quota: LocalCluster, etcd3_client
) -> None:
    from tests.fixtures.etcd import fill_until_nospace

    client = etcd3_client(etcd_tiny_quota.client_urls[0])
    fill_until_nospace(client)
    with EtcdSession(etcd_tiny_quota.etcd_config()) as session:
        waiting = compact(session, CONFIG, clock=Clock(), host="node-a")
        result = compact(session, CONFIG, retain=0.0, clock=Clock(), host="node-a")
    assert not waiting.sample_stored and "NOSPACE" in waiting.reason
    assert not waiting.compacted
    assert result.compacted and not result.sample_stored
    assert result.target_revision == result.current_revision
    assert stored_samples(client) == []
