"""What the `cabbage` command prints: aligned tables and messages for people, JSON for scripts.

Text that comes from jobs (names, locks, arguments) is shown with control characters escaped,
so a job cannot move the cursor or recolour an operator's terminal.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from typing import Any, Sequence, TextIO

from cabbage.admin import jsonable

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MIN_COLUMN_WIDTH = 8
ELLIPSIS = "…"


def printable(text: str) -> str:
    """Text with control characters written as escapes (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(lambda match: match.group(0).encode("unicode_escape").decode("ascii"), text)


class Output:
    """Prints a command's results: a table or message on a terminal and by default, JSON with --json."""

    def __init__(self, as_json: bool = False, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream if stream is not None else sys.stdout

    @property
    def is_terminal(self) -> bool:
        return self.stream.isatty()

    def json(self, value: Any) -> None:
        self.stream.write(json.dumps(jsonable(value), indent=2, ensure_ascii=False) + "\n")

    def message(self, text: str) -> None:
        self.stream.write(printable(text) + "\n")

    def result(self, value: Any, text: str) -> None:
        """``value`` as JSON with --json, else the sentence ``text``."""
        if self.as_json:
            self.json(value)
        else:
            self.message(text)

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """``name: value`` lines, names aligned; multi-line values (tracebacks) indented below."""
        width = max(len(name) for name, _ in pairs)
        for name, value in pairs:
            text = "-" if value is None else str(value)
            if "\n" in text:
                body = "\n".join("    " + printable(line) for line in text.rstrip("\n").split("\n"))
                self.stream.write(f"{name}:\n{body}\n")
            else:
                self.stream.write(f"{name + ':':<{width + 1}} {printable(text)}\n")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> None:
        """Aligned columns; on a terminal, the widest columns are cut to fit its width.

        With no rows, the sentence ``empty`` instead of a lone header line.
        """
        if not rows:
            self.message(f"({empty})")
            return
        cells = [[printable("-" if cell is None else str(cell)) for cell in row] for row in rows]
        widths = [max([len(header)] + [len(row[index]) for row in cells]) for index, header in enumerate(headers)]
        if self.is_terminal:
            widths = fit_widths(widths, shutil.get_terminal_size().columns)
        self.stream.write(format_row(headers, widths).rstrip() + "\n")
        for row in cells:
            self.stream.write(format_row(row, widths).rstrip() + "\n")


def fit_widths(widths: list[int], total: int) -> list[int]:
    """Column widths narrowed, widest first, until the row fits ``total`` characters."""
    widths = list(widths)
    while sum(widths) + 2 * (len(widths) - 1) > total:
        widest = max(range(len(widths)), key=widths.__getitem__)
        if widths[widest] <= MIN_COLUMN_WIDTH:
            break
        widths[widest] -= 1
    return widths


def format_row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cut(cell, width).ljust(width) for cell, width in zip(cells, widths))


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + ELLIPSIS

