"""The point in time a recovery restores, with the journal (`etcdops journal run`).

The plan's `at` or `revision` (or dr run's --at/--revision) names a moment or a revision;
without one, `backup = "latest"` is the newest journaled point, as for `etcdops restore`. The
point is planned before anything is touched (etcdops.restore.point_plan.plan_point: the base
backup, the segments, the revision, a hole in the journal), and the revision planned is kept in
the state file: a resumed run replays the same base to the same revision, not to a newest point
that has moved on since. Step 1 stages it once (the base restored on a staging etcd on this
host, the journal replayed there) and every member is restored from that one snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from etcdops.recovery.plan import Plan
from etcdops.recovery.state import RecoveryState

if TYPE_CHECKING:
    from etcdops.restore.member import Prepared
    from etcdops.restore.point_plan import PointPlan, PointTarget


@dataclass(frozen=True)
class PointRequest:
    """What a run asks of the journal."""

    target: PointTarget
    base: str  # 'latest', a backup id (or prefix) the plan names, or a resumed run's backup
    allow_gap: bool
    # a point was named (by the plan, the flags, or a resumed run's first attempt): it is
    # reported as the point restored even where nothing is replayed; 'latest' alone is a point
    # only when the journal has revisions past the backup
    named: bool


def point_request(plan: Plan, state: RecoveryState) -> PointRequest | None:
    """What this run asks of the journal; None: the backup alone (a backup id without a point,
    or a resumed run whose first attempt found no journal to replay)."""
    from etcdops.restore.point_plan import PointTarget

    if state.backup_id is not None:  # resumed: what its first attempt planned, or nothing
        if state.point is None:
            return None
        return PointRequest(PointTarget(revision=int(state.point["revision"])),
                            state.backup_id, plan.allow_gap, True)
    if plan.point is not None:
        return PointRequest(plan.point, plan.backup, plan.allow_gap, True)
    if plan.backup == "latest":
        return PointRequest(PointTarget(), "latest", plan.allow_gap, False)
    return None


def planned_record(planned: PointPlan, target: str) -> dict[str, Any]:
    """The state's record of a point as planned (before anything is staged)."""
    return {
        "target": target,
        **_staged_from(planned),
        "revision": planned.revision,
        "as_of": as_of(planned, planned.revision).isoformat(),
        "gap": "; ".join(planned.warnings) or None,
        # once step 1 staged it: the revision the staging etcd reached, what it replayed
        "reached": None,
        "replayed": None,
        "lease_warning": None,
    }


def staged_record(
    record: dict[str, Any], planned: PointPlan, prepared: Prepared
) -> dict[str, Any]:
    """The record once step 1 staged the point: the base and segments staged from (planned
    holds the plan as staged), the revision reached, what was replayed."""
    reached = int(prepared.revision if prepared.revision is not None else planned.revision)
    replayed = prepared.replayed
    gap = record["gap"]
    if reached < planned.revision:  # a segment no store could read back (allow_gap)
        gap = "; ".join(filter(None, [gap, (
            f"a journal segment could not be read from any store: restored to revision "
            f"{reached}, not {planned.revision} (--allow-gap)")]))
    return record | _staged_from(planned) | {
        "reached": reached,
        "as_of": as_of(planned, reached).isoformat(),
        "gap": gap,
        "replayed": None if replayed is None else replayed.as_dict(),
        "lease_warning": None if replayed is None else replayed.lease_warning(),
    }


def _staged_from(planned: PointPlan) -> dict[str, Any]:
    """The base and segments a point is (to be) staged from."""
    return {
        "base": planned.base.id,
        "base_revision": planned.base.etcd.revision,
        "segments": len(planned.segments),
        "seen": [planned.seen[0].isoformat(), planned.seen[1].isoformat()],
    }


def as_of(planned: PointPlan, revision: int) -> datetime:
    """When the newest change the point holds was made, as closely as the journal knows (it
    records each segment's first and last change, not each revision's): the segment's last
    change where the point ends a segment, else its first, so that the data-loss window is
    never understated; the base's creation for the base's own revision."""
    for copies in planned.segments:
        segment = copies.manifest
        if segment.first_revision <= revision <= segment.last_revision:
            return (segment.last_change_at if revision == segment.last_revision
                    else segment.first_change_at)
    return planned.base.created_at


def describe(record: dict[str, Any]) -> str:
    """A point restored (or planned), in words, for the report."""
    reached = record["reached"] if record["reached"] is not None else record["revision"]
    replayed = record["replayed"]
    base = f"backup {record['base']} (revision {record['base_revision']})"
    if reached == record["base_revision"] and not record["segments"]:
        how = f"{base} itself: no journal revision to replay"
    elif replayed is not None:
        how = (f"{base} and {replayed['revisions']:,} revisions ({replayed['events']:,} "
               f"changes) replayed from {record['segments']} journal segment(s)")
    else:
        how = f"{base} and {record['segments']} journal segment(s) to replay"
    asked = "" if record["target"] == f"revision {reached}" else f" ({record['target']})"
    text = f"revision {reached}{asked}: {how}; changes until {record['as_of']}"
    if record["gap"]:
        text += f"; GAP: {record['gap']}"
    return text
