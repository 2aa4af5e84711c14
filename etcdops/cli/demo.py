"""`etcdops demo`: the whole job on an embedded default: a disaster and its recovery, then a
namespace deleted and restored to the moment before."""

from typing import Annotated, Any

import typer

from etcdops.cli import exitcodes
from etcdops.cli.common import Invocation, command
from etcdops.cli.render import key_values, table
from etcdops.units import format_duration


@command
def demo(
    run: Invocation,
    objects: Annotated[
        int, typer.Option(help="How many Kubernetes objects to load.", min=1)
    ] = 3000,
    keep: Annotated[bool, typer.Option(help="Keep the demo's directory to look around.")] = False,
) -> int:
    """Run a throwaway three-member etcd, load Kubernetes objects, back up, check and fetch;
    then kill the cluster and recover it with `dr run` from the replica region; then journal
    it while a workload writes, delete a namespace, and restore it with `restore --at` the
    moment before; then clean up."""
    from etcdops.demo.run import run_demo

    report = run_demo(run.reporter(), objects=objects, keep=keep)
    recovery = report.recovery
    rows = [[s.name, format_duration(s.seconds), s.detail] for s in report.steps]

    def render(console: Any) -> None:
        from etcdops.cli.dr import print_report as print_recovery  # dr run's own report

        console.print(table("etcdops demo", ["step", "took", "what happened"], rows))
        if recovery is not None:
            print_recovery(console, recovery)
        if report.rewind is not None and report.rewind.restore is not None:
            console.print(key_values(_rewind_summary(report.rewind)))
        console.print(
            f"demo files kept in {report.workdir}" if report.kept else "demo files removed",
            markup=False,
        )

    run.emit(report.as_dict(), render)
    if recovery is None:
        return exitcodes.OK
    for warning in recovery.warnings:
        run.warn(warning)
    # as dr run: a recovery that missed a target finished, and says so with its exit code
    for missed in recovery.missed:
        run.warn(f"target missed: {missed}")
    return exitcodes.TARGET_MISSED if recovery.target_missed else exitcodes.OK


def _rewind_summary(rewind: Any) -> list[tuple[str, Any]]:
    """The point-in-time restore's report: what was asked, read, replayed and found."""
    restore, replay, check = rewind.restore, rewind.replay, rewind.check
    pairs: list[tuple[str, Any]] = [
        ("point in time", f"namespace {rewind.namespace} deleted at {rewind.deleted_at}; "
                          f"restore latest --at {rewind.target}"),
        ("restored", f"{restore.source}, into {restore.data_dir}"),
    ]
    if replay is not None:
        pairs.append(("replayed", f"{replay.events:,} changes in {replay.revisions:,} revisions "
                                  f"after the base's {replay.from_revision:,}, "
                                  f"{format_duration(replay.seconds)}"))
    plan = restore.revision_plan
    after = (f" -> {plan.revision_after(restore.revision):,} after the restore (bumped: "
             f"{plan.method})" if plan.bump else " (not bumped)")
    pairs.append(("revision", f"{restore.revision:,}, the moment before the delete{after}"))
    if check:
        pairs.append(("namespace", f"{check['restored_keys']} of {check['deleted_keys']} "
                                   f"objects back, each with the value it had before the delete"))
    pairs += [("warning", warning) for warning in restore.warnings]
    return pairs
