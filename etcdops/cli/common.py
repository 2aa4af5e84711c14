"""What every command shares: --output/--config/-v/-q, config loading, errors to exit codes.

Each command is written as `def cmd(run: Invocation, ...)` and decorated with @command: the
decorator adds the shared options to its signature, so they work after any subcommand
(`etcdops snapshot save --output json`), and turns every failure into one line and its exit code.
The same options given before the subcommand (`etcdops -o json snapshot list`, as kubectl, aws
and restic take them) reach it through the root context's SharedOptions; given in both places,
the one after the subcommand wins.
"""

import enum
import functools
import inspect
import json
import logging
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from etcdops.cli import exitcodes
from etcdops.cli.logs import chosen_format, setup_logging
from etcdops.errors import EtcdopsError, Interrupted
from etcdops.report import fields, log_scope, note

log = logging.getLogger("etcdops.cli")


class OutputFormat(enum.StrEnum):
    text = "text"
    json = "json"


@dataclass(frozen=True)
class SharedOptions:
    """--output, --config, -v and -q as given before the subcommand (None: not given)."""

    output: OutputFormat | None = None
    config_path: Path | None = None
    verbose: int = 0
    quiet: bool = False


def error_document(message: str, hint: str | None, code: int, kind: str) -> str:
    """The JSON that `--output json` prints on stdout for a failure, whatever failed."""
    document = {"error": {"message": message, "hint": hint, "exit_code": code, "type": kind}}
    return json.dumps(document, indent=2) + "\n"


class Invocation:
    """One run of one command: its shared options and the means to report."""

    def __init__(
        self, output: OutputFormat, config_path: Path | None, verbosity: int,
        log_format: str = "text",
    ) -> None:
        self.output = output
        self.config_path = config_path
        self.verbosity = verbosity
        self.log_format = log_format  # of stderr: "text" or "json" (etcdops.cli.logs)
        self.started = time.monotonic()
        self._console: Any = None
        self._err_console: Any = None

    @property
    def json(self) -> bool:
        return self.output is OutputFormat.json

    def config(self, **overrides: Any) -> Any:
        """The merged configuration, flags given as dotted keys ("local.dir")."""
        from etcdops.config import load_config

        config = load_config(self.config_path, overrides=overrides)
        note(cluster=config.cluster)
        for warning in config.warnings:
            self.warn(warning)
        return config

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False)
        return self._console

    @property
    def err_console(self) -> Any:
        if self._err_console is None:
            from rich.console import Console

            self._err_console = Console(stderr=True, highlight=False)
        return self._err_console

    def reporter(self) -> Any:
        """Progress bars on a terminal (stderr), log lines otherwise."""
        from etcdops.cli.render import TerminalReporter
        from etcdops.report import LogReporter

        if self.verbosity < 0 or self.log_format == "json" or not self.err_console.is_terminal:
            return LogReporter()
        return TerminalReporter(self.err_console)

    def emit(self, document: Any, render_text: Callable[[Any], None]) -> None:
        """The result: one JSON document on stdout, or text drawn by render_text."""
        if self.json:
            sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
        else:
            render_text(self.console)

    def warn(self, message: str) -> None:
        """One line on stderr about something that went wrong without stopping the job."""
        if self.log_format == "json":
            log.warning("%s", message)
        else:
            sys.stderr.write(f"warning: {message}\n")

    def done(self, code: int) -> None:
        """In JSON logs, a last line for the run: how long it took and how it ended."""
        if self.log_format == "json":
            log.info("done", extra=fields(duration=self._duration(), exit_code=code))

    def _duration(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def fail(self, error: BaseException, *, document: bool = True) -> int:
        """Print a failure as one line (JSON on stdout too, unless the command's own result
        document already carries it) and return its exit code."""
        code = exitcodes.exit_code_for(error)
        # an Interrupted is a job that knows what it had kept when stopped, and says it
        if isinstance(error, EtcdopsError | Interrupted):
            message, hint = error.message, error.hint
        elif isinstance(error, KeyboardInterrupt):
            message, hint = "interrupted; nothing half-written was kept", None
        else:
            message = f"internal error: {type(error).__name__}: {error}"
            hint = "rerun with -v for the traceback, and report it"
        with_traceback = self.verbosity > 0 and not isinstance(error, KeyboardInterrupt)
        if self.log_format == "json":
            log.error("%s", message, exc_info=error if with_traceback else None, extra=fields(
                hint=hint, exit_code=code, error_type=type(error).__name__,
                duration=self._duration(),
            ))
        else:
            if with_traceback:
                traceback.print_exception(error, file=sys.stderr)
            line = f"error: {message}" + (f" — {hint}" if hint else "")
            sys.stderr.write(line + "\n")
        if self.json and document:
            sys.stdout.write(error_document(message, hint, code, type(error).__name__))
        return code


def _terminate(signum: int, frame: object) -> None:
    # systemd stops a unit with SIGTERM: unwind like Ctrl-C so that partial files are removed.
    raise KeyboardInterrupt


_SHARED = [
    inspect.Parameter("context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
    inspect.Parameter(
        "output", inspect.Parameter.KEYWORD_ONLY, default=None,
        annotation=Annotated[OutputFormat | None, typer.Option(
            "--output", "-o", help="text (tables, progress) or json (one document on stdout) "
            "[default: text].", show_default=False)],
    ),
    inspect.Parameter(
        "config_path", inspect.Parameter.KEYWORD_ONLY, default=None,
        annotation=Annotated[Path | None, typer.Option(
            "--config", "-c", help="Config file [default: $ETCDOPS_CONFIG, ./etcdops.toml, "
            "/etc/etcdops/etcdops.toml].", show_default=False)],
    ),
    inspect.Parameter(
        "verbose", inspect.Parameter.KEYWORD_ONLY, default=0,
        annotation=Annotated[int, typer.Option(
            "--verbose", "-v", count=True, help="More detail; tracebacks on errors.")],
    ),
    inspect.Parameter(
        "quiet", inspect.Parameter.KEYWORD_ONLY, default=False,
        annotation=Annotated[bool, typer.Option(
            "--quiet", "-q", help="Only warnings and errors on stderr.")],
    ),
]


def _command_name(context: typer.Context) -> str:
    """The command's words without the program's ("snapshot save")."""
    words = []
    while context.parent is not None:
        words.append(context.info_name or "")
        context = context.parent
    return " ".join(reversed(words))


def _invocation(context: typer.Context, after: SharedOptions) -> Invocation:
    """The options in force: those after the subcommand, else those before it, else defaults."""
    before = context.find_object(SharedOptions) or SharedOptions()
    verbose = after.verbose or before.verbose
    return Invocation(
        after.output or before.output or OutputFormat.text,
        after.config_path or before.config_path,
        -1 if (after.quiet or before.quiet) else verbose,
    )


def before_subcommand(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give the root callback the shared options, kept in its context for every subcommand."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: Any, context: typer.Context, output: OutputFormat | None,
                config_path: Path | None, verbose: int, quiet: bool, **kwargs: Any) -> Any:
        context.obj = SharedOptions(output, config_path, verbose, quiet)
        return func(*args, **kwargs)

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values()) + _SHARED
    )
    return wrapper


def command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the shared options and the one error-to-exit-code path."""
    signature = inspect.signature(func)
    own = [p for name, p in signature.parameters.items() if name != "run"]

    @functools.wraps(func)
    def wrapper(*args: Any, context: typer.Context, output: OutputFormat | None,
                config_path: Path | None, verbose: int, quiet: bool, **kwargs: Any) -> None:
        run = _invocation(context, SharedOptions(output, config_path, verbose, quiet))
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
        with log_scope(command=_command_name(context)):
            try:
                # chosen inside: a bad $ETCDOPS_LOG_FORMAT is one error line (in text)
                run.log_format = chosen_format()
                setup_logging(run.verbosity, run.log_format)
                code = func(run, *args, **kwargs)
            except typer.Exit:
                raise
            except (Exception, KeyboardInterrupt) as error:  # one line and its exit code, always
                raise typer.Exit(run.fail(error)) from None
            finally:
                if in_main:
                    signal.signal(signal.SIGTERM, previous)
            run.done(code or 0)
        if code:
            raise typer.Exit(code)

    wrapper.__signature__ = signature.replace(parameters=own + _SHARED)  # type: ignore[attr-defined]
    return wrapper
