"""EtcdSession against real etcd processes: status, members, alarms, snapshots, TLS, auth."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import time

import pytest
from etcd3 import etcdrpc

from etcdops.config import EtcdConfig
from etcdops.demo.sample import load_kubernetes_objects
from etcdops.errors import ConfigError, EtcdUnavailableError, IntegrityError
from etcdops.etcd.client import (
    Alarm,
    EtcdSession,
    MemberStatus,
    SnapshotSource,
    SnapshotStream,
    _normalize,
    prepare_grpc_environment,
)
from etcdops.etcd.local import LocalCluster, free_port

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
    with EtcdSession(etcd_cluster3.etcd_config(dial_timeout=0.5)) as session:
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


# --- grpc --------------------------------------------------------------------------------------


def test_grpc_knows_every_setting_etcdops_gives_it() -> None:
    # grpc logs a setting it does not know (an experiment a newer grpc dropped) on stderr, on
    # every run of every command: that must fail here, not litter an operator's terminal
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    script = (
        "from etcdops.etcd.client import prepare_grpc_environment\n"
        "prepare_grpc_environment()\n"
        "import grpc\n"
        "grpc.insecure_channel('127.0.0.1:1').close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_grpc_settings_yield_to_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("GRPC_EXPERIMENTS", "")  # an operator's choice, even an empty one
    monkeypatch.delenv("GRPC_VERBOSITY")
    prepare_grpc_environment()
    assert os.environ["GRPC_EXPERIMENTS"] == ""
    assert os.environ["GRPC_VERBOSITY"] == "ERROR"


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
        endpoints=(unreachable_endpoint, *etcd_single.client_urls), dial_timeout=0.5
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


# --- keys --------------------------------------------------------------------------------------


def test_count_keys_now_and_at_an_older_revision(etcd_loaded) -> None:
    cluster, objects = etcd_loaded
    with EtcdSession(cluster.etcd_config()) as session:
        before = session.status(cluster.client_urls[0]).revision
        assert session.count_keys() == len(objects)
        revision = session.put_many([(b"/registry/pods/default/extra", b"{}")])
        assert revision == before + 1
        assert session.count_keys() == len(objects) + 1
        assert session.count_keys(revision=before) == len(objects)


# --- connection failures -----------------------------------------------------------------------


def test_unreachable_endpoint_fails_within_the_dial_timeout(unreachable_endpoint: str) -> None:
    config = EtcdConfig(endpoints=(unreachable_endpoint,), dial_timeout=1.0)
    started = time.monotonic()
    with EtcdSession(config) as session, pytest.raises(EtcdUnavailableError) as caught:
        session.status(unreachable_endpoint)
    assert time.monotonic() - started < config.dial_timeout + 1.0
    assert caught.value.message == (
        f"etcd at {unreachable_endpoint} is unreachable: connection refused within 1s"
    )
    assert "[etcd] endpoints" in caught.value.hint


def test_statuses_name_every_unreachable_endpoint_in_one_dial_timeout() -> None:
    endpoints = tuple(f"http://127.0.0.1:{free_port()}" for _ in range(3))
    config = EtcdConfig(endpoints=endpoints, dial_timeout=0.5)
    with EtcdSession(config) as session:
        started = time.monotonic()
        with pytest.raises(EtcdUnavailableError) as caught:
            session.statuses()
        assert time.monotonic() - started < config.dial_timeout + 1.0  # asked in parallel
        with pytest.raises(EtcdUnavailableError, match="no etcd endpoint answered MemberList"):
            session.members()
    assert caught.value.message.startswith("3 of 3 etcd endpoints did not answer")
    assert all(f"etcd at {e} is unreachable" in caught.value.message for e in endpoints)


@pytest.mark.parametrize(
    ("endpoint", "tls", "expected"),
    [
        ("127.0.0.1:2379", False, "http://127.0.0.1:2379"),
        ("127.0.0.1:2379", True, "https://127.0.0.1:2379"),
        ("https://etcd-0.example:2379", False, "https://etcd-0.example:2379"),
        ("http://[::1]:2379", False, "http://[::1]:2379"),
        ("http://etcd", False, "http://etcd:2379"),
    ],
)
def test_endpoints_are_urls_or_host_port(endpoint: str, tls: bool, expected: str) -> None:
    assert _normalize(endpoint, tls) == expected


@pytest.mark.parametrize("endpoint", ["unix:///run/etcd.sock", "http://:2379", "host:port"])
def test_invalid_endpoints_are_configuration_errors(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="invalid etcd endpoint"):
        EtcdSession(EtcdConfig(endpoints=(endpoint,)))


# --- TLS ---------------------------------------------------------------------------------------


def test_tls_with_client_certificates(etcd_tls: LocalCluster) -> None:
    url = etcd_tls.client_urls[0]
    assert url.startswith("https://")
    with EtcdSession(etcd_tls.etcd_config()) as session:
        assert session.status(url).is_leader
        assert [m.client_urls for m in session.members()] == [(url,)]
        stream = session.snapshot_stream()
        data = b"".join(stream)
    assert hashlib.sha256(data[:-SHA256_TRAILER]).digest() == data[-SHA256_TRAILER:]


def test_tls_misconfiguration_fails_clearly(etcd_tls: LocalCluster) -> None:
    url = etcd_tls.client_urls[0]
    plaintext = url.replace("https://", "http://")
    cases = [
        (etcd_tls.etcd_config(cacert=None), "not signed by the configured CA"),
        (etcd_tls.etcd_config(cert=None, key=None), "wants a client certificate"),
        (EtcdConfig(endpoints=(plaintext,)), "does it serve TLS only?"),
    ]
    for config, expected in cases:
        config = dataclasses.replace(config, dial_timeout=0.5)
        with EtcdSession(config) as session, pytest.raises(EtcdUnavailableError) as caught:
            session.count_keys()
        assert expected in caught.value.message
        assert config.endpoints[0] in caught.value.message
        assert "cacert" in caught.value.hint and "https://" in caught.value.hint


# --- authentication ----------------------------------------------------------------------------


def test_user_and_password_file(etcd_auth) -> None:
    with EtcdSession(etcd_auth.config) as session:
        load_kubernetes_objects(session, 20)
        assert session.count_keys() == 20
        assert session.alarms() == []
        data = b"".join(session.snapshot_stream())
    assert hashlib.sha256(data[:-SHA256_TRAILER]).digest() == data[-SHA256_TRAILER:]


def test_wrong_or_missing_credentials_fail_clearly(etcd_auth) -> None:
    wrong = dataclasses.replace(etcd_auth.config, password_file=None, password="wrong-password")
    with EtcdSession(wrong) as session, pytest.raises(EtcdUnavailableError) as caught:
        session.count_keys()
    assert "authentication failed as user 'root'" in caught.value.message
    assert "password_file" in caught.value.hint
    assert "wrong-password" not in str(caught.value)  # secrets never appear in messages

    anonymous = dataclasses.replace(etcd_auth.config, user=None, password_file=None)
    with EtcdSession(anonymous) as session, pytest.raises(EtcdUnavailableError) as caught:
        session.count_keys()
    assert "authentication failed as no user" in caught.value.message


def test_credentials_for_a_cluster_without_auth_are_unused(etcd_single: LocalCluster) -> None:
    config = etcd_single.etcd_config(user="root", password="unused")
    with EtcdSession(config) as session:
        assert session.count_keys() == 0


def test_user_without_a_password_is_a_configuration_error(etcd_single: LocalCluster) -> None:
    session = EtcdSession(etcd_single.etcd_config(user="root"))
    with session, pytest.raises(ConfigError, match="no password"):
        session.count_keys()


def test_the_etcd3_library_sees_the_same_data(etcd_loaded, etcd3_client) -> None:
    cluster, objects = etcd_loaded
    client = etcd3_client(cluster.client_urls[0])
    assert {meta.key: value for value, meta in client.get_prefix("/registry/")} == objects
