"""Backups in two S3 regions on a real (moto) S3 server over HTTP, with faults injected."""

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etcdops.backup.readback import fetch_snapshot, snapshot_status
from etcdops.backup.save import save_snapshot
from etcdops.cli.main import app
from etcdops.config import RetentionConfig
from etcdops.journal.prune import prune
from etcdops.lock import job_lock
from etcdops.report import LogReporter
from etcdops.stores.configured import open_stores
from tests.backup.two_regions import (
    assert_listing_honest,
    corrupt_primary_copy,
    toml_for,
    with_s3,
)
from tests.s3proxy import upload_part


def unfinished_keys(store):
    return [info.key for info in store.unfinished("")]


def keys_in(client, bucket):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.fixture
def etcd_big(etcd_loaded):
    """etcd_loaded plus 24 MiB that does not compress: the object spans several parts."""
    import etcd3

    host, port = etcd_loaded.cluster.client_urls[0].removeprefix("http://").split(":")
    with etcd3.client(host=host, port=int(port)) as client:
        for index in range(24):
            client.put(f"/registry/secrets/big/blob-{index}", os.urandom(1 << 20))
    return etcd_loaded


def test_save_lands_in_both_regions_with_manifests(backup_config, s3):
    config = with_s3(backup_config, s3)
    result = save_snapshot(config, LogReporter())
    assert result.stored == ("local", "primary", "replica")
    assert result.failures == {}
    manifest = result.manifest
    primary_keys = keys_in(s3.client("us-east-1"), "etcdops-primary")
    replica_keys = keys_in(s3.client("us-west-2"), "etcdops-replica")
    # each copy: its check record, its object and its manifest
    files = [manifest.check_key, manifest.object_key, manifest.manifest_key]
    assert primary_keys == ["backups/" + key for key in files]
    assert replica_keys == files
    body = s3.client("us-west-2").get_object(Bucket="etcdops-replica", Key=manifest.object_key)
    assert hashlib.sha256(body["Body"].read()).hexdigest() == manifest.object_sha256
    status = snapshot_status(config, manifest.id, LogReporter(), store="replica")
    assert status.store == "replica" and status.fallbacks == ()
    # the save's total takes in the replica copy, which comes after the manifest was written
    took = result.durations
    assert set(took) == {"stream", "replica_copy", "total"}
    assert took["replica_copy"] > 0
    assert took["total"] >= took["stream"] + took["replica_copy"] - 0.002  # each rounded to ms
    assert manifest.durations["total"] < took["total"]


def test_health_says_whether_the_replica_region_holds_the_newest_backup(
    backup_config, s3, s3_proxy
):
    from etcdops.maintenance.health import FAIL, OK, check_backups

    dead = s3_proxy()
    dead.down()
    save_snapshot(with_s3(backup_config, s3, replica_url=dead.url), LogReporter())
    config = with_s3(backup_config, s3)
    checks = {c.name: c for c in check_backups(config, datetime.now(UTC))}
    assert checks["newest backup"].verdict == OK
    assert checks["replica region"].verdict == FAIL
    assert "is NOT in the replica region" in checks["replica region"].value
    down = {c.name: c for c in check_backups(with_s3(backup_config, s3, replica_url=dead.url),
                                              datetime.now(UTC))}
    assert down["replica store"].verdict == FAIL
    from etcdops.backup.replicate import replicate

    replicate(open_stores(config), config.cluster, LogReporter())
    checks = {c.name: c for c in check_backups(config, datetime.now(UTC))}
    assert checks["replica region"].verdict == OK


def test_corrupt_primary_copy_falls_back_to_the_replica(backup_config, s3, tmp_path):
    config = with_s3(backup_config, s3)
    manifest = save_snapshot(config, LogReporter()).manifest
    corrupt_primary_copy(config, s3, manifest)

    status = snapshot_status(config, manifest.id, LogReporter())
    assert status.store == "replica"
    assert any("primary store failed" in note for note in status.fallbacks)
    out = tmp_path / "restore.db"
    fetched = fetch_snapshot(config, "latest", out, LogReporter())
    assert fetched.store == "replica"
    assert fetched.db_sha256 == manifest.snapshot_db_sha256
    from etcdops.backup.catalog import Catalog

    # the catalogue checks presence and size only; the damage is found by reading, as above
    assert Catalog(open_stores(config)["primary"], config.cluster).entries()[0].good


def test_unreachable_primary_region_reads_from_the_replica(backup_config, s3, s3_proxy):
    manifest = save_snapshot(with_s3(backup_config, s3), LogReporter()).manifest
    (backup_config.local.dir / manifest.object_key).unlink()
    dead = s3_proxy()
    dead.down()
    config = with_s3(backup_config, s3, primary_url=dead.url)
    status = snapshot_status(config, manifest.id, LogReporter())
    assert status.store == "replica"
    assert any("primary store could not be listed" in note for note in status.fallbacks)


def test_a_transient_part_failure_is_retried(backup_config, etcd_big, s3, s3_proxy):
    proxy = s3_proxy()
    proxy.fail(upload_part(2), times=1)
    result = save_snapshot(with_s3(backup_config, s3, primary_url=proxy.url), LogReporter())
    assert result.stored == ("local", "primary", "replica")
    assert proxy.count(upload_part(2)) == 2  # failed once, retried once
    assert result.manifest.object_size > 16 << 20
    assert_listing_honest(with_s3(backup_config, s3))


def test_a_failing_primary_upload_is_aborted_and_the_local_copy_kept(
    backup_config, etcd_big, s3, s3_proxy, tmp_path
):
    proxy = s3_proxy()
    proxy.fail(upload_part(2), times=100)
    config = with_s3(backup_config, s3, primary_url=proxy.url)
    result = CliRunner().invoke(
        app, ["snapshot", "save", "-o", "json", "--config", str(toml_for(config, tmp_path / "c"))]
    )
    assert result.exit_code == 14, result.output
    doc = json.loads(result.stdout)
    assert doc["stored_in"] == ["local", "replica"]  # the replica was filled from local
    assert "primary" in doc["failed"]
    assert keys_in(s3.client(), "etcdops-primary") == []
    assert unfinished_keys(open_stores(with_s3(backup_config, s3))["primary"]) == []
    assert_listing_honest(with_s3(backup_config, s3))


def save_until_mid_upload(backup_config, etcd_proxy, s3, tmp_path):
    """A save in a process of its own, from a slowed etcd, once its multipart upload is under
    way: (the process, its config file, the primary store)."""
    from tests.faultproxy import Faults

    slow = etcd_proxy(Faults(delay_per_chunk=0.02))
    config = with_s3(backup_config, s3)
    config = dataclasses.replace(
        config, etcd=dataclasses.replace(config.etcd, endpoints=(slow.url,))
    )
    toml = toml_for(config, tmp_path / "etcdops.toml")
    primary = open_stores(config)["primary"]
    process = subprocess.Popen(
        [sys.executable, "-m", "etcdops", "snapshot", "save", "--config", str(toml)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    while not unfinished_keys(primary):
        assert process.poll() is None, process.communicate()
        assert datetime.now(UTC) < deadline, "no multipart upload started"
        time.sleep(0.05)  # each look is a request that moto answers beside the save's parts
    return process, toml, primary


def test_sigterm_during_an_upload_aborts_it(backup_config, etcd_big, etcd_proxy, s3, tmp_path):
    process, _, primary = save_until_mid_upload(backup_config, etcd_proxy, s3, tmp_path)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert unfinished_keys(primary) == []
    assert keys_in(s3.client(), "etcdops-primary") == []
    assert not list(backup_config.local.dir.rglob("*.manifest.json"))
    assert_listing_honest(with_s3(backup_config, s3))


def kill_a_save_mid_upload(backup_config, etcd_proxy, s3, tmp_path):
    """SIGKILL a save once its multipart upload is under way: (its config file, the key)."""
    process, toml, primary = save_until_mid_upload(backup_config, etcd_proxy, s3, tmp_path)
    process.kill()  # nothing runs to abort the upload or remove the temporary file
    process.communicate()
    return toml, unfinished_keys(primary)[0]


def test_a_killed_save_leaves_writes_that_list_all_shows(
    backup_config, etcd_big, etcd_proxy, s3, tmp_path
):
    toml, key = kill_a_save_mid_upload(backup_config, etcd_proxy, s3, tmp_path)
    listed = CliRunner().invoke(
        app, ["snapshot", "list", "--all", "-o", "json", "--config", str(toml)]
    )
    assert listed.exit_code == 0, listed.output
    doc = json.loads(listed.stdout)
    assert doc["backups"] == []
    assert [u["key"] for u in doc["unfinished"]["primary"]] == [key]
    assert [u["key"] for u in doc["unfinished"]["local"]] == [key]
    assert doc["unfinished"]["replica"] == []
    text = CliRunner().invoke(app, ["snapshot", "list", "--all", "--config", str(toml)])
    assert "unfinished write in primary, last active" in text.stdout and key in text.stdout


def test_prune_aborts_a_killed_saves_writes_once_they_are_a_day_old(
    backup_config, etcd_big, etcd_proxy, s3, tmp_path
):
    toml, key = kill_a_save_mid_upload(backup_config, etcd_proxy, s3, tmp_path)

    def prune_at(moment):
        done = CliRunner().invoke(app, ["snapshot", "prune", "-o", "json", "--config", str(toml),
                                        "--now", moment.strftime("%Y-%m-%dT%H:%M:%S%z")])
        assert done.exit_code == 0, done.output
        return json.loads(done.stdout)["stores"]

    def unfinished():
        listed = CliRunner().invoke(
            app, ["snapshot", "list", "--all", "-o", "json", "--config", str(toml)]
        )
        return {name: [u["key"] for u in keys] for name, keys in
                json.loads(listed.stdout)["unfinished"].items()}

    # it may still be a save in progress: kept while within keep_within
    stores = prune_at(datetime.now(UTC) + timedelta(minutes=1))
    [decision] = stores["primary"]["decisions"]
    assert (decision["condition"], decision["action"]) == ("unfinished", "keep")
    assert unfinished() == {"local": [key], "primary": [key], "replica": []}
    # a day later no save can still be running it
    stores = prune_at(datetime.now(UTC) + timedelta(hours=25))
    for name in ("local", "primary"):
        [decision] = stores[name]["decisions"]
        assert (decision["condition"], decision["action"]) == ("unfinished", "delete"), name
        assert decision["id"].endswith("(unfinished write)")
    assert unfinished() == {"local": [], "primary": [], "replica": []}
    assert not list(Path(tmp_path).rglob(".tmp-*"))


def test_prune_applies_retention_to_every_store(backup_config, s3):
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    config = with_s3(backup_config, s3)
    ids = {}
    for hours in (50, 30, 26, 1):
        moment = now - timedelta(hours=hours)
        ids[hours] = save_snapshot(config, LogReporter(), clock=lambda m=moment: m).manifest.id
    stores = open_stores(config)
    policy = RetentionConfig(keep_within=24 * 3600, keep_min=2)

    planned = prune(stores, config.cluster, policy, now, LogReporter(), dry_run=True).stores
    assert all(r.deleted == [] for r in planned)
    assert len(keys_in(s3.client(), "etcdops-primary")) == 12  # check, object, manifest each

    results = prune(stores, config.cluster, policy, now, LogReporter()).stores
    for result in results:
        assert result.error is None
        assert sorted(result.deleted) == sorted([ids[50], ids[30]])
        kept = {d.candidate.id: d.reasons for d in result.decisions if d.keep}
        assert set(kept) == {ids[26], ids[1]}
        assert "keep_min" in kept[ids[26]][0]
    for client, bucket in ((s3.client(), "etcdops-primary"),
                           (s3.client("us-west-2"), "etcdops-replica")):
        remaining = keys_in(client, bucket)
        assert len(remaining) == 6
        assert not any(ids[50] in key or ids[30] in key for key in remaining)


# A hung endpoint: each request gives up after a second, is tried twice, and the primary's whole
# part of a save ends after the deadline. The replica, on moto directly, still answers.
HUNG_TIMEOUTS = 'connect_timeout = "1s"\nread_timeout = "1s"\nmax_attempts = 2\ndeadline = "1m"'
HUNG_DEADLINE = 'connect_timeout = "1s"\nread_timeout = "1m"\nmax_attempts = 3\ndeadline = "4s"'
# the replica answers: its own settings keep the primary's tight ones from failing it on a
# busy machine (the replica is filled from the local copy while the primary hangs)
REPLICA_AT_EASE = 'connect_timeout = "10s"\nread_timeout = "30s"\nmax_attempts = 3\ndeadline = "1m"'


def save_in_a_process(toml, timeout):
    """Run 'snapshot save -o json' in a process of its own: (exit code, document, stderr, seconds
    until the process was gone)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "etcdops", "snapshot", "save", "-o", "json", "--config", str(toml)],
        capture_output=True, text=True, timeout=timeout,
    )
    took = time.monotonic() - started
    return done.returncode, json.loads(done.stdout or "{}"), done.stderr, took


def assert_kept_locally(config, backup_id):
    """The local backup is complete, manifest included, and reads back end to end."""
    [manifest_path] = config.local.dir.rglob(f"{backup_id}.manifest.json")
    assert manifest_path.with_name(f"{backup_id}.db.zst.age").is_file()
    toml = toml_for(config, config.local.dir.parent / "readback.toml")
    status = CliRunner().invoke(
        app, ["snapshot", "status", backup_id, "-o", "json", "--config", str(toml)]
    )
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["store"] == "local"


@pytest.mark.parametrize("settings", [HUNG_TIMEOUTS, HUNG_DEADLINE], ids=["timeouts", "deadline"])
def test_a_primary_that_stops_answering_at_commit_costs_nothing_local(
    backup_config, s3, s3_proxy, tmp_path, settings
):
    # the object fits in one part, so it goes up in one PUT once the local copy is complete:
    # the stopped S3 server, which held the local manifest for 6 minutes
    proxy = s3_proxy()
    proxy.hang()
    config = with_s3(backup_config, s3, primary_url=proxy.url)
    toml = toml_for(config, tmp_path / "etcdops.toml", settings, REPLICA_AT_EASE)
    code, doc, stderr, took = save_in_a_process(toml, timeout=60)
    assert code == 14, stderr
    assert took < 30, f"the save took {took:.0f} s"
    assert doc["stored_in"] == ["local", "replica"]  # the replica was filled from local
    assert "primary" in doc["failed"] and proxy.url in stderr
    assert "waiting for the primary upload" in stderr
    assert_kept_locally(with_s3(backup_config, s3), doc["id"])
    assert keys_in(s3.client(), "etcdops-primary") == []
    assert_listing_honest(with_s3(backup_config, s3))
    with job_lock(config, "snapshot save"):
        pass  # released


def test_a_primary_that_stops_answering_mid_upload_costs_nothing_local(
    backup_config, etcd_big, s3, s3_proxy, tmp_path
):
    proxy = s3_proxy()
    proxy.hang(nth=3)  # CreateMultipartUpload and part 1 answered; then nothing
    config = with_s3(backup_config, s3, primary_url=proxy.url)
    toml = toml_for(config, tmp_path / "etcdops.toml", HUNG_TIMEOUTS, REPLICA_AT_EASE)
    code, doc, stderr, took = save_in_a_process(toml, timeout=60)
    assert code == 14, stderr
    assert took < 30, f"the save took {took:.0f} s"
    assert doc["stored_in"] == ["local", "replica"]
    assert "primary" in doc["failed"]
    assert "waiting for the primary upload" in stderr and "in flight" in stderr
    assert_kept_locally(with_s3(backup_config, s3), doc["id"])
    assert keys_in(s3.client(), "etcdops-primary") == []
    # the abort could not reach S3 either: the upload is left for 'list --all' and prune
    assert unfinished_keys(open_stores(with_s3(backup_config, s3))["primary"]) in (
        [], [doc["object_key"]]
    )
    assert_listing_honest(with_s3(backup_config, s3))


def test_sigterm_while_a_hung_primary_holds_the_save_says_what_was_kept(
    backup_config, s3, s3_proxy, tmp_path
):
    proxy = s3_proxy()
    proxy.hang()
    config = with_s3(backup_config, s3, primary_url=proxy.url)
    slow = 'read_timeout = "10m"\ndeadline = "30m"'  # nothing but the signal ends this save
    toml = toml_for(config, tmp_path / "etcdops.toml", slow)
    process = subprocess.Popen(
        [sys.executable, "-m", "etcdops", "snapshot", "save", "--config", str(toml)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while not (proxy.count(lambda r: r.method == "PUT") and list(
        config.local.dir.rglob("*.manifest.json")
    )):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the save never reached the primary"
        time.sleep(0.05)
    [manifest_path] = config.local.dir.rglob("*.manifest.json")
    backup_id = manifest_path.name.removesuffix(".manifest.json")
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert time.monotonic() - signalled < 15
    assert f"backup {backup_id} is complete in the local store" in stderr
    assert "primary upload" in stderr
    assert "nothing half-written was kept" not in stderr
    assert_kept_locally(with_s3(backup_config, s3), backup_id)
