"""`etcdops journal run`: the journal of etcd's changes, run until SIGTERM."""

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import typer

from etcdops.cli.common import Invocation, command
from etcdops.cli.render import key_values

app = typer.Typer(help="The journal of etcd's changes between full backups.",
                  no_args_is_help=True)


@contextlib.contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and Ctrl-C ask for a clean stop (the open segment published, the key released);
    a second one unwinds at once, as any command does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {signum: signal.signal(signum, ask) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@app.command("run")
@command
def journal_run(run: Invocation) -> None:
    """Follow etcd's watch stream and store it as encrypted segments, chained to the newest
    verified full backup, in every store ([journal] interval, max_bytes), until SIGTERM.

    One journal per cluster: a node that finds another one journaling waits and takes over
    when it stops. SIGTERM publishes the open segment and exits 0.
    """
    from etcdops.journal.run import run_journal

    config = run.config()
    stop = threading.Event()
    with _stopped_by_signals(stop):
        report = run_journal(config, run.reporter(), stop=stop)
    run.emit(report.as_dict(), lambda console: console.print(key_values([
        ("chains", ", ".join(f"{c.base_backup_id} ({c.reason})" for c in report.chains) or None),
        ("segments", f"{report.segments} ({report.revisions} revisions, {report.events} changes)"),
        ("last revision", report.last_revision),
        ("not stored yet", ", ".join(f"{n}: {k}" for n, k in report.unpublished.items()) or None),
    ])))
