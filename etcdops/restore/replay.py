"""Replaying journal revisions on a staging etcd booted from the base backup: the heart of a
point-in-time restore (etcdops.restore.point_plan chooses what to replay).

One transaction per original revision, its puts and deletes together and in order from the
base's revision + 1, so that etcd gives every revision the number it had and every restored key
keeps its create revision, mod revision and version. Each transaction is guarded
(etcdops.etcd.apply: a key must be what the history says just before), and its header revision
must be the original one: anything else wrote to the staging etcd, or the journal does not
extend this base, and the replay stops with an IntegrityError naming the revision.

Leases. A lease in the base snapshot is restored by etcdutl with its TTL. A lease granted after
the base is in no snapshot and in no watch event (LeaseGrant is not a change of a key), only in
the puts that use it: it is granted on the staging etcd with its original id, before the first
put that names it, with the TTL `[journal] replay_lease_ttl` (default 1 h; the original TTL is
not recorded anywhere the journal sees). Except etcdops' own: a lease whose first key is under
/etcdops/periods/ (etcdops.etcd.election: the election keys of the snapshot periods, the journal,
defrag) gets `[schedule] election_ttl`, the TTL it had, not an hour: its holder died with the
cluster or was stopped, and an hour's lease would keep `etcdops journal run` on the restored
cluster waiting an hour for the dead journal's key. The keys are given their own TTL rather than
deleted after the replay: a delete would write revisions the original never had (the staging
etcd's final revision is checked against the target) and take from the point keys it held; with
election_ttl they go as any dead holder's do, election_ttl after the restored cluster has a
leader. A lease revoked or expired in the original cluster
shows as the deletes of its keys, replayed like any other; the lease itself stays, empty, and
expires. The staging etcd's lessor runs, so every lease, the base's and those granted, is kept
alive for the whole replay (staging.LeaseKeeper): no key is lost to an expiry mid-replay (a
lease expiring would write a revision, and the next header check would stop the replay anyway).
After the restore, every lease counts down from its TTL once the restored cluster has a leader:
lease-bound keys are not immortal, their owners (kube-apiserver's events and leader elections,
for instance) must renew them; the result says how many leases were given the default TTL.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from etcdops.errors import IntegrityError
from etcdops.etcd.apply import RevisionWriter
from etcdops.etcd.election import KEY_PREFIX
from etcdops.etcd.session import EtcdSession
from etcdops.etcd.watch import ChangeKind, Revision
from etcdops.report import Reporter
from etcdops.restore.staging import LeaseKeeper
from etcdops.units import format_duration

_HINT = "nothing was restored; the staging etcd and its scratch directory are removed"
# a progress line this often: a replay of an hour of journal takes minutes
_REPORT_EVERY = 10.0
# etcdops' own coordination keys: their leases get [schedule] election_ttl
_ELECTIONS = KEY_PREFIX.encode()


@dataclass(frozen=True)
class Replayed:
    """What a replay wrote, and how fast."""

    from_revision: int  # the base's revision: the replay began after it
    to_revision: int  # the staging etcd's revision after the last revision replayed
    revisions: int
    events: int
    leases_granted: tuple[int, ...]  # leases the base did not hold, granted with the default TTL
    leases: int  # every lease on the staging etcd at the end
    lease_ttl: int  # the TTL the granted leases got, in seconds
    seconds: float
    election_leases: tuple[int, ...] = ()  # granted for etcdops' election keys, election_ttl
    election_ttl: int = 0  # the TTL those got, in seconds

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def lease_warning(self) -> str | None:
        """What the operator must know about lease-bound keys after the restore, or None."""
        if not self.leases:
            return None
        granted = (
            f"{len(self.leases_granted)} of them granted after the base backup, with [journal] "
            f"replay_lease_ttl ({format_duration(self.lease_ttl)}) as their TTL"
            if self.leases_granted else "none granted after the base backup"
        ) + (
            f"; {len(self.election_leases)} of etcdops' own election keys, with [schedule] "
            f"election_ttl ({format_duration(self.election_ttl)})" if self.election_leases
            else ""
        )
        return (
            f"the restored data holds {self.leases} lease(s) ({granted}): each counts down from "
            "its TTL once the restored cluster has a leader, and its keys go when it expires "
            "unless their owners (kube-apiserver, controllers) renew it"
        )

    def as_dict(self) -> dict[str, object]:
        """The JSON form of a replay."""
        return {
            "from_revision": self.from_revision,
            "to_revision": self.to_revision,
            "revisions": self.revisions,
            "events": self.events,
            "events_per_second": round(self.events_per_second, 1),
            "leases": self.leases,
            "leases_granted": len(self.leases_granted),
            "lease_ttl": self.lease_ttl,
            "election_leases": len(self.election_leases),
            "election_ttl": self.election_ttl,
            "seconds": round(self.seconds, 3),
        }


def replay(
    session: EtcdSession, endpoint: str, revisions: Iterable[Revision], *, lease_ttl: float,
    election_ttl: float, reporter: Reporter,
) -> Replayed:
    """Apply revisions (consecutive, from the member's revision + 1) to one member, one guarded
    transaction each, keeping every lease alive meanwhile; IntegrityError at the first revision
    that does not land as the original did. A lease granted meanwhile gets lease_ttl, or
    election_ttl when its first key is one of etcdops' election keys."""
    ttl = max(1, math.ceil(lease_ttl))
    election = max(1, math.ceil(election_ttl))
    writer = RevisionWriter(session, endpoint)
    start = position = session.status(endpoint).revision
    started = last_report = time.monotonic()
    count = events = 0
    granted: list[int] = []
    elections: list[int] = []
    with LeaseKeeper(session, endpoint) as keeper:
        known = set(keeper.ids)
        for revision in revisions:
            if revision.revision != position + 1:
                raise IntegrityError(
                    f"the replay reached revision {position}, and the next revision given is "
                    f"{revision.revision}, not {position + 1}", _HINT,
                )
            for lease, key in _leases(revision).items():
                if lease in known:
                    continue
                ours = key.startswith(_ELECTIONS)
                writer.grant(lease, election if ours else ttl)
                keeper.add(lease)
                known.add(lease)
                (elections if ours else granted).append(lease)
            landed = writer.write(revision)
            if landed != revision.revision:
                raise IntegrityError(
                    f"revision {revision.revision} was replayed as revision {landed} on the "
                    "staging etcd: something else wrote to it", _HINT,
                )
            position = landed
            count += 1
            events += len(revision.changes)
            if time.monotonic() - last_report >= _REPORT_EVERY:
                last_report = time.monotonic()
                reporter.event(f"replayed {count:,} revisions up to {position:,}")
        if problem := keeper.problem():
            raise IntegrityError(f"the staging etcd {problem} during the replay", _HINT)
        leases = len(keeper.ids)
    return Replayed(
        from_revision=start, to_revision=position, revisions=count, events=events,
        leases_granted=tuple(granted), leases=leases, lease_ttl=ttl,
        seconds=time.monotonic() - started, election_leases=tuple(elections),
        election_ttl=election,
    )


def _leases(revision: Revision) -> dict[int, bytes]:
    """The leases a revision's puts use, each with the first key put under it."""
    found: dict[int, bytes] = {}
    for change in revision.changes:
        if change.kind is ChangeKind.PUT and change.lease:
            found.setdefault(change.lease, change.key)
    return found
