"""MySQL and MariaDB via LOAD DATA: ``mysql://user:pass@host:port/db`` (or ``mariadb://``,
``mysql+pymysql://``).

Driver: PyMySQL, because it is a pure-Python wheel; mysqlclient and MariaDB Connector/Python
have no Linux wheels and need libmariadb headers to build. Their speed does not make up for
that: on a 100 MB products file (2.68M rows, 50k-row batches, MariaDB 10.11) bulk INSERTs took
PyMySQL ``executemany`` 42 s, mysqlclient ``executemany`` 59 s, MariaDB Connector's binary bulk
28 s, while ``LOAD DATA LOCAL INFILE`` took 13 s through PyMySQL (15 s through mysqlclient):
the bulk path matters, the driver does not.

Bulk path: ``encode`` (in the parser thread) turns each batch into CSV with Arrow's writer, and
``write`` puts it in one reusable temporary file (one batch at a time, so bounded by the batch
size) and runs ``LOAD DATA LOCAL INFILE``, in one transaction with the batch's ledger row.
Plain inserts and keyed inserts load straight into the table; upserts load into a temporary
staging table and run ``INSERT … SELECT … ORDER BY seq ON DUPLICATE KEY UPDATE``, which applies
rows in input order, so the last occurrence of a key wins (within a batch and across batches).
The staging table is a MyISAM temporary table re-created per batch (no implicit commit; emptying
an InnoDB one with DELETE made the 100 MB upsert 64 s instead of 26 s).

``LOAD DATA LOCAL`` cannot stop mid-stream, so the server turns errors into warnings (a
duplicate key is skipped, a bad value truncated). Any warning, or fewer rows loaded than sent,
rolls the load back and the batch goes through strict multi-row INSERTs (PyMySQL rewrites
``executemany`` into them) with ``write_isolating``, so every refused row is a RowError with the
server's message. The same INSERT path is used when the server has ``local_infile`` off.

Tables are InnoDB, ``DEFAULT CHARSET utf8mb4``; the session runs in strict SQL mode with UTC
as its time zone. MySQL cannot index unbounded TEXT, so a string key column is
``VARCHAR(max_length)``, else ``VARCHAR(255)`` (longer values are refused rows), with the binary
collation so that keys compare exactly as in the other sinks (not case-insensitively); other
strings are LONGTEXT.

Every identifier is backtick-quoted, so reserved words are column names like any other; MySQL
column names are case-insensitive, so ``order`` and ``Order`` are one column (declaring both is
a duplicate-column TargetError). The URL names the database: ``schema.table`` is refused.

Concurrent imports: ``CREATE TABLE IF NOT EXISTS`` is atomic in MySQL (the name's metadata
lock), and does not wait for the batches in flight, but two imports upgrading an older ledger
would both add its missing columns: that runs under a named lock (``GET_LOCK``), only when a
column is missing. The merge orders the staged rows by key, then by input order (so a key's
last occurrence is still applied last), so that concurrent upserts of overlapping keys lock
rows in one order; InnoDB's gap locks can still deadlock, and a batch that does (or times out
on a lock) is rolled back and redone whole, ledger row included.

Note that with LOCAL INFILE the server names the file the client sends; PyMySQL does not check
that it is the one in the statement, so connect only to servers you trust with local files.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import parse_qs, unquote, urlsplit

import pyarrow as pa
import pyarrow.csv as pa_csv
import pymysql  # type: ignore[import-untyped]  # no stubs in the dev set
from pymysql.cursors import Cursor  # type: ignore[import-untyped]

from antioom.engine.batching import Batch
from antioom.engine.datasets import UPDATED_AT, Column, Dataset
from antioom.errors import ConfigError, DatabaseLost, DatabaseUnavailable, TargetError
from antioom.sinks.base import (
    ALL_SEQS,
    LEDGER_COLUMNS_ADDED,
    LEDGER_TABLE,
    LEDGER_TOTALS,
    Committed,
    RowError,
    Sink,
    WriteResult,
    before_commit,
    claim_conflict,
    ledger_totals,
    missing_columns,
    refuse_schema,
    retry_transient,
    write_isolating,
)

STAGING_TABLE = "antioom_staging"
SEQ = "antioom_seq"
DEFAULT_KEY_LENGTH = 255
ROW_SLICE = 2_000
# Quoted values and a bare NULL: LOAD DATA reads a bare NULL as NULL, a quoted one as text.
LOAD_DATA_CSV = pa_csv.WriteOptions(
    include_header=False, quoting_style="all_valid", null_string="NULL"
)
SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION"
)
# Server errors caused by a row's data (sqlstate classes 22 and 23, and MySQL's HY000 ones).
ROW_ERRORS = {1048, 1062, 1263, 1264, 1265, 1292, 1366, 1367, 1406, 1441, 1452, 1690, 3819, 4025}
DUPLICATE_KEY = 1062
NO_SUCH_TABLE = 1146
# Server errors in prepare that are the server's state, not the table definition (disk full,
# out of memory, shutdown, lock waits, deadlock, read-only, killed, timeouts). Every other
# refusal (1117 too many columns, 1118 row size too large, 1060 duplicate column, 1071 key
# too long, 1064 syntax, 1142 denied…) is a TargetError.
SERVER_STATE_ERRORS = {1021, 1037, 1038, 1040, 1053, 1205, 1213, 1290, 1317, 1927, 1969, 3024}
# A transaction that collided with another: deadlock (rolled back), lock wait timeout.
TRANSIENT_ERRORS = {1213, 1205}
LEDGER_LOCK_WAIT_S = 60
LEDGER_DEFINITION = (
    f"CREATE TABLE IF NOT EXISTS `{LEDGER_TABLE}` ("
    "`import_id` VARCHAR(255) COLLATE utf8mb4_bin NOT NULL, "
    "`seq` BIGINT NOT NULL, `rows` INT NOT NULL, `committed_at` DATETIME(6) "
    "NOT NULL DEFAULT CURRENT_TIMESTAMP(6), `end_record` BIGINT, `start_record` BIGINT, "
    "`refused` INT NOT NULL DEFAULT 0, PRIMARY KEY (`import_id`, `seq`)) "
    "ENGINE=InnoDB DEFAULT CHARSET utf8mb4"
)


def sql_type(column: Column, key: bool) -> str:
    if column.type == "string":
        if key:
            return f"VARCHAR({column.max_length or DEFAULT_KEY_LENGTH}) COLLATE utf8mb4_bin"
        return "LONGTEXT"
    return {
        "integer": "BIGINT",
        "float": "DOUBLE",
        "decimal": f"DECIMAL({column.precision}, {column.scale})",
        "boolean": "TINYINT(1)",
        "date": "DATE",
        "timestamp": "DATETIME(6)",
    }[column.type]


def connect_args(url: str) -> dict[str, Any]:
    """PyMySQL's ``connect`` arguments for a ``mysql://`` URL (``?unix_socket=`` allowed)."""
    parts = urlsplit(url)
    if parts.scheme.split("+")[0] not in ("mysql", "mariadb"):
        raise ConfigError(f"invalid MySQL URL scheme {parts.scheme!r}: use mysql://")
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ConfigError("invalid MySQL URL: name the database, mysql://user@host/DATABASE")
    query = parse_qs(parts.query)
    unknown = sorted(set(query) - {"unix_socket"})
    if unknown:
        raise ConfigError(f"invalid MySQL URL: unsupported parameter(s) {', '.join(unknown)}")
    try:
        port = parts.port or 3306
    except ValueError:
        raise ConfigError("invalid MySQL URL: bad port") from None
    args: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": port,
        "user": unquote(parts.username) if parts.username else "root",
        "password": unquote(parts.password) if parts.password else "",
        "database": database,
    }
    if "unix_socket" in query:
        args["unix_socket"] = query["unix_socket"][-1]
    return args


def q(name: str) -> str:
    """``name`` as a quoted identifier (an embedded backtick doubled): names may be reserved."""
    return "`" + name.replace("`", "``") + "`"


class MySQLSink(Sink):
    def __init__(self, url: str) -> None:
        args = connect_args(url)
        try:
            self.conn = pymysql.connect(
                **args,
                charset="utf8mb4",
                local_infile=True,
                autocommit=False,
                connect_timeout=10,
                init_command=f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00'",
            )
        except pymysql.Error as exc:
            raise DatabaseUnavailable(f"cannot connect to MySQL: {_message(exc)}") from None
        self._file: IO[bytes] | None = None

    def prepare(self, dataset: Dataset, *, alter: bool = False) -> None:
        refuse_schema(dataset.table, "MySQL")
        self.dataset = dataset
        definitions = [
            f"{q(c.name)} {sql_type(c, c.name in dataset.key)}{' NOT NULL' if c.required else ''}"
            for c in dataset.columns
        ]
        if dataset.updated_at:
            definitions.append(f"{q(UPDATED_AT)} DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)")
        if dataset.key:
            definitions.append(f"PRIMARY KEY ({', '.join(map(q, dataset.key))})")
        self._staged = dataset.mode == "upsert"
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {q(dataset.table)} ({', '.join(definitions)}) "
                    "ENGINE=InnoDB DEFAULT CHARSET utf8mb4"
                )
                self._prepare_ledger(cursor)
                existing = _columns(cursor, dataset.table)
                cursor.execute("SELECT @@local_infile")
                self._load_data = bool(cursor.fetchone()[0])
                if self._staged:
                    self._create_staging(cursor)
            self.conn.commit()
        except pymysql.Error as exc:
            if _connection_failed(exc) or (exc.args and exc.args[0] in SERVER_STATE_ERRORS):
                raise DatabaseUnavailable(f"MySQL failed: {_message(exc)}") from None
            raise TargetError(f"cannot prepare table {dataset.table}: {_message(exc)}") from None
        types = {c.name: sql_type(c, False) for c in dataset.columns} | {
            UPDATED_AT: "DATETIME(6) NULL DEFAULT CURRENT_TIMESTAMP(6)"
        }
        missing = missing_columns(dataset, existing, alter)
        if missing:
            adds = ", ".join(f"ADD COLUMN {q(name)} {types[name]}" for name in missing)
            try:
                with self.conn.cursor() as cursor:
                    cursor.execute(f"ALTER TABLE {q(dataset.table)} {adds}")
                self.conn.commit()
            except pymysql.Error as exc:
                raise TargetError(
                    f"cannot add columns to {dataset.table}: {_message(exc)}"
                ) from None
        self._sql = self._statements()

    def clear(self, table: str, *, drop: bool) -> None:
        refuse_schema(table, "MySQL")
        try:
            with self.conn.cursor() as cursor:
                if drop:
                    cursor.execute(f"DROP TABLE IF EXISTS {q(table)}")
                elif _columns(cursor, table):
                    cursor.execute(f"TRUNCATE TABLE {q(table)}")
            self.conn.commit()
        except pymysql.Error as exc:
            raise DatabaseLost(f"MySQL failed: {_message(exc)}") from None

    def _prepare_ledger(self, cursor: Cursor) -> None:
        """Create the ledger, or add the columns an older version's lacks. Checked first, then
        again under a named lock if anything is missing: two imports must not both ALTER."""
        columns = _columns(cursor, LEDGER_TABLE)
        if columns and not set(LEDGER_COLUMNS_ADDED) - columns:
            return
        lock = "CONCAT('antioom:', SHA1(CONCAT(DATABASE(), '.', %s)))"  # names: 64 chars
        cursor.execute(f"SELECT GET_LOCK({lock}, %s)", (LEDGER_TABLE, LEDGER_LOCK_WAIT_S))
        if cursor.fetchone()[0] != 1:
            raise DatabaseUnavailable(
                f"MySQL: another import held the lock on {LEDGER_TABLE} for {LEDGER_LOCK_WAIT_S} s"
            )
        try:
            columns = _columns(cursor, LEDGER_TABLE)
            if not columns:
                cursor.execute(LEDGER_DEFINITION)
            for name, definition in LEDGER_COLUMNS_ADDED.items():  # an older version's
                if columns and name not in columns:
                    cursor.execute(
                        f"ALTER TABLE {q(LEDGER_TABLE)} ADD COLUMN {q(name)} {definition}"
                    )
        finally:
            cursor.execute(f"DO RELEASE_LOCK({lock})", (LEDGER_TABLE,))

    def _create_staging(self, cursor: Cursor) -> None:
        """An empty staging table. Re-created per batch: DELETE of 50k rows costs as much as
        the merge (TRUNCATE would commit); MyISAM as rows need not survive a rollback."""
        staging = [f"{q(c.name)} {sql_type(c, False)}" for c in self.dataset.columns]
        cursor.execute(f"DROP TEMPORARY TABLE IF EXISTS {q(STAGING_TABLE)}")
        cursor.execute(
            f"CREATE TEMPORARY TABLE {q(STAGING_TABLE)} ({', '.join(staging)}, "
            f"{q(SEQ)} BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY) "
            "ENGINE=MyISAM DEFAULT CHARSET utf8mb4"
        )

    def _statements(self) -> dict[str, str]:
        dataset = self.dataset
        names = ", ".join(q(c.name) for c in dataset.columns)
        target = q(STAGING_TABLE if self._staged else dataset.table)
        load = (
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {target} CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
            f"LINES TERMINATED BY '\\n' ({names})"
        )
        placeholders = ", ".join(["%s"] * len(dataset.columns))
        insert = f"INSERT INTO {q(dataset.table)} ({names}) VALUES ({placeholders})"
        if self._staged:
            insert += " ON DUPLICATE KEY UPDATE " + self._updates("VALUES({})")
        # Key order (as the key compares: staged strings are not in its binary collation), so
        # that concurrent merges lock rows alike; then input order, so the last occurrence of
        # a key is applied last.
        order = [
            f"s.{q(c.name)}" + (" COLLATE utf8mb4_bin" if c.type == "string" else "")
            for c in dataset.columns
            if c.name in dataset.key
        ]
        merge = (  # the staged row's columns, not VALUES(), which MySQL 8.0.20+ deprecates
            f"INSERT INTO {q(dataset.table)} ({names}) "
            f"SELECT {', '.join('s.' + q(c.name) for c in dataset.columns)} "
            f"FROM {q(STAGING_TABLE)} AS s ORDER BY {', '.join([*order, 's.' + q(SEQ)])} "
            f"ON DUPLICATE KEY UPDATE {self._updates('s.{}')}"
        )
        return {"load": load, "insert": insert, "merge": merge}

    def _updates(self, new_value: str) -> str:
        """The ON DUPLICATE KEY UPDATE assignments; ``new_value`` formats a column name."""
        dataset = self.dataset
        table = q(dataset.table)
        updates = [
            f"{table}.{q(c.name)} = {new_value.format(q(c.name))}" for c in dataset.value_columns
        ]
        if dataset.updated_at:
            updates.append(f"{table}.{q(UPDATED_AT)} = CURRENT_TIMESTAMP(6)")
        if not updates:  # a key-only upsert: nothing to change
            updates.append(f"{table}.{q(dataset.key[0])} = {table}.{q(dataset.key[0])}")
        return ", ".join(updates)

    def encode(self, table: pa.Table) -> bytes:
        """The batch as CSV for LOAD DATA, by Arrow's CSV writer: every value quoted (``""``
        for a quote, so ``"NULL"`` is the string), nulls as the bare word NULL, booleans as 1/0."""
        if table.num_rows == 0:
            return b""
        for index, column in enumerate(self.dataset.columns):
            if column.type == "boolean":
                table = table.set_column(index, column.name, table.column(index).cast(pa.int8()))
        out = pa.BufferOutputStream()
        pa_csv.write_csv(table, out, LOAD_DATA_CSV)
        payload: bytes = out.getvalue().to_pybytes()
        return payload

    def write(self, batch: Batch) -> WriteResult:
        payload = batch.payload if isinstance(batch.payload, bytes) else self.encode(batch.table)
        try:
            return retry_transient(lambda: self._write_batch(batch, payload), _transient)
        except pymysql.Error as exc:
            if _connection_failed(exc):
                raise DatabaseLost(f"MySQL connection failed: {_message(exc)}") from None
            raise DatabaseLost(f"MySQL refused the batch: {_message(exc)}") from None

    def _write_batch(self, batch: Batch, payload: bytes) -> WriteResult:
        """One attempt at ``write``: the batch and its ledger row in one transaction."""
        conn = self.conn
        with conn.cursor() as cursor:
            conn.begin()
            try:
                if not self._claim(cursor, batch):
                    cursor.execute(
                        f"SELECT `end_record` FROM {q(LEDGER_TABLE)} "
                        "WHERE `import_id` = %s AND `seq` = %s",
                        (batch.import_id, batch.seq),
                    )
                    recorded = cursor.fetchone()
                    conn.rollback()
                    return claim_conflict(batch, recorded[0] if recorded else None)
                errors: list[RowError] = []
                if not self._load(cursor, payload, batch.rows):
                    errors = self._insert_isolating(cursor, batch.table)
                if errors:
                    cursor.execute(
                        f"UPDATE {q(LEDGER_TABLE)} SET `refused` = %s "
                        "WHERE `import_id` = %s AND `seq` = %s",
                        (len(errors), batch.import_id, batch.seq),
                    )
                before_commit(batch, errors)
                conn.commit()
            except BaseException:
                _quiet_rollback(conn)
                raise
        return WriteResult(errors)

    def _claim(self, cursor: Cursor, batch: Batch) -> bool:
        """Insert the batch's ledger row; False if the batch was committed before."""
        try:
            cursor.execute(
                f"INSERT INTO {q(LEDGER_TABLE)} (`import_id`, `seq`, `rows`, `start_record`, "
                "`end_record`) VALUES (%s, %s, %s, %s, %s)",
                (batch.import_id, batch.seq, batch.rows, batch.start_record, batch.end_record),
            )
        except pymysql.err.IntegrityError as exc:
            if exc.args and exc.args[0] == DUPLICATE_KEY:
                return False
            raise
        return True

    def _load(self, cursor: Cursor, payload: bytes, rows: int) -> bool:
        """LOAD DATA the whole batch; False (and nothing written) if any row was not clean."""
        if not self._load_data:
            return False
        if self._file is None:
            self._file = tempfile.NamedTemporaryFile(prefix="antioom-", suffix=".csv")  # noqa: SIM115
        self._file.seek(0)
        self._file.truncate()
        self._file.write(payload)
        self._file.flush()
        if self._staged:
            self._create_staging(cursor)
        cursor.execute("SAVEPOINT antioom_load")
        try:
            loaded = cursor.execute(self._sql["load"], (self._file.name,))
            clean = bool(loaded == rows and cursor.warning_count == 0)
            if clean and self._staged:
                cursor.execute(self._sql["merge"])
        except pymysql.Error as exc:
            if _row_error(exc) is None:
                raise
            clean = False
        if not clean:
            cursor.execute("ROLLBACK TO SAVEPOINT antioom_load")
        cursor.execute("RELEASE SAVEPOINT antioom_load")
        return clean

    def _insert_isolating(self, cursor: Cursor, table: pa.Table) -> list[RowError]:
        """Strict multi-row INSERTs, isolating the rows the server refuses."""
        sql = self._sql["insert"]

        def write_range(start: int, stop: int) -> None:
            cursor.execute("SAVEPOINT antioom_rows")
            try:
                cursor.executemany(sql, _rows(table.slice(start, stop - start)))
            except BaseException as exc:
                if not _transient(exc):  # a deadlock took the transaction and its savepoint
                    cursor.execute("ROLLBACK TO SAVEPOINT antioom_rows")
                raise
            cursor.execute("RELEASE SAVEPOINT antioom_rows")

        return write_isolating(table.num_rows, write_range, _row_error)

    def committed(self, import_id: str, seqs: range = ALL_SEQS) -> Committed:
        # LEDGER_TOTALS, with `rows` quoted: a reserved word in MySQL
        query = LEDGER_TOTALS.format(ledger=q(LEDGER_TABLE), p="%s").replace("rows)", "`rows`)")
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(query, (import_id, seqs.start, seqs.stop))
                row = cursor.fetchone()
            self.conn.commit()
        except pymysql.Error as exc:
            if exc.args and exc.args[0] == NO_SUCH_TABLE:  # no batch was ever written here
                return Committed()
            raise DatabaseUnavailable(f"MySQL failed: {_message(exc)}") from None
        return ledger_totals(row)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self.conn.close()


def _columns(cursor: Cursor, table: str) -> set[str]:
    """The columns of ``table`` in the connection's database: none if it is missing."""
    cursor.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND table_name = %s",
        (table,),
    )
    return {row[0] for row in cursor.fetchall()}


def _rows(table: pa.Table) -> Iterator[tuple[Any, ...]]:
    """Python row tuples, made ``ROW_SLICE`` rows at a time: they are ~5x the Arrow size."""
    for offset in range(0, table.num_rows, ROW_SLICE):
        piece = table.slice(offset, ROW_SLICE)
        yield from zip(*(values.to_pylist() for values in piece.columns), strict=True)


def _row_error(exc: Exception) -> str | None:
    if isinstance(exc, pymysql.err.ProgrammingError) and len(exc.args) == 1:
        return str(exc.args[0])  # raised by PyMySQL before sending: "inf can not be used…"
    if not isinstance(exc, pymysql.Error) or not exc.args or exc.args[0] not in ROW_ERRORS:
        return None
    if exc.args[0] == DUPLICATE_KEY:
        return "duplicate key"
    return re.sub(r" at row \d+$", "", _message(exc))  # the row within the statement


def _transient(exc: BaseException) -> bool:
    """Whether the server refused the statement for colliding with another transaction."""
    code = exc.args[0] if isinstance(exc, pymysql.Error) and exc.args else None
    return code in TRANSIENT_ERRORS


def _connection_failed(exc: BaseException) -> bool:
    """A client-side error (2000-2999: server gone, lost, timed out), not a server refusal."""
    code = exc.args[0] if exc.args else 0
    client_error = isinstance(code, int) and 2000 <= code < 3000
    return isinstance(exc, pymysql.err.InterfaceError) or client_error


def _message(exc: BaseException) -> str:
    has_server_message = isinstance(exc, pymysql.Error) and len(exc.args) >= 2
    text = str(exc.args[1] if has_server_message else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quiet_rollback(conn: pymysql.connections.Connection[Any]) -> None:
    """Roll back if the connection still works; a lost one has rolled back already."""
    with contextlib.suppress(pymysql.Error):
        conn.rollback()
