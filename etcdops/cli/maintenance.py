"""`etcdops compact`, `etcdops defrag` and `etcdops maintain` (both, for the timer)."""

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from etcdops.cli.common import Invocation, command
from etcdops.cli.render import key_values, table
from etcdops.units import format_duration, format_size

DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Show each decision and its reason; change nothing.")
]
Force = Annotated[
    bool, typer.Option("--force", help="Defragment outside the off-peak window too.")
]


@command
def compact(
    run: Invocation,
    retain: Annotated[
        str | None,
        typer.Option("--retain", help="History to keep, e.g. 5m [default: [compaction] retain]."),
    ] = None,
    dry_run: DryRun = False,
    physical: Annotated[
        bool, typer.Option("--physical", help="Wait until the compaction is applied on disk.")
    ] = False,
) -> None:
    """Compact to the newest revision at least --retain old (a sample is taken every run)."""
    from etcdops.etcd.session import EtcdSession
    from etcdops.maintenance.compaction import compact as compact_history

    config = run.config(**{"compaction.retain": retain})
    with EtcdSession(config.etcd) as session:
        result = compact_history(session, config.compaction, dry_run=dry_run, physical=physical,
                                 metrics=config)
    run.emit(result.as_dict(), lambda console: console.print(_compaction_text(result)))


@command
def defrag(run: Invocation, force: Force = False, dry_run: DryRun = False) -> None:
    """Defragment members that need it, in the off-peak window, followers first, leader last."""
    from etcdops.etcd.session import EtcdSession
    from etcdops.maintenance.defrag import defragment_cluster

    config = run.config()
    with EtcdSession(config.etcd) as session:
        report = defragment_cluster(
            session, config, run.reporter(), now=datetime.now(UTC), force=force, dry_run=dry_run
        )
    run.emit(report.as_dict(), lambda console: _print_defrag(console, report))


@command
def maintain(run: Invocation, force: Force = False, dry_run: DryRun = False) -> None:
    """Compaction, then defragmentation in the window (each member once it applied the
    compaction): what the timer runs."""
    from etcdops.maintenance.maintain import maintain as maintain_cluster

    result = maintain_cluster(run.config(), run.reporter(), force=force, dry_run=dry_run)

    def render(console: Any) -> None:
        console.print(_compaction_text(result.compaction))
        _print_defrag(console, result.defrag)

    run.emit(result.as_dict(), render)


def _compaction_text(result: Any) -> Any:
    return key_values([
        ("compaction", result.reason),
        ("revision now", result.current_revision),
        ("oldest revision before", result.oldest_revision_before),
        ("compacted to", result.target_revision if result.compacted else None),
        ("revisions dropped", result.revisions_dropped),
        ("took", format_duration(result.seconds)),
    ])


def _print_defrag(console: Any, report: Any) -> None:
    if report.skipped:
        console.print(f"defragmentation: {report.skipped}", markup=False)
        return
    rows = [
        [
            d.member,
            "leader" if d.is_leader else "follower",
            format_size(d.db_size),
            format_size(d.db_size_in_use),
            ("would defragment" if report.dry_run else "defragment") if d.defragment else "skip",
            d.reason,
        ]
        for d in report.decisions
    ]
    columns = ["member", "role", "db size", "in use", "decision", "reason"]
    console.print(table(f"defragmentation (window {report.window})", columns, rows))
    if report.done:
        done = [
            [m.member, format_size(m.size_before), format_size(m.size_after),
             format_duration(m.seconds)]
            for m in report.done
        ]
        console.print(table(None, ["defragmented", "before", "after", "took"], done))
    if report.compacted_to:
        console.print(
            f"each member was decided once it had applied the compaction to revision "
            f"{report.compacted_to}", markup=False,
        )
    for alarm in report.disarmed:
        console.print(f"disarmed {alarm}", markup=False)
    if report.alarm_kept:
        console.print(report.alarm_kept, markup=False)
