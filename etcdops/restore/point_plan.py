"""Point-in-time restore, the plan: which base backup and journal segments a target needs
(plan_point), read from the stores' listings and the segments' manifests, no segment body.

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
The plan also knows the newest revision the history's backups and journal name (newest_seen):
what a restore's revision bump must pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from etcdops.backup.catalog import BackupView, resolve_ref
from etcdops.backup.manifest import Manifest, manifest_time
from etcdops.config import Config
from etcdops.errors import IntegrityError, NotFoundError, StorageError, UsageError
from etcdops.journal.chain import ChainWindow, window
from etcdops.journal.manifest import SegmentManifest
from etcdops.journal.store import chain_manifests
from etcdops.journal.windows import ChainView, list_with_chains
from etcdops.report import Reporter
from etcdops.restore.revision import Seen, newest_seen
from etcdops.stores.configured import Stores

GAP_HINT = ("give --allow-gap to restore to the last provable point, or a target before the "
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
            raise IntegrityError(f"{gap}; nothing was restored", GAP_HINT)
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
