"""The etcdops command line: command groups are registered here, and nothing else."""

import typer

from etcdops import __version__
from etcdops.cli import demo, health, keys, maintenance, snapshot
from etcdops.cli.exitcodes import HELP_TABLE

app = typer.Typer(
    name="etcdops",
    help="Keeps etcd recoverable: verified, compressed, age-encrypted snapshots in two regions; "
    "retention; compaction, defragmentation and health.\n\n" + HELP_TABLE,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: rich's help renderer alone costs about 0.15 s at every start
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(keys.app, name="keys")
app.add_typer(snapshot.app, name="snapshot")
app.command("demo")(demo.demo)
app.command("compact")(maintenance.compact)
app.command("defrag")(maintenance.defrag)
app.command("maintain")(maintenance.maintain)
app.command("health")(health.health)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"etcdops {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Keeps etcd recoverable."""


def run() -> None:
    """Console-script entry point."""
    app()
