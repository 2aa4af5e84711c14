"""Point-in-time restore: which base backup and journal segments a target needs (plan_point),
and the plain snapshot of the cluster at that point, made on a staging etcd (stage_point).

A target is a revision (`--revision N`), a moment (`--at TIME`) or `latest`, the newest point
the journal holds:
- the base is the newest backup with a good copy at or before the target (its revision at or
  below N; created at or before TIME); for `latest`, the backup whose chain holds the newest
  point in time (its last change's, or the backup's own time when its chain holds nothing);
- a restore of the cluster starts a new history under a new etcd cluster ID, usually at a
  lower revision than the old history's backups and chains: the furthest revision is not the
  newest point, and a revision N names a different state in each history. `--revision N` with
  backups of several cluster IDs looks first among those of the newest backup's history, then
  the others, newest first; the plan's notes say which history was used;
- a save records the revision of the status it takes just before its stream begins, and the
  writes made while it streams are in its snapshot too: a base may restore past its recorded
  revision, which is known only once its snapshot is decoded. A `--revision N` it passed
  (N at or after its recorded revision) is staged from the backup before it instead, of the
  same history, whose chain ran on until the journal switched, past the base's snapshot; with
  none, it is refused. A moment or `latest` whose replay the base's snapshot passed is
  refused too;
- a moment maps to a revision through the segments' time spans: the journal records when it saw
  each segment's first and last change, not each revision's, so TIME restores to the last
  revision of the last segment whose span ends at or before it (the base's revision if none
  does). The precision is one segment's span, `[journal] interval` (5 s) at most: a change made
  up to an interval before TIME may be left out, none after TIME is ever put in;
- the chain's provable window (etcdops.journal.chain) must reach the target. A hole (revisions in
  no store's segment, or a segment no store can read back) stops the restore before any member
  is touched, with an IntegrityError naming the last provable revision; with allow_gap, the
  restore goes to that last provable point instead and says so in a warning. A replay never
  crosses a hole: revisions must be consecutive.
Each segment is read from local, then primary, then replica: a copy that is missing, damaged
or unreadable gives way to the next (said in the fallbacks); a wrong key fails at once.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from etcdops.backup.catalog import BackupView, resolve_ref
from etcdops.backup.manifest import Manifest, manifest_time
from etcdops.backup.readback import SnapshotStatus, decode_snapshot
from etcdops.config import Config
from etcdops.errors import IntegrityError, NotFoundError, StorageError, UsageError
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.session import EtcdSession
from etcdops.etcd.watch import Revision
from etcdops.journal.chain import ChainWindow, window
from etcdops.journal.manifest import SegmentManifest
from etcdops.journal.store import chain_manifests, read_segment
from etcdops.journal.windows import ChainView, list_with_chains
from etcdops.report import Reporter
from etcdops.restore.replay import Replayed, replay
from etcdops.restore.revision import Seen, newest_seen
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
_GAP_HINT = ("give --allow-gap to restore to the last provable point, or a target before the "
             "hole; `etcdops snapshot list` shows each chain's window")


@dataclass(frozen=True)
class PointTarget:
    """What the operator asked for: a revision, a moment, or neither (`latest`)."""

    revision: int | None = None
    at: datetime | None = None

    def __post_init__(self) -> None:
        if self.revision is not None and self.at is not None:
            raise UsageError("--revision and --at name two targets", "give one of them")
        if self.at is not None and self.at.tzinfo is None:
            raise UsageError(f"--at {self.at.isoformat()} has no time zone",
                             "give one, e.g. 2026-11-25T09:13:00Z or +01:00")

    def describe(self) -> str:
        if self.revision is not None:
            return f"revision {self.revision}"
        if self.at is not None:
            return f"{manifest_time(self.at)}"
        return "the newest journaled point"


@dataclass(frozen=True)
class Copies:
    """One segment and the stores holding its manifest, in read order."""

    manifest: SegmentManifest
    stores: tuple[str, ...]


@dataclass(frozen=True)
class PointPlan:
    base: Manifest
    window: ChainWindow
    segments: tuple[Copies, ...]  # the path a replay reads, up to the one holding `revision`
    revision: int  # the revision restored to
    # when the journal saw the changes of the segment holding `revision` (the base's time
    # for the base's own revision): the precision of a point in time
    seen: tuple[datetime, datetime]
    notes: tuple[str, ...]  # what the chain's listing found that did not stop it
    warnings: tuple[str, ...]  # a gap the restore stops before (allow_gap)
    target: PointTarget  # what was asked for
    # the newest revision that a backup or the journal names, of the base's history and the
    # newest backup's (the live one, when the base is of an older), and when it was seen:
    # clients saw that much at least, so a restore leaves the cluster past it
    newest: Seen
    # the backup of the same history taken before the base: its chain holds the revisions
    # that went into the base's snapshot after the base's save recorded its revision
    earlier: str | None = None

    @property
    def replays(self) -> bool:
        return self.revision > self.base.etcd.revision


@dataclass(frozen=True)
class StagedPoint:
    path: Path  # the staging etcd's checked snapshot at the target revision
    status: SnapshotStatus  # the base's read, with the point's revision, keys and warnings
    replayed: Replayed
    plan: PointPlan  # as staged: the plan given, or the earlier base's that served it


def plan_point(
    config: Config, target: PointTarget, stores: Stores, reporter: Reporter, *,
    base_ref: str = "latest", allow_gap: bool = False,
) -> PointPlan:
    """The base backup, segments and revision for a target; IntegrityError at a hole before
    the target (unless allow_gap), UsageError for a target beyond the journal."""
    # one listing of each store's backups and journal, one manifest per chain: the chains of
    # every candidate compared without reading their segments' manifests
    journal = list_with_chains(stores, config.cluster)
    views, unreachable = journal.listing.survey.backups, journal.listing.survey.unreachable
    notes = [f"{name} store could not be listed ({e.message})" for name, e in unreachable.items()]
    notes += [f"the {name} store's journal could not be listed ({why})"
              for name, why in journal.unreadable.items()]
    every = [view for view in reversed(views) if view.good_in and _before(view, target)]
    candidates = every
    if base_ref != "latest":
        where = " or ".join(f"{name} store" for name in stores)
        chosen = resolve_ref([(v.manifest.id, bool(v.good_in)) for v in views], base_ref, where)
        candidates = [view for view in every if view.manifest.id == chosen]
    if not candidates:
        raise NotFoundError(
            f"no backup with a good copy at or before {target.describe()}",
            "`etcdops snapshot list --store all` lists the backups and their windows",
        )
    # a store that could not be listed is not asked again for each candidate's chain: with a
    # region down every ask would wait out its timeouts (dr run's 'latest' asks for each backup)
    listed = Stores({name: (lambda name=name: stores[name])
                     for name in stores if name not in unreachable})
    newest_history = [v for v in views if v.good_in][-1].manifest.etcd.cluster_id
    view, history_note = _choose(candidates, journal.chains, target, newest_history)
    notes += [history_note] if history_note else []
    found, chain_notes = chain_copies(config, listed, view.manifest.id)
    wanted = _wanted(view.manifest, [c.manifest for c in found.values()], target)
    earlier = _earlier(view, candidates)
    if target.at is not None and wanted == view.manifest.etcd.revision and earlier is not None:
        # no segment of this base's chain ended by TIME: the journal switched to the base a
        # catalogue read after it was taken, and re-read the revisions since with the moment
        # it saw them again; the chain it switched from holds them with the moment they came
        found_earlier, notes_earlier = chain_copies(config, listed, earlier.manifest.id)
        reached = _wanted(earlier.manifest, [c.manifest for c in found_earlier.values()],
                          target)
        if reached > wanted:
            view, found, chain_notes, wanted = earlier, found_earlier, notes_earlier, reached
    base = view.manifest
    manifests = [copies.manifest for copies in found.values()]
    proven = window(base.id, base.etcd.revision, manifests)
    warnings = []
    if wanted > proven.last_revision:
        hole = proven.holes[0].reason if proven.holes else "a segment is missing"
        gap = (f"the journal of backup {base.id} proves revisions only up to "
               f"{proven.last_revision}, and {target.describe()} needs revision {wanted}: {hole}")
        if not allow_gap:
            raise IntegrityError(f"{gap}; nothing was restored", _GAP_HINT)
        warnings.append(f"{gap}; restored to revision {proven.last_revision} (--allow-gap)")
        wanted = proven.last_revision
    path = tuple(found[m.object_key] for m in proven.path if m.first_revision <= wanted)
    seen = ((path[-1].manifest.first_change_at, path[-1].manifest.last_change_at) if path
            else (base.created_at, base.created_at))
    notes += chain_notes + [finding.reason for finding in proven.findings
                            if finding not in proven.holes]
    # from every backup, whichever REF named: the base's snapshot may have passed the target
    before = _earlier(view, every)
    histories = {base.etcd.cluster_id, newest_history}
    newest = newest_seen([v for v in views if v.manifest.etcd.cluster_id in histories],
                         journal.chains)
    return PointPlan(base, proven, path, wanted, seen, tuple(notes), tuple(warnings), target,
                     newest, before.manifest.id if before else None)


def _before(view: BackupView, target: PointTarget) -> bool:
    if target.revision is not None:
        return view.manifest.etcd.revision <= target.revision
    if target.at is not None:
        return view.manifest.created_at <= target.at
    return True


def _choose(
    candidates: list[BackupView], chains: dict[str, ChainView], target: PointTarget,
    newest_history: str,
) -> tuple[BackupView, str | None]:
    """The candidate base (newest first) whose chain serves the target, and a note saying
    which history it is of when the candidates are of several etcd cluster IDs."""
    histories = list(dict.fromkeys(
        [newest_history, *(view.manifest.etcd.cluster_id for view in candidates)]))
    if target.revision is not None:
        # revisions of two histories are not comparable: the newest backup's history first
        ordered = sorted(candidates, key=lambda view: histories.index(
            view.manifest.etcd.cluster_id))
        reaches = [(view, _reach(view, chains)) for view in ordered]
        # the newest base that covers it needs the least replay
        view = next((view for view, reach in reaches if reach >= target.revision), None)
        if view is None:
            looked = reaches[0][0].manifest.etcd.cluster_id  # the history looked at first
            newest = max(reach for view, reach in reaches
                         if view.manifest.etcd.cluster_id == looked)
            raise UsageError(
                f"revision {target.revision} is after the newest journaled revision {newest}"
                + (f" of etcd cluster ID {looked} (the backups are of {len(histories)}: a "
                   "restore of the cluster starts a new history)" if len(histories) > 1
                   else ""),
                "give a revision up to it, or 'latest'",
            )
    elif target.at is not None:
        view = candidates[0]
    else:
        view = max(candidates, key=lambda view: _newest_point(view, chains))
    if len(histories) == 1:
        return view, None
    used = view.manifest.etcd.cluster_id
    other = target.revision is not None and used != newest_history
    return view, (
        f"the backups are of {len(histories)} etcd cluster IDs (a restore of the cluster starts "
        f"a new history; revisions of two histories are not comparable): the base is of the "
        f"history of cluster ID {used}"
        + (f", not the newest backup's ({newest_history}), whose chains do not reach revision "
           f"{target.revision}" if other else ""))


def _earlier(view: BackupView, candidates: list[BackupView]) -> BackupView | None:
    """The candidate taken just before view, of the same history (candidates: newest first)."""
    older = candidates[candidates.index(view) + 1:]
    same = [c for c in older if c.manifest.etcd.cluster_id == view.manifest.etcd.cluster_id]
    return same[0] if same else None


def _reach(view: BackupView, chains: dict[str, ChainView]) -> int:
    """The furthest revision a backup's chain names in any store (holes or not: a target past
    a hole is refused as such), or the backup's own."""
    chain = chains.get(view.manifest.id)
    listed = chain.listed_last_revision if chain else None
    return max(view.manifest.etcd.revision, listed or 0)


def _newest_point(view: BackupView, chains: dict[str, ChainView]) -> datetime:
    """When the newest change a backup's chain proves was seen; the backup's own time when
    its chain holds none (or that change's manifest cannot be read)."""
    chain = chains.get(view.manifest.id)
    seen = chain.last_change_at if chain else None
    return max(view.manifest.created_at, seen or view.manifest.created_at)


def chain_copies(
    config: Config, stores: Stores, base_id: str
) -> tuple[dict[str, Copies], list[str]]:
    """Every segment of one chain in any store, by object key, with the stores that hold the
    same manifest; and a note for each store or manifest that could not be read."""
    found: dict[str, Copies] = {}
    notes: list[str] = []
    for name in stores:
        try:
            manifests, damaged = chain_manifests(stores[name], config.cluster, base_id)
        except StorageError as exc:
            notes.append(f"the {name} store's journal could not be listed ({exc.message})")
            continue
        notes += [exc.message for exc in damaged]
        for manifest in manifests:
            held = found.get(manifest.object_key)
            if held is None:
                found[manifest.object_key] = Copies(manifest, (name,))
            elif held.manifest == manifest:
                found[manifest.object_key] = Copies(manifest, (*held.stores, name))
            else:
                notes.append(f"the {name} store's manifest of {manifest.name} differs from the "
                             f"{held.stores[0]} store's: not read")
    return found, notes


def _wanted(base: Manifest, manifests: list[SegmentManifest], target: PointTarget) -> int:
    """The revision a target asks for."""
    if target.revision is not None:
        return target.revision
    ends = [m.last_revision for m in manifests
            if target.at is None or m.last_change_at <= target.at]
    return max([base.etcd.revision, *ends])


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
            raise IntegrityError(f"{gap}; nothing was restored", _GAP_HINT)
        self.warnings.append(f"{gap}; restored to revision {self.reached} (--allow-gap)")
        return None
