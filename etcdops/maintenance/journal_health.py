"""`etcdops health`'s journal rows: how far the journal is behind etcd, whether the newest
chain has a hole, and whether the chains of the last keep_within leave points in time that no
restore can reach.

Health reads the stores and etcd, never the journal process: a journal that is stopped, stuck
or elsewhere shows as what its segments prove. The chains are read where the journal finds its
base (etcdops.journal.base: the primary, else the local store) as `snapshot list` reads them
(etcdops.journal.windows: the segments' names, one manifest per chain for its newest change's
time, the windows and holes as a restore finds them, and the gaps between chains), so that
health stays fast on S3 with 720 segments an hour per chain. Names say which revisions a
segment holds, not that its bytes are good: a restore checks every manifest and byte; a drill
proves them.

The rows appear when the journal is in use: a node holds its election key, or a chain holds a
segment. A gap is reported when the next chain's base is of the last keep_within.

Only the history etcd serves is judged: the chains whose base backup has etcd's cluster ID. A
restore of the cluster starts a new history under a new cluster ID, usually at a lower
revision: an old history's chain that reaches past etcd's revision proves nothing of the new
one, and two histories' revisions make no gaps between them. When etcd cannot be read, the
history is that of the newest backup.

The lag: health reads etcd's revision R at time T, then how far the chains reach (C, the
furthest revision any of them proves). C >= R: 0, every change etcd had is stored. Otherwise
the lag is T minus when the journal saw the newest change it stored (the base's creation when
its chain has none yet): the changes after C are at most that old, give or take the moment the
journal takes to see a change. Under steady writes that is the segment interval (5 s) plus the
time to store. A quiet cluster's first write in a while looks old by that measure until the
journal cuts it, so a lag above [journal] rpo_target is looked at again for up to rpo_target:
once the chain holds R the row passes, its value the time R took to be stored after health read
it; if it never does, the row fails with the lag as it stands then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from etcdops.backup.catalog import BackupView, CatalogEntry, Survey
from etcdops.backup.manifest import etcd_id
from etcdops.config import Config
from etcdops.errors import EtcdopsError, StorageError
from etcdops.etcd.election import election_key
from etcdops.etcd.session import EtcdSession
from etcdops.journal.base import BASE_STORES, Base, newest_verified
from etcdops.journal.windows import ChainView, Gap, JournalListing, gaps, list_with_chains
from etcdops.maintenance.check import FAIL, OK, WARN, Check
from etcdops.stores.configured import Stores
from etcdops.units import format_duration

SUBJECT = "journal"
# how often a lagging journal is listed again while health waits for it
POLL_EVERY = 0.5


def _row(name: str, value: str, target: str, verdict: str) -> Check:
    return Check(SUBJECT, name, value, target, verdict)


@dataclass(frozen=True)
class Reach:
    """The furthest point the chains of a store prove, and when the journal saw it."""

    revision: int
    seen_at: datetime  # its change's, or the base's creation when only the base proves it
    base_backup_id: str


def check_journal(
    session: EtcdSession, config: Config, stores: Stores, found: Survey, now: datetime, *,
    wait: bool = True,
) -> list[Check]:
    """The journal's rows of `etcdops health`; none when the journal is not in use."""
    try:
        held, _ = session.get_prefix(election_key(config.cluster, "journal"))
        watched = session.history()
        revision, cluster_id, unread = watched.revision, etcd_id(watched.cluster_id), None
    except EtcdopsError as exc:  # the cluster rows say why; the lag cannot be measured
        held, revision, cluster_id, unread = [], 0, _newest_history(found), exc.message
    seen_at, looked = datetime.now(UTC), time.monotonic()
    place = _base_store(stores, found, cluster_id)
    if place is None:
        return [_row("lag", f"no verified backup of etcd cluster ID {cluster_id} in the "
                     "primary or local store to journal from", "a base backup", FAIL)
                ] if held else []
    name, newest = place
    look = _Look(stores, config.cluster, name, newest)
    try:
        listed = look.listed()
        if not held and not any(chain.journaled for chain in listed.chains.values()):
            return []
        if unread is not None:
            lag = _row("lag", f"etcd's revision could not be read: {unread}", "readable", FAIL)
        else:
            lag = _Lag(look, config, revision, seen_at, looked).row(listed, wait)
    except EtcdopsError as exc:
        return [_row("chains", f"the {name} store's journal cannot be read: {exc.message}",
                     "readable", FAIL)]
    since = now - timedelta(seconds=config.retention.keep_within)
    return [lag, _newest_chain(listed.chains.get(newest.backup_id), newest),
            *_gaps(look.views(listed), look.chains(listed), since)]


def _newest_history(found: Survey) -> str | None:
    """The cluster ID of the newest backup: the history judged when etcd cannot tell."""
    return found.backups[-1].manifest.etcd.cluster_id if found.backups else None


def _base_store(stores: Stores, found: Survey, cluster_id: str | None
                ) -> tuple[str, Base] | None:
    """The store the journal takes its base of the history from, and that base; None when
    none has one."""
    for name in BASE_STORES:
        if name not in stores or name in found.unreachable:
            continue
        entries: list[CatalogEntry] = [
            view.entries[name] for view in found.backups if name in view.entries]
        newest = newest_verified(entries, cluster_id)
        if newest is not None:
            return name, newest
    return None


class _Look:
    """One look at the base store's backups and chains of the newest base's history, as
    `snapshot list` shows them."""

    def __init__(self, stores: Stores, cluster: str, name: str, newest: Base) -> None:
        self.stores, self.cluster, self.name, self.newest = stores, cluster, name, newest

    def views(self, listed: JournalListing) -> list[BackupView]:
        """The backups of the history."""
        return [view for view in listed.listing.survey.backups
                if view.manifest.etcd.cluster_id == self.newest.cluster_id]

    def chains(self, listed: JournalListing) -> dict[str, ChainView]:
        """The chains of the history, by base backup id."""
        of_history = {view.manifest.id for view in self.views(listed)}
        return {base: chain for base, chain in listed.chains.items() if base in of_history}

    def listed(self) -> JournalListing:
        listed = list_with_chains({self.name: self.stores[self.name]}, self.cluster)
        problem = listed.failures.get(self.name)
        if problem is not None:
            raise StorageError(problem)
        return listed

    def reach(self, listed: JournalListing) -> Reach:
        """How far the history is journaled: its chain that reaches furthest, whatever its
        base (the newest base alone when no chain goes past it)."""
        points = [Reach(self.newest.revision, self.newest.created_at, self.newest.backup_id)]
        points += [Reach(c.window.last_revision, c.last_change_at or c.base_created_at,
                         c.base_backup_id) for c in self.chains(listed).values()]
        return max(points, key=lambda point: point.revision)


class _Lag:
    """The lag row: etcd's revision against the chains' reach, looked at again if it seems
    behind (a quiet cluster's first write)."""

    def __init__(self, look: _Look, config: Config, revision: int, seen_at: datetime,
                 looked: float) -> None:
        self.look, self.revision, self.seen_at, self.looked = look, revision, seen_at, looked
        self.target = config.journal.rpo_target
        self.goal = f"<= {format_duration(self.target)} ([journal] rpo_target)"

    def row(self, listed: JournalListing, wait: bool) -> Check:
        reach = self.look.reach(listed)
        if reach.revision >= self.revision:
            return _row("lag", f"0s: etcd's revision {self.revision} is journaled "
                        f"(chain {reach.base_backup_id} in {self.look.name})", self.goal, OK)
        lag = _since(reach, self.seen_at)
        if lag <= self.target or not wait:
            return self._behind(reach, lag)
        deadline = self.looked + self.target
        while time.monotonic() < deadline:
            time.sleep(POLL_EVERY)
            reach = self.look.reach(self.look.listed())
            if reach.revision >= self.revision:
                waited = time.monotonic() - self.looked
                return _row("lag", f"{format_duration(waited)}: etcd's revision {self.revision} "
                            f"was journaled {format_duration(waited)} after health read it; the "
                            f"change before it had been seen {format_duration(lag)} earlier (a "
                            "quiet cluster)", self.goal, OK)
        return self._behind(reach, _since(reach, datetime.now(UTC)))

    def _behind(self, reach: Reach, lag: float) -> Check:
        value = (f"{format_duration(lag)}: etcd is at revision {self.revision}, the "
                 f"{self.look.name} store's journal at {reach.revision} (chain "
                 f"{reach.base_backup_id}), its newest change seen {format_duration(lag)} ago")
        return _row("lag", value, self.goal, OK if lag <= self.target else FAIL)


def _since(reach: Reach, moment: datetime) -> float:
    return max((moment - reach.seen_at).total_seconds(), 0.0)


def _newest_chain(chain: ChainView | None, base: Base) -> Check:
    target = "no hole in the newest chain"
    name = f"chain {base.backup_id}"
    if chain is None or not chain.window.path and not chain.window.holes:
        return _row("chain", f"{name}: no segment yet (its base at revision {base.revision})",
                    target, OK)
    if chain.window.holes:
        hole = chain.window.holes[0]
        return _row("chain", f"{name}: no segment holds revisions {hole.first_revision} to "
                    f"{hole.last_revision}: it proves revisions only up to "
                    f"{hole.first_revision - 1}", target, FAIL)
    return _row("chain", f"{name}: {len(chain.window.path)} segments, revisions "
                f"{base.revision + 1} to {chain.window.last_revision}", target, OK)


def _gaps(views: list[BackupView], chains: dict[str, ChainView], since: datetime
          ) -> list[Check]:
    """A warning for each gap between chains whose next base is of the window: the points
    in time there cannot be restored."""
    target = "chains meet (within keep_within)"
    recent: list[Gap] = [gap for gap in gaps([v for v in views if v.good_in], chains)
                         if gap.until >= since]
    rows = [_row("chains", f"revisions {gap.first_revision} to {gap.last_revision} are in no "
                 f"chain: chain {gap.after} ends at {_when(gap.since)}, the next starts at "
                 f"backup {gap.before} ({_when(gap.until)}); no point in time between them "
                 "can be restored", target, WARN) for gap in recent]
    count = sum(chain.journaled for chain in chains.values())
    return rows or [_row("chains", f"{count} chain{'s' if count != 1 else ''} with segments, "
                         "no gap", target, OK)]


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"
