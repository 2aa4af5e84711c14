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


# Words up to this long (numbers, sizes, store names) never break; longer ones (URLs) may fold.
_UNBROKEN = 16


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Any:
    """A rich table with the house style, whose headers and cells are never cut."""
    return _FittedTable(title, columns, [["" if c is None else str(c) for c in r] for r in rows])


class _FittedTable:
    """Lays a table out for the width it gets, cutting nothing.

    Each column gets at least its longest header word and its longest short cell word (the
    first column, the id an operator copies, its whole cells); cells wrap, and fold only
    words longer than _UNBROKEN. When that does not fit in boxes, the boxes go; when it does
    not fit at all, each row becomes a block of fields.
    """

    def __init__(self, title: str | None, columns: list[str], rows: list[list[str]]) -> None:
        self.title, self.columns, self.rows = title, columns, rows

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich import box

        count = len(self.columns)
        least = [self._least(index) for index in range(count)]
        most = [
            max(len(line) for text in [column, *(row[index] for row in self.rows)]
                for line in text.splitlines() or [""])
            for index, column in enumerate(self.columns)
        ]
        layouts: list[tuple[int, dict[str, Any]]] = [
            (3 * count + 1, {}),
            (count - 1, {"box": box.SIMPLE_HEAD, "show_edge": False, "padding": (0, 0)}),
        ]
        for chrome, style in layouts:
            room = options.max_width - chrome
            if sum(least) <= room:
                yield self._table(_share(least, most, room), style)
                return
        yield from self._records()

    def _least(self, index: int) -> int:
        cells = [row[index] for row in self.rows]
        words = self.columns[index].split() + [
            word for cell in cells for word in cell.split() if len(word) <= _UNBROKEN
        ]
        if index == 0:
            words += cells
        return max(map(len, words), default=1)

    def _table(self, widths: list[int], style: dict[str, Any]) -> Any:
        from rich.table import Table
        from rich.text import Text

        result = Table(title=self.title, title_justify="left", header_style="bold", **style)
        for index, (column, width) in enumerate(zip(self.columns, widths, strict=True)):
            result.add_column(column, width=width, no_wrap=index == 0, overflow="fold")
        for row in self.rows:
            result.add_row(*(Text(cell) for cell in row))
        return result

    def _records(self) -> Any:
        from rich.text import Text

        if self.title:
            yield Text(self.title)
        for number, row in enumerate(self.rows):
            if number:
                yield Text("")
            yield key_values(list(zip(self.columns, row, strict=True)))


def _share(least: list[int], most: list[int], room: int) -> list[int]:
    """Column widths from their least to their most: the room above the least goes to the
    columns that need the least of it first, so a short value never wraps for a long one."""
    widths = list(least)
    spare = room - sum(least)
    by_need = sorted(range(len(widths)), key=lambda i: most[i] - least[i])
    for position, index in enumerate(by_need):
        given = min(most[index] - least[index], spare // (len(by_need) - position))
        widths[index] += given
        spare -= given
    return widths


def key_values(pairs: list[tuple[str, Any]]) -> Any:
    """Two columns of field and value, for one object's details."""
    from rich.table import Table
    from rich.text import Text

    result = Table.grid(padding=(0, 2))
    result.add_column(style="bold")
    result.add_column()
    for name, value in pairs:
        result.add_row(Text(name), Text("-" if value is None else str(value)))
    return result
