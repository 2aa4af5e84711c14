"""Step 1 of a recovery: every member restored from one snapshot of one backup.

The backup is decoded once, before the stop step (restore.member.prepared_snapshot, which also
advances the revision on a staging etcd when some member's etcdutl cannot bump it, or, for a
point in time, replays the journal on a staging etcd up to the revision planned), then each
member gets that same snapshot with the same --initial-cluster and cluster token: a local member
through restore_prepared, a member on another host as `etcdops restore -` through its exec
prefix, the snapshot streamed to it on stdin. Its included files go back on this host first,
when the plan says where (a conflict then stops the step before any data dir is touched). Each
data dir that was there is moved aside by the restore, never deleted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etcdops.config import Config
from etcdops.errors import ToolError
from etcdops.recovery.hosts import Host
from etcdops.recovery.plan import Plan, PlanMember
from etcdops.recovery.state import RecoveryState
from etcdops.report import Reporter
from etcdops.stores.configured import Stores

if TYPE_CHECKING:
    from etcdops.restore.member import Prepared
    from etcdops.restore.point_plan import PointPlan


@contextlib.contextmanager
def prepared_backup(
    config: Config, plan: Plan, state: RecoveryState, reporter: Reporter, *,
    stores: Stores, bump_flags: bool, point: PointPlan | None = None,
) -> Iterator[Prepared]:
    """The chosen backup downloaded, checked and decoded once (and its revision advanced when
    it must be, or the journal replayed to the point planned), before the stop step: a backup
    or a journal that fails in every store then stops the recovery while the control plane
    still runs as it did."""
    from etcdops.recovery.point import staged_record
    from etcdops.restore.member import prepared_snapshot
    from etcdops.restore.point_plan import PointTarget

    assert state.backup_id is not None, "the backup is chosen before step 1"
    assert (state.point is None) == (point is None), "a point is planned by the preflight"
    with prepared_snapshot(
        config, state.backup_id, reporter, store=plan.store, stores=stores,
        under=_work_dir(plan), bump_flags=bump_flags,
        # the revision planned, from the base chosen: the same point on every resume
        point=None if point is None else PointTarget(revision=point.revision),
        allow_gap=plan.allow_gap,
    ) as prepared:
        status = prepared.status
        state.store, state.fallbacks = status.store, list(status.fallbacks)
        state.revision = prepared.plan.as_dict(prepared.revision)
        if state.point is not None and point is not None:
            # the planned backup stays the recovery's (its files are restored, as checked
            # before the stop step); the point names the one replayed from, when its snapshot
            # had passed the point and the backup before it served (restore.point.stage_point)
            state.point = staged_record(state.point, prepared.point_plan or point, prepared)
        state.warnings = list(dict.fromkeys(state.warnings + list(prepared.warnings)))
        state.save()
        yield prepared


def restore_members(
    config: Config, plan: Plan, state: RecoveryState, prepared: Prepared, reporter: Reporter,
    *, stores: Stores, deadline: float,
) -> str:
    """Restore every member of the plan from the prepared backup; what was done, in words."""
    files = _restore_files(config, plan, state, reporter, stores)
    for member in plan.members:
        if time.monotonic() >= deadline:
            raise ToolError(
                f"step 1 ran out of time before member {member.name} was restored",
                "give [steps.restore] a longer timeout in the plan",
            )
        restored = _restore_one(config, plan, state, member, prepared, reporter, deadline)
        record = state.members.setdefault(member.name, {"moved_aside": []})
        # the first restore of a member moved aside its data dir from before the disaster (or
        # found none); one redone after a failed step 1 moves aside that attempt's copy
        record.setdefault("original", restored["moved_aside"])
        record.update(host=member.host, data_dir=restored["data_dir"])
        if restored["moved_aside"]:
            record["moved_aside"].append(restored["moved_aside"])
        state.save()
    where = f" from the {state.store} store" if state.store else ""
    revision = prepared.plan.revision_after(prepared.revision)
    bumped = (f"revision {prepared.revision} -> {revision} ({prepared.plan.method})"
              if prepared.plan.bump else f"revision {revision}, not bumped")
    replayed = (state.point or {}).get("replayed")
    point = ""
    if state.point and replayed:
        base = state.point["base"]
        source = f" from backup {base}'s chain" if base != state.backup_id else ""
        point = (f" with {replayed['revisions']:,} journal revisions{source} replayed to "
                 f"{state.point['target']}")
    return (
        f"backup {state.backup_id}{where}{point} restored on {len(plan.members)} members "
        f"({bumped})" + files
    )


def _work_dir(plan: Plan) -> Path | None:
    """Where the plain snapshot is decoded: beside the first local data dir (a large snapshot
    stays off /tmp, on a disk that must hold the restore anyway), else the temporary dir."""
    local = [member for member in plan.members if not member.remote]
    return local[0].data_dir.expanduser().resolve().parent if local else None


def _restore_one(
    config: Config, plan: Plan, state: RecoveryState, member: PlanMember, prepared: Prepared,
    reporter: Reporter, deadline: float,
) -> dict[str, Any]:
    """One member from the prepared snapshot; its data dir and where the old one went."""
    from etcdops.restore.member import RestoreRequest, restore_prepared

    if not member.remote:
        request = RestoreRequest(
            ref=str(state.backup_id), data_dir=member.data_dir, name=member.name,
            initial_cluster=plan.initial_cluster, peer_urls=member.peer_url, token=state.token,
            store=plan.store,
        )
        result = restore_prepared(config, prepared, request, reporter)
        aside = result.moved_aside
        return {"data_dir": str(result.data_dir), "moved_aside": str(aside) if aside else None}
    # the snapshot arrives advanced already when a staging etcd did it: etcdutl adds nothing
    bump = prepared.plan.bump if prepared.plan.flags else 0
    host = Host(member.name, member.exec, member.etcdops, reporter=reporter)
    reporter.event(f"restoring member {member.name} on {member.host}")
    document = host.etcdops_json(
        ["restore", "-", "--data-dir", str(member.data_dir), "--name", member.name,
         "--initial-cluster", plan.initial_cluster,
         "--initial-advertise-peer-urls", member.peer_url,
         "--initial-cluster-token", state.token, "--bump-revision", str(bump)],
        stdin_path=prepared.path, timeout=max(1.0, deadline - time.monotonic()),
    )
    return {"data_dir": document.get("data_dir", str(member.data_dir)),
            "moved_aside": document.get("moved_aside")}


def _restore_files(
    config: Config, plan: Plan, state: RecoveryState, reporter: Reporter, stores: Stores
) -> str:
    """The backup's included files under [files] to on this host (once: a rerun of step 1
    after they were written does not write them again)."""
    if plan.files.to is None:
        return ""
    if state.files is None:
        from etcdops.restore.files import restore_files

        result = restore_files(
            config, str(state.backup_id), plan.files.to, reporter, force=plan.files.force,
            store=state.store, stores=stores,
        )
        state.files = {"to": str(result.dest_dir),
                       "files": [str(file.written_to) for file in result.files]}
        remote = sorted({member.host for member in plan.members if member.remote})
        if result.files and remote:
            state.warnings.append(
                f"the backup's {len(result.files)} included files were put back on this host "
                f"only (under {result.dest_dir}): copy what the other hosts need to "
                f"{', '.join(remote)} by hand"
            )
        state.save()
    count = len(state.files["files"])
    return f"; {count} included file{'s' if count != 1 else ''} put back under {state.files['to']}"
