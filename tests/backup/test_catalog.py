"""The catalogue's verdict on each copy, in the local store and S3 alike, on real backups."""

import dataclasses
from datetime import UTC, datetime

import pytest

from etcdops.backup.catalog import Catalog
from etcdops.backup.checks import AS_WRITTEN, COPIED, ETAG, REREAD
from etcdops.backup.replicate import replicate
from etcdops.backup.retention import Condition
from etcdops.backup.save import save_snapshot
from etcdops.config import RetentionConfig, S3Config
from etcdops.journal.prune import prune
from etcdops.report import LogReporter
from etcdops.stores.configured import open_stores

LATER = datetime(2027, 6, 1, tzinfo=UTC)


@pytest.fixture
def config(backup_config, s3):
    """backup_config with both S3 regions."""
    return dataclasses.replace(
        backup_config, s3=S3Config(**dataclasses.asdict(s3.primary), replica=s3.replica)
    )


def rewrite(store, key, data):
    """Put other bytes under a backup's key, as an operator's `cp` or `aws s3 cp` would."""
    writer = store.open_writer(key)
    writer.write(data)
    writer.commit()


@pytest.mark.parametrize("name", ["local", "primary", "replica"])
def test_a_copy_rewritten_with_other_bytes_of_its_size_is_unchecked(config, name):
    first = save_snapshot(config, LogReporter()).manifest
    second = save_snapshot(config, LogReporter()).manifest
    stores = open_stores(config)
    for store_name, store in stores.items():
        entries = {e.id: e for e in Catalog(store, config.cluster).entries()}
        assert entries[second.id].verified, store_name
        method = COPIED if store_name == "replica" else AS_WRITTEN
        assert entries[second.id].check.method == method
    assert first.object_size == second.object_size
    store = stores[name]
    rewrite(store, second.object_key, store.get_bytes(first.object_key))

    entries = {e.id: e for e in Catalog(store, config.cluster).entries()}
    changed = entries[second.id]
    assert changed.condition is Condition.UNCHECKED and not changed.verified
    assert changed.good  # complete: a read may still try it, and checks every byte
    assert changed.problem.startswith("changed since checked at")
    assert entries[first.id].verified
    for other_name, other in stores.items():
        if other_name != name:
            [*_, newest] = Catalog(other, config.cluster).entries()
            assert newest.verified, other_name


def test_prune_on_s3_checks_what_it_keeps_and_keeps_an_older_one_when_that_fails(config):
    first = save_snapshot(config, LogReporter()).manifest
    second = save_snapshot(config, LogReporter()).manifest
    stores = open_stores(config)
    primary = stores["primary"]
    rewrite(primary, second.object_key, primary.get_bytes(first.object_key))
    policy = RetentionConfig(keep_within=24 * 3600, keep_min=1)

    [result] = prune({"primary": primary}, config.cluster, policy, LATER, LogReporter()).stores
    assert result.error is None
    actions = {d.candidate.id: (d.candidate.condition, d.keep) for d in result.decisions}
    assert actions == {first.id: (Condition.VERIFIED, True), second.id: (Condition.DAMAGED, False)}
    [note] = result.notes
    assert second.id in note and "its sha256 is" in note
    [kept] = Catalog(primary, config.cluster).entries()
    assert kept.id == first.id and kept.verified
    assert kept.check.method == ETAG  # S3's word on its own bytes: nothing was read back
    # the other stores were not touched, and still hold both
    for name in ("local", "replica"):
        assert [e.id for e in Catalog(stores[name], config.cluster).entries()] == [
            first.id, second.id
        ]


def test_a_replica_is_never_copied_server_side_from_an_unchecked_copy(config):
    primary_only = dataclasses.replace(
        config, s3=dataclasses.replace(config.s3, replica=None)
    )
    manifest = save_snapshot(primary_only, LogReporter()).manifest
    stores = open_stores(config)
    (config.local.dir / manifest.object_key).unlink()
    stores["primary"].delete(manifest.check_key)  # as a backup from before check records
    report = replicate(stores, config.cluster, LogReporter())
    assert report.copied == [(manifest.id, "replica")] and report.failed == []
    [copy] = Catalog(stores["replica"], config.cluster).entries()
    # streamed through this host and hashed on the way, not trusted to S3 unseen
    assert copy.verified and copy.check.method == AS_WRITTEN


def test_prune_rereads_an_unchecked_s3_copy_before_it_counts(config):
    manifest = save_snapshot(config, LogReporter()).manifest
    older = save_snapshot(config, LogReporter(), clock=lambda: LATER.replace(year=2020)).manifest
    primary = open_stores(config)["primary"]
    primary.delete(manifest.check_key)
    policy = RetentionConfig(keep_within=24 * 3600, keep_min=1)
    [result] = prune({"primary": primary}, config.cluster, policy, LATER, LogReporter()).stores
    kept = {d.candidate.id: d.reasons for d in result.decisions if d.keep}
    assert kept == {manifest.id: (f"the newest verified backup ({REREAD} just now)",)}
    assert result.deleted == [older.id]
