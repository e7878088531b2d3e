"""Connections to SQLite through ADBC's SQLite driver, the one SQLite of the process.

ADBC binds a whole Arrow table to a statement in C (no Python object per value), which is
what lets the sink outrun ``sqlite3 .import``. Its driver carries its own copy of SQLite, and
two copies of SQLite in one process do not see each other's POSIX locks (a database can be
corrupted), so every SQLite access of antioom — the sink, the import records that share its
file, the tests — goes through :func:`connect`; Python's ``sqlite3`` module must not open the
same file in a process that imports.

This is ADBC's low-level API, not its DB-API module: that one imports ``pyarrow.dataset`` and
more (~18 MB of RSS) and answers Ctrl-C with a handler that cancels statements, which the
SQLite driver cannot do. Here Ctrl-C is Python's: the statement ends, then KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import adbc_driver_manager
import adbc_driver_sqlite
import pyarrow as pa

from antioom.errors import DatabaseUnavailable

Error = adbc_driver_manager.Error
DML = ("INSERT", "UPDATE", "DELETE", "REPLACE")
# What a row causes, besides ADBC's IntegrityError (every constraint, a trigger's RAISE):
# SQLite's messages, since ADBC does not pass its error codes on.
ROW_REFUSED = re.compile(
    r"(UNIQUE|NOT NULL|CHECK|FOREIGN KEY) constraint failed.*|datatype mismatch.*"
    r"|cannot store \S+ value in \S+ column.*"
)
# The first rows of a result from which ADBC infers its column types: a column NULL in all of
# them and holding values later would fail to read. antioom's own queries return far fewer.
RESULT_ROWS = 100_000
# SQLite failing to run a statement (rather than refusing it), in its own words.
NOT_THE_STATEMENT = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "database or disk is full",
    "database disk image is malformed",
    "readonly database",
    "unable to open database",
)


class Connection:
    """One SQLite connection in autocommit mode, used the way Python's ``sqlite3`` is.

    With ``implicit_begin`` (the import store), a statement that changes data opens a
    transaction (``BEGIN IMMEDIATE``: it waits for the write lock instead of failing on a
    stale snapshot) that :meth:`commit` or :meth:`rollback` ends, like ``sqlite3``'s default;
    without it (the sink) every transaction is the caller's ``BEGIN``/``COMMIT``.
    """

    def __init__(self, path: str, *, implicit_begin: bool) -> None:
        self._database = adbc_driver_sqlite.connect(path)
        try:
            self._connection = adbc_driver_manager.AdbcConnection(self._database)
            # One statement serves every call (its parameters are released after each run): a
            # statement left open would stop the connection from closing, and a Ctrl-C can
            # land between opening and closing one.
            self._statement = self._new_statement()
        except BaseException:
            self.close()
            raise
        self._implicit_begin = implicit_begin
        self.in_transaction = False

    def _new_statement(self) -> adbc_driver_manager.AdbcStatement:
        statement = adbc_driver_manager.AdbcStatement(self._connection)
        statement.set_options(**{"adbc.sqlite.query.batch_rows": str(RESULT_ROWS)})
        return statement

    def cursor(self) -> Cursor:
        return Cursor(self)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        cursor = Cursor(self)
        cursor.execute(sql, params)
        return cursor

    def executemany(self, sql: str, rows: pa.Table | Sequence[Sequence[Any]]) -> int:
        """Run ``sql`` once per row of ``rows`` (an Arrow table is bound in C, value by value);
        returns the number of rows changed."""
        return self.cursor().executemany(sql, rows)

    def run(self, sql: str, parameters: pa.Table | pa.RecordBatch | None = None) -> Result:
        """Run one statement, binding ``parameters`` (one execution per row) if given."""
        keyword = _keyword(sql)
        if self._implicit_begin and not self.in_transaction and keyword in DML:
            self._run("BEGIN IMMEDIATE", None)
            self.in_transaction = True
        found = self._run(sql, parameters)
        # True between a BEGIN and its COMMIT or ROLLBACK (rollback() does not rely on it:
        # a Ctrl-C can land between the statement and this line).
        if keyword == "BEGIN":
            self.in_transaction = True
        elif keyword in ("COMMIT", "END") or (keyword == "ROLLBACK" and " TO " not in sql.upper()):
            self.in_transaction = False
        return found

    def _run(self, sql: str, parameters: pa.Table | pa.RecordBatch | None) -> Result:
        statement = self._statement
        try:
            statement.set_sql_query(sql)
            if parameters is not None:
                statement.bind_stream(parameters)
            if _keyword(sql) in DML:
                return Result([], [], statement.execute_update())
            stream, _ = statement.execute_query()
            try:
                table = pa.RecordBatchReader.from_stream(stream).read_all()
            except (OSError, pa.ArrowException) as exc:  # e.g. a column whose type changed
                raise adbc_driver_manager.InternalError(
                    f"cannot read the result: {exc}",
                    status_code=adbc_driver_manager.AdbcStatusCode.INTERNAL,
                ) from None
        except BaseException:
            # A statement that failed keeps its parameters: the next one must not inherit them.
            self._statement = self._new_statement()
            statement.close()
            raise
        rows = list(zip(*(column.to_pylist() for column in table.columns), strict=True))
        return Result(table.schema.names, rows, -1)

    def commit(self) -> None:
        if self.in_transaction:
            self.run("COMMIT")

    def rollback(self) -> None:
        """Roll back whatever transaction is open, if any: also one whose BEGIN ran just
        before a Ctrl-C, or one SQLite ended itself (an I/O error, a full disk)."""
        with contextlib.suppress(Error):  # "no transaction is active"
            self._run("ROLLBACK", None)
        self.in_transaction = False

    def close(self) -> None:
        """Close the statement, the connection and the database (children first); a second
        call does nothing, as with sqlite3."""
        handles = [
            self.__dict__.pop(name, None) for name in ("_statement", "_connection", "_database")
        ]
        try:
            for handle in handles[:-1]:
                if handle is not None:
                    handle.close()
        finally:
            if handles[-1] is not None:
                handles[-1].close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Result:
    """What one statement returned: column names, rows, and rows changed (-1: not a change)."""

    def __init__(self, names: list[str], rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self.names = names
        self.rows = rows
        self.rowcount = rowcount


class Cursor:
    """The DB-API cursor calls the import store makes, over :meth:`Connection.run`."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._found = Result([], [], -1)
        self._next = 0

    @property
    def rowcount(self) -> int:
        return self._found.rowcount

    @property
    def description(self) -> list[tuple[str, None, None, None, None, None, None]] | None:
        if not self._found.names:
            return None
        return [(name, None, None, None, None, None, None) for name in self._found.names]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        parameters = (
            pa.record_batch(
                [[value] for value in params], names=[str(i) for i in range(len(params))]
            )
            if params
            else None
        )
        self._found, self._next = self._connection.run(sql, parameters), 0
        return self

    def executemany(self, sql: str, rows: pa.Table | Sequence[Sequence[Any]]) -> int:
        if not isinstance(rows, pa.Table):
            if not rows:
                return 0
            columns = list(zip(*rows, strict=True))
            rows = pa.table(
                [list(values) for values in columns], names=[str(i) for i in range(len(columns))]
            )
        self._found, self._next = self._connection.run(sql, rows), 0
        return self._found.rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self._found.rows):
            return None
        self._next += 1
        return self._found.rows[self._next - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._found.rows[self._next :]
        self._next = len(self._found.rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())

    def close(self) -> None:
        """Nothing to free: the rows were read when the statement ran."""


def connect(path: str, *, implicit_begin: bool = False) -> Connection:
    """A connection to the database file ``path`` in WAL mode, waiting up to 30 s for locks
    (the sink and the import records share the file); DatabaseUnavailable if it cannot open."""
    if path != ":memory:" and not Path(path).resolve().parent.is_dir():
        raise DatabaseUnavailable(f"cannot open SQLite database {path}: no such directory")
    try:
        conn = Connection(path, implicit_begin=implicit_begin)
    except Error as exc:
        raise DatabaseUnavailable(f"cannot open SQLite database {path}: {reason(exc)}") from None
    try:
        conn.run("PRAGMA busy_timeout = 30000")
        conn.run("PRAGMA journal_mode = WAL")
        conn.run("PRAGMA synchronous = NORMAL")
    except Error as exc:
        conn.close()
        raise DatabaseUnavailable(f"cannot open SQLite database {path}: {reason(exc)}") from None
    return conn


def reason(exc: BaseException) -> str:
    """SQLite's own words in an ADBC error (without ADBC's status and call prefixes)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^[A-Z_]+: (\[SQLite\] )?", "", text)
    return re.sub(r"^failed to \w+ (query|statement): ", "", text, flags=re.IGNORECASE)


def is_statement_error(exc: BaseException) -> bool:
    """Whether SQLite refused the statement itself (bad SQL, a duplicate column), rather than
    failing to run it (busy, read-only, I/O, corruption). Only SQLite's message counts, not
    the statement ADBC quotes after it (a table may be called ``disk_stats``)."""
    text = reason(exc).lower()
    return isinstance(exc, adbc_driver_manager.ProgrammingError) and not any(
        words in text for words in NOT_THE_STATEMENT
    )


def row_refusal(exc: BaseException) -> str | None:
    """SQLite's reason for refusing a row, if ``exc`` is a constraint (or a trigger) the row
    broke, else None."""
    if not isinstance(exc, Error):
        return None
    found = ROW_REFUSED.search(str(exc))
    if found is not None:
        return found.group(0)
    # A trigger's RAISE says what its author wrote: one row bound, ADBC calls it an
    # IntegrityError; several, an InternalError from resetting the statement, which is
    # split until the row stands alone (an error that is not the row's then shows as such).
    resetting = (
        isinstance(exc, adbc_driver_manager.InternalError)
        and "failed to reset statement" in str(exc).lower()
        and not any(words in reason(exc).lower() for words in NOT_THE_STATEMENT)
    )
    if isinstance(exc, adbc_driver_manager.IntegrityError) or resetting:
        return reason(exc)
    return None


def _keyword(sql: str) -> str:
    return sql.lstrip().split(None, 1)[0].upper()
