"""What a recovery needs before it touches anything, checked without changing anything.

`dr run --dry-run` lists every prerequisite and whether it holds; `dr run` checks the same
before its stop step and refuses, with the first failure's error, when one does not hold, so
that a missing etcdutl, a wrong identity, a host out of reach or a data dir in the way is found
while every data dir is still as it was. Nothing is downloaded: the backup is judged by the
catalogue (which copies are verified), the identity against the manifest's recipients; a
point in time by the journal's manifests (plan_point: the base, the segments, any hole).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etcdops.backup.catalog import BackupView, combined_view, resolve_ref
from etcdops.config import Config
from etcdops.errors import (
    CryptoError,
    EtcdopsError,
    HostUnreachableError,
    IntegrityError,
    LockedError,
    StorageError,
    ToolError,
    UsageError,
)
from etcdops.recovery.hosts import Host
from etcdops.recovery.plan import Plan, PlanMember
from etcdops.report import Reporter
from etcdops.stores.configured import Stores
from etcdops.units import format_size

if TYPE_CHECKING:
    from etcdops.recovery.point import PointRequest
    from etcdops.restore.point_plan import PointPlan

# a host that takes longer than this to run `etcdops --version` is not one to restore through
PROBE_TIMEOUT = 30.0
_REMOTE_CHECK_TIMEOUT = 60.0


@dataclass(frozen=True)
class Prerequisite:
    """One thing a recovery needs, and whether it holds."""

    check: str  # point | backup | identity | host | etcdutl | data dir | disk | revision | files
    where: str  # the member or host it concerns, or "" for the recovery as a whole
    ok: bool
    detail: str
    error: EtcdopsError | None = None  # why it does not hold: its kind is the exit code

    def as_dict(self) -> dict[str, object]:
        """The JSON form of one prerequisite."""
        return {
            "check": self.check, "where": self.where, "ok": self.ok, "detail": self.detail,
            "hint": self.error.hint if self.error else None,
            "kind": self.error.kind.value if self.error else None,
        }


@dataclass
class Preflight:
    """Every prerequisite, and what the checks decided for the run."""

    checks: list[Prerequisite] = field(default_factory=list)
    backup: BackupView | None = None
    point: PointPlan | None = None  # the point in time planned, when the journal is replayed
    bump_flags: bool = False  # every member's etcdutl has --bump-revision --mark-compacted

    @property
    def failures(self) -> list[Prerequisite]:
        """The prerequisites that do not hold, in the order they were checked."""
        return [check for check in self.checks if not check.ok]

    def add(self, check: str, where: str, detail: str) -> None:
        """A prerequisite that holds."""
        self.checks.append(Prerequisite(check, where, True, detail))

    def fail(self, check: str, where: str, error: EtcdopsError) -> None:
        """A prerequisite that does not hold, and why."""
        self.checks.append(Prerequisite(check, where, False, error.message, error))



def check_prerequisites(
    config: Config, plan: Plan, reporter: Reporter, *, stores: Stores,
    backup_id: str | None = None, point: PointRequest | None = None,
) -> Preflight:
    """Check everything a recovery of this plan needs, changing nothing. backup_id: the backup
    a resumed recovery chose (default: the plan's `backup`, resolved now); point: what the
    journal is asked for (recovery.point.point_request), whose base is then the backup."""
    found = Preflight()
    found.point = _point(config, plan, stores, reporter, point, found)
    ref = found.point.base.id if found.point is not None else backup_id or plan.backup
    view = _backup(config, plan, stores, ref, found)
    found.backup = view
    if view is not None:
        _identity(config, view, found)
    # a local member's restore dry run sizes its restore from the backup's manifest (read
    # again from the store the backup is read from first) once the backup and identity hold
    sized = (view.manifest.id, view.good_in[0]) if view is not None and not found.failures \
        else None
    supports: list[bool] = []
    disks: list[_Disk] = []
    for member in plan.members:
        if member.remote:
            size = view.manifest.snapshot_size if view is not None else None
            supports.append(_remote_member(member, plan, reporter, found, disks, size))
        else:
            supports.append(
                _local_member(config, member, plan, reporter, found, disks, stores, sized)
            )
    found.bump_flags = bool(supports) and all(supports)
    _judge_disks(disks, found)
    if not found.failures:
        found.add("revision", "", _revision_plan(config, found.bump_flags, found.point))
    _files(plan, view, found)
    return found


def recheck_members(config: Config, plan: Plan, reporter: Reporter) -> None:
    """After the stop step, before any data dir is swapped: every member's data dir can be
    replaced now (no etcd left running on it), here through restore's own checks, on another
    host through its `restore - --dry-run`; the first that cannot stops step 1 with nothing
    changed, instead of a cluster half restored."""
    from etcdops.restore.member import STDIN_REF, RestoreRequest, check_request

    for member in plan.members:
        try:
            if member.remote:
                host = Host(member.name, member.exec, member.etcdops, reporter=reporter)
                host.etcdops_json(["restore", "-", "--dry-run", *_restore_args(member, plan)],
                                  timeout=_REMOTE_CHECK_TIMEOUT)
            else:
                check_request(config, RestoreRequest(
                    ref=STDIN_REF, data_dir=member.data_dir, name=member.name,
                    initial_cluster=plan.initial_cluster, peer_urls=member.peer_url,
                ))
        except EtcdopsError as exc:
            # a remote error already says "on <member> (<prefix>): ..."
            where = "" if member.remote else f"on member {member.name} (this host): "
            exc.message = f"after the stop step, {where}{exc.message}; no member was restored"
            if isinstance(exc, LockedError):
                exc.hint = ("make [steps.stop] stop the etcd on every member's data dir, stop "
                            "that one now, then run dr run again (it resumes at step 1)")
            raise


def _point(
    config: Config, plan: Plan, stores: Stores, reporter: Reporter,
    request: PointRequest | None, found: Preflight,
) -> PointPlan | None:
    """The point in time this recovery restores, planned from the journal's manifests (no
    segment is read); None for the backup alone: none asked, or 'latest' with nothing in the
    journal past the backup."""
    from etcdops.errors import NotFoundError
    from etcdops.recovery.point import as_of
    from etcdops.restore.point_plan import plan_point

    if request is None:
        return None
    narrowed = stores.only(plan.store) if plan.store else stores
    try:
        planned = plan_point(config, request.target, narrowed, reporter, base_ref=request.base,
                             allow_gap=request.allow_gap)
    except NotFoundError as exc:
        if request.named:
            found.fail("point", "", exc)
        return None  # 'latest' and no backup at all: the backup check says so in its words
    except EtcdopsError as exc:
        found.fail("point", "", exc)
        return None
    if not planned.replays and not request.named and not planned.warnings:
        return None  # 'latest' is the backup itself (a gap before any revision is a point)
    base = planned.base
    if planned.replays:
        detail = (f"revision {planned.revision} ({request.target.describe()}): backup {base.id} "
                  f"(revision {base.etcd.revision}) and {len(planned.segments)} journal "
                  f"segment(s), replayed once on a staging etcd on this host in step 1 for "
                  f"every member; changes until {as_of(planned, planned.revision).isoformat()}")
    else:
        detail = (f"revision {planned.revision} ({request.target.describe()}) is backup "
                  f"{base.id}'s own: nothing to replay")
    found.add("point", "", "; ".join([detail, *planned.notes, *planned.warnings]))
    return planned


def _revision_plan(config: Config, bump_flags: bool, point: PointPlan | None) -> str:
    """How the restored cluster's revision will be kept past what clients saw."""
    if bump_flags:
        return (f"every member's etcdutl bumps the revision by {config.restore.bump_revision:,} "
                "and marks it compacted")
    behind = ""
    if point is not None and point.newest.revision > point.revision:
        # written on the staging etcd too: a point far back may not fit the budget
        behind = (f" past revision {point.newest.revision:,}, the newest its journal and "
                  f"backups name ({point.newest.revision - point.revision:,} after the point),")
    return (
        "not every member's etcdutl has --bump-revision: a staging etcd on this host advances "
        f"the revision first{behind} if that fits in [restore] bump_budget "
        f"({config.restore.bump_budget:g}s); otherwise the report says what to restart"
    )


def _backup(
    config: Config, plan: Plan, stores: Stores, ref: str, found: Preflight
) -> BackupView | None:
    """The backup the recovery restores, by the catalogue: found, with a good copy, and which
    copies are verified; no byte of it is downloaded."""
    try:
        narrowed = stores.only(plan.store) if plan.store else stores
        views, unreachable = combined_view(narrowed, config.cluster)
        if not views and unreachable:
            raise next(iter(unreachable.values()))
        where = " or ".join(f"{name} store" for name in narrowed)
        chosen = resolve_ref([(v.manifest.id, bool(v.good_in)) for v in views], ref, where)
        view = next(v for v in views if v.manifest.id == chosen)
        if not view.good_in:
            problems = "; ".join(f"{name}: {problem}" for name, problem in view.copies.items())
            raise IntegrityError(
                f"backup {chosen} has no good copy ({problems})",
                "name another backup in the plan ('etcdops snapshot list --store all')",
            )
    except EtcdopsError as exc:
        found.fail("backup", "", exc)
        return None
    manifest = view.manifest
    copies = ", ".join(
        f"{name} {'verified' if entry.verified else entry.condition.value}"
        for name, entry in view.entries.items()
    )
    detail = (
        f"backup {manifest.id} (created {manifest.created_at.isoformat()}, revision "
        f"{manifest.etcd.revision}, {format_size(manifest.snapshot_size)}): {copies}; read from "
        f"{view.good_in[0]} first"
    )
    if unreachable:
        detail += "; " + "; ".join(
            f"{name} store unreachable ({exc.message})" for name, exc in unreachable.items()
        )
    found.add("backup", "", detail)
    return view


def _identity(config: Config, view: BackupView, found: Preflight) -> None:
    """The identity is readable and is one of the backup's recipients."""
    from etcdops.crypto.keys import configured_identities

    try:
        identities = configured_identities(config.encryption)
        ours = {identity.recipient().fingerprint() for identity in identities}
        theirs = set(view.manifest.encryption.get("recipients", ()))
        if ours.isdisjoint(theirs):
            raise CryptoError(
                f"the identity in {config.encryption.identity_file} is not one of backup "
                f"{view.manifest.id}'s recipients: it cannot decrypt it",
                "set [encryption] identity_file to the identity whose age1... recipient the "
                "backups are encrypted to",
            )
    except EtcdopsError as exc:
        found.fail("identity", "", exc)
        return
    found.add("identity", "", f"{config.encryption.identity_file} is a recipient of the backup")


def _restore_args(member: PlanMember, plan: Plan) -> list[str]:
    """The member's place in the restored cluster, as `etcdops restore` takes it."""
    return ["--data-dir", str(member.data_dir), "--name", member.name,
            "--initial-cluster", plan.initial_cluster,
            "--initial-advertise-peer-urls", member.peer_url]


def _local_member(
    config: Config, member: PlanMember, plan: Plan, reporter: Reporter, found: Preflight,
    disks: list[_Disk], stores: Stores, sized: tuple[str, str] | None,
) -> bool:
    """A member on this host: what its restore's own dry run says (member flags, data dir,
    etcdutl, free space and the space it needs), refused as the restore would refuse; whether
    its etcdutl bumps. sized: the backup and store to size the restore by, if any."""
    from etcdops.restore.member import STDIN_REF, RestoreRequest
    from etcdops.restore.preflight import dry_run

    where = f"{member.name} (this host)"
    ref, store = sized or (STDIN_REF, None)
    request = RestoreRequest(
        ref=ref, data_dir=member.data_dir, name=member.name,
        initial_cluster=plan.initial_cluster, peer_urls=member.peer_url, store=store,
    )
    try:
        checked = dry_run(config, request, reporter, stores=stores)
    except LockedError as exc:
        # an etcd that still runs on it is what the stop step is for
        found.add("data dir", where, f"{exc.message}: the stop step must stop it; it is then "
                  "moved aside")
        return _local_etcdutl(config, where, found)
    except EtcdopsError as exc:
        found.fail("etcdutl" if isinstance(exc, ToolError) else "data dir", where, exc)
        return False
    return _restore_findings(checked.as_dict(), where, found, disks)


def _local_etcdutl(config: Config, where: str, found: Preflight) -> bool:
    from etcdops.etcd.binaries import find_binary
    from etcdops.restore.revision import etcdutl_bumps

    try:
        etcdutl = find_binary("etcdutl", config.etcd.etcdutl)
    except EtcdopsError as exc:
        found.fail("etcdutl", where, exc)
        return False
    bumps = etcdutl_bumps(etcdutl)
    found.add("etcdutl", where, _etcdutl_detail(str(etcdutl), bumps))
    return bumps


def _etcdutl_detail(path: str, bumps: bool) -> str:
    return f"{path}, " + ("has --bump-revision --mark-compacted" if bumps
                          else "without --bump-revision")


def _remote_member(
    member: PlanMember, plan: Plan, reporter: Reporter, found: Preflight, disks: list[_Disk],
    snapshot_size: int | None,
) -> bool:
    """A member on another host: it answers through its prefix, and its etcdops's restore dry
    run (`restore - --dry-run`, told the size of the snapshot it will be sent) passes there;
    whether its etcdutl bumps."""
    where = f"{member.name} ({member.host})"
    host = Host(member.name, member.exec, member.etcdops, reporter=reporter)
    probe = host.probe(PROBE_TIMEOUT)
    if not probe.ok:
        cls = ToolError if probe.reachable else HostUnreachableError
        found.fail("host", where, cls(probe.problem or "the host did not answer", probe.hint))
        return False
    found.add("host", where, f"reachable in {probe.seconds:.1f}s, etcdops {probe.etcdops_version}")
    try:
        sized = [] if snapshot_size is None else ["--snapshot-size", str(snapshot_size)]
        document = host.etcdops_json(
            ["restore", "-", "--dry-run", *sized, *_restore_args(member, plan)],
            timeout=_REMOTE_CHECK_TIMEOUT,
        )
    except LockedError as exc:
        found.add("data dir", where, f"{exc.message}: the stop step must stop it; it is then "
                  "moved aside")
        return False  # its etcdutl is not known: a staging etcd advances the revision instead
    except EtcdopsError as exc:
        found.fail("etcdutl" if isinstance(exc, ToolError) else "data dir", where, exc)
        return False
    return _restore_findings(document, where, found, disks)


def _restore_findings(
    document: dict[str, Any], where: str, found: Preflight, disks: list[_Disk]
) -> bool:
    """What a restore's dry run reported (restore.preflight.DryRun.as_dict, here or from
    another host); whether that etcdutl bumps. Its disk is judged once every member is in."""
    etcdutl = document["etcdutl"]
    bumps = bool(etcdutl["bump_revision"])
    found.add("etcdutl", where, _etcdutl_detail(str(etcdutl["path"]), bumps))
    data_dir, aside = document["data_dir"], document["moved_aside_to"]
    found.add("data dir", where, f"{data_dir} would be moved aside to {aside}" if aside
              else f"{data_dir} is absent or empty: nothing to move aside")
    needed = document.get("space_needed")
    disks.append(_Disk(where, str(Path(data_dir).parent), int(document["free_bytes"]),
                       None if needed is None else int(needed)))
    return bumps


@dataclass(frozen=True)
class _Disk:
    """A member's free space, and the space its restore's own dry run says it needs."""

    where: str
    directory: str
    free: int
    needed: int | None  # None: that dry run could not size it (no backup found to size by)


def _judge_disks(disks: list[_Disk], found: Preflight) -> None:
    """Each member's free space against its restore's own figure (restore.preflight)."""
    for disk in disks:
        if disk.needed is None:
            found.add("disk", disk.where, f"{format_size(disk.free)} free in {disk.directory}")
        elif disk.free < disk.needed:
            found.fail("disk", disk.where, StorageError(
                f"{disk.directory} has {format_size(disk.free)} free; the restore needs about "
                f"{format_size(disk.needed)} there",
                "free space there, or give the member a data dir on a larger disk",
            ))
        else:
            found.add("disk", disk.where, f"{format_size(disk.free)} free in {disk.directory} "
                      f"(about {format_size(disk.needed)} needed)")


def _files(plan: Plan, view: BackupView | None, found: Preflight) -> None:
    """Where the included files go back, how many there are, and that none is in the way
    (found now, before the stop step, not in step 1 once the control plane is down)."""
    from etcdops.stores.local import file_in_the_way

    to = plan.files.to
    if to is None or view is None:
        return
    count = len(view.manifest.files)
    if count == 0:
        found.add("files", "this host", "the backup carries no included files")
        return
    dest = to.expanduser().absolute()
    if blocker := file_in_the_way(dest):
        found.fail("files", "this host", UsageError(
            f"[files] to {to}: {blocker} is a file, not a directory",
            "point [files] to at a directory (\"/\" puts each file back at its own path)",
        ))
        return
    from etcdops.restore.files import file_target

    for entry in view.manifest.files:
        _target, problem = file_target(dest, entry, plan.files.force)
        if problem is not None:
            found.fail("files", "this host", UsageError(
                f"the backup's included file {entry.path} cannot go back under [files] to "
                f"{to}: {problem}",
                "move it away, set force = true in [files] (an existing file is then kept "
                "beside it as .NAME.etcdops-<UTC time>), or point [files] to elsewhere",
            ))
            return
    found.add("files", "this host", (
        f"{count} included file{'s' if count != 1 else ''} go back under {to}"
        + (" (existing ones moved aside: force)" if plan.files.force else
           " (none there yet)")
    ))
