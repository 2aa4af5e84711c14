"""How the core tells the operator what it is doing, without knowing about terminals.

Services take a Reporter; the CLI supplies one that draws rich progress bars on a terminal and
writes log lines to stderr, tests and the daemon supply quieter ones.

Log lines carry fields besides their message (the cluster, the command, a backup id, a duration)
for the CLI's JSON log format: a scope binds fields for every line logged inside it, `note` adds
one that a service learns on the way (the id of the backup it takes), and `fields` gives one log
call its own through `extra=`. The core only names the fields; how they are written is the CLI's.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any, Protocol

log = logging.getLogger("etcdops")

# the attribute of a LogRecord that holds the fields given to one log call
FIELDS_ATTRIBUTE = "etcdops_fields"

_scope: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "etcdops_log_scope", default=None
)


def fields(**values: Any) -> dict[str, dict[str, Any]]:
    """`extra=` for one log call: the fields its JSON line carries besides the message."""
    return {FIELDS_ATTRIBUTE: values}


@contextlib.contextmanager
def log_scope(**values: Any) -> Iterator[None]:
    """Fields that every line logged inside carries (a command's name, a daemon job's); what
    `note` adds inside stays inside."""
    token = _scope.set({**(_scope.get() or {}), **values})
    try:
        yield
    finally:
        _scope.reset(token)


def note(**values: Any) -> None:
    """Add fields to the current scope for the lines still to come (a save's backup id, once
    known); nothing outside a scope."""
    current = _scope.get()
    if current is not None:
        current.update(values)


def scope_fields() -> dict[str, Any]:
    """The fields of the current scope, for the formatter."""
    return dict(_scope.get() or {})


class Progress(Protocol):
    def advance(self, amount: int) -> None: ...


class Reporter(Protocol):
    def progress(self, description: str, total: int | None) -> Progress:
        """A context manager that shows work advancing towards total (bytes or items)."""
        ...

    def event(self, message: str) -> None:
        """One line about a step the operator should know happened."""
        ...


class _NoProgress:
    def advance(self, amount: int) -> None:
        pass

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class LogReporter:
    """Reports through logging only: for tests, the daemon and non-terminal output."""

    def progress(self, description: str, total: int | None) -> _NoProgress:
        """No bar: a log line when the work starts is enough off a terminal."""
        log.debug("%s", description)
        return _NoProgress()

    def event(self, message: str) -> None:
        """Log the step at info level."""
        log.info("%s", message)

