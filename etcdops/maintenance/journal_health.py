"""`etcdops health`'s journal rows: how far the journal is behind etcd, whether the newest
chain has a hole, and whether the chains of the last keep_within leave points in time that no
restore can reach.

Health reads the stores and etcd, never the journal process: a journal that is stopped, stuck
or elsewhere shows as what its segments prove. The chains are read where the journal finds its
base (etcdops.journal.base: the primary, else the local store) and by the segments' names
alone, one listing per chain and one manifest read for the newest change's time, so that health
stays fast on S3 with an hour's 720 segments per chain. Names say which revisions a segment
holds, not that its bytes are good: a restore checks every manifest and byte
(etcdops.journal.chain, etcdops.restore.point); a drill proves them.

The rows appear when the journal is in use: a node holds its election key, or a chain of the
last keep_within holds a segment.

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

from etcdops.backup.catalog import CatalogEntry, Survey
from etcdops.config import Config
from etcdops.errors import EtcdopsError
from etcdops.etcd.election import election_key
from etcdops.etcd.session import EtcdSession
from etcdops.journal.base import BASE_STORES, Base, base_of, newest_verified
from etcdops.journal.manifest import MANIFEST_SUFFIX, SegmentManifest, chain_prefix, revisions_of
from etcdops.maintenance.check import FAIL, OK, WARN, Check
from etcdops.stores.base import Store
from etcdops.stores.configured import Stores
from etcdops.units import format_duration

SUBJECT = "journal"
# how often a lagging chain is listed again while health waits for it
POLL_EVERY = 0.5


def _row(name: str, value: str, target: str, verdict: str) -> Check:
    return Check(SUBJECT, name, value, target, verdict)


@dataclass(frozen=True)
class ChainReach:
    """How far one base's chain reaches in a store, as its segments' names say."""

    base: Base
    last_revision: int  # every revision after the base's up to it is in a segment
    segments: int  # segments on that path
    hole: tuple[int, int] | None  # the first revisions in no segment, with segments after them
    newest_key: str | None  # the manifest key of the path's last segment

    @property
    def journaled(self) -> bool:
        return self.segments > 0


def chain_reach(store: Store, cluster: str, base: Base) -> ChainReach:
    """One listing of a chain: the revisions its segments cover without a hole."""
    spans = sorted(
        (*revisions_of(info.key), info.key)
        for info in store.list(chain_prefix("", cluster, base.backup_id))
        if info.key.endswith(MANIFEST_SUFFIX)  # a segment exists once its manifest does
    )
    reach, segments, newest, hole = base.revision, 0, None, None
    for first, last, key in spans:
        if first > reach + 1:
            hole = (reach + 1, first - 1)
            break
        if last > reach:  # a segment inside the path so far adds nothing
            reach, segments, newest = last, segments + 1, key
    return ChainReach(base, reach, segments, hole, newest)


def check_journal(
    session: EtcdSession, config: Config, stores: Stores, found: Survey, now: datetime, *,
    wait: bool = True,
) -> list[Check]:
    """The journal's rows of `etcdops health`; none when the journal is not in use."""
    try:
        held, revision = session.get_prefix(election_key(config.cluster, "journal"))
        unread = None
    except EtcdopsError as exc:  # the cluster rows say why; the lag cannot be measured
        held, revision, unread = [], 0, exc.message
    seen_at, looked = datetime.now(UTC), time.monotonic()
    place = _base_store(stores, found)
    if place is None:
        return [_row("lag", "no verified backup in the primary or local store to journal from",
                    "a base backup", FAIL)] if held else []
    name, entries = place
    store = stores[name]
    bases = _window_bases(entries, now - timedelta(seconds=config.retention.keep_within))
    try:
        reaches = [chain_reach(store, config.cluster, base) for base in bases]
        if not held and not any(reach.journaled for reach in reaches):
            return []
        if unread is not None:
            lag = _row("lag", f"etcd's revision could not be read: {unread}", "readable", FAIL)
        else:
            lag = _Lag(store, config, name, revision, seen_at, looked).row(reaches, wait)
        return [lag, _newest_chain(reaches[-1]), *_gaps(store, reaches)]
    except EtcdopsError as exc:
        return [_row("chains", f"the {name} store's journal cannot be read: {exc.message}",
                    "readable", FAIL)]


def _base_store(stores: Stores, found: Survey) -> tuple[str, list[CatalogEntry]] | None:
    """The store the journal takes its base from, and its copies; None when none has one."""
    for name in BASE_STORES:
        if name not in stores or name in found.unreachable:
            continue
        entries = [view.entries[name] for view in found.backups if name in view.entries]
        if newest_verified(entries) is not None:
            return name, entries
    return None


def _window_bases(entries: list[CatalogEntry], since: datetime) -> list[Base]:
    """The verified bases created since the window's start, and the newest one, oldest first."""
    newest = newest_verified(entries)
    assert newest is not None
    bases = {e.manifest.id: base_of(e.manifest) for e in entries
             if e.verified and e.manifest is not None and e.manifest.created_at >= since}
    bases[newest.backup_id] = newest
    return sorted(bases.values(), key=lambda b: (b.revision, b.created_at))


class _Lag:
    """The lag row: etcd's revision against the chains' reach, looked at again if it seems
    behind (a quiet cluster's first write)."""

    def __init__(self, store: Store, config: Config, name: str, revision: int,
                 seen_at: datetime, looked: float) -> None:
        self.store, self.cluster, self.name = store, config.cluster, name
        self.revision, self.seen_at, self.looked = revision, seen_at, looked
        self.target = config.journal.rpo_target
        self.goal = f"<= {format_duration(self.target)} ([journal] rpo_target)"

    def row(self, reaches: list[ChainReach], wait: bool) -> Check:
        furthest = _furthest(reaches)
        if furthest.last_revision >= self.revision:
            return _row("lag", f"0s: etcd's revision {self.revision} is journaled "
                       f"(chain {furthest.base.backup_id} in {self.name})", self.goal, OK)
        lag = self._behind(furthest, self.seen_at)
        if lag <= self.target or not wait:
            return self._behind_row(furthest, lag)
        # looked at again: the chains of the furthest and of the newest base
        watched = {reach.base for reach in (furthest, reaches[-1])}
        deadline = self.looked + self.target
        while time.monotonic() < deadline:
            time.sleep(POLL_EVERY)
            furthest = _furthest([chain_reach(self.store, self.cluster, b) for b in watched])
            if furthest.last_revision >= self.revision:
                waited = time.monotonic() - self.looked
                return _row("lag", f"{format_duration(waited)}: etcd's revision {self.revision} "
                           f"was journaled {format_duration(waited)} after health read it; the "
                           f"change before it had been seen {format_duration(lag)} earlier (a "
                           "quiet cluster)", self.goal, OK)
        return self._behind_row(furthest, self._behind(furthest, datetime.now(UTC)))

    def _behind(self, reach: ChainReach, at: datetime) -> float:
        """How long ago the journal saw the newest change the chain holds."""
        return max((at - _newest_change(self.store, reach)).total_seconds(), 0.0)

    def _behind_row(self, reach: ChainReach, lag: float) -> Check:
        value = (f"{format_duration(lag)}: etcd is at revision {self.revision}, the {self.name} "
                 f"store's journal at {reach.last_revision} (chain {reach.base.backup_id}), "
                 f"its newest change seen {format_duration(lag)} ago")
        return _row("lag", value, self.goal, OK if lag <= self.target else FAIL)


def _furthest(reaches: list[ChainReach]) -> ChainReach:
    # the point `restore latest` reaches: the chain that reaches furthest, whatever its base
    return max(reaches, key=lambda r: (r.last_revision, r.base.revision))


def _newest_change(store: Store, reach: ChainReach) -> datetime:
    """When the journal saw the newest change a chain holds; the base's creation if none."""
    if reach.newest_key is None:
        return reach.base.created_at
    data = store.get_bytes(reach.newest_key)
    return SegmentManifest.from_json(data, store.describe(reach.newest_key)).last_change_at


def _newest_chain(reach: ChainReach) -> Check:
    target = "no hole in the newest chain"
    chain = f"chain {reach.base.backup_id}"
    if reach.hole is not None:
        first, last = reach.hole
        return _row("chain", f"{chain}: no segment holds revisions {first} to {last}: it proves "
                   f"revisions only up to {first - 1}", target, FAIL)
    if not reach.journaled:
        return _row("chain", f"{chain}: no segment yet (its base at revision "
                   f"{reach.base.revision})", target, OK)
    return _row("chain", f"{chain}: {reach.segments} segments, revisions "
               f"{reach.base.revision + 1} to {reach.last_revision}", target, OK)


def _gaps(store: Store, reaches: list[ChainReach]) -> list[Check]:
    """A warning for each run of revisions no chain holds, between the first chain of the
    window and the newest: the points in time there cannot be restored."""
    target = "chains meet (within keep_within)"
    first = next((i for i, reach in enumerate(reaches) if reach.journaled), None)
    if first is None:
        return []
    covered, rows = reaches[first], []
    for reach in reaches[first + 1:]:
        if reach.base.revision > covered.last_revision + 1:
            ended = _when(_newest_change(store, covered))
            rows.append(_row(
                "chains",
                f"revisions {covered.last_revision + 1} to {reach.base.revision - 1} are in no "
                f"chain: chain {covered.base.backup_id} ends at {ended}, the next starts at "
                f"backup {reach.base.backup_id} ({_when(reach.base.created_at)}); no point in "
                "time between them can be restored", target, WARN))
        if reach.last_revision > covered.last_revision:
            covered = reach
    count = len(reaches) - first
    return rows or [_row("chains", f"{count} chain{'s' if count > 1 else ''} since backup "
                        f"{reaches[first].base.backup_id}, no gap", target, OK)]


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"

