"""Terminal tables that read whole at the console's width (80 columns and less).

Left to itself rich cuts a one-line cell with "…" once a table is wider than the console, and may
squeeze a wrapping column below its longest word. Here the widths are decided before rich draws:
headers and codes or numbers stay whole on one line, names (Vietnamese district and sector names)
wrap at spaces and are never cut, and when even that does not fit, each record becomes a block of
"field: value" lines. The width is the console's (the terminal, or ``COLUMNS``), at render time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

NO_COMPARISON = "—"  # a comparison against a period, week or baseline without data: nothing to compare


@dataclass(frozen=True)
class Field:
    """One column: a short header; ``wrap`` for names and free text, never for codes and numbers."""

    header: str
    justify: Literal["left", "right"] = "left"
    wrap: bool = False


@dataclass(frozen=True)
class _Row:
    cells: tuple[str, ...]
    style: str | None


def _longest_word(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


class FittedTable:
    """A table whose every header and cell is shown whole at the console's width, else a vertical layout."""

    def __init__(self, title: str, fields: Sequence[Field], rows: Iterable[Sequence[str]] = ()) -> None:
        self.title = title
        self.fields = tuple(fields)
        self.rows: list[_Row] = []
        for row in rows:
            self.add_row(*row)

    def add_row(self, *cells: str, style: str | None = None) -> None:
        if len(cells) != len(self.fields):
            raise ValueError(f"{len(cells)} cells for {len(self.fields)} fields")
        self.rows.append(_Row(tuple(cells), style))

    def widths(self, max_width: int) -> list[int] | None:
        """Each column's text width for a table no wider than ``max_width``; None when none fits.

        A column is as wide as its widest cell; wrapping columns give way, the widest first, down to
        their longest word. Overhead per column: a border and one space of padding each side.
        """
        full, least = [], []
        for i, field in enumerate(self.fields):
            cells = [row.cells[i] for row in self.rows]
            header = cell_len(field.header)
            full.append(max([header, *(cell_len(c) for c in cells)]))
            least.append(max([header, *(_longest_word(c) for c in cells)]) if field.wrap else full[-1])
        room = max_width - (3 * len(self.fields) + 1)
        if sum(least) > room:
            return None
        widths = list(full)
        while sum(widths) > room:
            slack = [(widths[i] - least[i], i) for i in range(len(widths)) if widths[i] > least[i]]
            _, widest = max(slack, key=lambda s: (widths[s[1]], s[0]))
            widths[widest] -= 1
        return widths

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        widths = self.widths(options.max_width)
        if widths is None:
            yield self.vertical()
            return
        table = Table(title=self.title)
        for field, width in zip(self.fields, widths, strict=True):
            table.add_column(field.header, justify=field.justify, width=width, no_wrap=not field.wrap, overflow="fold")
        for row in self.rows:
            table.add_row(*row.cells, style=row.style)
        yield table

    def vertical(self) -> Group:
        """One block per record, a "field: value" line per non-empty cell; long values wrap."""
        parts: list[Text | Table] = [Text(self.title, style="table.title")]
        label_width = max(cell_len(f.header) for f in self.fields) + 1
        for row in self.rows:
            block = Table.grid(padding=(0, 1))
            block.add_column(width=label_width, no_wrap=True, style="bold")
            block.add_column(overflow="fold")
            for field, cell in zip(self.fields, row.cells, strict=True):
                if cell:
                    block.add_row(f"{field.header}:", Text(cell, style=row.style or ""))
            parts += [Text(""), block]
        return Group(*parts)
