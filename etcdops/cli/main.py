"""The etcdops command line: command groups are registered here, and nothing else."""

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from etcdops import __version__
from etcdops.cli import daemon, demo, dr, health, journal, keys, maintenance, restore, snapshot
from etcdops.cli.common import before_subcommand, error_document
from etcdops.cli.exitcodes import HELP_TABLE
from etcdops.cli.logs import chosen_format, setup_logging
from etcdops.errors import ConfigError
from etcdops.report import fields

log = logging.getLogger("etcdops.cli")


def _wants_json(argv: Sequence[str]) -> bool:
    """Whether the words of a command line ask for --output json (the last one given wins)."""
    wanted = False
    for index, word in enumerate(argv):
        if word in ("-o", "--output") and index + 1 < len(argv):
            wanted = argv[index + 1] == "json"
        elif word.startswith("--output="):
            wanted = word == "--output=json"
        elif word.startswith("-o") and not word.startswith("--") and len(word) > 2:
            wanted = word == "-ojson"
    return wanted


def _log_format() -> str:
    """The format of stderr's lines; text when $ETCDOPS_LOG_FORMAT is wrong (the command that
    would have run says so; a usage error comes first)."""
    try:
        return chosen_format()
    except ConfigError:
        return "text"


def _described(error: typer.TyperException) -> tuple[str, str, Any]:
    """A usage error's message, its hint and its command's context (None for some errors)."""
    ctx = getattr(error, "ctx", None)
    hint = f"see '{ctx.command_path} --help'" if ctx is not None else "see the command's --help"
    if type(error).__name__ == "NoArgsIsHelpError":  # its message is the whole help text
        return "a command is missing", hint + " for its commands", ctx
    return error.format_message(), hint, ctx


@contextlib.contextmanager
def _json_usage_errors(argv: Sequence[str]) -> Iterator[None]:
    """A usage error is a failure like any other: `-o json` gets its error document on stdout,
    and JSON logs get one JSON line on stderr instead of Click's text block (text logs keep it)."""
    try:
        yield
    except typer.TyperException as error:
        message, hint, ctx = _described(error)
        code, kind = error.exit_code, type(error).__name__
        if _wants_json(argv):
            sys.stdout.write(error_document(message, hint, code, kind))
        if _log_format() != "json":
            raise
        setup_logging(0, "json")
        command = (ctx.command_path.partition(" ")[2] or None) if ctx is not None else None
        log.error("%s", message, extra=fields(
            command=command, usage=ctx.get_usage() if ctx is not None else None, hint=hint,
            exit_code=code, error_type=kind,
        ))
        raise typer.Exit(code) from None


class _Root(TyperGroup):
    """The root command; it parses the command line before any of etcdops' own code runs."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        argv = list(args)  # parsing consumes args
        with _json_usage_errors(argv):
            context = super().make_context(info_name, args, parent, **extra)
        context.meta["etcdops.argv"] = argv
        return context

    def invoke(self, ctx: Any) -> Any:
        with _json_usage_errors(ctx.meta.get("etcdops.argv", ())):
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Root,
    name="etcdops",
    help="Keeps etcd recoverable: verified, compressed, age-encrypted snapshots in two regions; "
    "retention; restore; compaction, defragmentation and health.\n\n"
    "--output, --config, -v and -q go before the subcommand or after it; given in both places, "
    "the one after wins.\n\n" + HELP_TABLE,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: rich's help renderer alone costs about 0.15 s at every start
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(keys.app, name="keys")
app.add_typer(snapshot.app, name="snapshot")
app.add_typer(dr.app, name="dr")
app.add_typer(journal.app, name="journal")
app.command("demo")(demo.demo)
app.command("compact")(maintenance.compact)
app.command("defrag")(maintenance.defrag)
app.command("maintain")(maintenance.maintain)
app.command("health")(health.health)
app.command("restore")(restore.restore)
app.command("daemon")(daemon.daemon)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"etcdops {__version__}")
        raise typer.Exit()


@app.callback()
@before_subcommand
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Keeps etcd recoverable."""


def _tune_malloc() -> None:
    """Give large transient buffers back to the OS as soon as they are freed (glibc only).

    glibc raises its mmap threshold after the first large free, so later 1-8 MiB stream and
    upload buffers come from arenas that keep their pages, one arena per thread: a save with
    upload peaked near 200 MiB for about 50 MiB of live buffers. A fixed threshold and two
    arenas keep the peak near what is live (measured: 197 -> 143 MiB).
    """
    import ctypes

    libc = ctypes.CDLL(None)  # the C library this interpreter already runs on
    if not hasattr(libc, "mallopt"):
        return
    m_mmap_threshold, m_arena_max = -3, -8
    libc.mallopt(m_mmap_threshold, 4 << 20)
    libc.mallopt(m_arena_max, 2)


def run() -> None:
    """Console-script entry point."""
    _tune_malloc()
    app()
