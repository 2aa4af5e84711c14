"""The journal run on a real three-member etcd, a local store and moto's S3 in two regions:
segments while a writer writes, equal to etcd's own history; empty intervals; restarts, a
compaction, a new full backup and a failing primary, each leaving every chain whole."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from etcdops.backup.catalog import Catalog
from etcdops.backup.save import save_snapshot
from etcdops.config.settings import MetricsConfig
from etcdops.etcd.local import LocalCluster
from etcdops.journal.base import newest_base
from etcdops.journal.report import JournalReport
from etcdops.journal.run import _Chain, _Journal
from etcdops.metrics.textfile import read_samples, textfile_path
from etcdops.report import LogReporter
from etcdops.stores.configured import open_stores
from tests.backup.two_regions import with_s3
from tests.fixtures.waiting import wait_for
from tests.journal.journaling import Journal, Writer, chain_in, history, journal_config, replayed


@pytest.fixture(scope="module")
def journal_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three members for this module (tests.fixtures.journal's has one): each test journals a
    cluster name of its own."""
    with LocalCluster.three(tmp_path_factory.mktemp("etcd3")) as cluster:
        yield cluster


@pytest.fixture
def config(journal_etcd, identity, tmp_path):
    return journal_config(journal_etcd, identity, tmp_path)


def base_of(config):
    base = newest_base(open_stores(config), config.cluster)
    assert base is not None
    return base


def test_segments_while_writing_are_etcds_history_in_every_store(
    config, s3, identity, client, caplog
):
    config = with_s3(config, s3)
    save_snapshot(config, LogReporter())
    base = base_of(config)
    stores = open_stores(config)
    caplog.set_level(logging.INFO, logger="etcdops.journal")
    journal = Journal(config, summary_every=0.1)
    writer = Writer(client).start()
    # segments appear while the writer writes, one an interval or so
    wait_for(lambda: len(chain_in(stores["local"], config, base.backup_id, base.revision).path)
             >= 4, "four segments while writing", timeout=20)
    last = writer.finish()
    wait_for(lambda: chain_in(stores["primary"], config, base.backup_id, base.revision)
             .last_revision >= last, "the primary holds every write")
    # once current, intervals without a change write nothing: summaries go by, no segment
    segments = journal_segments = len(chain_in(stores["local"], config, base.backup_id,
                                               base.revision).path)
    summaries = len([r for r in caplog.records if "segments," in r.getMessage()])
    wait_for(lambda: len([r for r in caplog.records if "segments," in r.getMessage()])
             >= summaries + 10, "ten more summaries")
    journal_segments = len(chain_in(stores["local"], config, base.backup_id, base.revision).path)
    assert journal_segments == segments
    report = journal.finish()
    assert [(c.base_backup_id, c.reason) for c in report.chains] == [(base.backup_id, "base")]
    assert report.unpublished == {}
    chains = {name: chain_in(stores[name], config, base.backup_id, base.revision)
              for name in ("local", "primary", "replica")}
    for name, chain in chains.items():
        assert chain.findings == (), name
        assert chain.path == chains["local"].path, name  # the same segments, manifests equal
    revisions = replayed(stores["replica"], chains["replica"], identity)
    end = chains["local"].last_revision
    assert end >= last and revisions[0].revision == base.revision + 1
    assert revisions == history(config, base.revision + 1, end)
    # and every put the writer made is there, as it made it
    puts = {r.revision: (r.changes[0].key, r.changes[0].value) for r in revisions
            if r.revision in writer.written}
    assert puts == writer.written


def test_no_backup_takes_one_and_a_restart_resumes_with_no_hole_or_overlap(
    config, identity, client
):
    writer = Writer(client).start()
    first = Journal(config)
    wait_for(lambda: newest_base(open_stores(config), config.cluster), "a full backup")
    base = base_of(config)
    store = open_stores(config)["local"]
    wait_for(lambda: len(chain_in(store, config, base.backup_id, base.revision).path) >= 3,
             "three segments")
    report = first.finish()
    assert [(c.base_backup_id, c.reason) for c in report.chains] == [
        (base.backup_id, "no-backup")]
    stopped_at = chain_in(store, config, base.backup_id, base.revision).last_revision
    # written while no journal runs: the next one reads it from etcd's history
    wait_for(lambda: max(writer.written) > stopped_at + 10, "writes while stopped")
    second = Journal(config)
    wait_for(lambda: chain_in(store, config, base.backup_id, base.revision).last_revision
             > stopped_at + 20, "the second journal's segments")
    last = writer.finish()
    wait_for(lambda: chain_in(store, config, base.backup_id, base.revision).last_revision
             >= last, "every write")
    report = second.finish()
    assert [(c.reason, c.from_revision) for c in report.chains] == [("resumed", stopped_at + 1)]
    chain = chain_in(store, config, base.backup_id, base.revision)
    assert chain.findings == ()
    revisions = replayed(store, chain, identity)
    assert revisions == history(config, base.revision + 1, chain.last_revision)


def test_a_compaction_beyond_the_journal_takes_a_backup_and_starts_a_new_chain(
    config, identity, client
):
    save_snapshot(config, LogReporter())
    old = base_of(config)
    journal = Journal(config)
    store = open_stores(config)["local"]
    for number in range(5):
        Writer(client).put(number)
    wait_for(lambda: chain_in(store, config, old.backup_id, old.revision).path, "a segment")
    journal.finish()
    reached = chain_in(store, config, old.backup_id, old.revision).last_revision
    # the journal is down while etcd compacts past where it stopped
    writer = Writer(client)
    for number in range(5):
        writer.put(number)
    client.compact(max(writer.written), physical=True)
    journal = Journal(config)
    wait_for(lambda: base_of(config).backup_id != old.backup_id, "a new full backup")
    new = base_of(config)
    for number in range(5):
        writer.put(number)
    wait_for(lambda: chain_in(store, config, new.backup_id, new.revision).last_revision
             >= max(writer.written), "the new chain holds the writes after it")
    report = journal.finish()
    assert [(c.base_backup_id, c.reason) for c in report.chains] == [
        (old.backup_id, "resumed"), (new.backup_id, "compacted")]
    assert new.revision >= max(writer.written) - 5  # taken after the compaction
    assert chain_in(store, config, old.backup_id, old.revision).last_revision == reached
    chain = chain_in(store, config, new.backup_id, new.revision)
    assert chain.findings == () and chain.path[0].first_revision == new.revision + 1
    assert replayed(store, chain, identity) == history(config, new.revision + 1,
                                                        chain.last_revision)


def test_a_newer_full_backup_starts_a_new_chain_where_the_old_one_reaches(
    config, identity, client
):
    save_snapshot(config, LogReporter())
    old = base_of(config)
    store = open_stores(config)["local"]
    journal = Journal(config, catalogue_every=0.2)
    writer = Writer(client).start()
    wait_for(lambda: chain_in(store, config, old.backup_id, old.revision).path, "a segment")
    hourly = save_snapshot(config, LogReporter()).manifest  # the hourly timer's, say
    wait_for(lambda: chain_in(store, config, hourly.id, hourly.etcd.revision).path,
             "a segment of the new chain")
    last = writer.finish()
    wait_for(lambda: chain_in(store, config, hourly.id, hourly.etcd.revision).last_revision
             >= last, "every write")
    report = journal.finish()
    assert [(c.base_backup_id, c.reason) for c in report.chains] == [
        (old.backup_id, "base"), (hourly.id, "new-backup")]
    before = chain_in(store, config, old.backup_id, old.revision)
    after = chain_in(store, config, hourly.id, hourly.etcd.revision)
    assert before.findings == () and after.findings == ()
    # the chains meet: the old one reaches the new base, the new one starts right after it
    assert before.last_revision >= hourly.etcd.revision
    assert after.path[0].first_revision == hourly.etcd.revision + 1
    assert replayed(store, after, identity) == history(
        config, hourly.etcd.revision + 1, after.last_revision)


def test_a_chain_of_max_chain_revisions_takes_a_backup_and_the_chains_meet(
    journal_etcd, identity, client, tmp_path
):
    config = journal_config(journal_etcd, identity, tmp_path, max_chain_revisions=1000)
    save_snapshot(config, LogReporter())
    old = base_of(config)
    store = open_stores(config)["local"]
    journal = Journal(config)  # the catalogue read once a minute: only the length switches
    writer = Writer(client).start()
    wait_for(lambda: newest_base(open_stores(config), config.cluster) != old,
             "the long chain's backup", timeout=60)
    new = base_of(config)
    wait_for(lambda: chain_in(store, config, new.backup_id, new.revision).path,
             "a segment of the new chain", timeout=60)
    last = writer.finish()
    wait_for(lambda: chain_in(store, config, new.backup_id, new.revision).last_revision
             >= last, "every write")
    report = journal.finish()
    assert [(c.base_backup_id, c.reason) for c in report.chains] == [
        (old.backup_id, "base"), (new.backup_id, "long")]
    before = chain_in(store, config, old.backup_id, old.revision)
    after = chain_in(store, config, new.backup_id, new.revision)
    assert before.findings == () and after.findings == ()
    assert new.revision - old.revision >= 1000  # taken once the chain held 1000 revisions
    assert before.last_revision >= new.revision  # the chains meet, no gap
    assert after.path[0].first_revision == new.revision + 1
    assert replayed(store, after, identity) == history(
        config, new.revision + 1, after.last_revision)


def test_a_long_chains_backup_serves_only_the_chain_that_asked_for_it(
    journal_etcd, identity, client, tmp_path
):
    # a chain that ended another way (the hourly backup) while its long backup was saving must
    # not hand that backup to the next chain: it would end at once, behind its own base
    config = journal_config(journal_etcd, identity, tmp_path, max_chain_revisions=1000)
    save_snapshot(config, LogReporter())
    first = base_of(config)
    journal = _Journal(config, LogReporter(), None, open_stores(config), [], threading.Event(),
                       JournalReport(), lambda: datetime.now(UTC), 60.0, 60.0)
    long = first.revision + 1000
    assert journal._long_chain_base(_Chain(first, long), long, 0.0) is None  # saving now
    wait_for(lambda: not journal.long_backup.running, "the first chain's backup")
    client.put("/registry/configmaps/journal/after", b"x")
    save_snapshot(config, LogReporter())  # the hourly one, which the first chain ended at
    hourly = base_of(config)
    assert hourly.revision > first.revision
    reached = hourly.revision + 1000
    client.put("/registry/configmaps/journal/later", b"y")  # a base past the hourly one's
    assert journal._long_chain_base(_Chain(hourly, reached), reached, 0.0) is None
    assert journal.long_backup.chain == hourly  # the stale one dropped, one of its own begun
    wait_for(lambda: not journal.long_backup.running, "the second chain's backup")
    own = journal._long_chain_base(_Chain(hourly, reached), reached, 0.0)
    assert own is not None and own.revision > hourly.revision


def test_a_failing_primary_is_caught_up_later_and_the_local_store_never_stops(
    config, s3, s3_proxy, identity, client, tmp_path
):
    from tests.s3proxy import put_object

    proxy = s3_proxy()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    config = dataclasses.replace(with_s3(config, s3, primary_url=proxy.url),
                                 metrics=MetricsConfig(textfile_dir=metrics_dir))
    save_snapshot(config, LogReporter())
    base = base_of(config)
    stores = open_stores(config)
    failing = threading.Event()
    failing.set()
    proxy.fail(lambda r: failing.is_set() and put_object(r), times=1 << 62)
    started = time.time()
    journal = Journal(config)
    writer = Writer(client).start()
    wait_for(lambda: len(chain_in(stores["local"], config, base.backup_id, base.revision).path)
             >= 5, "five segments in the local store while the primary fails")
    assert chain_in(stores["primary"], config, base.backup_id, base.revision).path == ()
    failing.clear()
    last = writer.finish()
    wait_for(lambda: chain_in(stores["primary"], config, base.backup_id, base.revision)
             .last_revision >= last, "the primary caught up")
    report = journal.finish()
    assert report.stores["primary"].failures >= 1 and report.unpublished == {}
    chains = [chain_in(stores[name], config, base.backup_id, base.revision)
              for name in ("local", "primary", "replica")]
    assert all(chain.findings == () and chain.path == chains[0].path for chain in chains)
    assert replayed(stores["primary"], chains[1], identity) == history(
        config, base.revision + 1, chains[1].last_revision)
    # the metrics: what each store took, the primary's failure, the chain and why
    samples = read_samples(textfile_path(metrics_dir, config.cluster, "journal"))
    labels = (("cluster", config.cluster),)
    for name in ("local", "primary", "replica"):
        store = tuple(sorted({"cluster": config.cluster, "store": name}.items()))
        assert samples[("etcdops_journal_segments_total", store)] == len(chains[0].path)
        assert samples[("etcdops_journal_last_revision", store)] == chains[0].last_revision
        assert samples[("etcdops_journal_failures_total", store)] == (name == "primary")
        assert samples[("etcdops_journal_last_segment_timestamp_seconds", store)] > started
    assert samples[("etcdops_journal_chains_total", labels + (("reason", "base"),))] == 1
    # every reason is there from the start, so that the alert sees the first new chain
    assert samples[("etcdops_journal_chains_total", labels + (("reason", "compacted"),))] == 0
    assert samples[("etcdops_journal_rpo_target_seconds", labels)] == 30


def test_a_base_the_primary_missed_is_journaled_on_with_a_warning_and_not_taken_again(
    config, s3, s3_proxy, client, caplog
):
    from tests.s3proxy import put_object

    proxy = s3_proxy()
    config = with_s3(config, s3, primary_url=proxy.url)
    proxy.fail(put_object, times=1 << 62)
    caplog.set_level(logging.WARNING, logger="etcdops.journal")
    journal = Journal(config)
    writer = Writer(client).start()
    store = open_stores(config)["local"]
    wait_for(lambda: newest_base(open_stores(config), config.cluster), "a full backup")
    base = base_of(config)
    # the changes are journaled all the same: a chain only this host can replay beats none
    wait_for(lambda: len(chain_in(store, config, base.backup_id, base.revision).path) >= 3,
             "three segments in the local store")
    writer.finish()
    report = journal.finish()
    assert [(c.base_backup_id, c.reason) for c in report.chains] == [
        (base.backup_id, "no-backup")]
    [warning] = [r.getMessage() for r in caplog.records if "the new chain's base" in r.getMessage()]
    assert warning.startswith(
        f"journal: the new chain's base backup {base.backup_id} is not in the primary store (")
    # one full backup: not one every retry while the primary is down
    assert [e.id for e in Catalog(store, config.cluster).entries()] == [base.backup_id]
    assert Catalog(open_stores(config)["primary"], config.cluster).entries() == []
