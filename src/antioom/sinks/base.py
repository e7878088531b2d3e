"""The sink contract: what the engine needs from a database.

A sink is created connected (or raises DatabaseUnavailable), ``prepare``s the target table,
``encode``s a batch in the parser thread (so serialisation overlaps the database round trip),
and ``write``s one batch per transaction, returning the rows the database refused. Rows are
identified by their index in the batch; the engine turns them into record numbers.
"""

from __future__ import annotations

import abc
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa

from antioom.engine.batching import Batch
from antioom.engine.datasets import UPDATED_AT, Dataset
from antioom.errors import ConfigError, ImportConflict, TargetError

LEDGER_TABLE = "antioom_batches"
# Attempts at a transaction that collided with another one (deadlock, serialization failure),
# with a random pause before each new one: up to BACKOFF_S, doubling up to MAX_BACKOFF_S
# (at most ~6 s in all, ~3 s on average).
TRANSIENT_ATTEMPTS = 10
BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0

T = TypeVar("T")


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


# Every batch sequence number: what a query over a whole import (all its parts) asks for.
ALL_SEQS = range(0, 1 << 62)


@dataclass(frozen=True)
class Committed:
    """What the ledger holds of one import, or of one part of it: the batches committed.

    Each batch accounts for a span of input records: from the record after the batch before
    it (or the part's first) to its last row's, ``end_record``. The batches of one part are
    committed in input order, so they cover its records up to the largest ``end_record``,
    where a resumed part starts again; parts may have gaps between them. The spans hold
    ``records`` records, of which ``rows`` were sent to the database, which refused
    ``refused``; the other ``records - rows`` were rejected before (validation, malformed).
    """

    batches: int = 0
    next_seq: int = 0
    end_record: int = 0
    rows: int = 0
    refused: int = 0
    records: int = 0

    @property
    def committed_rows(self) -> int:
        return self.rows - self.refused

    @property
    def rejected(self) -> int:
        return self.records - self.rows + self.refused


def ledger_totals(row: Sequence[Any] | None) -> Committed:
    """``Committed`` from the totals ``LEDGER_TOTALS`` selects over one import's (or one
    part's) ledger rows."""
    if row is None or not row[0]:
        return Committed()
    batches, last_seq, end_record, rows, refused, spans, spanned = row
    if end_record is None:
        raise ImportConflict(
            "this import was written by an older antioom that kept no resume point: "
            "start a new import"
        )
    # Batches from before spans were recorded: one stream from record 1, as then.
    records = int(spans) if int(spanned) == int(batches) else int(end_record)
    return Committed(
        int(batches), int(last_seq) + 1, int(end_record), int(rows), int(refused or 0), records
    )


LEDGER_TOTALS = (
    "SELECT count(*), max(seq), max(end_record), sum(rows), sum(refused), "
    "sum(end_record - start_record + 1), count(start_record) FROM {ledger} "
    "WHERE import_id = {p} AND seq >= {p} AND seq < {p}"
)
LEDGER_COLUMNS_ADDED = {
    "end_record": "BIGINT",
    "refused": "INTEGER NOT NULL DEFAULT 0",
    "start_record": "BIGINT",
}


def before_commit(batch: Batch, errors: Sequence[RowError]) -> None:
    """Hand the rows the database refused to the engine before the batch commits (sinks call
    this last thing before their commit): their rejects are then written before the batch
    counts as committed, and an import killed right after the commit still has them all."""
    if errors and batch.before_commit is not None:
        batch.before_commit(sorted(errors, key=lambda error: error.row))


def missing_columns(dataset: Dataset, existing: set[str], alter: bool) -> list[str]:
    """The dataset's columns the existing table lacks; TargetError unless ``alter`` (then the
    caller adds them)."""
    wanted = [c.name for c in dataset.columns] + ([UPDATED_AT] if dataset.updated_at else [])
    missing = [name for name in wanted if name not in existing]
    if missing and not alter:
        raise TargetError(
            f"table {dataset.table} exists without column(s) {', '.join(missing)} "
            "(--alter adds them)"
        )
    return missing


def claim_conflict(batch: Batch, recorded_end: int | None) -> WriteResult:
    """The ledger already has ``batch``'s (import id, seq): the same batch committed before is a
    duplicate to skip; a different one means another process is writing this import."""
    if recorded_end == batch.end_record:
        return WriteResult([], duplicate=True)
    raise ImportConflict(
        f"import {batch.import_id} is being written by another process (batch {batch.seq} "
        "was committed with other rows)"
    )


class Sink(abc.ABC):
    """One database connection writing one dataset's batches."""

    dataset: Dataset

    @abc.abstractmethod
    def prepare(self, dataset: Dataset, *, alter: bool = False) -> None:
        """Create the table (and the batch ledger) if missing; check an existing table fits,
        or with ``alter`` add the columns it lacks (nullable: it may hold rows already)."""

    @abc.abstractmethod
    def clear(self, table: str, *, drop: bool) -> None:
        """Empty the table before an import (``--truncate``), or drop it (``--drop``) so that
        ``prepare`` creates it anew; nothing happens if it does not exist."""

    def encode(self, table: pa.Table) -> Any:
        """Serialise ``table`` for :meth:`write`; runs in the parser thread."""
        return table

    def why_one_writer(self) -> str | None:
        """Why the prepared table must be written by this one connection, or None if key
        partitions may write it side by side (engine.partition): only where two rows can
        collide in the database only when their keys are equal as typed (no unique index
        beyond the key, no case-insensitive key, no triggers)."""
        return "key partitions are written into PostgreSQL only"

    @abc.abstractmethod
    def committed(self, import_id: str, seqs: range = ALL_SEQS) -> Committed:
        """What earlier runs of ``import_id`` committed in batches ``seqs`` (one part's, or
        all), nothing where there is no ledger."""

    @abc.abstractmethod
    def write(self, batch: Batch) -> WriteResult:
        """Write and commit one batch, exactly once per (import id, seq), with its ledger row
        ``(import_id, seq, rows, start_record, end_record, refused)`` in the same
        transaction.

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


def retry_transient(
    transaction: Callable[[], T],
    transient: Callable[[Exception], bool],
    attempts: int = TRANSIENT_ATTEMPTS,
) -> T:
    """``transaction()``, run again when it failed on a conflict with a concurrent one.

    ``transient`` tells a deadlock or serialization failure, after which the database has
    rolled the whole transaction back (``transaction`` must roll back what is left): redoing
    it, ledger row included, keeps a batch exactly-once. The pause before each new attempt is
    random (its bound doubles), so that the transactions that collided do not collide again.
    """
    for attempt in range(1, attempts):
        try:
            return transaction()
        except Exception as exc:
            if not transient(exc):
                raise
        time.sleep(random.uniform(0, min(BACKOFF_S * 2 ** (attempt - 1), MAX_BACKOFF_S)))
    return transaction()


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
