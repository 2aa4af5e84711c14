"""`etcdops restore`: one etcd member's data dir from a backup (or from standard input)."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from etcdops.cli.common import Invocation, command
from etcdops.cli.points import allow_gap_option, at_option, point_target, revision_option
from etcdops.cli.render import key_values
from etcdops.cli.snapshot import ReadStore
from etcdops.units import format_duration, format_size

RestoreRef = Annotated[
    str, typer.Argument(help=(
        "'latest', a backup id or unique prefix, a file (a path with a '/' or a name with a "
        "'.'), or '-': a plain snapshot on standard input (etcd's trailer checked), as `dr run` "
        "sends one to another host."
    )),
]


@command
def restore(
    run: Invocation,
    ref: RestoreRef,
    data_dir: Annotated[Path, typer.Option(
        "--data-dir", help="The member's data dir: absent, empty, or an old one, which is moved "
        "aside as DIR.etcdops-<UTC time> (never deleted).", show_default=False)],
    name: Annotated[str, typer.Option(
        "--name", help="This member's name, as in --initial-cluster.", show_default=False)],
    initial_cluster: Annotated[str, typer.Option(
        "--initial-cluster", help="Every member of the new cluster: name=peer-URL,... "
        "(the same on every member).", show_default=False)],
    peer_urls: Annotated[str, typer.Option(
        "--initial-advertise-peer-urls", help="This member's peer URLs, comma-separated.",
        show_default=False)],
    token: Annotated[str | None, typer.Option(
        "--initial-cluster-token", help="The recovery's cluster token [default: a new one, "
        "printed: give it to every other member].", show_default=False)] = None,
    source: Annotated[ReadStore | None, typer.Option(
        "--from", help="Read only this store [default: local, primary, then replica, falling "
        "back to the next on a failed check].", show_default=False)] = None,
    bump_revision: Annotated[int | None, typer.Option(
        "--bump-revision", min=0, max=10**12, help="Add N to the revision with etcdutl's "
        "--bump-revision --mark-compacted (refused if this etcdutl lacks them); 0: no bump "
        "and no restart warning (the caller advanced it) [default: [restore] bump_revision "
        "with etcdutl's flags if it has them; else, for a cluster of one member, a staging "
        "etcd within [restore] bump_budget; else a warning of what to restart].",
        show_default=False)] = None,
    files_to: Annotated[Path | None, typer.Option(
        "--files-to", help="Also put the backup's included files ([backup] include_files) back "
        "under DIR at their own paths ('/' puts each where it was), once the member is restored; "
        "an existing file stops the restore before the data dir is touched.",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="With --files-to: replace existing files (each kept as a hidden "
        ".NAME.etcdops-<UTC time> beside it).")] = False,
    snapshot_size: Annotated[int | None, typer.Option(
        "--snapshot-size", min=0, help="With '-' and --dry-run: the size in bytes of the "
        "snapshot that will come on standard input, so that the free space is judged (dr run "
        "passes it to another host's dry run).", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check every prerequisite and say what a restore would do, reading "
        "no backup (manifests only) and no standard input, and changing nothing.")] = False,
    at: Annotated[str | None, at_option()] = None,
    revision: Annotated[int | None, revision_option()] = None,
    allow_gap: Annotated[bool, allow_gap_option()] = False,
) -> None:
    """Restore one member of a new cluster from a backup, with etcdutl.

    Every member of one recovery gets the same backup (by id), --initial-cluster and token.
    The revision is moved past what clients may have seen since the backup by etcdutl where
    it offers --bump-revision (etcd 3.5.10+, 3.6). Without it, a cluster of one member is
    advanced on a staging etcd on loopback when that fits [restore] bump_budget; one member of
    several gets none (each would get its own revisions: `etcdops dr run` stages once for all)
    and the report says which components to restart. Not for re-adding one failed member to a
    live cluster (that is member remove/add).

    With the journal (`etcdops journal run`), 'latest' is the newest journaled point, and
    --at/--revision restore a point in time: the base backup restored on a staging etcd on
    loopback, the journal replayed there one transaction per original revision, and every
    member restored from its snapshot.
    """
    from etcdops.errors import UsageError
    from etcdops.restore.member import STDIN_REF, RestoreRequest, restore_member

    if force and files_to is None:
        raise UsageError("--force replaces included files", "add --files-to DIR, or leave it out")
    if files_to is not None and ref == STDIN_REF:
        raise UsageError("--files-to reads a backup or a file, not standard input",
                         "give the backup id or the .db.zst.age file")
    if snapshot_size is not None and (ref != STDIN_REF or not dry_run):
        raise UsageError("--snapshot-size sizes a dry run of a snapshot on standard input",
                         "use it with REF '-' and --dry-run, or leave it out")
    if files_to is not None and dry_run:
        raise UsageError("--files-to writes files, which a dry run does not",
                         "leave out --files-to, or --dry-run")
    point = point_target(at, revision)
    if point is not None and (files_to is not None or dry_run):
        raise UsageError("--at and --revision restore a point in time, which --files-to and "
                         "--dry-run do not know yet", "leave one of them out")
    config = run.config()
    request = RestoreRequest(
        ref=ref, data_dir=data_dir, name=name, initial_cluster=initial_cluster,
        peer_urls=peer_urls, token=token, store=source.value if source else None,
        bump_revision=bump_revision, point=point, allow_gap=allow_gap,
    )
    files = checked_files = None
    if files_to is not None:
        import dataclasses

        from etcdops.restore.files import check_files
        from etcdops.restore.member import check_request

        check_request(config, request)  # a member that would be refused writes no files either
        # the files' conflicts are found before the member is restored, and the files written
        # after it: a failed member restore leaves no files behind for a rerun to trip on
        checked_files = check_files(config, ref, files_to, run.reporter(), force=force,
                                    store=request.store)
        if checked_files.source.manifest is not None:
            # the member from the very backup whose files go back: `latest` may move
            request = dataclasses.replace(request, ref=checked_files.source.manifest.id)
    if dry_run:
        from etcdops.restore.preflight import dry_run as check

        checked = check(config, request, run.reporter(), snapshot_size=snapshot_size)
        run.emit(checked.as_dict(), lambda console: console.print(_dry_run_report(checked)))
        warnings: tuple[str, ...] = checked.warnings
    else:
        stdin = sys.stdin.buffer if ref == STDIN_REF else None
        result = restore_member(config, request, run.reporter(), stdin=stdin)
        if checked_files is not None:
            from etcdops.restore.files import write_files

            files = write_files(checked_files, run.reporter())
        run.emit(result.as_dict() | {"files": files.as_dict() if files else None},
                 lambda console: console.print(_report(result, files)))
        warnings = result.warnings
    for warning in warnings:
        run.warn(warning)


def _report(result: Any, files: Any) -> Any:
    member, plan = result.member, result.revision_plan
    what = f"backup {result.backup_id}" if result.backup_id else result.source
    where = f" from the {result.store} store" if result.store else ""
    after = plan.revision_after(result.revision)
    revision = (
        f"{result.revision} -> {after} (bumped by {plan.bump:,}, {plan.method})" if plan.bump
        else f"{result.revision} (not bumped)"
    )
    others = f"and {what}" if result.backup_id else "and the same snapshot"
    took = result.durations
    staging = (f", staging etcd {format_duration(took['staging'])}"
               if "staging" in took else "")
    staging += f", journal replay {format_duration(took['replay'])}" if "replay" in took else ""
    return key_values([
        ("restored", f"{what}{where} as member {member.name}"),
        ("data dir", result.data_dir),
        ("moved aside", result.moved_aside or "nothing was there"),
        ("cluster token", member.token + (
            f" (new: restore every other member with --initial-cluster-token {member.token} "
            f"{others})" if member.token_generated else "")),
        ("revision", revision),
        ("took", f"download and decode {format_duration(took['download_decode'])}{staging}, "
                 f"etcdutl {format_duration(took['etcdutl'])}, total "
                 f"{format_duration(took['total'])}"),
        *(("fell back", note) for note in result.fallbacks),
        *((("included files", f"{len(files.files)} put back under {files.dest_dir}"
            if files.files else "none in this backup"),) if files else ()),
        *(("kept aside", str(file.moved_aside)) for file in (files.files if files else ())
          if file.moved_aside),
    ])


def _dry_run_report(checked: Any) -> Any:
    backup = checked.backup
    if backup.get("read") is False:
        located = "standard input (not read in a dry run)"
    else:
        size = backup["snapshot_size"]
        located = f"{backup['source']}" + (
            f", snapshot {format_size(size)}" if size is not None else ", snapshot size unknown"
        )
    space = format_size(checked.free_bytes) + " free" + (
        f", about {format_size(checked.space_needed)} needed" if checked.space_needed else "")
    bumps = "has --bump-revision" if checked.etcdutl_bumps else "has no --bump-revision"
    return key_values([
        ("dry run", "nothing was read or changed"),
        ("would restore", f"{located} as member {checked.member.name}"),
        ("data dir", checked.target.path),
        ("would move aside", checked.aside or "nothing: the data dir is absent or empty"),
        ("free space", space),
        ("etcdutl", f"{checked.etcdutl} ({bumps})"),
        ("revision", checked.revision),
        ("initial cluster", checked.member.initial_cluster),
        *(("note", note) for note in backup.get("notes", ())),
    ])
