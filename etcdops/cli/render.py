"""Terminal rendering: progress bars and tables (rich lives only in the CLI layer)."""

from types import TracebackType
from typing import Any


class _Bar:
    def __init__(self, console: Any, description: str, total: int | None) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> "_Bar":
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def advance(self, amount: int) -> None:
        self._progress.advance(self._task, amount)


class TerminalReporter:
    """Progress bars and step lines on the operator's terminal (stderr)."""

    def __init__(self, console: Any) -> None:
        self._console = console

    def progress(self, description: str, total: int | None) -> _Bar:
        """A live bar for work measured in bytes."""
        return _Bar(self._console, description, total)

    def event(self, message: str) -> None:
        """A dim step line above the bar."""
        self._console.print(f"[dim]{message}[/dim]")


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Any:
    """A rich table with the house style."""
    from rich.table import Table

    result = Table(title=title, title_justify="left", header_style="bold")
    for index, column in enumerate(columns):
        # the first column is the id an operator copies: never wrap or truncate it
        result.add_column(column, no_wrap=index == 0, min_width=None)
    for row in rows:
        result.add_row(*("" if cell is None else str(cell) for cell in row))
    return result


def key_values(pairs: list[tuple[str, Any]]) -> Any:
    """Two columns of field and value, for one object's details."""
    from rich.table import Table

    result = Table.grid(padding=(0, 2))
    result.add_column(style="bold")
    result.add_column()
    for name, value in pairs:
        result.add_row(name, "-" if value is None else str(value))
    return result
