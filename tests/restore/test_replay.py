"""Replaying recorded revisions on a staging etcd booted from the base snapshot (real etcd and
etcdutl): every key, value, create and mod revision, version and lease equal etcd's own state at
the target revision (read on the original before any compaction); a revision that does not fit,
or a staging etcd written by something else, stops the replay; leases granted after the base
get the default TTL and outlive a replay longer than it."""

from __future__ import annotations

import dataclasses
import time

import etcd3
import pytest

from etcdops.config import Config
from etcdops.errors import IntegrityError
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.session import EtcdSession
from etcdops.etcd.watch import Revision
from etcdops.report import LogReporter
from etcdops.restore.replay import replay
from etcdops.restore.staging import restore_into, start_throwaway, throwaway_member
from tests.restore.history import EVENT, history, record, state_at


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The original cluster (kept running: its history is the reference), the base snapshot,
    the history's marks and the journal's revisions after the base."""
    base_dir = tmp_path_factory.mktemp("replay")
    with LocalCluster.single(base_dir / "etcd") as cluster:
        url = cluster.client_urls[0]
        client = etcd3.client(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]), timeout=10)
        written = history(client, url, base_dir / "base.db")
        with EtcdSession(cluster.etcd_config()) as session:
            revisions = record(session, written.base_revision + 1, written.last_revision)
        yield client, base_dir / "base.db", written, revisions
        client.close()


@pytest.fixture
def staging(recorded, tmp_path):
    """A throwaway etcd booted from the base snapshot, and a session on it."""
    _, snapshot, _, _ = recorded
    member = throwaway_member(tmp_path / "staging", Config(), "staging")
    member.data_dir.parent.mkdir()
    restore_into(find_binary("etcdutl"), snapshot, "the base", member, LogReporter())
    start_throwaway(member)
    try:
        with EtcdSession(member.etcd_config(command_timeout=10.0)) as session:
            yield member, session
    finally:
        member.stop()


def staged_client(member) -> etcd3.Etcd3Client:
    return etcd3.client(host="127.0.0.1", port=member.client_port, timeout=10)


@pytest.mark.parametrize("mark", ["deletes", "txn", "late_lease", "end"])
def test_a_replay_to_a_revision_equals_etcds_own_state_there(recorded, staging, mark):
    client, _, written, revisions = recorded
    member, session = staging
    target = written.marks[mark]
    done = replay(session, member.client_url, [r for r in revisions if r.revision <= target],
                  lease_ttl=3600, election_ttl=30, reporter=LogReporter())
    assert (done.from_revision, done.to_revision) == (written.base_revision, target)
    assert done.revisions == target - written.base_revision
    assert done.events == sum(len(r.changes) for r in revisions if r.revision <= target)
    restored = staged_client(member)
    try:
        # every key, value, create and mod revision, version and lease, at the same revision
        assert state_at(restored) == state_at(client, target)
        assert state_at(restored, written.base_revision) == state_at(client, written.base_revision)
    finally:
        restored.close()


def test_a_lease_granted_after_the_base_gets_the_default_ttl_and_outlives_the_replay(
    recorded, staging
):
    client, _, written, revisions = recorded
    member, session = staging
    ttl = 5  # what is left of it after the replay is read back: a loaded machine's margin
    late = [r for r in revisions if r.revision <= written.marks["late_lease"]]
    later = [r for r in revisions if r.revision > written.marks["late_lease"]]
    granted = time.monotonic()

    def slow():
        yield from late
        # the replay goes on for longer than the lease's TTL before its next revision
        while time.monotonic() < granted + ttl + 2:
            time.sleep(0.1)
        yield from later

    done = replay(session, member.client_url, slow(), lease_ttl=ttl, election_ttl=ttl,
                  reporter=LogReporter())
    assert done.to_revision == written.last_revision
    assert written.late_lease in done.leases_granted and done.lease_ttl == ttl
    restored = staged_client(member)
    try:
        state = state_at(restored)
        assert state == state_at(client, written.last_revision)
        assert state[f"{EVENT}late-1".encode()][4] == written.late_lease
        info = restored.get_lease_info(written.late_lease)
        assert info.grantedTTL == ttl and info.TTL > 0
    finally:
        restored.close()
    # the base's lease, the late one and the revoked one (granted, its key deleted, left empty)
    assert done.lease_warning().startswith(
        "the restored data holds 3 lease(s) (2 of them granted after the base backup, with "
        f"[journal] replay_lease_ttl ({ttl:.1f}s) as their TTL)")


def test_a_revision_that_does_not_fit_writes_nothing(recorded, staging):
    _, _, written, revisions = recorded
    member, session = staging
    first = revisions[0]
    change = first.changes[0]
    wrong = Revision(first.revision, (dataclasses.replace(change, version=change.version + 1),))
    with pytest.raises(IntegrityError, match=f"revision {first.revision} does not apply"):
        replay(session, member.client_url, [wrong], lease_ttl=60, election_ttl=60,
               reporter=LogReporter())
    assert session.status(member.client_url).revision == written.base_revision
    with pytest.raises(IntegrityError, match=f"is {revisions[1].revision}, not {first.revision}"):
        replay(session, member.client_url, revisions[1:], lease_ttl=60, election_ttl=60,
               reporter=LogReporter())


def test_a_staging_etcd_written_by_something_else_stops_the_replay(recorded, staging):
    _, _, written, revisions = recorded
    member, session = staging

    def interfered():
        yield revisions[0]
        session.put_many([(b"/intruder", b"x")])
        yield revisions[1]

    with pytest.raises(IntegrityError, match="something else wrote to it|not as the recorded"):
        replay(session, member.client_url, interfered(), lease_ttl=60, election_ttl=60,
               reporter=LogReporter())
