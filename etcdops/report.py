"""How the core tells the operator what it is doing, without knowing about terminals.

Services take a Reporter; the CLI supplies one that draws rich progress bars on a terminal and
writes log lines to stderr, tests and the daemon supply quieter ones.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("etcdops")


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

