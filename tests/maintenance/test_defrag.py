"""Defragmentation on real clusters: the rules, the order, the health gates, NOSPACE."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from etcdops.config import Config, DefragConfig, LocalConfig
from etcdops.config.settings import ScheduleConfig
from etcdops.errors import EtcdUnavailableError, LockedError
from etcdops.etcd.election import Holder, Term, election_key
from etcdops.etcd.local import LocalCluster
from etcdops.etcd.maintenance import MemberStatus
from etcdops.etcd.session import EtcdSession
from etcdops.lock import job_lock
from etcdops.maintenance.defrag import (
    assess_member,
    compaction_revision,
    defragment_cluster,
)
from etcdops.maintenance.members import survey
from tests.fixtures.etcd import (
    TINY_QUOTA,
    assert_every_member_shrank,
    db_sizes,
    fill_until_nospace,
)

MiB, GiB = 1024**2, 1024**3
INSIDE = datetime(2026, 1, 15, 3, 0, tzinfo=UTC)  # inside the default 02:00-05:00 UTC
OUTSIDE = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
KEY = election_key("test", "defrag")  # config_for's cluster's


class Events:
    """A reporter that records each step and can act on one, as a failure would strike."""

    def __init__(self, on_event: Callable[[str], None] | None = None) -> None:
        self.lines: list[str] = []
        self._on_event = on_event

    def progress(self, description: str, total: int | None):
        raise AssertionError("defrag reports steps, not progress")

    def event(self, message: str) -> None:
        self.lines.append(message)
        if self._on_event:
            self._on_event(message)


def config_for(cluster: LocalCluster, tmp_path: Path) -> Config:
    return Config(
        cluster="test",
        etcd=cluster.etcd_config(dial_timeout=1.0),
        local=LocalConfig(dir=tmp_path / "state"),
        defrag=DefragConfig(free_threshold=1 * MiB),
    )


def sizes(cluster: LocalCluster) -> dict[str, int]:
    return {name: size for name, (size, _) in db_sizes(cluster).items()}


def leader_name(cluster: LocalCluster) -> str:
    with EtcdSession(cluster.etcd_config()) as session:
        return next(
            member.name for member in cluster.members
            if session.status(member.client_url).is_leader
        )


# --- the rules ----------------------------------------------------------------------------------


def status(db_size: int, in_use: int) -> MemberStatus:
    return MemberStatus(
        endpoint="http://127.0.0.1:2379", member_id=1, cluster_id=9, leader_id=1,
        version="3.5.1", db_size=db_size, db_size_in_use=in_use, revision=10, raft_index=10,
        raft_term=2, raft_applied_index=10, errors=(), is_learner=False,
    )


@pytest.mark.parametrize(
    ("db_size", "in_use", "nospace", "defragment", "reason"),
    [
        (1 * GiB, 900 * MiB, False, False, "124.0 MiB free <= 200.0 MiB and db 1.0 GiB <= 80%"),
        (1 * GiB, 824 * MiB, False, False, "200.0 MiB free <= 200.0 MiB"),  # not over
        (1 * GiB, 700 * MiB, False, True, "324.0 MiB free > 200.0 MiB"),
        (7 * GiB, 7 * GiB - MiB, False, True, "db 7.0 GiB > 80% of quota 8.0 GiB"),
        (64 * MiB, 60 * MiB, True, True, "NOSPACE alarm raised"),
        (7 * GiB, 6 * GiB, True, True, "NOSPACE alarm raised; 1.0 GiB free > 200.0 MiB; db 7.0"),
    ],
)
def test_assess_member(db_size, in_use, nospace, defragment, reason) -> None:
    decision = assess_member("etcd-1", status(db_size, in_use), nospace, DefragConfig(), 8 * GiB)
    assert decision.defragment is defragment
    assert decision.reason.startswith(reason)


@pytest.mark.parametrize(
    ("db_size", "in_use", "nospace", "defragment", "reason"),
    [
        # outside the window under NOSPACE: only what gives back pages or clears the alarm
        (64 * MiB, 20 * MiB, True, True, "NOSPACE alarm raised"),
        (64 * MiB, 60 * MiB, True, False, "60.0 MiB in use > 80% of quota 64.0 MiB: defrag"),
        (7 * GiB, 6 * GiB, True, True, "NOSPACE alarm raised; 1.0 GiB free > 200.0 MiB"),
        (7 * GiB + 512 * MiB, 7 * GiB, True, True, "512.0 MiB free > 200.0 MiB"),
        (7 * GiB, 7 * GiB - MiB, False, False, "7.0 GiB in use > 80% of quota 8.0 GiB"),
    ],
)
def test_assess_member_outside_the_window_under_nospace(db_size, in_use, nospace, defragment,
                                                        reason) -> None:
    quota = 64 * MiB if db_size == 64 * MiB else 8 * GiB
    decision = assess_member("etcd-1", status(db_size, in_use), nospace, DefragConfig(), quota,
                             reclaim_only=True)
    assert decision.defragment is defragment
    assert decision.reason.startswith(reason)


def test_a_lower_quota_makes_the_same_member_due() -> None:
    member = status(1800 * MiB, 1790 * MiB)
    assert not assess_member("etcd-1", member, False, DefragConfig(), 8 * GiB).defragment
    assert assess_member("etcd-1", member, False, DefragConfig(), 2 * GiB).defragment


# --- real clusters ------------------------------------------------------------------------------


def test_outside_the_window_nothing_is_touched(etcd_churned3: LocalCluster, tmp_path) -> None:
    config = config_for(etcd_churned3, tmp_path)
    before = sizes(etcd_churned3)
    events = Events()
    with EtcdSession(config.etcd) as session:
        report = defragment_cluster(session, config, events, now=OUTSIDE)
    assert not report.in_window
    assert report.skipped.startswith("outside the off-peak window 02:00-05:00 UTC (it is 12:00")
    assert report.decisions == [] and report.done == [] and events.lines == []
    assert sizes(etcd_churned3) == before  # due, every member, but not now


def test_a_second_run_on_the_host_is_refused(tmp_path, unreachable_endpoint) -> None:
    config = Config(local=LocalConfig(dir=tmp_path / "state"))
    with (
        job_lock(config, "defrag"),
        EtcdSession(config.etcd, [unreachable_endpoint]) as session,
        pytest.raises(LockedError, match="another defrag of cluster default is running"),
    ):
        defragment_cluster(session, config, Events(), now=INSIDE)


def test_dry_run_then_defragment_followers_first_leader_last(
    etcd_churned3: LocalCluster, tmp_path
) -> None:
    config = config_for(etcd_churned3, tmp_path)
    before = sizes(etcd_churned3)
    leader = leader_name(etcd_churned3)
    events = Events()
    with EtcdSession(config.etcd) as session:
        dry = defragment_cluster(session, config, events, now=INSIDE, dry_run=True)
        assert sizes(etcd_churned3) == before
        report = defragment_cluster(session, config, events, now=INSIDE)

    assert [d.defragment for d in dry.decisions] == [True, True, True]
    assert all("free > 1.0 MiB" in d.reason for d in dry.decisions)
    assert dry.done == [] and events.lines[0].startswith("defragmenting ")
    order = [done.member for done in report.done]
    assert sorted(order) == ["etcd-1", "etcd-2", "etcd-3"]
    assert order[-1] == leader
    assert [d.member for d in report.decisions] == order
    assert [line.split()[1] for line in events.lines if line.startswith("defragmenting")] == order
    after = sizes(etcd_churned3)
    for done in report.done:
        assert done.size_before == before[done.member]
        # the run's own writes after a member's defrag (its election key let go) may grow that
        # member's file by a page or so: never shrink it
        assert done.size_after <= after[done.member] < before[done.member] / 2
        assert done.seconds > 0
    assert report.disarmed == [] and report.alarm_kept is None


def test_right_after_a_compaction_each_member_is_decided_once_it_applied_it(
    etcd_uncompacted3: LocalCluster, tmp_path
) -> None:
    config = config_for(etcd_uncompacted3, tmp_path)
    before = db_sizes(etcd_uncompacted3)
    with EtcdSession(config.etcd) as session:
        assert compaction_revision(session, survey(session)) is None  # never compacted
        revision = session.status(etcd_uncompacted3.client_urls[0]).revision
        # as `etcdops compact` does: the call returns once the member that served it applied
        # the compaction; the others delete the old revisions later, on their own
        assert session.compact(revision, physical=False, timeout=30)
        report = defragment_cluster(session, config, Events(), now=INSIDE)
    assert report.compacted_to == revision
    assert [d.defragment for d in report.decisions] == [True, True, True]
    for decision in report.decisions:
        # decided from a status in which the compacted history already counts as free
        assert decision.db_size_in_use < decision.db_size / 2, decision
    assert len(report.done) == 3
    assert_every_member_shrank(before, db_sizes(etcd_uncompacted3))


def test_a_stopped_member_aborts_before_anything(etcd_churned3: LocalCluster, tmp_path) -> None:
    config = config_for(etcd_churned3, tmp_path)
    leader = leader_name(etcd_churned3)
    stopped = next(m for m in etcd_churned3.members if m.name != leader)
    stopped.stop()
    before = sizes(etcd_churned3)
    with EtcdSession(config.etcd) as session, pytest.raises(EtcdUnavailableError) as caught:
        defragment_cluster(session, config, Events(), now=INSIDE, force=True)
    assert caught.value.message.startswith(f"not defragmenting: {stopped.name} ")
    assert stopped.client_url in caught.value.message
    assert sizes(etcd_churned3) == before  # no member was defragmented


def test_a_member_failing_midway_stops_the_rest(etcd_churned3: LocalCluster, tmp_path) -> None:
    config = config_for(etcd_churned3, tmp_path)
    leader = leader_name(etcd_churned3)
    first, second = sorted(m.name for m in etcd_churned3.members if m.name != leader)
    before = sizes(etcd_churned3)

    def fail_the_other_follower(message: str) -> None:
        if message.startswith(f"defragmented {first}:"):
            next(m for m in etcd_churned3.members if m.name == second).stop()

    with EtcdSession(config.etcd) as session, pytest.raises(EtcdUnavailableError) as caught:
        defragment_cluster(
            session, config, Events(fail_the_other_follower), now=INSIDE, force=True
        )
        # the run's election key went with it: another node may defragment at once
        assert session.holder(KEY) is None
    message = caught.value.message
    assert message.startswith(f"after defragmenting {first}: {second} ")
    assert message.endswith(f"stopped; not defragmented: {second}, {leader}")
    after = sizes(etcd_churned3)
    assert after[first] < before[first] / 2
    assert after[leader] == before[leader]  # the leader was never touched


def test_nospace_stays_raised_while_the_member_is_still_full(
    etcd_tiny_quota: LocalCluster, etcd3_client, tmp_path
) -> None:
    client = etcd3_client(etcd_tiny_quota.client_urls[0])
    fill_until_nospace(client)
    config = config_for(etcd_tiny_quota, tmp_path)
    with EtcdSession(config.etcd) as session:
        # no compaction first: the history is still in use and defragmentation cannot free it
        events = Events()
        report = defragment_cluster(session, config, events, now=OUTSIDE, force=True)
        alarms = session.alarms()
    [decision] = report.decisions
    # etcd refuses the election's lease under NOSPACE, and defragmentation is what clears it
    assert any(line.startswith("NOSPACE is raised and etcd takes no writes") for line in
               events.lines)
    assert report.compacted_to is None  # nothing to wait for
    assert decision.defragment and decision.reason.startswith("NOSPACE alarm raised")
    assert decision.quota == TINY_QUOTA  # the member's own quota, read from /metrics
    assert report.disarmed == []
    assert report.alarm_kept.startswith("NOSPACE stays raised: etcd-1 still above 80%")
    assert [alarm.kind for alarm in alarms] == ["NOSPACE"]
    with pytest.raises(grpc.RpcError, match="database space exceeded"):
        client.put("/registry/secrets/fill/one-more", "x")


# --- one member at a time across nodes ----------------------------------------------------------


def test_a_run_on_another_node_is_left_alone_and_a_run_holds_the_key_until_its_end(
    etcd_churned3: LocalCluster, tmp_path
) -> None:
    config = config_for(etcd_churned3, tmp_path)
    before = db_sizes(etcd_churned3)
    another = Holder("cp-test", 4242, datetime(2026, 1, 15, 3, 0, 5, tzinfo=UTC))
    with EtcdSession(config.etcd) as session:
        term = session.campaign(KEY, another.to_json(), ttl=30)
        assert isinstance(term, Term)
        untouched = sizes(etcd_churned3)  # after the campaign's own write
        events = Events()
        held = defragment_cluster(session, config, events, now=OUTSIDE, force=True)
        assert held.skipped == (
            "defragmentation of cluster test is running on host cp-test (pid 4242) since "
            "2026-01-15 03:00:05Z: nothing to do"
        )
        assert held.decisions == [] and held.done == [] and events.lines == []
        assert sizes(etcd_churned3) == untouched
        assert session.holder(KEY).value == another.to_json()  # the other node's, untouched
        term.release()

        holders: list[Holder] = []

        def note_holder(message: str) -> None:
            if message.startswith("defragmenting "):
                holders.append(Holder.from_json(session.holder(KEY).value))

        report = defragment_cluster(session, config, Events(note_holder), now=OUTSIDE,
                                    force=True)
        assert report.skipped is None and len(report.done) == 3
        # held for every member, by this process, and released at the end of the run
        assert [h.pid for h in holders] == [os.getpid()] * 3
        assert session.holder(KEY) is None
    assert_every_member_shrank(before, db_sizes(etcd_churned3))


def test_a_run_that_loses_its_election_stops_before_the_next_member(
    etcd_churned3: LocalCluster, etcd3_client, tmp_path
) -> None:
    config = dataclasses.replace(
        config_for(etcd_churned3, tmp_path), schedule=ScheduleConfig(election_ttl=5.0)
    )
    leader = leader_name(etcd_churned3)
    first, second = sorted(m.name for m in etcd_churned3.members if m.name != leader)
    before = sizes(etcd_churned3)
    client = etcd3_client(etcd_churned3.client_urls[0])
    events: Events

    def expire_the_lease(message: str) -> None:
        if message.startswith(f"defragmented {first}:"):
            # as when etcd could not be reached for a TTL: the lease goes, the run learns it
            _, meta = client.get(KEY)
            client.revoke_lease(meta.lease_id)
            deadline = time.monotonic() + 10
            while not any("stopping before the next member" in line for line in events.lines):
                assert time.monotonic() < deadline, "the keep-alive never noticed"
                time.sleep(0.05)

    events = Events(expire_the_lease)
    with EtcdSession(config.etcd) as session, pytest.raises(EtcdUnavailableError) as caught:
        defragment_cluster(session, config, events, now=INSIDE)
    message = caught.value.message
    assert message.startswith("the defragmentation's election key was lost (lease ")
    assert message.endswith(f"stopped; not defragmented: {second}, {leader}")
    after = sizes(etcd_churned3)
    assert after[first] < before[first] / 2
    assert after[second] == before[second] and after[leader] == before[leader]
