"""`etcdops dr`: write a disaster-recovery plan, and run it (the seed's five steps, timed)."""

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from etcdops.cli import exitcodes
from etcdops.cli.common import Invocation, command
from etcdops.cli.points import allow_gap_option, at_option, point_target, revision_option
from etcdops.cli.render import key_values, table
from etcdops.units import format_duration

app = typer.Typer(
    help="Disaster recovery: write a plan from the cluster, then run its five steps, each timed "
    "against the seed's targets.",
    no_args_is_help=True, rich_markup_mode=None,
)

PlanOption = Annotated[Path, typer.Option(
    "--plan", help="The recovery plan (TOML).", show_default=False)]


@app.command("plan")
@command
def plan(
    run: Invocation,
    plan_path: PlanOption,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented plan from the config and etcd's member list, to edit before use."""
    from etcdops.recovery.template import write_plan_template

    written = write_plan_template(run.config(), plan_path, force=force)
    for warning in written.warnings:
        run.warn(warning)
    run.emit(written.as_dict(), lambda console: console.print(
        f"wrote {written.path}: {len(written.members)} members from {written.members_from}; "
        "edit the commands and checks, then check it with "
        f"'etcdops dr run --plan {written.path} --dry-run'", markup=False, soft_wrap=True,
    ))


@app.command("run")
@command
def run_plan(
    run: Invocation,
    plan_path: PlanOption,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check every prerequisite and print the plan; touch nothing.")] = False,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Also write the report as JSON to this file (atomically).",
        show_default=False)] = None,
    state: Annotated[Path | None, typer.Option(
        "--state", help="The state file a rerun resumes from [default: PLAN.state.json].",
        show_default=False)] = None,
    at: Annotated[str | None, at_option(
        "[default: the plan's at or revision; else its backup, where 'latest' is the newest "
        "journaled point]")] = None,
    revision: Annotated[int | None, revision_option()] = None,
    allow_gap: Annotated[bool, allow_gap_option("[default: the plan's allow_gap]")] = False,
) -> int:
    """Run the recovery a plan describes: stop, then 1 restore etcd, 2 start the control plane,
    3 nodes reconnect, 4 kubelets reconcile pods, 5 controllers recreate what is missing.

    A rerun after an interruption resumes at the first unfinished step, with the same backup
    and point in time (a changed --at, --revision or --allow-gap is refused, as a changed plan
    is); a rerun after a completed recovery is refused. A missed target never stops it: it
    finishes, then exits 16. With --at/--revision (or the plan's at/revision) step 1 replays
    the journal once on a staging etcd and restores every member from its snapshot.
    """
    from etcdops.recovery.run import run_recovery

    point = point_target(at, revision)  # both: a usage error before anything is read
    if report is not None:
        _check_report_path(report)  # a typo must not cost the report of a whole recovery
    result = run_recovery(
        run.config(), plan_path, run.reporter(), dry_run=dry_run, state_path=state,
        point=point, allow_gap=allow_gap,
    )
    document = result.as_dict()
    failure = result.failure
    if failure is not None and document["error"] is not None:
        document["error"] |= {"exit_code": exitcodes.exit_code_for(failure),
                              "type": type(failure).__name__}
    run.emit(document, lambda console: print_report(console, result))
    for warning in result.warnings:
        run.warn(warning)
    if report is not None:
        _write_report(run, report, document)
    if failure is not None:
        # the report carries the error: no second JSON document on stdout
        return run.fail(failure, document=False)
    if result.target_missed:
        for missed in result.missed:
            run.warn(f"target missed: {missed}")
        return exitcodes.TARGET_MISSED
    return exitcodes.OK


def _check_report_path(path: Path) -> None:
    """Refuse, before the run, a --report path that cannot be written (its directory is not
    created: a mistyped one would hide the report where no one looks)."""
    from etcdops.errors import UsageError

    if not path.parent.is_dir():
        raise UsageError(
            f"--report {path}: the directory {path.parent} does not exist",
            "create it, or give a path in an existing directory",
        )
    if path.is_dir():
        raise UsageError(f"--report {path} is a directory", "give a file path for the report")


def _write_report(run: Invocation, path: Path, document: dict[str, Any]) -> None:
    """Write the report file after the report was printed: a failure to write it is a
    warning, never the recovery's outcome or exit code."""
    from etcdops.errors import EtcdopsError
    from etcdops.stores.local import AtomicFile

    try:
        with AtomicFile(path, mode=0o644) as target:
            target.write((json.dumps(document, indent=2, default=str) + "\n").encode())
    except EtcdopsError as exc:
        run.warn(f"the report file was not written: {exc.message} (the report above is the "
                 "recovery's)")


def print_report(console: Any, result: Any) -> None:
    """dr run's report as a table and summary (or the dry run's checks), for dr and the demo."""
    if result.dry_run:
        _print_dry_run(console, result)
        return
    rows = [
        [str(number), record.name,
         record.started_at[11:23] if record.started_at else "",
         format_duration(record.seconds) if record.started_at else "", record.verdict,
         record.detail]
        for number, record in enumerate(result.steps)
    ]
    title = f"Recovery of {result.plan.path}" + ("" if result.completed else " (not finished)")
    console.print(table(title, ["#", "step", "started (UTC)", "took", "verdict", "detail"],
                        rows))
    console.print(key_values(_summary(result)))


def _summary(result: Any) -> list[tuple[str, Any]]:
    backup = result.backup_id or "-"
    if result.backup_created_at:
        backup += f" (created {result.backup_created_at})"
    if result.store:
        backup += f", read from the {result.store} store"
    pairs: list[tuple[str, Any]] = [("backup", backup)]
    if result.point:
        from etcdops.recovery.point import describe

        pairs.append(("point", describe(result.point)))
    pairs += [("fell back", note) for note in result.fallbacks]
    for what, check, last in (("restore time", result.restore_time, 2),
                              ("recovery time", result.recovery_time, 5)):
        target = format_duration(check.target)
        if check.seconds is None:
            pairs.append((what, f"not measured (target {target})"))
        else:
            verdict = "met" if check.met else "MISSED"
            pairs.append((what, f"{format_duration(check.seconds)} (target {target}): {verdict}; "
                          f"wall clock from step 1's decode (before the stop step) to the end "
                          f"of step {last}"))
    window = result.data_loss_window
    since = ("the time between the point restored and the disaster" if result.point
             else "the backup's age when the disaster was declared")
    pairs.append(("data-loss window",
                  "-" if window is None else f"{format_duration(window)} ({since})"))
    revision = result.revision
    if revision:
        how = f"bumped: {revision['method']}" if revision["bump"] else "not bumped"
        restored = "at the point" if result.point else "in the backup"
        pairs.append(("revision", f"{revision['snapshot']} {restored} -> "
                      f"{revision['after_restore']} after the restore ({how})"))
    document = result.as_dict()
    for member in document["members"]:
        original = member["original"]
        copies = [path for path in member["moved_aside"] if path != original]
        if member["name"] not in result.members:
            aside = "not restored yet"
        else:
            aside = (f"{original} (from before the disaster)" if original
                     else "nothing was there before the disaster")
        if copies:
            aside += f"; copies restored by earlier attempts: {', '.join(copies)}"
        pairs.append((f"member {member['name']}",
                      f"{member['data_dir']} on {member['host']}; old data dir: {aside}"))
    if result.files:
        pairs.append(("files", f"{len(result.files['files'])} put back under "
                      f"{result.files['to']}"))
    # the revision's restart warning above all: the report is what is kept of the recovery
    pairs += [("warning", warning) for warning in result.warnings]
    pairs.append(("state file", result.state_path))
    if result.resume_at is not None:
        from etcdops.recovery.report import step_label

        pairs.append(("resume", f"'etcdops dr run --plan {result.plan.path}' again resumes at "
                      f"{step_label(result.resume_at)}"))
    return pairs


def _print_dry_run(console: Any, result: Any) -> None:
    from etcdops.recovery.point import describe

    plan = result.plan
    rows = [[check.check, check.where, "ok" if check.ok else "FAILED", check.detail]
            for check in result.prerequisites]
    failed = sum(not check.ok for check in result.prerequisites)
    verdict = "all pass" if not failed else f"{failed} failed"
    console.print(table(f"Prerequisites of {plan.path} ({verdict}; nothing was touched)",
                        ["check", "where", "result", "detail"], rows))
    steps = plan.steps
    pairs: list[tuple[str, Any]] = [
        ("backup", f"{plan.backup} from {plan.source}"
         + (f" (resolves to {result.backup_id})" if result.backup_id else "")),
        *((("point", describe(result.point)),) if result.point else ()),
        ("initial cluster", plan.initial_cluster),
        *((f"member {m.name}", f"{m.data_dir} on {m.host}; peer {m.peer_url}, client "
           f"{m.client_url}") for m in plan.members),
        ("stop", "\n".join(steps.stop.commands) or "no commands"),
        ("1 restore", f"every member, within {format_duration(steps.restore.timeout)}"),
        ("2 start", "\n".join([*steps.start.commands, "then every member healthy within "
                               f"{format_duration(steps.start.timeout)}"])),
        ("3 nodes", _checks(steps.nodes, expect="node leases renewed")),
        ("4 pods", _checks(steps.pods, min_updated="of the restored pods updated")),
        ("5 controllers", _checks(steps.controllers, require_keys="keys exist")),
        ("targets", f"restore {format_duration(result.restore_time.target)}, recovery "
         f"{format_duration(result.recovery_time.target)}"),
        ("files", f"to {plan.files.to}" if plan.files.to else "not restored"),
    ]
    console.print(key_values(pairs))


def _checks(step: Any, **described: str) -> str:
    parts = []
    for key, words in described.items():
        value = getattr(step, key)
        if value is None or value == ():
            continue
        shown = ", ".join(value) if isinstance(value, tuple) else (
            f"{value:.0%}" if isinstance(value, float) else str(value)
        )
        parts.append(f"{shown} {words}")
    if step.command:
        parts.append(f"`{step.command}` exits 0")
    return " and ".join(parts) + f", within {format_duration(step.timeout)}"
