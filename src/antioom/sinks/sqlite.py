"""SQLite, the embedded default: ``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db``.

Batches are bound straight from Arrow by ADBC's SQLite driver (one Arrow table per statement,
no Python object per value: see :mod:`antioom.sinks.sqlite_connection`), one transaction per
batch, in WAL mode with ``synchronous=NORMAL`` (a commit survives a process crash; the last
commits may be lost on a power cut). Upsert is ``INSERT … ON CONFLICT DO UPDATE``, applied in
input order, so the last occurrence of a key wins.

Every identifier is double-quoted, so reserved words (``index``, ``order``…) are column names
like any other. SQLite compares names case-insensitively even when quoted: ``order`` and
``Order`` are one column (a duplicate-column TargetError when both are declared).
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from antioom.engine.batching import Batch
from antioom.engine.datasets import UPDATED_AT, Dataset
from antioom.errors import ConfigError, DatabaseLost, DatabaseUnavailable, TargetError
from antioom.sinks.base import (
    ALL_SEQS,
    LEDGER_COLUMNS_ADDED,
    LEDGER_TABLE,
    LEDGER_TOTALS,
    Committed,
    Sink,
    WriteResult,
    before_commit,
    claim_conflict,
    ledger_totals,
    missing_columns,
    refuse_schema,
    write_isolating,
)
from antioom.sinks.sqlite_connection import (
    Cursor,
    Error,
    connect,
    is_statement_error,
    reason,
    row_refusal,
)

SQL_TYPES = {
    "string": "TEXT",
    "integer": "INTEGER",
    "float": "REAL",
    "decimal": "TEXT",  # exact: SQLite has no decimal type, REAL would round
    "boolean": "INTEGER",
    "date": "TEXT",
    "timestamp": "TEXT",
}
AS_TEXT = {"decimal", "date", "timestamp"}


def q(name: str) -> str:
    """``name`` as a quoted SQLite identifier (an embedded ``"`` doubled)."""
    return '"' + name.replace('"', '""') + '"'


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///`` URL (three slashes: relative; four: absolute)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        raise ConfigError(f"invalid SQLite URL {url!r}: use sqlite:///path/to/file.db")
    path = unquote(parts.path)[1:]
    if not path:
        raise ConfigError(f"invalid SQLite URL {url!r}: no file path")
    return path


class SQLiteSink(Sink):
    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self.conn = connect(self.path)

    def prepare(self, dataset: Dataset, *, alter: bool = False) -> None:
        refuse_schema(dataset.table, "SQLite")
        self.dataset = dataset
        columns = [
            f"{q(c.name)} {SQL_TYPES[c.type]}{' NOT NULL' if c.required else ''}"
            for c in dataset.columns
        ]
        if dataset.updated_at:
            columns.append(f"{q(UPDATED_AT)} TEXT")
        if dataset.key:
            columns.append(f"PRIMARY KEY ({', '.join(map(q, dataset.key))})")
        # One transaction with the write lock: concurrent imports check and add the ledger's
        # and the table's columns one after another, never both the same column.
        try:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                self._create(dataset, columns, alter)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.rollback()
                raise
        except Error as exc:
            if is_statement_error(exc):  # too many columns, a duplicate column name
                raise TargetError(f"cannot prepare table {dataset.table}: {reason(exc)}") from None
            raise DatabaseUnavailable(
                f"cannot prepare table {dataset.table}: {reason(exc)}"
            ) from None

    def _create(self, dataset: Dataset, columns: list[str], alter: bool) -> None:
        """Create or upgrade the table and the ledger (within prepare's transaction)."""
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {q(dataset.table)} ({', '.join(columns)})")
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {q(LEDGER_TABLE)} (import_id TEXT NOT NULL, "
            "seq INTEGER NOT NULL, rows INTEGER NOT NULL, committed_at TEXT NOT NULL, "
            "end_record INTEGER, refused INTEGER NOT NULL DEFAULT 0, start_record INTEGER, "
            "PRIMARY KEY (import_id, seq))"
        )
        ledger = {row[0] for row in self._column_names(LEDGER_TABLE)}
        for name, definition in LEDGER_COLUMNS_ADDED.items():
            if name not in ledger:  # a ledger made by an older version
                self.conn.execute(f"ALTER TABLE {q(LEDGER_TABLE)} ADD COLUMN {name} {definition}")
        existing = {row[0] for row in self._column_names(dataset.table)}
        types = {c.name: SQL_TYPES[c.type] for c in dataset.columns} | {UPDATED_AT: "TEXT"}
        for name in missing_columns(dataset, existing, alter):
            try:
                self.conn.execute(
                    f"ALTER TABLE {q(dataset.table)} ADD COLUMN {q(name)} {types[name]}"
                )
            except Error as exc:
                raise TargetError(
                    f"cannot add column {name} to {dataset.table}: {reason(exc)}"
                ) from None

    def _column_names(self, table: str) -> Cursor:
        return self.conn.execute("SELECT name FROM pragma_table_info(?)", (table,))

    def clear(self, table: str, *, drop: bool) -> None:
        refuse_schema(table, "SQLite")
        statement = f"DROP TABLE IF EXISTS {q(table)}"
        if not drop:
            exists = self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            if exists is None:
                return
            statement = f"DELETE FROM {q(table)}"
        try:
            self.conn.execute(statement)
        except Error as exc:
            raise DatabaseLost(f"SQLite failed: {reason(exc)}") from None

    def encode(self, table: pa.Table) -> pa.Table:
        """The batch as SQLite stores it: decimals, dates and timestamps as ISO text (exact;
        SQLite has no such types), everything else bound as it is."""
        for index, column in enumerate(self.dataset.columns):
            if column.type in AS_TEXT:
                table = table.set_column(index, column.name, table.column(index).cast(pa.string()))
        return table

    def _insert_sql(self) -> str:
        dataset = self.dataset
        names = [q(c.name) for c in dataset.columns]
        values = ["?"] * len(names)
        if dataset.updated_at:
            names.append(q(UPDATED_AT))
            values.append("'" + datetime.now(UTC).isoformat(timespec="milliseconds") + "'")
        sql = f"INSERT INTO {q(dataset.table)} ({', '.join(names)}) VALUES ({', '.join(values)})"
        if dataset.mode == "upsert":
            updates = [q(c.name) for c in dataset.value_columns]
            if dataset.updated_at:
                updates.append(q(UPDATED_AT))
            action = (
                "DO UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in updates)
                if updates
                else "DO NOTHING"
            )
            sql += f" ON CONFLICT ({', '.join(map(q, dataset.key))}) {action}"
        return sql

    def write(self, batch: Batch) -> WriteResult:
        sql = self._insert_sql()
        conn = self.conn
        rows: pa.Table = batch.payload if batch.payload is not None else self.encode(batch.table)

        def write_range(start: int, stop: int) -> None:
            conn.execute("SAVEPOINT antioom_rows")
            try:
                conn.executemany(sql, rows.slice(start, stop - start))
            except BaseException:
                conn.execute("ROLLBACK TO antioom_rows")
                raise
            finally:
                conn.execute("RELEASE antioom_rows")

        ledger = q(LEDGER_TABLE)
        try:
            try:  # the BEGIN inside: a Ctrl-C right after it must roll back too
                conn.execute("BEGIN IMMEDIATE")
                claimed = conn.execute(
                    f"INSERT OR IGNORE INTO {ledger} (import_id, seq, rows, committed_at, "
                    "start_record, end_record) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        batch.import_id,
                        batch.seq,
                        batch.rows,
                        datetime.now(UTC).isoformat(),
                        batch.start_record,
                        batch.end_record,
                    ),
                ).rowcount
                if claimed != 1:
                    recorded = conn.execute(
                        f"SELECT end_record FROM {ledger} WHERE import_id = ? AND seq = ?",
                        (batch.import_id, batch.seq),
                    ).fetchone()
                    assert recorded is not None  # the INSERT OR IGNORE ignored it
                    conn.execute("ROLLBACK")
                    return claim_conflict(batch, recorded[0])
                errors = write_isolating(batch.rows, write_range, _row_error)
                if errors:
                    conn.execute(
                        f"UPDATE {ledger} SET refused = ? WHERE import_id = ? AND seq = ?",
                        (len(errors), batch.import_id, batch.seq),
                    )
                before_commit(batch, errors)
                conn.execute("COMMIT")
            except BaseException:
                conn.rollback()
                raise
        except Error as exc:
            raise DatabaseLost(f"SQLite failed: {reason(exc)}") from None
        return WriteResult(errors)

    def committed(self, import_id: str, seqs: range = ALL_SEQS) -> Committed:
        query = LEDGER_TOTALS.format(ledger=q(LEDGER_TABLE), p="?")
        try:
            found = self.conn.execute(query, (import_id, seqs.start, seqs.stop)).fetchone()
            return ledger_totals(found)
        except Error as exc:
            if "no such table" in str(exc):  # no batch was ever written here
                return Committed()
            raise DatabaseUnavailable(f"SQLite failed: {reason(exc)}") from None

    def close(self) -> None:
        self.conn.close()


def _row_error(exc: Exception) -> str | None:
    """The reason a row was refused, if ``exc`` is a constraint (or a trigger) the row broke."""
    refusal = row_refusal(exc)
    if refusal is not None and refusal.startswith("UNIQUE"):
        return "duplicate key (" + refusal.split(": ", 1)[-1] + ")"
    return refusal
