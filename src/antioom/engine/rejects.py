"""Rejected rows: what was wrong, where, and the raw values, streamed out as they happen."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

# Cells starting with these are run as formulas by spreadsheet programs (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Reject:
    """One rejected record. ``record`` is 1-based and excludes the header."""

    record: int
    column: str | None
    reason: str
    values: dict[str, str] = field(default_factory=dict)
    line: int | None = None

    def raw(self) -> str:
        """The raw values as one CSV line, as they appeared in the input's columns."""
        return ",".join(_csv_quote(value) for value in self.values.values())


def _csv_quote(value: str) -> str:
    if any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def neutralise_formula(cell: str) -> str:
    """Prefix a cell that a spreadsheet would evaluate with a quote, so it stays text."""
    return "'" + cell if cell.startswith(FORMULA_PREFIXES) else cell


class RejectsWriter:
    """Writes rejects as CSV (record, line, column, reason, raw) to a text stream."""

    HEADER = ("record", "line", "column", "reason", "raw")

    def __init__(self, out: TextIO, *, neutralise: bool = True, header: bool = True) -> None:
        self._out = out
        self._writer = csv.writer(out)
        self._neutralise = neutralise
        if header:
            self._writer.writerow(self.HEADER)

    def write(self, reject: Reject) -> None:
        cells = [
            str(reject.record),
            "" if reject.line is None else str(reject.line),
            reject.column or "",
            reject.reason,
            reject.raw(),
        ]
        if self._neutralise:
            cells = [neutralise_formula(cell) for cell in cells]
        self._writer.writerow(cells)

    def flush(self) -> None:
        self._out.flush()


def keep_through(path: Path, record: int) -> None:
    """Cut a rejects file written by :class:`RejectsWriter` after the rejects of records up to
    ``record``, streaming through a temporary file beside it (a resumed import reports the
    later ones again).

    A process killed while writing leaves a last row cut anywhere (the buffer reaches the
    file in pieces): in its record number (``123`` of ``123456``), in a UTF-8 character or in
    a quoted value. It is dropped, never read as a row: rejects up to the committed ``record``
    were flushed before its batch committed, so a row not fully written is a later one.
    """
    temporary = path.with_name(path.name + ".tmp")
    with (
        open(path, newline="", encoding="utf-8", errors="surrogateescape") as old,
        open(temporary, "w", newline="", encoding="utf-8", errors="surrogateescape") as new,
    ):
        writer = csv.writer(new)
        lines = _Lines(old)
        reader = csv.reader(lines, strict=True)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error:  # the end of the file inside a quoted value: a cut row
                break
            if not lines.ended:  # the last row, without its line end: cut
                break
            if row and (not row[0].isdigit() or int(row[0]) <= record):
                writer.writerow(row)
    os.replace(temporary, path)


class _Lines:
    """The lines of a text file, telling whether the last one read ended with a newline."""

    def __init__(self, source: TextIO) -> None:
        self._source = source
        self.ended = True

    def __iter__(self) -> Iterator[str]:
        for line in self._source:
            self.ended = line.endswith("\n")
            yield line
