"""Point-in-time restore on real parts: a history on a real etcd with a full backup in the
middle (local store, moto's primary and replica), the journal's segments from etcd's watch
sealed and published to every store; a restore to a revision, a moment or the newest point
equals etcd's own state there (read on the original, never compacted); a corrupt segment in
the primary and missing locally is read from the replica; a hole in every store stops the
restore, or with --allow-gap restores to the last provable point; `restore --at` via the CLI;
after a restore of the cluster (a new cluster ID, below the old chain's reach), 'latest' is the
new history's newest point and a revision is looked for in the newest backup's history first."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import etcd3
import pytest
from typer.testing import CliRunner

from etcdops.backup.save import save_snapshot
from etcdops.cli.main import app
from etcdops.config.settings import RestoreConfig
from etcdops.crypto.keys import configured_recipients
from etcdops.errors import IntegrityError, UsageError
from etcdops.etcd.local import LocalCluster, LocalEtcd, free_port
from etcdops.etcd.session import EtcdSession
from etcdops.journal.segment import SegmentBuffer
from etcdops.journal.store import chain_manifests, publish, seal
from etcdops.report import LogReporter
from etcdops.restore.member import prepared_snapshot
from etcdops.restore.point import BaseAfterTarget, stage_point
from etcdops.restore.point_plan import PointTarget, plan_point
from etcdops.restore.revision import FLAGS, GAP_FLOOR, STAGING
from etcdops.stores.configured import open_stores
from tests.backup.two_regions import toml_for, with_s3
from tests.restore.history import (
    POD,
    record,
    save_with_writes,
    state_at,
    state_header,
    write_after,
    write_before,
)

PER_SEGMENT = 4  # revisions per segment
SPAN = timedelta(seconds=5)  # each segment's time span, one after the other


@pytest.fixture
def journaled(backup_config, s3, tmp_path):
    """A fresh etcd with a history, a backup of it in the middle in every store, and the
    journal after it in every store: (config, client, base manifest, segment manifests)."""
    yield from journal_history(backup_config, s3, tmp_path)


def journal_history(backup_config, s3, tmp_path, *, writes_in_the_save: int = 0):
    """journaled's history; with writes_in_the_save, that many puts land between the status a
    save records its revision from and the snapshot it streams, as writes do under load."""
    with LocalCluster.single(tmp_path / "original") as cluster:
        config = with_s3(dataclasses.replace(backup_config, etcd=cluster.etcd_config()), s3)
        url = cluster.client_urls[0]
        client = etcd3.client(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]), timeout=10)
        write_before(client)
        base = save_with_writes(config, client, writes_in_the_save)
        marks, late = write_after(client)
        with EtcdSession(cluster.etcd_config()) as session:
            manifests = publish_chain(
                config, base, record(session, base.etcd.revision + 1, marks["end"]))
        assert len(manifests) > 3
        yield config, client, base, manifests, marks
        client.close()


def publish_chain(config, base, revisions):
    """revisions sealed as base's chain, PER_SEGMENT to a segment, each SPAN after the one
    before from base's time, in every store; the manifests as the stores have them (their
    moments to the millisecond)."""
    stores = open_stores(config)
    recipients = configured_recipients(config.encryption)
    follows = base.etcd.revision
    for index in range(0, len(revisions), PER_SEGMENT):
        start = base.created_at + index // PER_SEGMENT * SPAN
        moments = iter([start + timedelta(seconds=s / 10) for s in range(PER_SEGMENT)])
        buffer = SegmentBuffer(clock=lambda moments=moments: next(moments))
        for revision in revisions[index:index + PER_SEGMENT]:
            buffer.add(revision)
        sealed = seal(buffer, cluster=config.cluster, base_backup_id=base.id,
                      follows=follows, recipients=recipients, level=3)
        for name in stores:
            publish(stores[name], sealed)
        follows = sealed.manifest.last_revision
    manifests, damaged = chain_manifests(stores["local"], config.cluster, base.id)
    assert not damaged
    return manifests


def staged_state(config, target, tmp_path, allow_gap=False):
    """Plan and stage a point, boot its snapshot, and read every key there."""
    stores = open_stores(config)
    plan = plan_point(config, target, stores, LogReporter(), allow_gap=allow_gap)
    work = tmp_path / "work"
    work.mkdir(parents=True)
    staged = stage_point(config, plan, stores, work, LogReporter(), allow_gap=allow_gap)
    state = booted_state(config, staged.path, tmp_path / "check")
    staged.path.unlink()
    return plan, staged, state


def booted_state(config, snapshot, directory):
    """Every key of a plain snapshot, booted on an etcd of its own in directory."""
    from etcdops.etcd.binaries import find_binary
    from etcdops.restore.staging import restore_into, start_throwaway, throwaway_member

    member = throwaway_member(directory, config, "check")
    member.data_dir.parent.mkdir()
    restore_into(find_binary("etcdutl"), snapshot, "staged", member, LogReporter())
    start_throwaway(member)
    try:
        client = etcd3.client(host="127.0.0.1", port=member.client_port, timeout=10)
        state = state_at(client)
        client.close()
    finally:
        member.stop()
    return state


def test_every_key_at_a_revision_a_moment_and_the_newest_point(journaled, tmp_path):
    config, client, base, manifests, marks = journaled
    target = marks["txn"]  # inside a segment: only its revisions up to the target are replayed
    plan, staged, state = staged_state(config, PointTarget(revision=target), tmp_path / "a")
    assert plan.base.id == base.id and staged.status.revision == target
    assert state == state_at(client, target)
    assert staged.status.keys == len(state)
    # a moment: the last segment that ended at or before it
    third = manifests[2]
    moment = third.last_change_at + timedelta(seconds=1)
    plan, staged, state = staged_state(config, PointTarget(at=moment), tmp_path / "b")
    assert plan.revision == third.last_revision and plan.seen[1] == third.last_change_at
    assert state == state_at(client, third.last_revision)
    # the newest journaled point, leases granted after the base and all
    plan, staged, state = staged_state(config, PointTarget(), tmp_path / "c")
    assert plan.revision == marks["end"] == manifests[-1].last_revision
    assert state == state_at(client, marks["end"])
    assert staged.replayed.leases_granted and any("lease(s)" in w for w in staged.status.warnings)


def test_a_base_holding_revisions_past_its_manifests_is_replayed_from_past_them(
    backup_config, s3, tmp_path
):
    # a save records the revision of its status, taken just before the snapshot: under writes
    # the snapshot holds more, which the chain (from the recorded revision + 1) has too
    history = journal_history(backup_config, s3, tmp_path, writes_in_the_save=3)
    config, client, base, manifests, marks = next(history)
    try:
        assert manifests[0].first_revision == base.etcd.revision + 1
        plan, staged, state = staged_state(config, PointTarget(), tmp_path / "a")
        assert state == state_at(client, marks["end"])
        assert staged.replayed.revisions == marks["end"] - base.etcd.revision - 3
        # no backup before it: a revision inside its snapshot is refused, as such, and so is
        # its recorded revision itself, which its snapshot has passed too
        for target in (base.etcd.revision + 1, base.etcd.revision):
            prepared = prepared_snapshot(config, "latest", LogReporter(), bump_flags=False,
                                         bump_revision=0, point=PointTarget(revision=target),
                                         under=tmp_path)
            with pytest.raises(BaseAfterTarget, match=f"past revision {target} planned for "):
                prepared.__enter__()
    finally:
        history.close()


def test_a_revision_the_bases_snapshot_passed_is_replayed_from_the_backup_before_it(
    backup_config, s3, tmp_path
):
    with LocalCluster.single(tmp_path / "original") as cluster:
        config = with_s3(dataclasses.replace(backup_config, etcd=cluster.etcd_config()), s3)
        client = etcd3.client(host="127.0.0.1", port=cluster.members[0].client_port, timeout=10)
        write_before(client)
        earlier = save_snapshot(config, LogReporter(),
                                clock=lambda: datetime.now(UTC) - timedelta(minutes=1)).manifest
        client.put(f"{POD}between", "b")
        base = save_with_writes(config, client, 3)
        marks, late = write_after(client)
        with EtcdSession(cluster.etcd_config()) as session:
            for backup in (earlier, base):
                publish_chain(config, backup,
                              record(session, backup.etcd.revision + 1, marks["end"]))
        inside = base.etcd.revision + 2  # in base's snapshot, past the revision its save named
        plan, staged, state = staged_state(config, PointTarget(revision=inside), tmp_path / "a")
        assert (plan.base.id, plan.earlier) == (base.id, earlier.id)
        assert staged.plan.base.id == earlier.id and staged.status.backup_id == earlier.id
        assert staged.status.revision == inside and state == state_at(client, inside)
        # past the base's snapshot, the base serves it with the least replay
        after = base.etcd.revision + 4
        plan, staged, state = staged_state(config, PointTarget(revision=after), tmp_path / "b")
        assert staged.plan.base.id == base.id and state == state_at(client, after)
        # the base's recorded revision itself: nothing to replay from the base, but its
        # snapshot is past it, so the earlier backup's chain gives exactly that revision
        own = base.etcd.revision
        with prepared_snapshot(config, "latest", LogReporter(), bump_flags=False,
                               bump_revision=0, point=PointTarget(revision=own),
                               under=tmp_path) as prepared:
            assert prepared.point_plan is not None
            assert prepared.point_plan.base.id == earlier.id and prepared.revision == own
            assert booted_state(config, prepared.path, tmp_path / "c") == state_at(client, own)
        # a hole in the base's chain, which --allow-gap would stop before, inside its
        # snapshot: the earlier chain, whole, serves the target asked for, not the short one
        [first] = [m for m in chain_manifests(open_stores(config)["local"], config.cluster,
                                              base.id)[0] if m.first_revision == own + 1]
        for store in open_stores(config).values():
            store.delete(first.manifest_key)
        plan, staged, state = staged_state(config, PointTarget(revision=marks["end"]),
                                           tmp_path / "d", allow_gap=True)
        assert plan.base.id == base.id and plan.warnings  # the base's plan: short, with a gap
        assert staged.plan.base.id == earlier.id and staged.status.revision == marks["end"]
        assert state == state_at(client, marks["end"])
        assert not any("--allow-gap" in warning for warning in staged.status.warnings)
        client.close()


def test_a_corrupt_segment_in_the_primary_is_read_from_the_replica(journaled, s3, tmp_path):
    config, client, base, manifests, marks = journaled
    broken = manifests[1]
    (config.local.dir / broken.object_key).unlink()
    s3_client = s3.client("us-east-1")
    key = "backups/" + broken.object_key
    data = bytearray(s3_client.get_object(Bucket="etcdops-primary", Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    s3_client.put_object(Bucket="etcdops-primary", Key=key, Body=bytes(data))
    plan, staged, state = staged_state(config, PointTarget(), tmp_path)
    assert state == state_at(client, marks["end"])
    assert [note for note in staged.status.fallbacks if broken.name in note] == [
        f"{broken.name} in the local store has a manifest but no object; reading the next copy",
        f"{broken.name} in the primary store: its bytes do not match its manifest's sha256; "
        "reading the next copy",
    ]


def test_a_hole_in_every_store_stops_the_restore_or_restores_before_it(journaled, s3, tmp_path):
    config, client, base, manifests, marks = journaled
    hole = manifests[2]
    for name, store in open_stores(config).items():
        store.delete(hole.manifest_key if name != "replica" else hole.object_key)
    # the replica lost the object, the others the manifest: in no store can it be read
    with pytest.raises(IntegrityError, match=f"proves revisions only up to "
                                             f"{manifests[1].last_revision}"):
        staged_state(config, PointTarget(), tmp_path / "a")
    plan, staged, state = staged_state(config, PointTarget(), tmp_path / "b", allow_gap=True)
    assert staged.status.revision == manifests[1].last_revision
    assert state == state_at(client, manifests[1].last_revision)
    assert any("(--allow-gap)" in warning for warning in staged.status.warnings)
    # a revision after the newest journaled one is not a point this journal can restore
    with pytest.raises(UsageError, match="after the newest journaled revision"):
        plan_point(config, PointTarget(revision=marks["end"] + 1), open_stores(config),
                   LogReporter())


def test_a_hole_right_after_the_base_restores_the_base_itself_and_says_so(journaled, tmp_path):
    config, client, base, manifests, marks = journaled
    for store in open_stores(config).values():
        store.delete(manifests[0].manifest_key)
    # nothing left to replay: the base as it is, but never without the gap's warning
    for target in (PointTarget(), PointTarget(revision=marks["end"])):
        with prepared_snapshot(config, "latest", LogReporter(), bump_flags=False,
                               bump_revision=0, point=target, allow_gap=True,
                               under=tmp_path) as prepared:
            assert prepared.revision == base.etcd.revision and prepared.replayed is None
            [gap] = [w for w in prepared.warnings if "(--allow-gap)" in w]
            assert f"proves revisions only up to {base.etcd.revision}" in gap


# python3-etcd3's watch thread dies on a NameError (six, which the fork dropped) when its
# client is closed at teardown: its bug, after the assertions
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_restore_at_via_the_cli(journaled, tmp_path):
    config, client, base, manifests, marks = journaled
    toml = toml_for(config, tmp_path / "etcdops.toml")
    second = manifests[1]
    peer = free_port()
    data_dir = tmp_path / "host" / "etcd"
    data_dir.parent.mkdir()
    result = CliRunner().invoke(app, [
        "restore", "latest", "--at", second.last_change_at.isoformat(), "--data-dir",
        str(data_dir), "--name", "cp-1", "--initial-cluster", f"cp-1=http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}", "--config", str(toml),
        "-o", "json",
    ])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["backup_id"] == base.id and "2 journal segment(s)" in doc["source"]
    # the point, advanced on a staging etcd (no etcdutl here bumps it) past the newest
    # journaled revision, which clients saw: the point is behind it, not the cluster
    revision = doc["revision"]
    assert revision["snapshot"] == second.last_revision
    assert revision["method"] == STAGING and revision["restart"] == []
    assert not [warning for warning in doc["warnings"] if "restart" in warning]
    assert revision["after_restore"] > marks["end"] == manifests[-1].last_revision
    assert set(doc["durations"]) >= {"replay", "staging"} and doc["durations"]["replay"] > 0
    member = LocalEtcd("cp-1", data_dir, peer_port=peer,
                       initial_cluster=f"cp-1=http://127.0.0.1:{peer}")
    member.start()
    try:
        restored = etcd3.client(host="127.0.0.1", port=member.client_port, timeout=10)
        assert state_at(restored) == state_at(client, second.last_revision)
        assert state_header(restored) == revision["after_restore"]
        # a watch cache's resourceVersion from before the disaster is told it was compacted
        old_events, _ = restored.watch(POD.encode(), start_revision=second.last_revision + 1)
        with pytest.raises(etcd3.exceptions.RevisionCompactedError):
            next(old_events)
        restored.close()
    finally:
        member.stop()


def test_snapshot_verify_drills_a_point_in_time(journaled, tmp_path):
    config, client, base, manifests, marks = journaled
    toml = toml_for(config, tmp_path / "etcdops.toml")
    third = manifests[2]
    result = CliRunner().invoke(app, [
        "snapshot", "verify", "latest", "--drill", "--at", third.last_change_at.isoformat(),
        "--config", str(toml), "-o", "json",
    ])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verified"] is True and doc["kind"] == "point in time"
    assert doc["revision"] == doc["drill"]["counted_at_revision"] == third.last_revision
    assert doc["drill"]["keys"] == doc["drill"]["manifest_keys"] == len(
        state_at(client, third.last_revision))


def _published(config, base, revisions) -> int:
    """revisions sealed as one segment of base's chain (after base's revision) in every store;
    its last revision."""
    stores = open_stores(config)
    buffer = SegmentBuffer()
    for revision in revisions:
        buffer.add(revision)
    sealed = seal(buffer, cluster=config.cluster, base_backup_id=base.id,
                  follows=base.etcd.revision, recipients=configured_recipients(config.encryption),
                  level=1)
    for name in stores:
        publish(stores[name], sealed)
    return sealed.manifest.last_revision


def test_latest_after_a_restore_of_the_cluster_is_the_new_historys_newest_point(
    backup_config, tmp_path
):
    from tests.journal.restoring import plain_snapshot, restored

    snapshot = tmp_path / "old.db"
    with LocalCluster.single(tmp_path / "original") as cluster:
        config = dataclasses.replace(backup_config, etcd=cluster.etcd_config())
        old = save_snapshot(config, LogReporter()).manifest
        assert plain_snapshot(cluster.members[0], snapshot) == old.etcd.revision
        client = etcd3.client(host="127.0.0.1", port=cluster.members[0].client_port)
        for number in range(20):
            old_end = client.put(f"/registry/pods/old/{number}", "x").header.revision
        client.close()
        with EtcdSession(cluster.etcd_config()) as session:
            assert _published(config, old, record(session, old.etcd.revision + 1,
                                                  old_end)) == old_end
    # the cluster restored from the old backup's snapshot, under a new token, then journaled
    member = restored(snapshot, tmp_path / "restored")
    try:
        config = dataclasses.replace(config, etcd=member.etcd_config())
        new = save_snapshot(config, LogReporter()).manifest
        client = etcd3.client(host="127.0.0.1", port=member.client_port)
        for number in range(5):
            new_end = client.put(f"/registry/pods/new/{number}", "y").header.revision
        client.close()
        with EtcdSession(member.etcd_config()) as session:
            _published(config, new, record(session, new.etcd.revision + 1, new_end))
    finally:
        member.stop()
    assert new.etcd.cluster_id != old.etcd.cluster_id and new_end < old_end
    stores = open_stores(config)
    plan = plan_point(config, PointTarget(), stores, LogReporter())
    assert (plan.base.id, plan.revision) == (new.id, new_end)
    history = f"the base is of the history of cluster ID {new.etcd.cluster_id}"
    assert any(history in note for note in plan.notes), plan.notes
    # a revision both histories hold: the newest backup's history's
    plan = plan_point(config, PointTarget(revision=new_end), stores, LogReporter())
    assert plan.base.id == new.id and any(history in note for note in plan.notes)
    # one only the old history reaches: the old one, and the note says so
    plan = plan_point(config, PointTarget(revision=old_end), stores, LogReporter())
    assert plan.base.id == old.id
    assert any(f"not the newest backup's ({new.etcd.cluster_id})" in note
               for note in plan.notes), plan.notes


def test_a_point_in_time_restore_gives_etcdops_election_keys_election_ttl(
    backup_config, tmp_path
):
    from etcdops.etcd.election import election_key

    with LocalCluster.single(tmp_path / "original") as cluster:
        config = dataclasses.replace(backup_config, etcd=cluster.etcd_config())
        config = dataclasses.replace(
            config, schedule=dataclasses.replace(config.schedule, election_ttl=7.0))
        base = save_snapshot(config, LogReporter()).manifest
        client = etcd3.client(host="127.0.0.1", port=cluster.members[0].client_port)
        # after the base: a journal's election key, and an Event, each under a lease of its own
        journal_lease, event_lease = client.lease(20), client.lease(20)
        client.put(election_key(config.cluster, "journal").decode(), "holder", lease=journal_lease)
        end = client.put("/registry/events/default/e", "x", lease=event_lease).header.revision
        client.close()
        with EtcdSession(cluster.etcd_config()) as session:
            _published(config, base, record(session, base.etcd.revision + 1, end))
    plan = plan_point(config, PointTarget(), open_stores(config), LogReporter())
    work = tmp_path / "work"
    work.mkdir()
    staged = stage_point(config, plan, open_stores(config), work, LogReporter())
    assert staged.replayed.election_leases == (journal_lease.id,)
    assert staged.replayed.leases_granted == (event_lease.id,)
    from etcdops.etcd.binaries import find_binary
    from etcdops.restore.staging import restore_into, start_throwaway, throwaway_member

    member = throwaway_member(tmp_path / "check", config, "check")
    member.data_dir.parent.mkdir()
    restore_into(find_binary("etcdutl"), staged.path, "staged", member, LogReporter())
    start_throwaway(member)
    try:
        client = etcd3.client(host="127.0.0.1", port=member.client_port, timeout=10)
        granted = {lease: client.get_lease_info(lease).grantedTTL
                   for lease in (journal_lease.id, event_lease.id)}
        client.close()
    finally:
        member.stop()
    assert granted == {journal_lease.id: 7, event_lease.id: config.journal.replay_lease_ttl}


# --- the revision a point in time is restored at (no etcdutl here bumps it) ----------------


def prepared_point(config, tmp_path, target, bump_flags=False, **options):
    """prepare_snapshot's plan and snapshot name for a point, its block left at once."""
    with prepared_snapshot(config, "latest", LogReporter(), under=tmp_path,
                           bump_flags=bump_flags, point=target, **options) as prepared:
        return prepared.plan, prepared.path.name, prepared.revision


def test_a_point_far_behind_the_newest_revision_is_advanced_past_it(journaled, tmp_path):
    config, client, base, manifests, marks = journaled
    # written after the chain, then a newer backup: clients saw its revision
    with EtcdSession(config.etcd) as session:
        session.put_revisions(config.etcd.endpoints[0], b"/registry/events/late", 3 * GAP_FLOOR)
    newer = save_snapshot(config, LogReporter()).manifest
    target = marks["txn"]
    # restored the moment the newer backup was taken: nothing written since to allow for
    plan, name, revision = prepared_point(config, tmp_path, PointTarget(revision=target),
                                          clock=lambda: newer.created_at.timestamp())
    assert (plan.method, revision, name) == (STAGING, target, "staged.db")
    # the distance to the newest revision, then the floor (and the few the rate adds for the
    # manifest's time, which the catalogue reads to the millisecond)
    behind = newer.etcd.revision - target
    assert behind + GAP_FLOOR <= plan.bump < behind + 2 * GAP_FLOOR


def test_a_point_at_the_base_itself_is_advanced_past_its_journal(journaled, tmp_path):
    config, client, base, manifests, marks = journaled
    plan, name, revision = prepared_point(config, tmp_path,
                                          PointTarget(revision=base.etcd.revision))
    assert (plan.method, revision) == (STAGING, base.etcd.revision)
    assert revision + plan.bump > marks["end"]


def test_a_point_whose_gap_does_not_fit_the_budget_is_restored_with_the_restart_warning(
    journaled, tmp_path
):
    config, client, base, manifests, marks = journaled
    config = dataclasses.replace(config, restore=RestoreConfig(bump_budget=0.01))
    plan, name, revision = prepared_point(config, tmp_path, PointTarget(revision=marks["txn"]))
    assert (plan.method, plan.bump, revision, name) == ("none", 0, marks["txn"], "point.db")
    assert "over [restore] bump_budget" in plan.warning and "kube-apiserver" in plan.warning


def test_a_point_for_one_member_of_several_gets_no_staging_etcd(journaled, tmp_path):
    config, client, base, manifests, marks = journaled
    plan, name, _ = prepared_point(config, tmp_path, PointTarget(revision=marks["txn"]),
                                   shared=False)
    assert (plan.method, name) == ("none", "point.db")
    assert "members restored one by one would each get their own revisions" in plan.warning


def test_a_bump_of_etcdutls_that_falls_short_of_the_newest_revision_warns(journaled, tmp_path):
    config, client, base, manifests, marks = journaled
    # the etcdutl is not run before a member's restore: the plan is what is looked at
    plan, _, revision = prepared_point(config, tmp_path, PointTarget(revision=marks["txn"]),
                                       bump_flags=True, bump_revision=1)
    assert (plan.method, plan.bump, revision) == (FLAGS, 1, marks["txn"])
    assert (f"--bump-revision 1 takes it to {marks['txn'] + 1:,}, not past revision "
            f"{marks['end']:,} that clients saw") in plan.warning
    plan, _, _ = prepared_point(config, tmp_path, PointTarget(revision=marks["txn"]),
                                bump_flags=True)
    assert (plan.method, plan.warning) == (FLAGS, None)  # the default, 1,000,000,000
