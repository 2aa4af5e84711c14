"""`etcdops restore`: one etcd member's data dir from a backup."""

from pathlib import Path
from typing import Annotated, Any

import typer

from etcdops.cli.common import Invocation, command
from etcdops.cli.render import key_values
from etcdops.cli.snapshot import ReadStore, RefArgument
from etcdops.units import format_duration


@command
def restore(
    run: Invocation,
    ref: RefArgument,
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
) -> None:
    """Restore one member of a new cluster from a backup, with etcdutl.

    Every member of one recovery gets the same backup (by id), --initial-cluster and token.
    Where etcdutl offers --bump-revision (etcd 3.5.10+, 3.6) the revision is bumped by
    [restore] bump_revision; otherwise the report says which components to restart. Not for
    re-adding one failed member to a live cluster (that is member remove/add).
    """
    from etcdops.restore.member import RestoreRequest, restore_member

    request = RestoreRequest(
        ref=ref, data_dir=data_dir, name=name, initial_cluster=initial_cluster,
        peer_urls=peer_urls, token=token, store=source.value if source else None,
    )
    result = restore_member(run.config(), request, run.reporter())
    run.emit(result.as_dict(), lambda console: console.print(_report(result)))
    for warning in result.warnings:
        run.warn(warning)


def _report(result: Any) -> Any:
    member, plan = result.member, result.revision_plan
    what = f"backup {result.backup_id}" if result.backup_id else result.source
    where = f" from the {result.store} store" if result.store else ""
    after = plan.revision_after(result.revision)
    revision = (
        f"{result.revision} -> {after} (bumped by {plan.bump:,})" if plan.bump
        else f"{result.revision} (not bumped)"
    )
    others = f"and {what}" if result.backup_id else "and the same snapshot"
    took = result.durations
    return key_values([
        ("restored", f"{what}{where} as member {member.name}"),
        ("data dir", result.data_dir),
        ("moved aside", result.moved_aside or "nothing was there"),
        ("cluster token", member.token + (
            f" (new: restore every other member with --initial-cluster-token {member.token} "
            f"{others})" if member.token_generated else "")),
        ("revision", revision),
        ("took", f"download and decode {format_duration(took['download_decode'])}, etcdutl "
                 f"{format_duration(took['etcdutl'])}, total {format_duration(took['total'])}"),
        *(("fell back", note) for note in result.fallbacks),
    ])
