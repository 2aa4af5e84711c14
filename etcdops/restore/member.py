"""Restore etcd members from a backup: the first step of a disaster recovery.

A backup is prepared once (prepared_snapshot: download -> object sha256 -> age -> zstd ->
etcd's trailer -> a plain snapshot in a 0700 directory, and the revision advanced on a staging
etcd when etcdutl cannot bump it), then each local member is restored from that same snapshot
(restore_prepared: `etcdutl snapshot restore` into a new directory beside the data dir, the old
data dir moved aside, the new one renamed into place). restore_member does both for one member.
Everything that can be refused (the member flags, the data dir, etcdutl) is checked before a
byte is read; until the final rename the data dir is untouched, and every working directory
goes on every way out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from etcdops.backup.readback import READ_SIZE, SnapshotStatus, decode_snapshot, is_file_ref
from etcdops.config import Config
from etcdops.errors import Interrupted, NotFoundError, UsageError
from etcdops.etcd.binaries import find_binary
from etcdops.etcd.etcdutl import run_etcdutl
from etcdops.report import Reporter
from etcdops.restore.datadir import Target, check_target, swap_in
from etcdops.restore.membership import Membership, membership
from etcdops.restore.plaintext import SNAPSHOT_NAME, scratch_directory
from etcdops.restore.revision import (
    RevisionPlan,
    etcdutl_bumps,
    flags_plan,
    no_flags,
    restart_warning,
    unbumped_plan,
)
from etcdops.restore.staging import (
    ETCDUTL_TIMEOUT,
    Seen,
    samples_search,
    save_checked,
    stage_bump,
    trusted_hash_flags,
)
from etcdops.stores.configured import Stores, open_stores

if TYPE_CHECKING:
    from etcdops.restore.point import StagedPoint
    from etcdops.restore.point_plan import PointPlan, PointTarget
    from etcdops.restore.replay import Replayed

BUILT_NAME = "data"
STDIN_REF = "-"  # a plain snapshot on standard input: how `dr run` hands one to another host


@dataclass(frozen=True)
class RestoreRequest:
    """What the operator asks for: the backup, the data dir, the member's place."""

    ref: str  # 'latest', a backup id or unique prefix, a file, or '-' (standard input)
    data_dir: Path
    name: str
    initial_cluster: str
    peer_urls: str  # --initial-advertise-peer-urls, comma-separated
    token: str | None = None  # None: a new one, to give every other member of the recovery
    store: str | None = None  # read only this store; None: local, primary, then replica
    # None: etcdutl's flags if it has them, else a staging etcd, else a warning; N > 0:
    # etcdutl's flags with N (refused if it lacks them); 0: no bump at all, and no warning
    bump_revision: int | None = None
    # a point in time (--revision, --at); None: 'latest' is the newest journaled point, and
    # any other REF the backup alone
    point: PointTarget | None = None
    allow_gap: bool = False  # restore to the last provable point before a hole in the journal


@dataclass(frozen=True)
class Prepared:
    """A checked plain snapshot, ready for every member's etcdutl, and how it leaves the
    revision. It lives in a 0700 directory that is removed when prepared_snapshot's block ends."""

    path: Path  # etcd's sha256 trailer included: etcdutl restores it as is
    status: SnapshotStatus  # what was read, from which store, which copies failed first
    revision: int | None  # the backup's snapshot revision, before any bump
    plan: RevisionPlan  # the flags every member's etcdutl gets, the method, the bump, a warning
    durations: dict[str, float]  # download_decode, and staging when a staging etcd was tried
    replayed: Replayed | None = None  # a point in time: what the journal's replay wrote
    # and the base and segments it was staged from (etcdops.restore.point.stage_point may
    # have taken the backup before the one planned)
    point_plan: PointPlan | None = None

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the operator must know about this snapshot: the read's and the revision's."""
        return self.status.warnings + ((self.plan.warning,) if self.plan.warning else ())


@dataclass(frozen=True)
class RestoreResult:
    backup_id: str | None  # None for a snapshot file without a manifest
    source: str  # what was read, in words
    store: str | None
    fallbacks: tuple[str, ...]  # copies tried first that failed, and why
    data_dir: Path
    moved_aside: Path | None  # where the data dir that was there went
    member: Membership
    revision: int | None  # the snapshot's
    revision_plan: RevisionPlan
    etcdutl: Path
    durations: dict[str, float]  # download_decode, [staging,] etcdutl, total (seconds)
    warnings: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        """The JSON form of a restore."""
        return {
            "backup_id": self.backup_id,
            "source": self.source,
            "store": self.store,
            "fallbacks": list(self.fallbacks),
            "data_dir": str(self.data_dir),
            "moved_aside": None if self.moved_aside is None else str(self.moved_aside),
            "name": self.member.name,
            "peer_urls": list(self.member.peer_urls),
            "initial_cluster": self.member.initial_cluster,
            "initial_cluster_token": self.member.token,
            "token_generated": self.member.token_generated,
            "revision": self.revision_plan.as_dict(self.revision),
            "etcdutl": str(self.etcdutl),
            "durations": self.durations,
            "warnings": list(self.warnings),
        }


@contextlib.contextmanager
def prepared_snapshot(
    config: Config,
    ref: str,
    reporter: Reporter,
    *,
    store: str | None = None,
    stores: Stores | None = None,
    under: Path | None = None,
    bump_flags: bool,
    bump_revision: int | None = None,
    stdin: BinaryIO | None = None,
    clock: Callable[[], float] = time.time,
    shared: bool = True,
    point: PointTarget | None = None,
    allow_gap: bool = False,
) -> Iterator[Prepared]:
    """Decode REF once, with every check, into a 0700 directory in `under` (default: the
    system's temporary directory) that is removed when the block ends, however it ends; and
    decide the revision once for every member restored from it.

    bump_flags=True: every member's etcdutl has --bump-revision (the caller checked): the plan
    passes it with bump_revision (default [restore] bump_revision). bump_flags=False:
    bump_revision 0 means no bump and no warning (the caller advanced the revision or reports
    it); None means a staging etcd advances the revision by the gap the snapshot's write rate
    and the backup's age call for, within [restore] bump_budget, else the restart warning.
    REF '-' reads a plain snapshot from `stdin`. `clock` is the wall clock the age is read from.
    shared=False: this snapshot serves one member of several, each restored on its own, so no
    staging etcd runs (each member's would write its own number of revisions).
    point: the cluster at that point in time (etcdops.restore.point), REF naming the base
    ('latest': the newest that serves it); REF 'latest' alone is the newest journaled point."""
    if bump_flags and bump_revision == 0:
        raise UsageError("--bump-revision 0 means no bump: it cannot go with etcdutl's flags")
    if not bump_flags and bump_revision:
        raise UsageError(
            f"--bump-revision {bump_revision} needs an etcdutl with --bump-revision",
            "give 0 for no bump, or leave the option out for a staging etcd",
        )
    etcdutl = find_binary("etcdutl", config.etcd.etcdutl)
    if point is not None and (ref == STDIN_REF or is_file_ref(ref)):
        raise UsageError("--at and --revision replay the journal of a backup, not of a file",
                         "give 'latest' or a backup id")
    with scratch_directory(under, "prepare", reporter) as work:
        reading = time.monotonic()
        plain = work / SNAPSHOT_NAME
        chosen = _PointChoice(None, ref)
        if ref == "latest" or point is not None:
            chosen = _point(config, ref, point, allow_gap, store, stores, work, reporter)
            ref = chosen.ref
        revision_rule = _RevisionRule(config, etcdutl, work, reporter, clock, bump_flags,
                                      bump_revision, shared)
        if chosen.staged is not None:
            yield _from_point(chosen.staged, reading, revision_rule)
            return
        if ref == STDIN_REF:
            if stdin is None:
                raise UsageError("REF '-' reads a plain snapshot from standard input: none given")
            status = _read_stdin(stdin, plain, reporter)
            may_hold = None
        else:
            search = samples_search(config)  # as it decodes: the staging's first question
            status = decode_snapshot(config, ref, plain, reporter, store=store, stores=stores,
                                     search=search)
            may_hold = search.found
            if chosen.plan is not None:  # the plan's (a gap --allow-gap stopped before)
                status = dataclasses.replace(
                    status, warnings=status.warnings + chosen.plan.warnings)
            if chosen.plan is not None and chosen.exact:
                from etcdops.restore.point import check_exact

                assert chosen.stores is not None
                staged = check_exact(config, chosen.plan, plain, chosen.stores, work, reporter,
                                     allow_gap)
                if staged is not None:
                    yield _from_point(staged, reading, revision_rule)
                    return
        revision = _revision(plain, status, config)
        durations = {"download_decode": round(time.monotonic() - reading, 3)}
        if chosen.plan is not None:  # a point in time at the backup itself
            plain, plan, staged_for = revision_rule.apply_point(plain, status, chosen.plan)
        else:
            seen = None if status.created_at is None else Seen(
                datetime.fromisoformat(status.created_at).timestamp(), revision)
            plain, plan, staged_for = revision_rule.apply(plain, status.source, revision,
                                                          seen, may_hold)
        if staged_for is not None:
            durations["staging"] = round(staged_for, 3)
        yield Prepared(plain, status, revision, plan, durations)


class _PointChoice(NamedTuple):
    staged: StagedPoint | None  # the point in time, staged
    ref: str  # else the backup to restore as it is
    # a point in time with nothing to replay: the backup restored as it is, and its revision
    # advanced past what the plan's journal names as a replayed point's is
    plan: PointPlan | None = None
    # a revision target at that backup's recorded revision: its snapshot, once decoded, must
    # be at it (etcdops.restore.point.check_exact), read again from these stores if not
    exact: bool = False
    stores: Stores | None = None


def _point(
    config: Config, ref: str, point: PointTarget | None, allow_gap: bool, store: str | None,
    stores: Stores | None, work: Path, reporter: Reporter,
) -> _PointChoice:
    """The point in time staged in work when the journal has revisions to replay, else the
    backup id to restore as it is."""
    from etcdops.restore.point import stage_point
    from etcdops.restore.point_plan import PointTarget, plan_point

    stores = stores or open_stores(config)
    if store is not None:
        stores = stores.only(store)
    try:
        plan = plan_point(config, point or PointTarget(), stores, reporter, base_ref=ref,
                          allow_gap=allow_gap)
    except NotFoundError:
        if point is not None:
            raise
        return _PointChoice(None, ref)  # no backup at all: the plain read says so in its words
    for note in plan.notes:
        reporter.event(note)
    if not plan.replays:
        exact = point is not None and point.revision is not None
        return _PointChoice(None, plan.base.id, plan, exact, stores)
    return _PointChoice(stage_point(config, plan, stores, work, reporter, allow_gap=allow_gap),
                        ref)


def _from_point(staged: StagedPoint, reading: float, rule: _RevisionRule) -> Prepared:
    """What prepared_snapshot yields for a point in time staged (reading: when it began)."""
    status, plan = staged.status, staged.plan
    replaying = staged.replayed.seconds
    durations = {"download_decode": round(time.monotonic() - reading - replaying, 3),
                 "replay": round(replaying, 3)}
    path, revision_plan, staged_for = rule.apply_point(staged.path, status, plan)
    if staged_for is not None:
        durations["staging"] = round(staged_for, 3)
    return Prepared(path, status, status.revision, revision_plan, durations, staged.replayed,
                    plan)


@dataclass(frozen=True)
class _RevisionRule:
    """How a restore leaves the revision, one rule for a backup and for a point in time:
    etcdutl's flags when it has them; no bump when told 0; else a staging etcd advances the
    snapshot past what clients saw, when one snapshot serves every member (shared); else the
    restart warning."""

    config: Config
    etcdutl: Path
    work: Path
    reporter: Reporter
    clock: Callable[[], float]
    bump_flags: bool
    bump_revision: int | None
    shared: bool

    def apply_point(
        self, plain: Path, status: SnapshotStatus, plan: PointPlan
    ) -> tuple[Path, RevisionPlan, float | None]:
        """apply() for a point in time (plain: at status.revision): past the newest revision
        the plan's journal and backups name; the base and that newest point give the write
        rate, compaction samples or not."""
        assert status.revision is not None  # a point's is the staging etcd's, or the base's
        base = plan.base
        return self.apply(plain, status.source, status.revision, plan.newest, None,
                          rate_points=[(base.created_at.timestamp(), base.etcd.revision)])

    def apply(
        self, plain: Path, source: str, revision: int, seen: Seen | None,
        may_hold: bool | None, rate_points: Sequence[tuple[float, int]] = (),
    ) -> tuple[Path, RevisionPlan, float | None]:
        """The snapshot to restore, its plan, and how long a staging etcd took (None: none
        was tried). seen: the newest revision clients saw and when (None: a snapshot without
        a manifest, whose age is unknown); may_hold and rate_points: stage_bump's."""
        config, etcdutl = self.config, self.etcdutl
        if self.bump_flags:
            bump = self.bump_revision or config.restore.bump_revision
            flags = flags_plan(bump)
            if seen is not None and revision + bump <= seen.revision:
                flags = dataclasses.replace(flags, warning=restart_warning(
                    f"--bump-revision {bump:,} takes it to {revision + bump:,}, not past "
                    f"revision {seen.revision:,} that clients saw"))
            return plain, flags, None
        if self.bump_revision == 0:
            return plain, unbumped_plan(None), None
        why = no_flags(etcdutl)
        if not self.shared:
            return plain, unbumped_plan(restart_warning(
                f"{why}; a staging etcd advances one snapshot for every member, and members "
                "restored one by one would each get their own revisions: restore them all "
                "with `etcdops dr run` for a bumped snapshot"
            )), None
        if seen is None:
            return plain, unbumped_plan(restart_warning(
                f"{why}; a snapshot without a manifest has no age to estimate the revisions "
                "clients may have seen since, so no staging etcd advanced it"
            )), None
        if config.restore.bump_budget <= 0:
            return plain, unbumped_plan(restart_warning(
                f"{why}; [restore] bump_budget is 0s, so no staging etcd advanced it"
            )), None
        started = time.monotonic()
        outcome = stage_bump(config, etcdutl, plain, source, revision, seen, self.work,
                             self.reporter, clock=self.clock, may_hold=may_hold,
                             rate_points=rate_points)
        took = time.monotonic() - started
        if outcome.staged is None:
            return plain, unbumped_plan(restart_warning(f"{why}; {outcome.reason}")), took
        plain.unlink()  # the staged snapshot replaces it: the disk holds one snapshot, not two
        return outcome.staged.path, outcome.staged.plan, took


def restore_prepared(
    config: Config, prepared: Prepared, request: RestoreRequest, reporter: Reporter
) -> RestoreResult:
    """Restore one local member's data dir from a prepared snapshot (request.ref and
    request.store are not read again); the old data dir is moved aside."""
    started = time.monotonic()
    member, target, etcdutl = check_request(config, request)
    return _restore(prepared, member, target, etcdutl, reporter, started)


def restore_member(
    config: Config,
    request: RestoreRequest,
    reporter: Reporter,
    *,
    stores: Stores | None = None,
    stdin: BinaryIO | None = None,
) -> RestoreResult:
    """Restore one member's data dir from a backup; the old data dir is moved aside."""
    started = time.monotonic()
    member, target, etcdutl = check_request(config, request)
    flags = bump_flags_for(etcdutl, request.bump_revision)
    try:
        with prepared_snapshot(
            config, request.ref, reporter, store=request.store, stores=stores,
            under=target.path.parent, bump_flags=flags, bump_revision=request.bump_revision,
            stdin=stdin, shared=len(member.members) == 1, point=request.point,
            allow_gap=request.allow_gap,
        ) as prepared:
            return _restore(prepared, member, target, etcdutl, reporter, started)
    except KeyboardInterrupt:
        raise _interrupted(target) from None


def check_request(
    config: Config, request: RestoreRequest
) -> tuple[Membership, Target, Path]:
    """What is refused before anything is read: the member flags, the data dir, etcdutl."""
    member = membership(
        request.name, request.initial_cluster, request.peer_urls, request.token, config.cluster
    )
    target = check_target(request.data_dir)
    return member, target, find_binary("etcdutl", config.etcd.etcdutl)


def bump_flags_for(etcdutl: Path, bump: int | None) -> bool:
    """Whether etcdutl's flags bump the revision: when it has them, unless told 0 (no bump);
    --bump-revision N > 0 with an etcdutl that lacks them is refused."""
    if bump is None:
        return etcdutl_bumps(etcdutl)
    if bump and not etcdutl_bumps(etcdutl):
        raise UsageError(
            f"--bump-revision {bump}: {no_flags(etcdutl)}",
            "use an etcdutl that has it ([etcd] etcdutl), give 0 for no bump, or leave the "
            "option out for a staging etcd",
        )
    return bump > 0


def _restore(
    prepared: Prepared, member: Membership, target: Target, etcdutl: Path, reporter: Reporter,
    started: float,
) -> RestoreResult:
    plan = prepared.plan
    try:
        with scratch_directory(target.path.parent, f"restore-{target.path.name}", reporter) as work:
            built = work / BUILT_NAME
            restoring = time.monotonic()
            bump = f"the revision bumped by {plan.bump:,}" if plan.bump else "no revision bump"
            reporter.event(f"restoring member {member.name} with {etcdutl} ({bump}, {plan.method})")
            run_etcdutl(
                etcdutl,
                ["snapshot", "restore", str(prepared.path), "--data-dir", str(built),
                 *member.etcdutl_flags(), *plan.flags, *trusted_hash_flags(etcdutl)],
                timeout=ETCDUTL_TIMEOUT,
            )
            restored = time.monotonic()
            aside = swap_in(built, target, datetime.now(UTC))
    except KeyboardInterrupt:
        raise _interrupted(target) from None
    if aside is not None:
        reporter.event(f"moved the data dir that was there to {aside}")
    status = prepared.status
    return RestoreResult(
        backup_id=status.backup_id,
        source=status.source,
        store=status.store,
        fallbacks=status.fallbacks,
        data_dir=target.path,
        moved_aside=aside,
        member=member,
        revision=prepared.revision,
        revision_plan=plan,
        etcdutl=etcdutl,
        durations=prepared.durations | {
            "etcdutl": round(restored - restoring, 3),
            "total": round(time.monotonic() - started, 3),
        },
        warnings=prepared.warnings,
    )


def _interrupted(target: Target) -> Interrupted:
    return Interrupted(
        f"interrupted; {target.path} is as it was, and the restore's temporary files are removed"
    )


def _read_stdin(stdin: BinaryIO, out: Path, reporter: Reporter) -> SnapshotStatus:
    """A plain snapshot from standard input, etcd's trailer checked on the way into out (which
    appears only once it passed). A pipe cannot be read twice: there is no copy to fall back on."""
    source = "standard input"

    def blocks() -> Iterator[bytes]:
        with reporter.progress(f"reading {source}", total=None) as bar:
            while block := stdin.read(READ_SIZE):
                bar.advance(len(block))
                yield block

    checked = save_checked(blocks(), out, source)
    return SnapshotStatus(
        source=source, kind="plain snapshot", backup_id=None, created_at=None, revision=None,
        keys=None, keys_counted=None, snapshot_size=checked.size, stored_size=checked.size,
        db_sha256=checked.db_sha256, checks=("etcd sha256 trailer",), store=None, fallbacks=(),
    )


def _revision(plain: Path, status: SnapshotStatus, config: Config) -> int:
    """The snapshot's revision: the manifest's, or etcd's own reading of a bare snapshot."""
    if status.revision is not None:
        return status.revision
    from etcdops.etcd.etcdutl import snapshot_status

    return snapshot_status(plain, config.etcd.etcdutl).revision

