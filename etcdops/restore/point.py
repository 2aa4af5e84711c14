"""Point-in-time restore, the staging: the plain snapshot of the cluster at a planned point
(etcdops.restore.point_plan), made on a staging etcd (stage_point).

The base is decoded and booted on a throwaway single-member etcd on loopback, the plan's
segments are replayed onto it one revision at a time (etcdops.restore.replay), the final
revision is checked and its snapshot taken. A save records the revision of the status it takes
just before its stream begins, and the writes made while it streams are in its snapshot too: a
base may restore past its recorded revision, which is known only once its snapshot is decoded.
A `--revision N` it passed (N at or after its recorded revision) is staged from the backup
before it instead, of the same history, whose chain ran on until the journal switched, past the
base's snapshot; with none, it is refused. A moment or `latest` whose replay the base's
snapshot passed is refused too. Each segment is read from local, then primary, then replica: a
copy that is missing, damaged or unreadable gives way to the next (said in the fallbacks); a
wrong key fails at once.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from etcdops.backup.readback import SnapshotStatus, decode_snapshot
from etcdops.config import Config
from etcdops.errors import IntegrityError, NotFoundError, StorageError, UsageError
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.session import EtcdSession
from etcdops.etcd.watch import Revision
from etcdops.journal.manifest import SegmentManifest
from etcdops.journal.store import read_segment
from etcdops.report import Reporter
from etcdops.restore.point_plan import GAP_HINT, Copies, PointPlan, plan_point
from etcdops.restore.replay import Replayed, replay
from etcdops.restore.staging import (
    restore_into,
    save_checked,
    start_throwaway,
    throwaway_member,
)
from etcdops.stores.configured import Stores

POINT_STAGING_NAME = "etcdops-point"
# the replayed point's snapshot in the work directory (a staging bump writes its own beside it)
POINT_NAME = "point.db"
# the staging etcd is thrown away once its snapshot is taken: an fsync per replayed revision
# would only slow the replay; its limits are raised so that any transaction the original
# cluster accepted (its own limits may be above etcd's defaults) is accepted again
_STAGING_FLAGS = {"unsafe_no_fsync": True, "max_txn_ops": 1 << 16,
                  "max_request_bytes": 64 << 20}
_CALL_TIMEOUT = 300.0


@dataclass(frozen=True)
class StagedPoint:
    path: Path  # the staging etcd's checked snapshot at the target revision
    status: SnapshotStatus  # the base's read, with the point's revision, keys and warnings
    replayed: Replayed
    plan: PointPlan  # as staged: the plan given, or the earlier base's that served it


def stage_point(
    config: Config, plan: PointPlan, stores: Stores, work: Path, reporter: Reporter, *,
    allow_gap: bool = False,
) -> StagedPoint:
    """The cluster at the plan's revision as a checked plain snapshot in work: the base decoded,
    booted on a staging etcd, the segments replayed, the final revision checked, a snapshot
    taken; the staging etcd and its data dir are gone when this returns, however it returns.
    A base whose snapshot passed a revision target gives way to the backup before it
    (stage_earlier; the StagedPoint's plan says so)."""
    try:
        return _stage(config, plan, stores, work, reporter, allow_gap)
    except BaseAfterTarget as late:
        return stage_earlier(config, plan, late, stores, work, reporter, allow_gap)


def check_exact(
    config: Config, plan: PointPlan, plain: Path, stores: Stores, work: Path,
    reporter: Reporter, allow_gap: bool,
) -> StagedPoint | None:
    """For a revision target at its base's recorded revision (nothing to replay), with the
    base decoded in plain: None when the snapshot is at that revision, so that it is restored
    as it is; else the target staged from the backup before it (stage_earlier), plain removed
    first."""
    from etcdops.etcd.etcdutl import snapshot_status

    at = snapshot_status(plain, config.etcd.etcdutl).revision
    if at <= plan.revision:
        return None
    plain.unlink()
    return stage_earlier(config, plan, BaseAfterTarget(plan.base.id, at, plan), stores, work,
                         reporter, allow_gap)


def stage_earlier(
    config: Config, plan: PointPlan, late: BaseAfterTarget, stores: Stores, work: Path,
    reporter: Reporter, allow_gap: bool,
) -> StagedPoint:
    """A revision target that the base's snapshot passed (late), staged from the backup before
    it: that backup's chain ran on until the journal switched, past the base's snapshot. late
    itself when the target is a moment or the newest point (the base's own snapshot is then the
    newer state; nothing older should stand in for it), or when no earlier chain serves it."""
    if plan.earlier is None or plan.target.revision is None:
        raise late
    try:
        earlier = plan_point(config, plan.target, stores, reporter, base_ref=plan.earlier,
                             allow_gap=allow_gap)
    except (UsageError, IntegrityError, NotFoundError):
        raise late from None
    reporter.event(f"{late.message}: restoring from backup {plan.earlier} and its chain")
    for note in earlier.notes:
        reporter.event(note)
    return _stage(config, earlier, stores, work, reporter, allow_gap)


def _stage(
    config: Config, plan: PointPlan, stores: Stores, work: Path, reporter: Reporter,
    allow_gap: bool,
) -> StagedPoint:
    etcdutl = find_binary("etcdutl", config.etcd.etcdutl)
    find_binary("etcd")
    base = plan.base
    plain = work / "base.db"
    status = decode_snapshot(config, base.id, plain, reporter, stores=stores)
    member = throwaway_member(work / "point", config, POINT_STAGING_NAME, **_STAGING_FLAGS)
    member.data_dir.parent.mkdir()
    try:
        restore_into(etcdutl, plain, status.source, member, reporter, trusted=True)
        plain.unlink()  # the staging data dir holds it now: one copy of the cluster on disk
        reporter.event(f"starting a staging etcd on {member.client_url} to replay "
                       f"{len(plan.segments)} journal segment(s) to revision {plan.revision}")
        start_throwaway(member)
        with EtcdSession(member.etcd_config(command_timeout=_CALL_TIMEOUT)) as session:
            url = member.client_url
            at = session.status(url).revision
            # a save records the revision of the status it took just before the stream began:
            # under writes the snapshot holds a few revisions more, which the chain (from the
            # recorded revision + 1) holds too, and which the replay skips
            if at < base.etcd.revision:
                raise IntegrityError(
                    f"backup {base.id} restores at revision {at}, below the {base.etcd.revision} "
                    "its manifest says", "use another backup",
                )
            if at > plan.revision:
                raise BaseAfterTarget(base.id, at, plan)
            segments = _Segments(config, stores, plan, reporter, allow_gap)
            after_base = (r for r in segments.revisions() if r.revision > at)
            done = replay(session, url, after_base, reporter=reporter,
                          lease_ttl=config.journal.replay_lease_ttl,
                          election_ttl=config.schedule.election_ttl)
            final = session.status(url).revision
            if final != segments.reached:
                raise IntegrityError(
                    f"the staging etcd is at revision {final} after a replay to "
                    f"{segments.reached}", "nothing was restored; run the restore again",
                )
            keys = session.count_keys()
            reporter.event(f"replayed {done.revisions:,} revisions ({done.events:,} changes, "
                           f"{done.events_per_second:,.0f}/s); taking the staging snapshot")
            staged = work / POINT_NAME
            save_checked(session.snapshot_stream(url), staged, "the staging etcd's snapshot")
    finally:
        member.stop()
        shutil.rmtree(member.data_dir.parent, ignore_errors=True)
    lease = done.lease_warning()
    point = dataclasses.replace(
        status,
        kind="point in time",
        source=f"{status.source} and {len(segments.read)} journal segment(s) to revision "
               f"{final}",
        revision=final,
        keys=keys,
        keys_counted="live keys at the revision",
        checks=status.checks + (
            "journal segments (sha256, age authentication, format, manifest)",
            "each revision replayed as one guarded transaction at its own revision",
        ),
        fallbacks=status.fallbacks + tuple(segments.fallbacks),
        warnings=status.warnings + plan.warnings + tuple(segments.warnings)
        + ((lease,) if lease else ()),
    )
    return StagedPoint(staged, point, done, plan)


class BaseAfterTarget(IntegrityError):
    """The base's snapshot holds revisions past the target: they were written while its save
    streamed it, after the status it recorded its revision from."""

    def __init__(self, backup_id: str, at: int, plan: PointPlan) -> None:
        super().__init__(
            f"backup {backup_id} restores at revision {at}, past revision {plan.revision} "
            f"planned for {plan.target.describe()} (its save recorded revision "
            f"{plan.base.etcd.revision}; the writes made while it streamed are in its snapshot)",
            "give a later target, or a revision that an earlier backup's chain holds "
            "(`etcdops snapshot list` shows each chain's window)",
        )


class _Segments:
    """The plan's revisions, segment by segment, each read from the first store that gives a
    good copy; a segment no store can read ends them (allow_gap) or fails the restore."""

    def __init__(
        self, config: Config, stores: Stores, plan: PointPlan, reporter: Reporter,
        allow_gap: bool,
    ) -> None:
        from etcdops.crypto.keys import configured_identities

        self._identities = configured_identities(config.encryption)
        self._stores, self._plan, self._reporter = stores, plan, reporter
        self._allow_gap = allow_gap
        self.reached = plan.base.etcd.revision
        self.read: list[SegmentManifest] = []
        self.fallbacks: list[str] = []
        self.warnings: list[str] = []

    def revisions(self) -> Iterator[Revision]:
        for copies in self._plan.segments:
            revisions = self._read(copies)
            if revisions is None:
                return
            self.read.append(copies.manifest)
            for revision in revisions:
                if revision.revision > self._plan.revision:
                    return
                yield revision
                self.reached = revision.revision

    def _read(self, copies: Copies) -> list[Revision] | None:
        failures = []
        for name in copies.stores:
            try:
                return read_segment(self._stores[name], copies.manifest, self._identities)
            except (IntegrityError, StorageError) as exc:
                failures.append(exc.message)
                note = f"{exc.message}; reading the next copy" if name != copies.stores[-1] else (
                    exc.message)
                self._reporter.event(note)
                self.fallbacks.append(note)
        gap = (f"{copies.manifest.name} could not be read from any store "
               f"({'; '.join(failures)}): the journal proves revisions only up to {self.reached}")
        if not self._allow_gap:
            raise IntegrityError(f"{gap}; nothing was restored", GAP_HINT)
        self.warnings.append(f"{gap}; restored to revision {self.reached} (--allow-gap)")
        return None
