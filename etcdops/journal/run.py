"""`etcdops journal run`: etcd's changes, followed for good and stored as segments between backups.

One journal per cluster: the run holds the election key /etcdops/periods/<cluster>/journal
(etcdops.etcd.election) under a lease kept alive for as long as it journals; a node that finds
the key held waits, looking again every third of the TTL, and takes over once it is free (its
holder stopped, or died and its lease expired).

A chain extends one full backup (etcdops.journal.base): the run watches every key from the
chain's reach + 1 and cuts a segment once its oldest change is `interval` old or it holds
`max_bytes`, whichever comes first; an interval without a change writes nothing. Each segment
follows the previous one's last revision, is sealed once and goes to every store through the
Publisher (etcdops.journal.publish), which never lets one store hold up another or the watch.

A new chain starts (and why is logged, counted and reported):
- no verified full backup exists: one is taken first ("no-backup");
- the watch reports its revision compacted ("compacted"), or the journal fell further behind
  than max_lag ("lag"): a full backup is taken at once, and the chain starts after it; the
  journal's election key is what makes this node the one to take it;
- a newer verified full backup appears (the hourly one; the catalogue is read about once a
  minute): the open chain goes on until it reaches that backup's revision, so that the chains
  meet without a gap, then the new chain starts after it ("new-backup");
- the chain holds max_chain_revisions: a full backup is taken on a thread beside the watch, and
  the chain goes on to its revision as to the hourly one's ("long"). A point-in-time restore
  replays one revision at a time, so the chain's length is what bounds its time (the hourly
  backup alone would leave an hour of a busy cluster's writes to replay, more than the 5-minute
  restore target allows);
- etcd serves another history than the chain's: the cluster was restored (a new cluster token
  gives a new cluster ID, usually at a lower revision than the old chains reach). A chain only
  ever extends a base of the cluster ID etcd answers with (etcdops.journal.base): the newest
  such base, else a full backup taken at once ("restored"). Resuming an old chain would watch
  from past the restored cluster's revision, wait until the new history got there, and append
  its changes to the old history's chain, the changes in between never journaled.
etcd's cluster ID and revision are read before every watch (at the start, and after etcd was
unreachable). Under the chain's own cluster ID a revision below what the chain already holds
cannot happen unless the cluster was restored under its old token, or the stores hold another
cluster's journal: the run refuses to go on (IntegrityError) rather than mix two histories.

A stop (SIGTERM: the stop event) cuts and publishes the open segment, waits for the stores to
take what they were given ([schedule] stop_timeout at most), and releases the key. A SIGKILL
loses at most the open segment: a segment is listed only once its manifest, written last, is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from etcdops.backup.manifest import etcd_id
from etcdops.backup.save import save_snapshot
from etcdops.config import Config
from etcdops.crypto.keys import configured_recipients
from etcdops.errors import EtcdopsError, EtcdUnavailableError, IntegrityError
from etcdops.etcd.election import Holder, Taken, Term, election_key
from etcdops.etcd.watch import HistoryChanged, Revision, WatchCompacted
from etcdops.journal.base import (
    BackgroundSave,
    Base,
    base_of,
    newest_base,
    not_shared,
    resume_point,
)
from etcdops.journal.publish import Publisher, StoreCounts
from etcdops.journal.report import ChainStart, JournalReport
from etcdops.journal.segment import SegmentBuffer
from etcdops.journal.store import seal
from etcdops.metrics import job_metrics
from etcdops.report import Reporter
from etcdops.stores.configured import Stores, open_stores
from etcdops.units import format_duration

if TYPE_CHECKING:
    from etcdops.crypto.age import Recipient
    from etcdops.etcd.kv import History
    from etcdops.etcd.session import EtcdSession
    from etcdops.etcd.watch import ChangeStream

log = logging.getLogger("etcdops.journal")

# how often the catalogue is read for a newer full backup, and a summary line logged
CATALOGUE_EVERY = 60.0
SUMMARY_EVERY = 60.0
# pause before a failed full backup or an unreachable etcd is tried again
RETRY_PAUSE = 5.0


@dataclass
class _Chain:
    base: Base
    follows: int  # the last revision stored: the next segment's previous_revision


class _Ended(Exception):
    """The open chain ends: a new one starts from a new base (or the run stops)."""

    def __init__(self, reason: str, base: Base | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.base = base


def run_journal(
    config: Config, reporter: Reporter, *, stop: threading.Event, stores: Stores | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    catalogue_every: float = CATALOGUE_EVERY, summary_every: float = SUMMARY_EVERY,
) -> JournalReport:
    """Journal etcd's changes until stop is set, holding the cluster's journal key meanwhile."""
    from etcdops.etcd.session import EtcdSession

    stores = stores or open_stores(config)
    stores.open()
    recipients = configured_recipients(config.encryption)  # a key problem stops it here
    report = JournalReport()
    with EtcdSession(config.etcd) as session:
        while not stop.is_set():
            term = _elected(session, config, stop, report)
            if term is None:
                break
            journal = _Journal(config, reporter, session, stores, recipients, stop, report,
                               clock, catalogue_every, summary_every)
            try:
                journal.run(term)
            finally:
                report.released = term.let_go()
    return report


def _elected(
    session: EtcdSession, config: Config, stop: threading.Event, report: JournalReport
) -> Term | None:
    """The journal key, once this node holds it; None when stopped first."""
    key = election_key(config.cluster, "journal")
    ttl = config.schedule.election_ttl
    holder = None
    while not stop.is_set():
        try:
            got = session.campaign(key, Holder.me(datetime.now(UTC)).to_json(), ttl,
                                   on_lost=lambda why: log.warning("journal: %s", why))
        except EtcdopsError as exc:
            log.warning("journal: the election could not be asked: %s", exc.message)
            stop.wait(ttl / 3)
            continue
        if isinstance(got, Term):
            if holder is not None:
                log.info("journal: %s no longer holds %s: taking over", holder, key.decode())
            return got
        assert isinstance(got, Taken)
        who = Holder.from_json(got.value)
        if holder != who.who:
            holder = report.waited_for = who.who
            log.info("journal: %s is journaling cluster %s%s; waiting to take over",
                     who.who, config.cluster, who.since)
        stop.wait(ttl / 3)
    return None


class _Journal:
    """One term's journaling: chain after chain until the stop or the key's loss."""

    def __init__(
        self, config: Config, reporter: Reporter, session: EtcdSession, stores: Stores,
        recipients: Sequence[Recipient], stop: threading.Event, report: JournalReport,
        clock: Callable[[], datetime], catalogue_every: float, summary_every: float,
    ) -> None:
        self.config, self.journal = config, config.journal
        self.reporter, self.session, self.stores = reporter, session, stores
        self.recipients, self.stop, self.report, self.clock = recipients, stop, report, clock
        self.catalogue_every, self.summary_every = catalogue_every, summary_every
        self.publisher: Publisher | None = None
        self.term: Term | None = None
        self.chain_counts: dict[str, int] = {}
        self.summarized: dict[str, StoreCounts] = {}
        self.lag = 0.0
        self.current_at = time.monotonic()  # when the watch last confirmed it had everything
        self.long_backup: BackgroundSave | None = None
        self.long_backup_after = 0.0  # a failed one is tried again from then on

    def run(self, term: Term) -> None:
        self.term = term
        self.publisher = Publisher(self.stores)
        self.report.stores = self.publisher.counts
        self.next_summary = time.monotonic() + self.summary_every
        try:
            chain = self._first_chain()
            while chain is not None and not self._over():
                chain = self._follow(chain)
        finally:
            if self.long_backup is not None and self.long_backup.running:
                log.info("journal: waiting for the full backup of the long chain to finish")
                self.long_backup.wait(self.config.schedule.stop_timeout)
                if self.long_backup.running:
                    log.warning("journal: the full backup of the long chain did not finish "
                                "within [schedule] stop_timeout and is abandoned: what it "
                                "wrote is left to 'etcdops snapshot prune'")
            left = self.publisher.drain(self.config.schedule.stop_timeout)
            self.publisher.close()
            self.report.unpublished = left
            for name, count in left.items():
                log.warning("journal: %d segments were not stored in the %s store before the "
                            "stop; the next run copies them there", count, name)
            self._summary(final=True)

    def _over(self) -> bool:
        return self.stop.is_set() or (self.term is not None and self.term.lost is not None)

    def _first_chain(self) -> _Chain | None:
        watched = self._watched()
        return None if watched is None else self._chain_of(watched)

    def _watched(self) -> History | None:
        """etcd's cluster ID and revision, asked until it answers; None when the run ends."""
        while not self._over():
            try:
                return self.session.history()
            except EtcdUnavailableError as exc:
                log.warning("journal: %s; asking again in %s", exc.message,
                            format_duration(RETRY_PAUSE))
                self.stop.wait(RETRY_PAUSE)
        return None

    def _chain_of(self, watched: History, previous: Base | None = None) -> _Chain | None:
        """The chain of the history etcd serves: its newest base's (resumed after the segments
        stored), else one from a full backup taken now. previous: the base of the chain this
        run followed until etcd answered with another cluster ID."""
        cluster_id = etcd_id(watched.cluster_id)
        base = newest_base(self.stores, self.config.cluster, cluster_id)
        other = previous or (newest_base(self.stores, self.config.cluster) if base is None
                             else None)
        if other is not None:
            log.warning("journal: the cluster was restored (cluster ID %s, the base %s's %s): "
                        "a new chain from %s", cluster_id, other.backup_id, other.cluster_id,
                        f"backup {base.backup_id}" if base else "a new backup")
        if base is None:
            return self._new_chain("restored" if other else "no-backup")
        resume = resume_point(self.stores, self.config.cluster, base)
        assert self.publisher is not None
        for name, manifests in resume.owed.items():
            log.info("journal: the %s store lacks %d segments of chain %s: copying them",
                     name, len(manifests), base.backup_id)
            self.publisher.owe(name, manifests)
        reason = "restored" if previous else "resumed" if resume.segments else "base"
        return self._started(base, resume.reach, reason)

    def _new_chain(self, reason: str, base: Base | None = None) -> _Chain | None:
        """A chain from base, or from a full backup taken now (retried until the stop)."""
        while base is None:
            if self._over():
                return None
            log.info("journal: taking a full backup to start a new chain (%s)", reason)
            try:
                saved = save_snapshot(self.config, self.reporter, stores=self.stores)
            except EtcdopsError as exc:
                log.warning("journal: the full backup failed; trying again in %s: %s",
                            format_duration(RETRY_PAUSE), exc.message)
                self.stop.wait(RETRY_PAUSE)
                continue
            base = base_of(saved.manifest)
            problem = not_shared(saved, self.stores)
            if problem is not None:
                # not taken again until the shared store has it: retried every few seconds, a
                # full backup each time would fill this host's disk while that store is down
                log.warning("journal: the new chain's base %s: until a newer backup reaches "
                            "that store, the chain can be replayed only from the stores that "
                            "hold its base", problem)
        return self._started(base, base.revision, reason)

    def _started(self, base: Base, follows: int, reason: str) -> _Chain:
        start = ChainStart(base.backup_id, base.revision, follows + 1, reason, self.clock(),
                           base.cluster_id)
        self.report.chains.append(start)
        self.chain_counts[reason] = self.chain_counts.get(reason, 0) + 1
        self.current_at = time.monotonic()  # a new base: nothing after it is missing yet
        log.info("journal: chain %s (revision %d) from revision %d: %s", base.backup_id,
                 base.revision, follows + 1, _REASONS[reason])
        return _Chain(base, follows)

    def _follow(self, chain: _Chain) -> _Chain | None:
        """Watch and cut segments of one chain until it ends; the chain that follows it."""
        interval = self.journal.interval
        buffer = SegmentBuffer(self.clock)
        opened_at = 0.0  # when the open segment got its first change
        checked_at = time.monotonic()
        switch: tuple[Base, str] | None = None  # the base the chain goes on to, and why
        watched = self._watched()
        if watched is None:
            return None
        if etcd_id(watched.cluster_id) != chain.base.cluster_id:
            return self._chain_of(watched, chain.base)
        if watched.revision < chain.follows:
            raise IntegrityError(
                f"etcd (cluster ID {chain.base.cluster_id}) is at revision {watched.revision}, "
                f"but chain {chain.base.backup_id} of that cluster ID already holds revisions "
                f"up to {chain.follows}: its history went back under the same cluster ID",
                "a cluster restored under its old --initial-cluster-token, or another "
                "cluster's journal in these stores: restore with a new token (etcdops restore "
                "makes one), or give this cluster a `cluster` name of its own",
            )
        try:
            stream = self.session.changes(chain.follows + 1, progress_every=interval / 2,
                                          cluster_id=watched.cluster_id)
        except WatchCompacted:
            return self._new_chain("compacted")
        done = threading.Event()
        closer = threading.Thread(target=self._close_when_over, args=(stream, done),
                                  name="journal-watch-closer", daemon=True)
        closer.start()
        try:
            with stream:
                for item in stream:
                    now = time.monotonic()
                    if isinstance(item, Revision):
                        if not buffer.revisions:
                            opened_at = now
                            log.debug("journal: a segment opens at revision %d", item.revision)
                        buffer.add(item)
                    else:
                        self.current_at = now
                    if buffer.revisions and (buffer.size >= self.journal.max_bytes
                                             or now - opened_at >= interval):
                        buffer = self._cut(chain, buffer)
                    oldest = opened_at if buffer.revisions else now
                    self.lag = now - min(self.current_at, oldest)
                    if self.lag > self.journal.max_lag:
                        raise _Ended("lag")
                    reached = buffer.last_revision or chain.follows
                    if switch is None and now - checked_at >= self.catalogue_every:
                        checked_at = now
                        newer = self._newer_base(chain)
                        switch = (newer, "new-backup") if newer else None
                    if switch is None:
                        long = self._long_chain_base(chain, reached, now)
                        switch = (long, "long") if long else None
                    if switch is not None and reached >= switch[0].revision:
                        raise _Ended(switch[1], switch[0])
                    if now >= self.next_summary:
                        self._summary()
        except WatchCompacted as exc:
            self._cut(chain, buffer)
            log.warning("journal: %s", exc.message)
            return self._new_chain("compacted")
        except HistoryChanged as exc:
            self._cut(chain, buffer)
            log.warning("journal: %s; watching again in %s", exc.message,
                        format_duration(RETRY_PAUSE))
            # endpoints of two clusters would otherwise turn this into a loop of watches
            self.stop.wait(RETRY_PAUSE)
            return chain  # the next watch finds the new history's chain
        except EtcdUnavailableError as exc:
            self._cut(chain, buffer)
            log.warning("journal: %s; watching again in %s", exc.message,
                        format_duration(RETRY_PAUSE))
            self.stop.wait(RETRY_PAUSE)
            return chain
        except _Ended as ended:
            self._cut(chain, buffer)
            if ended.base is None:
                return self._new_chain(ended.reason)
            return self._started(ended.base, ended.base.revision, ended.reason)
        finally:
            done.set()
        # the stream ended: stopped, or the key was lost
        self._cut(chain, buffer)
        if self.term is not None and self.term.lost is not None and not self.stop.is_set():
            log.warning("journal: the journal key was lost; electing again")
        return None

    def _close_when_over(self, stream: ChangeStream, done: threading.Event) -> None:
        # the watch blocks its reader: a stop or a lost key must end it from another thread
        while not done.wait(0.2):
            if self._over():
                stream.close()
                return

    def _cut(self, chain: _Chain, buffer: SegmentBuffer) -> SegmentBuffer:
        """Seal and queue the open segment (if it holds anything); a new, empty buffer."""
        if not buffer.revisions:
            return buffer
        assert self.publisher is not None and buffer.last_revision is not None
        sealed = seal(buffer, cluster=self.config.cluster, base_backup_id=chain.base.backup_id,
                      follows=chain.follows, recipients=self.recipients,
                      level=self.config.local.compression_level, clock=self.clock)
        self.publisher.submit(sealed)
        chain.follows = buffer.last_revision
        report = self.report
        report.segments += 1
        report.revisions += buffer.revisions
        report.events += buffer.events
        report.last_revision = buffer.last_revision
        log.debug("journal: cut %s (%d changes, %d bytes stored)", sealed.manifest.name,
                  buffer.events, sealed.manifest.object_size)
        return SegmentBuffer(self.clock)

    def _newer_base(self, chain: _Chain) -> Base | None:
        # of the chain's history only: an old history's base reaches further, not later
        newest = newest_base(self.stores, self.config.cluster, chain.base.cluster_id)
        if newest is None or newest.backup_id == chain.base.backup_id:
            return None
        if newest.revision <= chain.base.revision:
            return None
        log.info("journal: a newer full backup %s (revision %d): the chain goes on to it, then "
                 "a new one starts", newest.backup_id, newest.revision)
        return newest

    def _long_chain_base(self, chain: _Chain, reached: int, now: float) -> Base | None:
        """Once the chain holds max_chain_revisions, a full backup taken beside the watch; its
        base once it is saved (None meanwhile, and after a failure until a retry pause)."""
        if reached - chain.base.revision < self.journal.max_chain_revisions:
            return None
        job = self.long_backup
        if job is not None and job.chain != chain.base:
            if job.running:
                return None  # an earlier chain's, still saving: one full backup at a time
            job = self.long_backup = None  # an earlier chain's result: not this chain's base
        if job is None:
            if now < self.long_backup_after:
                return None
            log.info("journal: chain %s holds %d revisions ([journal] max_chain_revisions "
                     "%d): taking a full backup for the next chain", chain.base.backup_id,
                     reached - chain.base.revision, self.journal.max_chain_revisions)
            self.long_backup = BackgroundSave(self.config, self.reporter, self.stores,
                                               chain.base)
            return None
        if job.running:
            return None
        self.long_backup = None
        if (job.base is None or job.base.cluster_id != chain.base.cluster_id
                or job.base.revision <= chain.base.revision):
            log.warning("journal: the full backup for the next chain failed; trying again in "
                        "%s: %s", format_duration(self.catalogue_every),
                        job.problem or "it holds no revision past the chain's base")
            self.long_backup_after = now + self.catalogue_every
            return None
        return job.base

    def _summary(self, *, final: bool = False) -> None:
        """A log line, and the metrics file, for the time since the last summary."""
        assert self.publisher is not None
        self.next_summary = time.monotonic() + self.summary_every
        counts = self.publisher.counts
        line = ", ".join(
            f"{name} {c.published} segments" + (f" ({c.pending} behind: {c.last_error})"
                                                  if c.last_error else "")
            for name, c in counts.items()
        )
        log.info("journal: %d segments, %d changes, up to revision %s, lag %s; %s",
                 self.report.segments, self.report.events, self.report.last_revision,
                 format_duration(self.lag), line)
        try:
            with job_metrics(self.config, "journal", stores=list(self.stores)) as metrics:
                metrics.set("lag_seconds", self.lag)
                metrics.set("rpo_target_seconds", self.journal.rpo_target)
                for name, c in counts.items():
                    before = self.summarized.get(name, StoreCounts())
                    metrics.add("segments_total", c.published - before.published, store=name)
                    metrics.add("written_bytes_total", c.bytes - before.bytes, store=name)
                    if c.last_revision is not None:
                        metrics.set("last_revision", c.last_revision, store=name)
                    if c.last_stored_at is not None:
                        metrics.set("last_segment_timestamp_seconds", c.last_stored_at,
                                    store=name)
                    if c.failures > before.failures or (final and c.pending):
                        metrics.failed(store=name)
                    self.summarized[name] = StoreCounts(**c.as_dict())
                # every reason from the first minute on: increase() sees the first new chain
                for reason in _REASONS:
                    metrics.add("chains_total", self.chain_counts.get(reason, 0), reason=reason)
                self.chain_counts = {}
        except ValueError as exc:  # a declared metric misused: a bug, never the job's failure
            log.warning("journal: metrics not written: %s", exc)


_REASONS = {
    "resumed": "resumed after the segments already stored",
    "base": "the newest verified full backup, no segment stored yet",
    "no-backup": "no verified full backup existed: one was taken",
    "compacted": "etcd compacted the revisions the journal had not read: a full backup was taken",
    "lag": "the journal fell further behind than [journal] max_lag: a full backup was taken",
    "new-backup": "a newer full backup: the chains meet at its revision",
    "long": "the chain held [journal] max_chain_revisions: a full backup was taken beside the "
            "watch, and the chains meet at its revision",
    "restored": "the cluster was restored (a new cluster ID): a chain of its new history",
}
