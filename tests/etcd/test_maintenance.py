"""Maintenance calls against real etcd processes: status, members, alarms, snapshots."""

from __future__ import annotations

import hashlib

import pytest
from etcd3 import etcdrpc

from etcdops.demo.sample import load_kubernetes_objects
from etcdops.errors import EtcdUnavailableError, IntegrityError
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.maintenance import Alarm, MemberStatus, SnapshotSource, SnapshotStream
from etcdops.etcd.session import EtcdSession

SHA256_TRAILER = 32


# --- status, members, alarms -------------------------------------------------------------------


def test_status_of_a_single_member(etcd_single: LocalCluster) -> None:
    url = etcd_single.client_urls[0]
    with EtcdSession(etcd_single.etcd_config()) as session:
        session.put_many([(b"/registry/pods/default/a", b"{}")])
        status = session.status(url)
    assert status.endpoint == url
    assert status.version == "3.5.1"
    assert status.is_leader and status.member_id == status.leader_id != 0
    assert status.cluster_id != 0
    assert status.revision >= 2  # the put above
    assert 0 < status.db_size_in_use <= status.db_size
    assert status.raft_applied_index >= status.raft_index > 0
    assert status.errors == ()
    assert not status.is_learner


def test_three_members_agree_on_one_leader(etcd_cluster3: LocalCluster) -> None:
    with EtcdSession(etcd_cluster3.etcd_config()) as session:
        statuses = session.statuses()
        members = session.members()
        follower = next(s for s in statuses if not s.is_leader)
        stream = session.snapshot_stream(follower.endpoint)
        data = b"".join(stream)
    assert [s.endpoint for s in statuses] == etcd_cluster3.client_urls
    assert sum(s.is_leader for s in statuses) == 1
    assert len({s.leader_id for s in statuses}) == 1
    assert len({s.cluster_id for s in statuses}) == 1
    assert {s.member_id for s in statuses} == {m.id for m in members}
    assert sorted(m.name for m in members) == ["etcd-1", "etcd-2", "etcd-3"]
    assert sorted(url for m in members for url in m.client_urls) == sorted(
        etcd_cluster3.client_urls
    )
    assert not any(m.is_learner for m in members)
    # a snapshot can be taken from any member, here a chosen follower
    assert stream.source.endpoint == follower.endpoint
    assert stream.source.status.member_id == follower.member_id
    assert hashlib.sha256(data[:-SHA256_TRAILER]).digest() == data[-SHA256_TRAILER:]


def test_a_stopped_member_is_named_and_others_still_serve(etcd_cluster3: LocalCluster) -> None:
    stopped = etcd_cluster3.members[0]
    stopped.stop()
    # a live member's dial must not time out on a loaded machine
    with EtcdSession(etcd_cluster3.etcd_config(dial_timeout=2.0)) as session:
        with pytest.raises(EtcdUnavailableError) as caught:
            session.statuses()
        assert f"etcd at {stopped.client_url} is unreachable" in caught.value.message
        assert "1 of 3" in caught.value.message
        assert len(session.members()) == 3  # the next endpoint answers
        assert session.count_keys() == 0


def test_alarms_report_nospace_when_the_quota_is_reached(tmp_path) -> None:
    cluster = LocalCluster.single(tmp_path / "etcd", quota_backend_bytes=2 * 1024 * 1024)
    with cluster, EtcdSession(cluster.etcd_config()) as session:
        assert session.alarms() == []
        with pytest.raises(EtcdUnavailableError, match="database space exceeded") as caught:
            load_kubernetes_objects(session, 100, value_size=100 * 1024)
        assert "disarm" in caught.value.hint
        status = session.status(cluster.client_urls[0])
        assert session.alarms() == [Alarm(member_id=status.member_id, kind="NOSPACE")]
        assert any("NOSPACE" in error for error in status.errors)

# --- snapshots ---------------------------------------------------------------------------------


def test_snapshot_stream_ends_with_a_correct_sha256_trailer(etcd_loaded) -> None:
    cluster, _ = etcd_loaded
    with EtcdSession(cluster.etcd_config()) as session:
        stream = session.snapshot_stream()
        chunks = list(stream)
    data = b"".join(chunks)
    assert len(chunks) > 1  # it streamed, it did not arrive as one blob
    assert hashlib.sha256(data[:-SHA256_TRAILER]).digest() == data[-SHA256_TRAILER:]
    assert stream.bytes_received == len(data)
    assert stream.source.endpoint == cluster.client_urls[0]
    assert stream.source.status.is_leader
    assert stream.source.status.revision > 1


def test_snapshot_comes_from_the_first_endpoint_that_answers(
    etcd_single: LocalCluster, unreachable_endpoint: str
) -> None:
    config = etcd_single.etcd_config(
        endpoints=(unreachable_endpoint, *etcd_single.client_urls), dial_timeout=2.0
    )
    with EtcdSession(config) as session:
        stream = session.snapshot_stream()
        data = b"".join(stream)
    assert stream.source.endpoint == etcd_single.client_urls[0]
    assert hashlib.sha256(data[:-SHA256_TRAILER]).digest() == data[-SHA256_TRAILER:]


def test_member_dying_mid_stream_names_the_endpoint(etcd_single: LocalCluster) -> None:
    with EtcdSession(etcd_single.etcd_config()) as session:
        # big enough that grpc cannot have buffered the rest before the member dies
        load_kubernetes_objects(session, 300, value_size=50 * 1024)
        stream = session.snapshot_stream()
        next(stream)
        etcd_single.members[0].process.kill()
        with pytest.raises(EtcdUnavailableError) as caught:
            for _ in stream:
                pass
    assert etcd_single.client_urls[0] in caught.value.message
    assert "snapshot" in caught.value.message


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [(None, "no data at all"), (4096, "4096 bytes missing")],
)
def test_snapshot_stream_that_ends_early_fails_integrity(remaining, expected) -> None:
    # etcd cannot be made to end a stream cleanly but early, so the stream is fed the protobuf
    # messages a truncated stream would carry
    status = MemberStatus("http://127.0.0.1:2379", 1, 2, 1, "3.5.1", 0, 0, 1, 1, 1, 1, (), False)
    responses = (
        []
        if remaining is None
        else [
            etcdrpc.SnapshotResponse(remaining_bytes=remaining + 1, blob=b"x"),
            etcdrpc.SnapshotResponse(remaining_bytes=remaining, blob=b"y"),
        ]
    )
    stream = SnapshotStream(SnapshotSource(status.endpoint, status), iter(responses), None)
    with pytest.raises(IntegrityError, match=f"ended early: {expected}"):
        list(stream)
