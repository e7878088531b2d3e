"""SQLite, the embedded default: ``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db``.

Batches are bound straight from Arrow by ADBC's SQLite driver (``executemany`` of one Arrow
table: no Python object per value), one transaction per batch, in WAL mode with
``synchronous=NORMAL`` (a commit survives a process crash; the last commits may be lost on a
power cut). Upsert is ``INSERT … ON CONFLICT DO UPDATE``, applied in input order, so the last
occurrence of a key wins.

Every SQLite access of antioom — this sink and the import records that share its file — goes
through :func:`connect`, so one copy of SQLite runs in the process: ADBC's driver carries its
own, and two copies in one process do not see each other's POSIX locks (a database can be
corrupted). Python's ``sqlite3`` module must not open the same file in a process that imports.

Every identifier is double-quoted, so reserved words (``index``, ``order``…) are column names
like any other. SQLite compares names case-insensitively even when quoted: ``order`` and
``Order`` are one column (a duplicate-column TargetError when both are declared).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import adbc_driver_manager
import adbc_driver_manager.dbapi
import adbc_driver_sqlite.dbapi as adbc
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

Error = adbc_driver_manager.Error

# ADBC answers Ctrl-C in the main thread with a SIGINT handler of its own that cancels the
# running statement from a helper thread. Its SQLite driver cannot cancel, and the handler can
# fire after the call it guards has ended, on a freed callback (a segfault, seen here). Without
# it Ctrl-C behaves as with Python's sqlite3: the statement ends, then KeyboardInterrupt.


def _call(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[Any, Any], cancel: Any
) -> Any:
    return func(*args, **kwargs)


adbc_driver_manager.dbapi._blocking_call = _call  # type: ignore[attr-defined]

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
DML = ("INSERT", "UPDATE", "DELETE", "REPLACE")
# The constraint errors a row causes (ADBC reports SQLite's message, not its error code).
ROW_REFUSED = re.compile(
    r"(UNIQUE|PRIMARY KEY|NOT NULL|CHECK|FOREIGN KEY) constraint failed.*"
    r"|cannot store \S+ value in \S+ column.*"
)


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


class Result:
    """The rows of one statement, fetched before its cursor was closed."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)


class Connection:
    """An ADBC SQLite connection in autocommit mode, used the way Python's ``sqlite3`` is.

    With ``implicit_begin`` (the import store), a statement that changes data opens a
    transaction (``BEGIN IMMEDIATE``: it waits for the write lock instead of failing on a
    stale snapshot) that :meth:`commit` or :meth:`rollback` ends, like ``sqlite3``'s default;
    without it (the sink) every transaction is the caller's ``BEGIN``/``COMMIT``.
    """

    def __init__(self, adbc_connection: adbc.Connection, *, implicit_begin: bool) -> None:
        self._adbc = adbc_connection
        # One ADBC cursor serves every statement: none is left open (which would make the
        # connection refuse to close) when Ctrl-C lands between two calls.
        self._statement = adbc_connection.cursor()
        self._implicit_begin = implicit_begin
        self.in_transaction = False

    def cursor(self) -> Cursor:
        return Cursor(self)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement and return its rows (its cursor is closed already)."""
        with self.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall() if cursor.description else []
            return Result(rows, cursor.rowcount)

    def executemany(self, sql: str, rows: Any) -> None:
        """Run ``sql`` once per row of ``rows``: an Arrow table is bound in C, value by value."""
        with self.cursor() as cursor:
            cursor.executemany(sql, rows)

    def commit(self) -> None:
        if self.in_transaction:
            self.execute("COMMIT")

    def rollback(self) -> None:
        """Roll back whatever transaction is open, if any: also one whose BEGIN ran just
        before a Ctrl-C, or one SQLite ended itself (an I/O error, a full disk)."""
        self.in_transaction = False
        with contextlib.suppress(Error):  # "no transaction is active"
            self._statement.execute("ROLLBACK")

    def close(self) -> None:
        self._statement.close()
        self._adbc.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Cursor:
    """A cursor of :class:`Connection`: DB-API calls, with ``rowcount`` for changes.
    The cursors of one connection share its one ADBC cursor: use one at a time."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._cursor = connection._statement
        self.rowcount = -1

    @property
    def description(self) -> Any:
        return self._cursor.description

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        keyword = sql.lstrip().split(None, 1)[0].upper()
        if keyword in DML:
            # ADBC counts changed rows only for executemany: one row of parameters.
            self.executemany(sql, [tuple(params)] if params else [()])
            return
        self.rowcount = -1
        self._cursor.execute(sql, tuple(params) or None)
        # True between a BEGIN and its COMMIT or ROLLBACK (Connection.rollback does not rely on
        # it: a Ctrl-C can land between the statement and this line).
        if keyword == "BEGIN":
            self._connection.in_transaction = True
        elif keyword in ("COMMIT", "END") or (keyword == "ROLLBACK" and " TO " not in sql.upper()):
            self._connection.in_transaction = False

    def executemany(self, sql: str, rows: Any) -> None:
        connection = self._connection
        if connection._implicit_begin and not connection.in_transaction:
            self._cursor.execute("BEGIN IMMEDIATE")
            connection.in_transaction = True
        if isinstance(rows, list) and rows == [()]:
            self._cursor.execute(sql)
            self._cursor.execute("SELECT changes()")
            found = self._cursor.fetchone()
            self.rowcount = int(found[0]) if found else -1
            return
        self._cursor.executemany(sql, rows)
        self.rowcount = self._cursor.rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall()

    def close(self) -> None:
        """Nothing to free: the ADBC cursor is the connection's."""

    def __enter__(self) -> Cursor:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect(path: str, *, implicit_begin: bool = False) -> Connection:
    """A connection to the database file ``path`` in WAL mode, waiting up to 30 s for locks
    (the sink and the import records share the file); DatabaseUnavailable if it cannot open."""
    if path != ":memory:" and not Path(path).resolve().parent.is_dir():
        raise DatabaseUnavailable(f"cannot open SQLite database {path}: no such directory")
    try:
        conn = Connection(adbc.connect(path, autocommit=True), implicit_begin=implicit_begin)
    except Error as exc:
        raise DatabaseUnavailable(f"cannot open SQLite database {path}: {reason(exc)}") from None
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    except Error as exc:
        conn.close()
        raise DatabaseUnavailable(f"cannot open SQLite database {path}: {reason(exc)}") from None
    return conn


def reason(exc: BaseException) -> str:
    """SQLite's own words in an ADBC error (without ADBC's status and call prefixes)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^[A-Z_]+: (\[SQLite\] )?", "", text)
    return re.sub(r"^Failed to \w+ (query|statement): ", "", text)


def is_statement_error(exc: BaseException) -> bool:
    """Whether SQLite refused the statement itself (bad SQL, a duplicate column), rather than
    failing to run it (busy, read-only, I/O, corruption)."""
    text = str(exc).lower()
    return isinstance(exc, adbc_driver_manager.ProgrammingError) and not (
        "locked" in text or "busy" in text or "disk" in text
    )


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
        try:
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {q(dataset.table)} ({', '.join(columns)})"
            )
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {q(LEDGER_TABLE)} (import_id TEXT NOT NULL, "
                "seq INTEGER NOT NULL, rows INTEGER NOT NULL, committed_at TEXT NOT NULL, "
                "end_record INTEGER, refused INTEGER NOT NULL DEFAULT 0, start_record INTEGER, "
                "PRIMARY KEY (import_id, seq))"
            )
            ledger = {
                row[0]
                for row in self.conn.execute(
                    "SELECT name FROM pragma_table_info(?)", (LEDGER_TABLE,)
                )
            }
            for name, definition in LEDGER_COLUMNS_ADDED.items():
                if name not in ledger:  # a ledger made by an older version
                    self.conn.execute(
                        f"ALTER TABLE {q(LEDGER_TABLE)} ADD COLUMN {name} {definition}"
                    )
            existing = {
                row[0]
                for row in self.conn.execute(
                    "SELECT name FROM pragma_table_info(?)", (dataset.table,)
                )
            }
        except Error as exc:
            if is_statement_error(exc):  # too many columns, a duplicate column name
                raise TargetError(f"cannot prepare table {dataset.table}: {reason(exc)}") from None
            raise DatabaseUnavailable(
                f"cannot prepare table {dataset.table}: {reason(exc)}"
            ) from None
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
            conn.execute("BEGIN IMMEDIATE")
            try:
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
                if not claimed:
                    recorded = conn.execute(
                        f"SELECT end_record FROM {ledger} WHERE import_id = ? AND seq = ?",
                        (batch.import_id, batch.seq),
                    ).rows[0]
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
    """The reason a row was refused, if ``exc`` is a constraint the row broke."""
    found = ROW_REFUSED.search(str(exc)) if isinstance(exc, Error) else None
    if found is None:
        return None
    message = found.group(0)
    if message.startswith(("UNIQUE", "PRIMARY KEY")):
        return "duplicate key (" + message.split(": ", 1)[-1] + ")"
    return message
