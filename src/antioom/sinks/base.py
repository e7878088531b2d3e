"""The sink contract: what the engine needs from a database.

A sink is created connected (or raises DatabaseUnavailable), ``prepare``s the target table,
``encode``s a batch in the parser thread (so serialisation overlaps the database round trip),
and ``write``s one batch per transaction, returning the rows the database refused. Rows are
identified by their index in the batch; the engine turns them into record numbers.
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from antioom.engine.batching import Batch
from antioom.engine.datasets import Dataset
from antioom.errors import ConfigError

LEDGER_TABLE = "antioom_batches"


@dataclass(frozen=True)
class RowError:
    """A row of a batch that the database refused, and its reason."""

    row: int
    reason: str


@dataclass(frozen=True)
class WriteResult:
    """What happened to one batch: refused rows, or ``duplicate`` if it was committed before."""

    errors: list[RowError]
    duplicate: bool = False


class Sink(abc.ABC):
    """One database connection writing one dataset's batches."""

    dataset: Dataset

    @abc.abstractmethod
    def prepare(self, dataset: Dataset) -> None:
        """Create the table (and the batch ledger) if missing; check an existing table fits."""

    def encode(self, table: pa.Table) -> Any:
        """Serialise ``table`` for :meth:`write`; runs in the parser thread."""
        return table

    @abc.abstractmethod
    def write(self, batch: Batch) -> WriteResult:
        """Write and commit one batch, exactly once per (import id, seq).

        Raises DatabaseLost when the connection fails; the batch is then not committed.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def refuse_schema(table: str, database: str) -> None:
    """Raise ConfigError for a ``schema.table`` name where the URL already names the only
    schema (SQLite's file, MySQL's database): refused rather than guessed at."""
    if "." in table:
        raise ConfigError(
            f"invalid table name {table!r}: {database} takes a plain table name "
            "(schema.table is for PostgreSQL)"
        )


def write_isolating(
    rows: int,
    write_range: Callable[[int, int], None],
    row_error: Callable[[Exception], str | None],
) -> list[RowError]:
    """Write rows ``[0, rows)``, isolating the rows the database refuses.

    ``write_range(start, stop)`` must be atomic (a savepoint). When it fails with an error that
    ``row_error`` recognises as caused by the data (it returns a reason), the range is split in
    halves until the refused rows stand alone; other errors propagate. Ranges are written in
    input order, so "last occurrence wins" holds across the splits. Cost: one attempt when
    all rows are good, O(k·log n) attempts for k bad rows.
    """
    errors: list[RowError] = []
    pending = [(0, rows)]
    while pending:
        start, stop = pending.pop()
        if start >= stop:
            continue
        try:
            write_range(start, stop)
        except Exception as exc:
            reason = row_error(exc)
            if reason is None:
                raise
            if stop - start == 1:
                errors.append(RowError(start, reason))
                continue
            middle = (start + stop) // 2
            pending.append((middle, stop))
            pending.append((start, middle))
    return errors


def refused_rows(
    table: pa.Table, key: tuple[str, ...], landed: Counter[tuple[Any, ...]]
) -> list[int]:
    """Rows of ``table`` whose key did not land, given the keys an ``INSERT … ON CONFLICT DO
    NOTHING RETURNING key`` returned: each landed key accounts for its first occurrence."""
    keys = zip(*(table.column(name).to_pylist() for name in key), strict=True)
    refused = []
    for row, value in enumerate(keys):
        if landed[value] > 0:
            landed[value] -= 1
        else:
            refused.append(row)
    return refused
