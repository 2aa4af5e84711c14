"""The journal after a restore of the cluster, on real etcds: a journal of cluster A, then A
restored from a snapshot into a new cluster (a new token: a new cluster ID, at a revision below
the old chain's reach). The journal starts a new chain "restored" from a new backup and never
appends to the old chain, whether it was stopped across the restore or running while its
endpoints came to serve the restored cluster; under the old cluster ID a revision below the
chain's reach is refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import etcd3
import pytest

from etcdops.backup.save import save_snapshot
from etcdops.config import Config
from etcdops.crypto.age import Identity
from etcdops.errors import IntegrityError
from etcdops.etcd.local import LocalCluster, LocalEtcd
from etcdops.journal.base import Base, newest_base
from etcdops.journal.report import JournalReport
from etcdops.report import LogReporter
from etcdops.stores.configured import open_stores
from tests.fixtures.waiting import wait_for
from tests.journal.journaling import Journal, Writer, chain_in, history, journal_config, replayed
from tests.journal.restoring import cluster_id_of, plain_snapshot, restored

# more writes on the restored cluster than the old chain holds past the snapshot: resuming the
# old chain (watching from past its reach) would append the restored cluster's revisions to it
OLD_WRITES, NEW_WRITES = 20, 40


@pytest.fixture
def cluster_a(tmp_path) -> Iterator[LocalCluster]:
    with LocalCluster.single(tmp_path / "a") as cluster:
        yield cluster


@pytest.fixture
def journaled(cluster_a, identity, tmp_path, etcd3_client):
    """Cluster A's backup, a plain snapshot of the same revision beside it, and a journal's
    chain of writes after it, the journal stopped: (config, base, snapshot, the chain's reach)."""
    config = journal_config(cluster_a, identity, tmp_path)
    save_snapshot(config, LogReporter())
    base = newest_base(open_stores(config), config.cluster)
    assert base is not None
    snapshot = tmp_path / "a.db"
    assert plain_snapshot(cluster_a.members[0], snapshot) == base.revision
    journal = Journal(config)
    last = _writes(etcd3_client(cluster_a.client_urls[0]), OLD_WRITES)
    wait_for(lambda: _reach(config, base) >= last, "the old chain holds every write")
    journal.finish()
    return config, base, snapshot, _reach(config, base)


def _writes(client: etcd3.Etcd3Client, count: int) -> int:
    writer = Writer(client)
    for number in range(count):
        writer.put(number)
    return max(writer.written)


def _reach(config: Config, base: Base | None) -> int:
    if base is None:
        return 0
    return chain_in(open_stores(config)["local"], config, base.backup_id, base.revision
                    ).last_revision


def _restored_history_journaled(config: Config, member: LocalEtcd, journal: Journal,
                                etcd3_client) -> Base:
    """Once the journal took a backup of the restored cluster, write to it until its chain
    holds every write; that backup."""
    cluster_id = cluster_id_of(member)
    wait_for(lambda: newest_base(open_stores(config), config.cluster, cluster_id),
             "a backup of the restored cluster", timeout=60)
    last = _writes(etcd3_client(member.client_url), NEW_WRITES)
    wait_for(lambda: _reach(config, newest_base(open_stores(config), config.cluster,
                                                cluster_id)) >= last,
             "the restored cluster's chain holds every write", timeout=60)
    new = newest_base(open_stores(config), config.cluster, cluster_id)
    assert new is not None
    return new


def _chains_kept_apart(config: Config, old: Base, reach: int, new: Base, member: LocalEtcd,
                       report: JournalReport, identity: Identity) -> None:
    """The run's chains from the one started "restored" on are of the new base, holding the
    restored cluster's history after it; the old chain is as the old journal left it."""
    reasons = [c.reason for c in report.chains]
    later = report.chains[reasons.index("restored"):]
    assert {(c.base_backup_id, c.cluster_id) for c in later} == {(new.backup_id,
                                                                  new.cluster_id)}
    assert new.cluster_id != old.cluster_id and new.revision < reach
    store = open_stores(config)["local"]
    before = chain_in(store, config, old.backup_id, old.revision)
    assert before.findings == () and before.last_revision == reach
    after = chain_in(store, config, new.backup_id, new.revision)
    assert after.findings == () and after.path[0].first_revision == new.revision + 1
    restored_config = dataclasses.replace(config, etcd=member.etcd_config())
    assert replayed(store, after, identity) == history(restored_config, new.revision + 1,
                                                        after.last_revision)


def test_a_journal_started_on_the_restored_cluster_starts_a_new_chain(
    journaled, identity, tmp_path, etcd3_client, cluster_a
):
    config, old, snapshot, reach = journaled
    cluster_a.stop()
    member = restored(snapshot, tmp_path / "restored")
    try:
        config = dataclasses.replace(config, etcd=member.etcd_config())
        journal = Journal(config)
        new = _restored_history_journaled(config, member, journal, etcd3_client)
        report = journal.finish()
        assert [c.reason for c in report.chains] == ["restored"]
        _chains_kept_apart(config, old, reach, new, member, report, identity)
    finally:
        member.stop()


def test_a_running_journal_whose_endpoints_come_to_serve_the_restored_cluster(
    journaled, identity, tmp_path, etcd3_client, cluster_a
):
    config, old, snapshot, _ = journaled
    member = restored(snapshot, tmp_path / "restored")
    try:
        # A first, the restored cluster second: once A is gone, the endpoints serve the latter
        endpoints = (*cluster_a.client_urls, member.client_url)
        config = dataclasses.replace(config, etcd=dataclasses.replace(config.etcd,
                                                                      endpoints=endpoints))
        journal = Journal(config)
        last = _writes(etcd3_client(cluster_a.client_urls[0]), 5)
        wait_for(lambda: _reach(config, old) >= last, "the old chain goes on while A serves")
        reach = _reach(config, old)
        cluster_a.stop()
        new = _restored_history_journaled(config, member, journal, etcd3_client)
        report = journal.finish()
        # the restored cluster knows nothing of the journal's lease: the term may be lost,
        # and the next one goes on with the new chain
        reasons = [c.reason for c in report.chains]
        assert reasons[:2] == ["resumed", "restored"]
        assert set(reasons[2:]) <= {"base", "resumed"}
        _chains_kept_apart(config, old, reach, new, member, report, identity)
    finally:
        member.stop()


def test_a_revision_below_the_chain_under_the_same_cluster_id_is_refused(
    journaled, tmp_path, cluster_a
):
    config, old, snapshot, reach = journaled
    cluster_a.stop()
    # the old member's name, peer URL and token: the same cluster ID, the snapshot's revision
    member = restored(snapshot, tmp_path / "same", like=cluster_a.members[0])
    try:
        assert cluster_id_of(member) == old.cluster_id
        journal = Journal(dataclasses.replace(config, etcd=member.etcd_config()))
        wait_for(lambda: journal.error is not None, "the run refuses")
        with pytest.raises(IntegrityError, match=rf"at revision \d+, but chain "
                           f"{old.backup_id} of that cluster ID already holds revisions up "
                           f"to {reach}"):
            journal.finish()
        assert _reach(config, old) == reach
    finally:
        member.stop()
