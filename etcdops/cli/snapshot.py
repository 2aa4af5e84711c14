"""`etcdops snapshot`: take, list, check and fetch backups."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from etcdops.cli import exitcodes
from etcdops.cli.common import Invocation, command
from etcdops.cli.render import key_values, table
from etcdops.units import format_duration, format_size

app = typer.Typer(help="Take, list, check and fetch backups.", no_args_is_help=True)

RefArgument = Annotated[
    str, typer.Argument(help="A backup id (or unique prefix, or 'latest'), or a file path.")
]


@app.command("save")
@command
def save(
    run: Invocation,
    local_only: Annotated[
        bool, typer.Option("--local-only", help="Write to the local store only.")
    ] = False,
    endpoints: Annotated[
        str | None,
        typer.Option("--endpoints", help="etcd endpoints, comma-separated (overrides config)."),
    ] = None,
) -> int:
    """Stream a snapshot from etcd, verify it, compress, encrypt and store it; print its id."""
    from etcdops.snapshot import save_snapshot

    config = run.config(**{"etcd.endpoints": endpoints})
    result = save_snapshot(config, run.reporter(), local_only=local_only)
    manifest = result.manifest
    doc = manifest_document(manifest) | {"stored_in": list(result.stored),
                                         "failed": result.failures}

    def render(console: Any) -> None:
        console.print(
            f"backup {manifest.id}: revision {manifest.etcd.revision}, "
            f"{format_size(manifest.snapshot_size)} snapshot stored as "
            f"{format_size(manifest.object_size)} in {', '.join(result.stored)} "
            f"({format_duration(manifest.durations['total'])})",
            markup=False,
        )

    run.emit(doc, render)
    for store, why in result.failures.items():
        run.warn(f"backup {manifest.id} is not in the {store} store: {why}")
    return exitcodes.for_stores(result.failures)


def manifest_document(manifest: Any) -> dict[str, Any]:
    """A manifest as the JSON that `--output json` prints."""
    import json

    return json.loads(manifest.to_json())


@app.command("list")
@command
def list_backups(run: Invocation) -> None:
    """The catalogue: every backup with its revision, sizes and whether it is complete."""
    from etcdops.catalog import Catalog
    from etcdops.stores.local import LocalStore

    config = run.config()
    entries = Catalog(LocalStore(config.local.dir), config.cluster).entries()
    now = datetime.now(UTC)
    doc = [
        {
            "id": e.manifest.id,
            "created_at": e.manifest.created_at.isoformat(),
            "revision": e.manifest.etcd.revision,
            "keys": e.manifest.etcd.keys,
            "snapshot_size": e.manifest.snapshot_size,
            "stored_size": e.manifest.object_size,
            "stores": [e.store],
            "verified": e.good,
            "problem": e.problem,
        }
        for e in entries
    ]
    rows = [
        [
            e.manifest.id,
            f"{format_duration((now - e.manifest.created_at).total_seconds())} ago",
            e.manifest.etcd.revision,
            e.manifest.etcd.keys,
            format_size(e.manifest.snapshot_size),
            format_size(e.manifest.object_size),
            e.store,
            "yes" if e.good else f"NO: {e.problem}",
        ]
        for e in entries
    ]
    columns = ["id", "created", "revision", "keys", "snapshot", "stored", "stores", "verified"]
    run.emit(doc, lambda console: console.print(
        table(f"backups of {config.cluster} in {config.local.dir}", columns, rows)
        if rows else f"no backups of cluster '{config.cluster}' in {config.local.dir}"
    ))


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
    ])


@app.command("status")
@command
def status(run: Invocation, ref: RefArgument) -> None:
    """Read a backup or snapshot file end to end: integrity, revision, keys, sizes."""
    from etcdops.readback import snapshot_status

    result = snapshot_status(run.config(), ref, run.reporter())
    run.emit(result.as_dict(), lambda console: console.print(_status_text(result)))


@app.command("fetch")
@command
def fetch(
    run: Invocation,
    ref: RefArgument,
    out: Annotated[Path, typer.Option("--out", help="Where to write the plain snapshot.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Download, check, decrypt and decompress a backup into a snapshot etcdutl restores."""
    from etcdops.readback import fetch_snapshot

    result = fetch_snapshot(run.config(), ref, out, run.reporter(), force=force)
    run.emit(result.as_dict() | {"out": str(out)}, lambda console: console.print(
        f"{out}: plain snapshot of {result.source}, {format_size(result.snapshot_size)}, "
        f"integrity ok; restore it with 'etcdutl snapshot restore {out} ...'",
        markup=False,
    ))
