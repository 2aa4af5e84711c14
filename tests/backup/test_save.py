"""Taking backups from a real etcd: the manifest, the round trip, and failures that keep nothing."""

import dataclasses
import json
import subprocess

import etcd3
import pytest

from etcdops.backup.readback import fetch_snapshot
from etcdops.backup.save import save_snapshot
from etcdops.errors import ConfigError, EtcdUnavailableError, IntegrityError
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.local import LocalEtcd
from etcdops.report import LogReporter
from etcdops.stores.configured import Stores
from etcdops.stores.local import LocalStore
from tests.faultproxy import Faults


def stored_files(config):
    return sorted(p.name for p in config.local.dir.rglob("*") if p.is_file())


def test_manifest_describes_the_backup(backup_config, etcd_loaded):
    manifest = save_snapshot(backup_config, LogReporter()).manifest
    doc = json.loads(manifest.to_json())
    assert doc["schema_version"] == 1
    assert doc["cluster"] == backup_config.cluster
    assert doc["etcd"]["keys"] == len(etcd_loaded.objects)
    with etcd3.client(*etcd_loaded.cluster.client_urls[0][7:].split(":")) as client:
        assert doc["etcd"]["revision"] == client.get_response(b"\0").header.revision
    assert doc["etcd"]["version"] == "3.5.1"
    assert doc["encryption"]["format"] == "age-encryption.org/v1"
    assert len(doc["encryption"]["recipients"]) == 1
    assert doc["compression"]["format"] == "zstd"
    assert doc["object_size"] < doc["snapshot_size"]
    assert doc["object_key"].startswith(f"{backup_config.cluster}/snapshots/")
    object_path = backup_config.local.dir / manifest.object_key
    assert object_path.stat().st_size == manifest.object_size
    assert (backup_config.local.dir / manifest.manifest_key).is_file()
    assert object_path.read_bytes().startswith(b"age-encryption.org/v1\n")


def test_round_trip_restores_every_key_and_value(backup_config, etcd_loaded, tmp_path):
    manifest = save_snapshot(backup_config, LogReporter()).manifest
    plain = tmp_path / "restore.db"
    fetch_snapshot(backup_config, manifest.id, plain, LogReporter())
    restored = LocalEtcd("restored", tmp_path / "restored")
    etcdutl = find_binary("etcdutl")
    subprocess.run(
        [str(etcdutl), "snapshot", "restore", str(plain), "--data-dir", str(restored.data_dir),
         "--name", restored.name, "--initial-cluster", f"{restored.name}={restored.peer_url}",
         "--initial-advertise-peer-urls", restored.peer_url],
        check=True, capture_output=True,
    )
    restored.start()
    try:
        port = int(restored.client_url.rsplit(":", 1)[1])
        client = etcd3.client(host="127.0.0.1", port=port)
        got = {meta.key: value for value, meta in client.get_all()}
        client.close()
    finally:
        restored.stop()
    assert got == etcd_loaded.objects


def through(config, proxy):
    return dataclasses.replace(
        config, etcd=dataclasses.replace(config.etcd, endpoints=(proxy.url,))
    )


def test_corruption_in_flight_fails_the_trailer_check_and_keeps_nothing(
    backup_config, etcd_proxy
):
    proxy = etcd_proxy(Faults(flip_at=200_000))
    with pytest.raises(IntegrityError, match="sha256"):
        save_snapshot(through(backup_config, proxy), LogReporter())
    assert [n for n in stored_files(backup_config) if not n.startswith(".etcdops")] == []


def test_stream_cut_midway_keeps_nothing(backup_config, etcd_proxy):
    proxy = etcd_proxy(Faults(cut_after=150_000))
    with pytest.raises((EtcdUnavailableError, IntegrityError)):
        save_snapshot(through(backup_config, proxy), LogReporter())
    assert [n for n in stored_files(backup_config) if not n.startswith(".etcdops")] == []


def test_no_recipients_is_a_configuration_error(backup_config):
    config = dataclasses.replace(
        backup_config, encryption=dataclasses.replace(backup_config.encryption, recipients=())
    )
    with pytest.raises(ConfigError, match="recipients"):
        save_snapshot(config, LogReporter())


class _InterruptedOnOpen:
    """A primary store that Ctrl-C interrupts as it opens its writer (as while its client is
    built on first use), once the local writer's file exists."""

    name = "primary"

    def open_writer(self, key, expected_size=None, *, waiting=None):
        raise KeyboardInterrupt


def partial_files(config) -> list[str]:
    return [p.name for p in config.local.dir.rglob("*")
            if p.is_file() and not p.name.startswith(".etcdops")]


def test_an_interrupt_while_the_next_store_opens_leaves_no_partial_object(
    backup_config, etcd_loaded
):
    local = LocalStore(backup_config.local.dir)
    stores = Stores({"local": lambda: local, "primary": _InterruptedOnOpen})
    with pytest.raises(KeyboardInterrupt):
        save_snapshot(backup_config, LogReporter(), stores=stores)
    assert partial_files(backup_config) == []


def test_an_interrupt_as_the_local_writer_opens_leaves_no_partial_file(
    backup_config, etcd_loaded, monkeypatch
):
    import etcdops.stores.local

    def interrupted(fd):  # the writer's file exists; its fsync thread is being started
        raise KeyboardInterrupt

    monkeypatch.setattr(etcdops.stores.local, "_BackgroundSync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_snapshot(backup_config, LogReporter())
    assert partial_files(backup_config) == []
