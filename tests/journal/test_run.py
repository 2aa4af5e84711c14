"""The journal run on a real three-member etcd, a local store and moto's S3 in two regions:
segments while a writer writes, equal to etcd's own history; empty intervals; restarts, a
compaction, a new full backup and a failing primary, each leaving every chain whole."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import etcd3
import pytest

from etcdops.backup.save import save_snapshot
from etcdops.crypto.age import Identity
from etcdops.etcd.local import LocalCluster
from etcdops.journal.base import newest_base
from etcdops.report import LogReporter
from etcdops.stores.configured import open_stores
from tests.backup.two_regions import with_s3
from tests.fixtures.waiting import wait_for
from tests.journal.journaling import Journal, Writer, chain_in, history, journal_config, replayed


@pytest.fixture(scope="module")
def etcd3_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One three-member cluster for the module: each test journals a cluster name of its own."""
    with LocalCluster.three(tmp_path_factory.mktemp("etcd3")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def identity() -> Identity:
    return Identity.generate()


@pytest.fixture
def client(etcd3_cluster, etcd3_client: Callable[[str], etcd3.Etcd3Client]) -> etcd3.Etcd3Client:
    return etcd3_client(etcd3_cluster.client_urls[0])


@pytest.fixture
def config(etcd3_cluster, identity, tmp_path):
    return journal_config(etcd3_cluster, identity, tmp_path)


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
