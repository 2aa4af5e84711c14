"""Every member of the cluster, reached at its own client URL, and whether it is healthy.

Maintenance works member by member (defragmentation is a per-member call) and health reports
member by member, so both start from the member list, as `etcdctl ... --cluster` does, rather
than from the configured endpoints, which may be a subset or a load balancer.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from etcdops.errors import EtcdopsError
from etcdops.etcd.cluster import Member
from etcdops.etcd.maintenance import MemberStatus
from etcdops.etcd.session import EtcdSession
from etcdops.maintenance.quota import is_nospace_error

# bbolt gives the pages a commit freed back to its freelist only once no read transaction that
# began before that commit is open, and etcd closes each commit's read transaction on its own
# time after the next commit: Status counts them free from the second or third commit after
# (the second, measured on etcd 3.5.1; the third covers a close that lost the race)
SETTLE_COMMITS = 3


@dataclass(frozen=True)
class MemberState:
    """One member as seen now: its status when it answered, else why it is not healthy."""

    name: str
    id: int
    endpoint: str | None
    status: MemberStatus | None
    problem: str | None

    @property
    def healthy(self) -> bool:
        """Whether the member answered with a leader and reports no errors."""
        return self.problem is None


def survey(session: EtcdSession) -> list[MemberState]:
    """The status of every member, asked in parallel, with each one's problem named."""
    members = session.members()
    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        states = list(pool.map(lambda member: _state(session, member), members))
    states.sort(key=lambda state: state.name)  # etcd lists members by id: names read better
    leaders = {s.status.leader_id for s in states if s.status and s.status.leader_id}
    if len(leaders) > 1:
        # members that disagree about the leader are partitioned or mid-election
        return [
            dataclasses.replace(s, problem=f"sees leader {s.status.leader_id:x}, others another")
            if s.status else s
            for s in states
        ]
    return states


def unhealthy(states: list[MemberState]) -> str | None:
    """One line naming every unhealthy member and why, None when all are healthy."""
    bad = [f"{s.name} ({s.endpoint or 'no client URL'}): {s.problem}" for s in states if s.problem]
    return "; ".join(bad) if bad else None


def applied_status(
    session: EtcdSession, endpoint: str, compacted_to: int | None, *, learner: bool,
    timeout: float,
) -> MemberStatus:
    """A member's status once it has applied the cluster's compaction on disk and counts what
    that freed as free: the status to decide that member's defragmentation from."""
    # a learner refuses Compact; it applies compactions all the same, and is decided on what
    # it shows
    if compacted_to is not None and not learner:
        # each wait commits the member's backend, so the settling commits come with it
        for _ in range(SETTLE_COMMITS):
            session.wait_compacted(endpoint, compacted_to, timeout=timeout)
    return session.status(endpoint)


def _state(session: EtcdSession, member: Member) -> MemberState:
    name = member.name or f"{member.id:x}"
    if not member.client_urls:
        return MemberState(name, member.id, None, None, "not started (no client URL)")
    # etcd advertises full URLs (scheme://host:port), the form the session uses too
    endpoint = member.client_urls[0].rstrip("/")
    try:
        status = session.status(endpoint)
    except EtcdopsError as exc:
        return MemberState(name, member.id, endpoint, None, exc.message)
    # NOSPACE is what compaction and defragmentation repair, so it must not stop them (a
    # CORRUPT alarm must)
    errors = [error for error in status.errors if not is_nospace_error(error)]
    problem = None
    if not status.leader_id:
        problem = "has no leader"
    elif errors:
        problem = "reports errors: " + ", ".join(errors)
    return MemberState(name, member.id, endpoint, status, problem)
