"""Result tables that wrap rather than cut, so a pipe or an 80-column CI log shows them whole.

rich fits a table that is too wide by narrowing its widest columns and cutting their
text with an ellipsis: in a pipe, `attd compare` printed `adaptive:8` as `adaptive…`.
Here no cell is cut. When the table does not fit, each header first wraps at its spaces
down to the width of its column's values (`uses labels` over `yes`); only if that is not
enough does rich narrow the columns further, folding their text onto more lines.
A cell is a string, or a rich `Text` where it has a colour (`attd list-plugins`'s status).
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

UNBOUNDED = 1_000_000
"""A width no table reaches: to measure the width a table wants, not the one it gets."""


class WrappingTable:
    """A table of plain-text cells (never read as markup) that keeps every character."""

    def __init__(self, *headers: str, title: str) -> None:
        self.headers = headers
        self.title = title
        self.rows: list[tuple[Text, ...]] = []

    def add_row(self, *cells: str | Text) -> None:
        self.rows.append(tuple(Text(cell) if isinstance(cell, str) else cell for cell in cells))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = self._table(narrow_headers=False)
        unbounded = options.update_width(UNBOUNDED)
        if Measurement.get(console, unbounded, table).maximum > options.max_width:
            table = self._table(narrow_headers=True)
        yield table

    def _table(self, *, narrow_headers: bool) -> Table:
        table = Table(title=Text(self.title))
        for index, header in enumerate(self.headers):
            width = None
            if narrow_headers:
                words = [cell_len(word) for word in header.split()]
                width = max([*words, *(row[index].cell_len for row in self.rows)])
            table.add_column(Text(header), overflow="fold", max_width=width)
        for row in self.rows:
            table.add_row(*row)
        return table
