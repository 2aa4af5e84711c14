"""Throwaway etcd members on loopback booted from a snapshot: the drill's, and the staging etcd
that advances a snapshot's revision when etcdutl cannot (no --bump-revision before 3.5.10).

The staging etcd does what `--bump-revision N --mark-compacted` does, with etcd's own API: it
writes one scratch key N - 1 times and deletes it (N revisions), compacts at the final revision
(a watch from any earlier one is then told it was compacted), and its snapshot, checked against
etcd's trailer, is what every member is restored from. N is the revisions clients may have seen
since the backup (restore/revision.py), and for a point in time the revisions from the point to
the newest one the journal holds besides; a short calibration burst measures how fast this host
writes them, and a gap that would take longer than `[restore] bump_budget` is not written. Its
lessor runs, so every lease is kept alive while it does (a lease that expired would take its
keys with it), and the key count is compared before and after: a staged snapshot that lost
anything is not used.
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from etcdops.config import Config
from etcdops.errors import EtcdopsError, IntegrityError, ToolError
from etcdops.etcd.binaries import etcdutl_supports, find_binary
from etcdops.etcd.etcdutl import run_etcdutl
from etcdops.etcd.local import LOOPBACK, LocalEtcd, free_port
from etcdops.etcd.samples import parse_sample
from etcdops.etcd.session import EtcdSession
from etcdops.report import Reporter
from etcdops.restore.revision import RevisionPlan, Seen, over_budget, staged_plan, write_rate
from etcdops.stores.local import AtomicFile
from etcdops.stream.writers import Search, SnapshotTrailerCheck
from etcdops.units import format_duration

STAGING_NAME = "etcdops-staging"
STAGED_NAME = "staged.db"
# a restored member replays no WAL, but a large database takes a while to open
START_WAIT = 60.0
# an `etcdutl snapshot restore` of an 8 GiB database (the seed's quota) on a slow disk takes
# minutes; an hour means stuck (the staging etcd's and every member's)
ETCDUTL_TIMEOUT = 3600.0
# enough puts to see the host's write speed (a fraction of a second), few enough to be cheap
CALIBRATION_WRITES = 2000
# etcd grants no TTL under 2 s with its default timings: refreshing every half second keeps
# even those, and a thousand leases are one short stream
KEEPALIVE_PERIOD = 0.5
# a compaction of the whole history, or a snapshot of a large database, takes a while
_CALL_TIMEOUT = 300.0
_SCAN_CHUNK = 1 << 20  # may_hold_samples reads the snapshot a MiB at a time: memory stays flat


def throwaway_member(scratch: Path, config: Config, name: str, **flags: object) -> LocalEtcd:
    """A single member on free loopback ports under scratch, under a new cluster token (its
    cluster is its own), with the production quota so that a database as large as
    production's boots; flags are more of etcd's (as LocalEtcd takes them)."""
    peer_port = free_port()
    return LocalEtcd(
        name,
        scratch / "data",
        peer_port=peer_port,
        initial_cluster=f"{name}=http://{LOOPBACK}:{peer_port}",
        cluster_token=f"{name}-{secrets.token_hex(4)}",
        log_path=scratch / "etcd.log",
        quota_backend_bytes=config.etcd.quota_backend_bytes,
        **flags,
    )


def trusted_hash_flags(etcdutl: Path) -> tuple[str, ...]:
    """For a snapshot whose sha256 trailer etcdops checked as it wrote it (decoded, read from
    stdin or saved from the staging etcd) into a 0700 directory only etcdops writes: etcdutl's
    own re-hash of the whole file would only repeat it (4 of its 5 s at 1 GiB, measured). It
    still drops the trailer, as without the flag. The drill keeps etcdutl's check: proving that
    etcd's own tool accepts the backup is its point."""
    return ("--skip-hash-check",) if etcdutl_supports(etcdutl, "--skip-hash-check") else ()


def restore_into(
    etcdutl: Path, snapshot: Path, source: str, member: LocalEtcd, reporter: Reporter, *,
    trusted: bool = False,
) -> None:
    """etcdutl snapshot restore into a throwaway member's data dir (trusted: its trailer was
    checked as it was written); IntegrityError when etcd's own tool cannot restore a snapshot
    that passed every check."""
    reporter.event(f"etcdutl snapshot restore into a scratch data dir ({member.data_dir})")
    try:
        run_etcdutl(etcdutl, [
            "snapshot", "restore", str(snapshot),
            f"--data-dir={member.data_dir}",
            f"--name={member.name}",
            f"--initial-cluster={member.initial_cluster}",
            f"--initial-cluster-token={member.cluster_token}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            *(trusted_hash_flags(etcdutl) if trusted else ()),
        ], timeout=ETCDUTL_TIMEOUT)
    except ToolError as exc:
        # every check passed, yet etcd's own tool cannot restore it: the backup is no backup
        raise IntegrityError(
            f"{source} passed every check but does not restore: {exc.message}",
            "use another backup, and keep this one to find out what it holds",
        ) from exc


def start_throwaway(member: LocalEtcd) -> None:
    """Start a throwaway member and wait for its leader; ToolError with etcd's last log lines."""
    try:
        member.start(wait=START_WAIT)
    except ToolError as exc:
        # its log is in the scratch directory, which is about to go: the message has its tail
        raise ToolError(
            f"the restored etcd did not start: {exc.message}",
            "see etcd's last log lines above; the scratch directory is removed",
        ) from exc


class Checked(NamedTuple):
    size: int
    db_sha256: str


def save_checked(chunks: Iterable[bytes], out: Path, source: str) -> Checked:
    """Write a plain snapshot arriving as a stream (standard input, etcd's snapshot stream) to
    out, checked as an etcd snapshot (bbolt's first page, etcd's sha256 trailer) on the way:
    out appears only once it passed."""
    with AtomicFile(out) as target:
        check = SnapshotTrailerCheck(target, source)
        for chunk in chunks:
            check.write(chunk)
        return Checked(check.size, check.verify())


@dataclass(frozen=True)
class Staged:
    path: Path  # the staging etcd's snapshot: the backup's keys, the revision advanced
    plan: RevisionPlan


@dataclass(frozen=True)
class StagingOutcome:
    staged: Staged | None
    reason: str | None  # why the revision was not advanced, when it was not


def _too_few_samples(count: int, config: Config) -> str:
    return (
        f"the snapshot holds {count} compaction sample(s) under {config.compaction.prefix} "
        "(etcdops compact writes them): with its own revision, fewer than two points to measure "
        "the write rate by, so no staging etcd advanced it"
    )


def samples_search(config: Config) -> Search:
    """A search of a snapshot's bytes for the compaction samples' key prefix. bbolt stores every
    key whole, so not found means no sample for certain, and the staging etcd need not be
    restored and booted to find that out (7 s at 1 GiB); found may be a stale page, and etcd
    decides. A restore searches as it decodes, and reads nothing again."""
    return Search(config.compaction.prefix.encode())


def may_hold_samples(snapshot: Path, search: Search) -> bool:
    """Whether the snapshot file's bytes hold the search's needle, read a MiB at a time."""
    with snapshot.open("rb") as file:
        while not search.found and (chunk := file.read(_SCAN_CHUNK)):
            search.write(chunk)
    return search.found


def stage_bump(
    config: Config,
    etcdutl: Path,
    plain: Path,
    source: str,
    revision: int,
    seen: Seen,
    work: Path,
    reporter: Reporter,
    *,
    clock: Callable[[], float] = time.time,
    may_hold: bool | None = None,
    rate_points: Sequence[tuple[float, int]] = (),
) -> StagingOutcome:
    """Advance the plain snapshot's `revision` on a staging etcd under work past `seen`, by
    what the time since and the cluster's write rate call for (the rate from the compaction
    samples the snapshot holds, `seen` and rate_points: (epoch seconds, revision)); the staged
    snapshot lands in work, or the reason it was not made. may_hold: whether the snapshot may
    hold samples, when a search as it was decoded said; None: it is read here if need be."""
    try:
        find_binary("etcd")
    except ToolError as exc:  # etcd runs in a container on many hosts: etcdutl is all there is
        return StagingOutcome(None, f"no etcd binary here for a staging etcd ({exc.message})")
    points = [(seen.at, seen.revision), *rate_points]
    if write_rate(points) is None:  # the samples must give the rate
        if may_hold is None:
            may_hold = may_hold_samples(plain, samples_search(config))
        if not may_hold:
            return StagingOutcome(None, _too_few_samples(0, config))
    member = throwaway_member(work / "staging", config, STAGING_NAME)
    member.data_dir.parent.mkdir()
    restore_into(etcdutl, plain, source, member, reporter, trusted=True)
    try:
        reporter.event(f"starting a staging etcd on {member.client_url} to advance the revision")
        start_throwaway(member)
        with EtcdSession(member.etcd_config(command_timeout=_CALL_TIMEOUT)) as session:
            run = _Run(config, session, member.client_url, reporter)
            return run.advance(revision, seen, points, clock() - seen.at, work / STAGED_NAME)
    except EtcdopsError as exc:
        # the plain snapshot is intact: the restore goes on from it, and says what to restart
        return StagingOutcome(None, f"the staging etcd failed: {exc.message.splitlines()[0]}")
    finally:
        member.stop()
        # the staging data dir is as large as the database: free the disk for the members
        shutil.rmtree(member.data_dir.parent, ignore_errors=True)


class _Run:
    """One staging etcd's work, on its session."""

    def __init__(
        self, config: Config, session: EtcdSession, url: str, reporter: Reporter
    ) -> None:
        self.config, self.session, self.url, self.reporter = config, session, url, reporter

    def advance(
        self, revision: int, seen: Seen, points: list[tuple[float, int]], age: float, out: Path
    ) -> StagingOutcome:
        session, url = self.session, self.url
        alarms = session.alarms()
        if alarms:
            kinds = ", ".join(sorted({alarm.kind for alarm in alarms}))
            return StagingOutcome(None, f"the snapshot carries a {kinds} alarm, under which the "
                                        "staging etcd refuses the writes that advance it")
        prefix = self.config.compaction.prefix.encode()
        # a sample past what clients saw is of an older history (restored since without a
        # bump): its revisions would make the rate look like none
        samples = [s for s in map(parse_sample, session.get_prefix(prefix)[0])
                   if s is not None and s.revision <= seen.revision]
        rate = write_rate([(s.time, s.revision) for s in samples] + points)
        if rate is None:
            return StagingOutcome(None, _too_few_samples(len(samples), self.config))
        # up to what clients saw (a point in time is behind it), then what they may have seen
        # since
        gap = max(0, seen.revision - revision) + rate.gap(age)
        if seen.revision == revision:
            since = f"the backup is {format_duration(age)} old"
        else:
            since = (f"the point in time is {seen.revision - revision:,} revisions behind the "
                     f"newest journaled ({seen.revision:,}, {format_duration(age)} ago)")
        with LeaseKeeper(session, url) as keeper:
            keys = session.count_keys()
            self.reporter.event(
                f"{since} and the cluster wrote "
                f"{rate.per_second:,.1f} revisions/s: advancing the revision by {gap:,} on the "
                f"staging etcd ({keeper.count} leases kept alive meanwhile)"
            )
            bump_key = f"/etcdops/revision-bump/{secrets.token_hex(8)}".encode()
            started = time.monotonic()
            burst = min(gap - 1, CALIBRATION_WRITES)
            session.put_revisions(url, bump_key, burst)
            speed = burst / max(time.monotonic() - started, 1e-6)
            budget = self.config.restore.bump_budget
            if gap / speed > budget:
                return StagingOutcome(None, over_budget(gap, speed, budget))
            session.put_revisions(url, bump_key, gap - 1 - burst)
            final = session.delete_keys([bump_key])
            # what --mark-compacted does: every revision before the final one is history gone
            session.compact(final, physical=True, timeout=_CALL_TIMEOUT)
            lost = keeper.problem() or self._lost_keys(keys)
            if lost:
                return StagingOutcome(None, f"the staging etcd {lost}, so its snapshot is not used")
            self.reporter.event(
                f"advanced the revision to {final:,} in "
                f"{format_duration(time.monotonic() - started)}; taking the staging snapshot"
            )
            save_checked(session.snapshot_stream(url), out, "the staging etcd's snapshot")
        return StagingOutcome(Staged(out, staged_plan(final - revision)), None)

    def _lost_keys(self, before: int) -> str | None:
        after = self.session.count_keys()
        return None if after == before else f"holds {after} keys where the snapshot had {before}"


class LeaseKeeper:
    """Refreshes every lease of a member every KEEPALIVE_PERIOD, on a thread, until the block
    ends, and those add()ed meanwhile (a replay grants leases); problem() says if a lease was
    lost all the same."""

    def __init__(self, session: EtcdSession, url: str) -> None:
        self._session, self._url = session, url
        self._ids = session.lease_ids(url)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name="lease-keeper", daemon=True)
        self._problem: str | None = None

    @property
    def count(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> frozenset[int]:
        """Every lease kept alive: the member's when the block began, and those added."""
        with self._lock:
            return frozenset(self._ids)

    def add(self, lease_id: int) -> None:
        """Keep one more lease alive, from the next refresh on."""
        with self._lock:
            self._ids = [*self._ids, lease_id]
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def __enter__(self) -> LeaseKeeper:
        if self._ids:
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def problem(self) -> str | None:
        """What went wrong with the leases, or None: every one is still alive."""
        return self._problem

    def _refresh(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                ids = self._ids
            try:
                ttls = self._session.keep_alive(self._url, ids)
            except EtcdopsError as exc:
                self._problem = f"could not keep its leases alive ({exc.message})"
                return
            expired = [lease for lease in ids if ttls.get(lease, 0) <= 0]
            if expired:
                self._problem = f"lost {len(expired)} of its {len(ids)} leases"
                return
            self._stop.wait(KEEPALIVE_PERIOD)
