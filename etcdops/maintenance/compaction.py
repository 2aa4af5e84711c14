"""Compaction that keeps the last `retain` of history, like etcd's own periodic compactor.

etcd keeps no timestamps, so every run records a sample: it reads the store's revision R, then
the clock T. R existed at T, so once T is `retain` old, compacting to R drops only changes older
than `retain`; compacting to the newest such sample keeps exactly that much history. Writing the
sample itself bumps the revision past R, so the sample key always survives the compaction its
own R will cause. (The key's mod_revision would not do: the put lands after the clock was read,
and a change between the two would be dropped too early.)

The samples live in etcd itself: they survive restarts and a change of the node that runs the
job, and come back consistent with the revisions after a restore. Every sample is its own key
(time and host in the name), so nodes running at once never overwrite each other's, and a run
deletes only samples that can no longer matter.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from etcdops.config import CompactionConfig, Config
from etcdops.etcd.samples import Sample, parse_sample, sample_key, sample_value
from etcdops.etcd.session import EtcdSession
from etcdops.maintenance.quota import nospace_alarms
from etcdops.metrics import job_metrics
from etcdops.units import format_duration

log = logging.getLogger("etcdops.maintenance.compaction")

# one sample per run: with a run a minute and retain 5m there are six; the cap only matters
# for a long retain with frequent runs, and dropping young samples only makes compaction later
MAX_SAMPLES = 100


@dataclass(frozen=True)
class CompactionResult:
    """What a run decided, why, and what it did."""

    retain: float
    current_revision: int
    oldest_revision_before: int
    target_revision: int | None  # the sample's revision chosen, when one was old enough
    compacted: bool
    revisions_dropped: int
    reason: str
    physical: bool
    dry_run: bool
    sample_stored: bool
    samples_deleted: int
    seconds: float
    nospace_alarms: int  # NOSPACE alarms raised when the run began

    def as_dict(self) -> dict[str, object]:
        """The result as `--output json` prints it."""
        return asdict(self)


def choose_sample(samples: list[Sample], now: float, retain: float) -> Sample | None:
    """The newest sample at least retain old: the revision that keeps exactly retain of history."""
    old_enough = [s for s in samples if now - s.time >= retain]
    return max(old_enough, key=lambda s: s.revision, default=None)


def obsolete_samples(samples: list[Sample], chosen: Sample | None) -> list[Sample]:
    """Stored samples no later run needs: older than the chosen one, or beyond MAX_SAMPLES."""
    stored = sorted((s for s in samples if s.key is not None), key=lambda s: s.revision)
    # a later run picks the chosen sample or a newer one, never an older one
    floor = chosen.revision if chosen is not None else 0
    keep = [s for s in stored if s.revision >= floor]
    if len(keep) > MAX_SAMPLES:
        # the oldest kept sample is the next to be chosen: thin out the ones after it
        keep = [keep[0], *keep[-(MAX_SAMPLES - 1):]]
    return [s for s in stored if s not in keep]


def compact(
    session: EtcdSession,
    config: CompactionConfig,
    *,
    retain: float | None = None,
    dry_run: bool = False,
    physical: bool = False,
    clock: Callable[[], float] = time.time,
    host: str | None = None,
    metrics: Config | None = None,
) -> CompactionResult:
    """Compact to the newest revision at least retain old, then sample; a no-op says why.
    With metrics (the cluster's configuration) the run is recorded, unless it is a dry run."""
    run = functools.partial(
        _compact, session, config, retain=retain, dry_run=dry_run, physical=physical,
        clock=clock, host=host,
    )
    if metrics is None or dry_run:
        return run()
    with job_metrics(metrics, "compaction") as recorded:
        result = run()
        # the oldest revision etcd keeps now
        compacted = result.target_revision if result.compacted else None
        recorded.set("revision", compacted or result.oldest_revision_before)
        recorded.set("nospace_alarms", result.nospace_alarms)
        return result


def _compact(
    session: EtcdSession,
    config: CompactionConfig,
    *,
    retain: float | None,
    dry_run: bool,
    physical: bool,
    clock: Callable[[], float],
    host: str | None,
) -> CompactionResult:
    started = time.monotonic()
    retain = config.retain if retain is None else retain
    prefix = config.prefix.encode()
    nospace = len(nospace_alarms(session.alarms()))
    kvs, current = session.get_prefix(prefix)
    now = clock()  # after the read: revision `current` certainly existed at this moment
    stored = [s for s in map(parse_sample, kvs) if s is not None]
    # this run's own moment counts too (it is only old enough with retain 0)
    samples = [*stored, Sample(now, current, None)]
    chosen = choose_sample(samples, now, retain)
    oldest = oldest_revision(session, current)
    target = chosen.revision if chosen else None
    compacted = False
    if chosen is None:
        reason = _too_young(samples, now, retain)
    elif chosen.revision <= oldest:
        reason = f"nothing to do: etcd keeps no history before revision {oldest} already" + (
            " (compacted by another run or by kube-apiserver)" if oldest > 1 else ""
        )
    elif dry_run:
        reason = f"would compact to revision {chosen.revision}, dropping {chosen.revision - oldest}"
    else:
        compacted = session.compact(chosen.revision, physical=physical, timeout=config.timeout)
        reason = (
            f"compacted to revision {chosen.revision}, the newest sample at least "
            f"{format_duration(retain)} old (taken {format_duration(now - chosen.time)} ago)"
            if compacted
            else "nothing to do: etcd compacted past that revision while this run was deciding"
        )
    sample_stored = not dry_run and not nospace
    if sample_stored:
        # written after the compaction: its commit is also when bbolt reuses the pages the
        # compaction freed, so a defragmentation right after sees them as free
        sample = Sample(now, current, sample_key(prefix, now, host or socket.gethostname()))
        session.put_many([(sample.key, sample_value(sample))])
        stored.append(sample)
    obsolete = [] if dry_run else obsolete_samples(stored, chosen)
    if obsolete:
        session.delete_keys([s.key for s in obsolete if s.key is not None])
    if nospace:
        reason += "; no sample stored: etcd has a NOSPACE alarm and refuses writes"
    log.info("%s", reason)
    return CompactionResult(
        retain=retain,
        current_revision=current,
        oldest_revision_before=oldest,
        target_revision=target,
        compacted=compacted,
        revisions_dropped=(target - oldest) if compacted and target else 0,
        reason=reason,
        physical=physical,
        dry_run=dry_run,
        sample_stored=sample_stored,
        samples_deleted=len(obsolete),
        seconds=time.monotonic() - started,
        nospace_alarms=nospace,
    )


def oldest_revision(session: EtcdSession, current: int) -> int:
    """The oldest revision etcd still keeps (1 until the first compaction)."""
    # etcd 3.5 does not report its compaction revision over gRPC; a read at a revision fails
    # exactly when that revision was compacted away, so bisect on that (about 30 tiny reads)
    unreadable, oldest = 0, current
    while oldest - unreadable > 1:
        middle = (unreadable + oldest) // 2
        if session.readable_at(middle):
            oldest = middle
        else:
            unreadable = middle
    return oldest


def _too_young(samples: list[Sample], now: float, retain: float) -> str:
    oldest = min(samples, key=lambda s: s.time)
    return (
        f"nothing to do: no sample is {format_duration(retain)} old yet (the oldest was taken "
        f"{format_duration(max(0.0, now - oldest.time))} ago); a run after "
        f"{format_duration(retain - (now - oldest.time))} more can compact"
    )
