"""What a restore does about etcd's revision, which goes back to the snapshot's.

Kubernetes clients keep resourceVersions (etcd revisions) across a control-plane outage: the
kube-apiserver's watch cache, controllers, kubelets, kube-proxy. After a restore the revision is
the snapshot's, below what they saw, so a watch resumed from a later revision waits for changes
that already happened under other numbers and caches serve stale objects. Three ways out, best
first: etcdutl 3.5.10+ and 3.6 move the revision past anything seen (`--bump-revision N
--mark-compacted`: a watch from an old revision is then told it was compacted, and its client
lists afresh); without them a staging etcd writes the revisions clients may have seen since the
backup and compacts there (restore/staging.py), when that fits in `[restore] bump_budget`;
otherwise every component that watches must be restarted.

How many revisions clients may have seen is estimated from the snapshot: the compaction samples
it holds (the revision at a wall-clock time) and its own (created_at, revision) give the write
rate, and the backup's age times that rate, with a margin, is the gap to cover. A point in time
is behind what clients saw by more: the newest revision that its history's backups and journal
name (newest_seen), and the gap runs from there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from etcdops.etcd.binaries import etcdutl_supports
from etcdops.units import format_duration

if TYPE_CHECKING:
    from etcdops.backup.catalog import BackupView
    from etcdops.journal.windows import ChainView

BUMP_FLAGS = ("--bump-revision", "--mark-compacted")  # each requires the other
FLAGS = "etcdutl --bump-revision --mark-compacted"
STAGING = "staging etcd"
NONE = "none"
# every component that holds watches or resourceVersions across the outage
RESTART = (
    "kube-apiserver", "kube-controller-manager", "kube-scheduler", "every kubelet",
    "every kube-proxy",
)
# the rate between samples is an average: bursts and the writes of the last minutes before the
# disaster are covered by doubling it, and a floor covers a cluster that looked idle
GAP_MARGIN = 2.0
GAP_FLOOR = 1000


@dataclass(frozen=True)
class RevisionPlan:
    """How this restore leaves the revision: bumped by etcdutl, advanced on a staging etcd, or
    not at all (and then what to restart, unless the caller takes care of it)."""

    method: str  # FLAGS, STAGING or NONE
    bump: int  # what is added to the snapshot's revision; 0 when not bumped
    flags: tuple[str, ...]  # for every member's `etcdutl snapshot restore`
    warning: str | None  # what the operator must do because the revision went backwards

    def revision_after(self, snapshot_revision: int | None) -> int | None:
        """The revision the restored member starts from."""
        return None if snapshot_revision is None else snapshot_revision + self.bump

    def as_dict(self, snapshot_revision: int | None) -> dict[str, object]:
        """The JSON form, with the revisions before and after the restore."""
        return {
            "method": self.method,
            "bump": self.bump,
            "snapshot": snapshot_revision,
            "after_restore": self.revision_after(snapshot_revision),
            "restart": [] if self.warning is None else list(RESTART),
        }


def etcdutl_bumps(etcdutl: Path) -> bool:
    """Whether this etcdutl's `snapshot restore --help` offers both flags (its help, not its
    version string: distributions backport, and builds report odd versions)."""
    return all(etcdutl_supports(etcdutl, flag) for flag in BUMP_FLAGS)


def flags_plan(bump: int) -> RevisionPlan:
    """etcdutl bumps the revision by `bump` and marks it compacted, on every member."""
    return RevisionPlan(FLAGS, bump, ("--bump-revision", str(bump), "--mark-compacted"), None)


def staged_plan(bump: int) -> RevisionPlan:
    """The snapshot was advanced by `bump` revisions and compacted there on a staging etcd."""
    return RevisionPlan(STAGING, bump, (), None)


def unbumped_plan(warning: str | None) -> RevisionPlan:
    """The revision goes back to the snapshot's; warning None: the caller deals with it."""
    return RevisionPlan(NONE, 0, (), warning)


def restart_warning(why: str) -> str:
    """The one line that says why the revision went back and which components to restart."""
    return (
        f"the revision went back to the snapshot's ({why}); once etcd is up, restart "
        f"{', '.join(RESTART[:-1])} and {RESTART[-1]}, or their watches and caches keep "
        "resourceVersions from before the restore"
    )


class Seen(NamedTuple):
    """The newest revision clients are known to have seen, and when (epoch seconds)."""

    at: float
    revision: int


def newest_seen(views: Iterable[BackupView], chains: Mapping[str, ChainView]) -> Seen:
    """The newest revision the backups and their chains name, and when it was seen. Revisions
    a chain names past a hole were seen all the same; a time not known is the base's (older:
    the gap since is the larger), and of two equal revisions the older time counts."""
    points = []
    for view in views:
        created = view.manifest.created_at.timestamp()
        points.append(Seen(created, view.manifest.etcd.revision))
        chain = chains.get(view.manifest.id)
        if chain is not None:
            at = chain.last_change_at.timestamp() if chain.last_change_at else created
            points.append(Seen(at, max(chain.window.last_revision,
                                       chain.listed_last_revision or 0)))
    return max(points, key=lambda seen: (seen.revision, -seen.at))


def no_flags(etcdutl: Path) -> str:
    """Why etcdutl does not bump: the start of every reason a staging etcd did not either."""
    return f"{etcdutl} has no --bump-revision (etcd 3.5.10+ and 3.6 have it)"


@dataclass(frozen=True)
class WriteRate:
    """Revisions per second over a span of (time, revision) points."""

    per_second: float
    points: int
    span: float  # seconds from the oldest point to the newest

    def gap(self, age: float) -> int:
        """The revisions clients may have seen `age` seconds after the newest point, with
        margin: what a staging etcd advances the revision by."""
        return GAP_FLOOR + math.ceil(GAP_MARGIN * self.per_second * max(0.0, age))


def write_rate(points: Iterable[tuple[float, int]]) -> WriteRate | None:
    """The average rate from the oldest point to the newest; None with fewer than two points
    at distinct times (nothing to measure a rate over)."""
    ordered = sorted(points)
    if len(ordered) < 2 or ordered[-1][0] <= ordered[0][0]:
        return None
    (first_time, first_revision), (last_time, last_revision) = ordered[0], ordered[-1]
    span = last_time - first_time
    # a revision lower at a later time is a restore in between: no writes to count there
    return WriteRate(max(0, last_revision - first_revision) / span, len(ordered), span)


def over_budget(gap: int, speed: float, budget: float) -> str:
    """Why a gap is not written on a staging etcd: how long it would take, against the budget."""
    return (
        f"advancing it by the expected {gap:,} revisions on a staging etcd would take about "
        f"{format_duration(gap / speed)} at {speed:,.0f} writes/s, over [restore] bump_budget "
        f"{format_duration(budget)}"
    )
