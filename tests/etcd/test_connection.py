"""Connections to real etcd processes: endpoints, unreachable members, TLS, auth."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time

import pytest

from etcdops.config import EtcdConfig
from etcdops.demo.sample import load_kubernetes_objects
from etcdops.errors import ConfigError, EtcdUnavailableError
from etcdops.etcd.connection import normalize_endpoint
from etcdops.etcd.local import LocalCluster, free_port
from etcdops.etcd.session import EtcdSession

SHA256_TRAILER = 32


# --- connection failures -----------------------------------------------------------------------


def test_unreachable_endpoint_fails_within_the_dial_timeout(unreachable_endpoint: str) -> None:
    config = EtcdConfig(endpoints=(unreachable_endpoint,), dial_timeout=1.0)
    started = time.monotonic()
    with EtcdSession(config) as session, pytest.raises(EtcdUnavailableError) as caught:
        session.status(unreachable_endpoint)
    # not the command timeout (30 s); the margin a loaded machine's
    assert time.monotonic() - started < config.dial_timeout + 3.0
    assert caught.value.message == (
        f"etcd at {unreachable_endpoint} is unreachable: connection refused within 1s"
    )
    assert "[etcd] endpoints" in caught.value.hint


def test_statuses_name_every_unreachable_endpoint_in_one_dial_timeout() -> None:
    endpoints = tuple(f"http://127.0.0.1:{free_port()}" for _ in range(3))
    config = EtcdConfig(endpoints=endpoints, dial_timeout=2.0)
    with EtcdSession(config) as session:
        started = time.monotonic()
        with pytest.raises(EtcdUnavailableError) as caught:
            session.statuses()
        # asked in parallel: one after the other would take three dial timeouts
        assert time.monotonic() - started < config.dial_timeout + 2.0
        with pytest.raises(EtcdUnavailableError, match="no etcd endpoint answered MemberList"):
            session.members()
    assert caught.value.message.startswith("3 of 3 etcd endpoints did not answer")
    assert all(f"etcd at {e} is unreachable" in caught.value.message for e in endpoints)


def test_a_connection_starts_no_thread_of_grpcs(etcd_single: LocalCluster) -> None:
    # grpc.channel_ready_future polls the channel's connectivity on a thread of its own, which
    # raises "Channel closed!" into stderr when the channel closes at the wrong moment
    # (grpc/grpc#18995), and held each connection ~0.2 s; a call that waits for the channel
    # does neither
    before = set(threading.enumerate())
    with EtcdSession(etcd_single.etcd_config()) as session:
        session.status(etcd_single.client_urls[0])
        assert set(threading.enumerate()) - before == set()


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
    assert normalize_endpoint(endpoint, tls) == expected


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
