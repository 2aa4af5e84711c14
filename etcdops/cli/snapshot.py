"""`etcdops snapshot`: take, list, check and fetch backups."""

import enum
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from etcdops.cli import exitcodes
from etcdops.cli.chains import CHAIN_COLUMNS, WINDOW_COLUMNS, chain_cells, window_rows
from etcdops.cli.common import Invocation, command
from etcdops.cli.render import key_values, table
from etcdops.errors import UsageError
from etcdops.units import format_duration, format_size

app = typer.Typer(
    help="Take, list, check, verify and fetch backups.", no_args_is_help=True, rich_markup_mode=None
)

RefArgument = Annotated[
    str, typer.Argument(help=(
        "'latest', a backup id or unique prefix, or a file. Keywords win: a file is a path with "
        "a '/' (./latest) or a name with a '.' (snap.db), which no backup id has."
    )),
]


@app.command("save")
@command
def save(
    run: Invocation,
    local_only: Annotated[bool, typer.Option(
        "--local-only",
        help="Write to the local store only. Takes no part in the election: the backup is "
        "this node's own, taken whatever the other nodes did this period.",
    )] = False,
    force: Annotated[bool, typer.Option(
        "--force",
        help="Take a backup even when this period already has one or another node is taking "
        "it (before maintenance): no election.",
    )] = False,
    no_wait: Annotated[bool, typer.Option(
        "--no-wait",
        help="When another node's save of this period is still running, exit 0 at once rather "
        "than wait for it to end (and take the period over if that node dies or gives it up).",
    )] = False,
    endpoints: Annotated[
        str | None,
        typer.Option("--endpoints", help="etcd endpoints, comma-separated (overrides config)."),
    ] = None,
) -> int:
    """Stream a snapshot from etcd, verify it, compress, encrypt and store it; print its id.

    Once per period ([schedule] snapshot_every) per cluster across nodes: the node that wins
    the election in etcd saves; a node that finds the period done, or a verified backup
    already in it, says by whom and exits 0. A node that finds another's save still running
    waits for it, and takes the period over if that node dies or fails (--no-wait: exit 0).
    """
    from etcdops.backup.period import save_once_per_period
    from etcdops.stores.configured import open_stores

    config = run.config(**{"etcd.endpoints": endpoints})
    stores = open_stores(config, local_only=local_only)
    # a local-only save writes no store the other nodes read: it cannot stand for the cluster
    outcome = save_once_per_period(
        config, run.reporter(), stores=stores, force=force or local_only, wait=not no_wait
    )
    result = outcome.result
    if result is None:
        # one line, however narrow the terminal: what a timer's log and its grep want
        run.emit(outcome.as_dict(), lambda console: console.print(
            outcome.summary(), markup=False, soft_wrap=True
        ))
        return exitcodes.OK
    manifest = result.manifest

    def render(console: Any) -> None:
        console.print(
            f"backup {manifest.id}: revision {manifest.etcd.revision}, "
            f"{format_size(manifest.snapshot_size)} snapshot stored as "
            f"{format_size(manifest.object_size)} in {', '.join(result.stored)} "
            f"({format_duration(result.durations['total'])})",
            markup=False,
        )

    run.emit(outcome.as_dict(), render)
    for store, why in result.failures.items():
        run.warn(f"backup {manifest.id} is not in the {store} store: {why}")
    for warning in outcome.warnings:
        run.warn(warning)
    return exitcodes.for_stores(result.failures, stores)


class StoreChoice(enum.StrEnum):
    local = "local"
    primary = "primary"
    replica = "replica"
    all = "all"


class ReadStore(enum.StrEnum):
    local = "local"
    primary = "primary"
    replica = "replica"


FromOption = Annotated[
    ReadStore | None,
    typer.Option("--from", help="Read only this store [default: local, primary, then replica]."),
]


@app.command("list")
@command
def list_backups(
    run: Invocation,
    store: Annotated[
        StoreChoice, typer.Option("--store", help="Which store to list.")
    ] = StoreChoice.all,
    show_all: Annotated[
        bool, typer.Option(
            "--all",
            help="Also show objects without a manifest, and writes that never finished (a save "
            "killed mid-upload leaves parts that cost money until aborted).",
        )
    ] = False,
) -> int:
    """The catalogue: every backup, its revision and size, and per copy when it was checked;
    with the journal, the window each backup's chain can restore, and the gaps between."""
    from etcdops.journal.windows import list_with_chains
    from etcdops.stores.configured import open_stores

    config = run.config()
    stores = open_stores(config)
    if store is not StoreChoice.all:
        stores = stores.only(store.value, "configure [s3] first")
    journaled = list_with_chains(stores, config.cluster, show_all=show_all)
    listing = journaled.listing
    found = listing.survey
    now = datetime.now(UTC)

    def since(moment: datetime) -> str:
        return format_duration(max((now - moment).total_seconds(), 0.0))

    def ago(moment: datetime) -> str:
        return f"{since(moment)} ago"

    rows = [
        [
            v.manifest.id,
            ago(v.manifest.created_at),
            v.manifest.etcd.revision,
            format_size(v.manifest.object_size),
            "\n".join(_copy_line(name, e, ago) for name, e in v.entries.items()),
        ]
        for v in found.backups
    ]
    # key counts and snapshot sizes are in the JSON and in 'status': at 80 columns the copies
    # need the room to say when and how each was checked
    columns = ["id", "created", "revision", "stored", "copies"]

    def render(console: Any) -> None:
        if rows:
            console.print(table(f"backups of {config.cluster}", columns, rows))
        if journaled.chains:
            console.print(table(
                "journal: what each chain can restore", WINDOW_COLUMNS,
                window_rows(journaled, since),
            ))
        orphans: dict[str, list[str]] = {}
        for name, bases in journaled.orphans.items():
            for base in bases:
                orphans.setdefault(base, []).append(name)
        for base, names in orphans.items():
            console.print(f"chain {base} has no base backup in {', '.join(names)}: not "
                          "restorable; prune deletes it once older than keep_within",
                          markup=False)
        if not rows and listing.listed:
            console.print(
                f"no backups of cluster '{config.cluster}' in {', '.join(listing.listed)}"
            )
        if show_all:
            for name, entries in found.damaged.items():
                for entry in entries:
                    console.print(
                        f"damaged manifest in {name}: {entry.id} ({entry.problem}): "
                        f"{entry.keys.manifest}", markup=False,
                    )
        for name, keys in listing.incomplete.items():
            for key in keys:
                console.print(f"incomplete (no manifest) in {name}: {key}", markup=False)
        for name, infos in listing.unfinished.items():
            for info in infos:
                console.print(
                    f"unfinished write in {name}, last active {ago(info.modified)}: {info.key}",
                    markup=False,
                )

    run.emit(journaled.as_dict(), render)
    if not show_all:
        for warning in found.warnings():
            run.warn(warning)
    for name, why in journaled.failures.items():
        run.warn(f"the {name} store could not be listed: {why}")
    for warning in listing.warnings:
        run.warn(warning)
    return exitcodes.for_stores(journaled.failures, stores)


def _copy_line(name: str, entry: Any, ago: Any) -> str:
    """One copy in the table: verified when and how it was last checked, or what is wrong."""
    if entry.verified:
        return f"{name}: verified {ago(entry.check.checked_at)} by {entry.check.method}"
    return f"{name}: {entry.condition.value.upper()}: {entry.problem}"


def _status_text(status: Any) -> Any:
    return key_values([
        ("source", status.source),
        ("kind", status.kind),
        ("backup id", status.backup_id),
        ("created", status.created_at),
        ("integrity", "ok (" + ", ".join(status.checks) + ")"),
        ("revision", status.revision),
        ("keys", f"{status.keys} ({status.keys_counted})" if status.keys is not None else None),
        ("snapshot size", format_size(status.snapshot_size)),
        ("stored size", format_size(status.stored_size)),
        ("db sha256", status.db_sha256),
        *(("fell back", note) for note in status.fallbacks),
    ])


@app.command("status")
@command
def status(run: Invocation, ref: RefArgument, source: FromOption = None) -> None:
    """Read a backup or snapshot file end to end: integrity, revision, keys, sizes."""
    from etcdops.backup.readback import snapshot_status

    result = snapshot_status(
        run.config(), ref, run.reporter(), store=source.value if source else None
    )
    run.emit(result.as_dict(), lambda console: console.print(_status_text(result)))
    # the copy read is intact (exit 0), but a copy that failed is the operator's to fix
    for warning in (*result.fallbacks, *result.warnings):
        run.warn(warning)


@app.command("fetch")
@command
def fetch(
    run: Invocation,
    ref: RefArgument,
    out: Annotated[Path, typer.Option("--out", help="Where to write the plain snapshot.")],
    source: FromOption = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Download, check, decrypt and decompress a backup into a snapshot etcdutl restores."""
    from etcdops.backup.readback import fetch_snapshot

    result = fetch_snapshot(
        run.config(), ref, out, run.reporter(), force=force,
        store=source.value if source else None,
    )
    run.emit(result.as_dict() | {"out": str(out)}, lambda console: console.print(
        f"{out}: plain snapshot of {result.source}, {format_size(result.snapshot_size)}, "
        f"integrity ok; restore it with 'etcdutl snapshot restore {out} ...'",
        markup=False,
    ))
    for warning in result.warnings:
        run.warn(warning)


@app.command("verify")
@command
def verify(
    run: Invocation,
    ref: RefArgument,
    source: FromOption = None,
    drill: Annotated[bool, typer.Option(
        "--drill",
        help="Also restore it with etcdutl into a scratch data dir, boot a throwaway etcd on "
        "loopback, count its keys by resource type and namespace and compare the total with "
        "the manifest; all of it is removed afterwards.",
    )] = False,
    scratch_dir: Annotated[Path | None, typer.Option(
        "--scratch-dir",
        help="Where the drill's private 0700 directories go (the plain snapshot and the "
        "restored data dir, each about the database's size) [default: the system's "
        "temporary directory].",
        show_default=False,
    )] = None,
    at: Annotated[str | None, typer.Option(
        "--at", help="With --drill: drill the cluster as it was at TIME (ISO 8601 with a "
        "zone): REF's chain (or, for 'latest', the newest backup before TIME) with the journal "
        "replayed up to it, as `restore --at` would restore it.", show_default=False,
    )] = None,
) -> int:
    """Prove a backup is intact with every check; with --drill, that it restores and serves.

    Exits 3 (partial) when it was verified only after another copy failed (each named on
    stderr), 15 when no copy verifies.
    """
    from etcdops.restore.drill import verify_backup

    if scratch_dir is not None and not drill:
        raise UsageError("--scratch-dir is where a drill works", "add --drill, or leave it out")
    from etcdops.cli.points import point_target

    result = verify_backup(
        run.config(), ref, run.reporter(), drill=drill,
        store=source.value if source else None, under=scratch_dir,
        point=point_target(at, None),
    )

    def render(console: Any) -> None:
        if result.verified:
            verdict = f"verified by {result.how}"
        else:
            problems = "; ".join(result.drill.problems if result.drill else ())
            verdict = f"NOT VERIFIED: {problems}; checked by {result.how}"
        console.print(f"{result.status.source}: {verdict}", markup=False)
        if result.drill is not None:
            _drill_text(console, result.drill)

    run.emit(result.as_dict(), render)
    for warning in (*result.status.fallbacks, *result.status.warnings):
        run.warn(warning)
    for problem in result.drill.problems if result.drill else ():
        run.warn(problem)
    if not result.verified:
        return exitcodes.INTEGRITY
    # verified, but only after a copy (or a store) failed: the backup is not everywhere it
    # should be, as a save that missed the replica is partial
    return exitcodes.PARTIAL if result.status.fallbacks else exitcodes.OK


_PHASE_NAMES = {"decode": "decode", "restore": "etcdutl restore", "start": "etcd start",
                "inventory": "inventory"}
_TOP_NAMESPACES = 3  # per type in the inventory table
_TOP_OVERALL = 8  # on the line under it


def _drill_text(console: Any, drill: Any) -> None:
    """The phase times, what was counted against what, and the inventory by type."""
    phases = " · ".join(
        f"{_PHASE_NAMES.get(name, name)} {format_duration(seconds)}"
        for name, seconds in drill.phases.items()
    )
    total = drill.inventory.total
    compared = (
        f", the manifest says {drill.manifest_keys}" if drill.manifest_keys is not None else ""
    )
    console.print(key_values([
        ("phases", f"{phases} · total {format_duration(sum(drill.phases.values()))}"),
        ("revision", f"{drill.revision} restored, keys counted at {drill.counted_at}"),
        ("keys", f"{total}{compared}"),
        *(("note", note) for note in drill.notes),
    ]))
    rows = []
    for resource, keys in drill.inventory.by_type().items():
        namespaces = drill.inventory.namespaces_of(resource)
        rows.append([resource, keys, _top(namespaces, _TOP_NAMESPACES) or "cluster-scoped"])
    console.print(table("inventory", ["type", "keys", "namespaces"], rows))
    top = _top(drill.inventory.by_namespace(), _TOP_OVERALL)
    if top:
        console.print(f"top namespaces: {top}", markup=False)


def _top(counts: dict[str, int], shown: int) -> str:
    """The first `shown` of ranked counts, and how many more there are."""
    text = ", ".join(f"{name} {count}" for name, count in list(counts.items())[:shown])
    more = len(counts) - shown
    return text + (f", +{more} more" if more > 0 else "")


@app.command("replicate")
@command
def replicate(
    run: Invocation,
    ref: Annotated[str | None, typer.Argument(help="The backup to copy (id or 'latest').")] = None,
    missing: Annotated[
        bool, typer.Option("--missing", help="Copy every good backup the S3 stores lack.")
    ] = False,
) -> int:
    """Copy backups to the S3 primary and replica where they are not yet, and check them."""
    from etcdops.backup.replicate import replicate as replicate_backups
    from etcdops.stores.configured import open_stores

    if (ref is None) == (not missing):
        raise UsageError("give either a backup REF or --missing", "e.g. 'snapshot replicate "
                         "--missing' after a replica outage")
    config = run.config()
    stores = open_stores(config)
    report = replicate_backups(stores, config.cluster, run.reporter(), ref=ref)

    def render(console: Any) -> None:
        for backup_id, store_name in report.copied:
            console.print(f"copied {backup_id} to {store_name}", markup=False)
        console.print(f"{len(report.copied)} copied, {report.already} already in place, "
                      f"{len(report.failed)} failed", markup=False)

    run.emit(report.as_dict(), render)
    for backup_id, store_name, error in report.failed:
        run.warn(f"could not copy {backup_id} to {store_name}: {error}")
    return exitcodes.for_stores(report.failures, stores)


@app.command("prune")
@command
def prune(
    run: Invocation,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show each decision; delete nothing.")
    ] = False,
    now: Annotated[
        datetime | None,
        typer.Option("--now", help="Decide as if it were this time (ISO-8601) [default: now].",
                     formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    ] = None,
) -> int:
    """Apply retention to every store, saying why each backup and each journal chain is kept
    or deleted (a chain goes with its base backup)."""
    from etcdops.journal.prune import prune as prune_stores
    from etcdops.stores.configured import open_stores

    config = run.config()
    moment = (now or datetime.now(UTC))
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    stores = open_stores(config)
    report = prune_stores(
        stores, config.cluster, config.retention, moment, run.reporter(), dry_run=dry_run,
        metrics=config,
    )

    def action(keep: bool) -> str:
        return "keep" if keep else ("would delete" if dry_run else "delete")

    def render(console: Any) -> None:
        for r in report.stores:
            rows = [[d.candidate.id, d.candidate.condition.value, action(d.keep),
                     "; ".join(d.reasons)] for d in r.backups.decisions]
            console.print(table(f"{r.store} store", ["id", "condition", "action", "why"], rows))
            if r.chains:
                console.print(table(
                    f"{r.store} store: journal chains", CHAIN_COLUMNS,
                    [[*chain_cells(d.chain, report.now), action(d.keep), "; ".join(d.reasons)]
                     for d in r.chains],
                ))
            if r.deleted_chains:
                console.print(f"deleted {r.deleted_segments} segments of "
                              f"{len(r.deleted_chains)} chains from the {r.store} store",
                              markup=False)

    run.emit(report.as_dict(), render)
    for r in report.stores:
        for note in r.notes:
            run.warn(note)
        for d in r.chains:
            for note in d.chain.notes:
                run.warn(note)
    for store_name, error in report.failures.items():
        run.warn(f"pruning the {store_name} store failed: {error}")
    return exitcodes.for_stores(report.failures, stores)
