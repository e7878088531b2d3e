"""Import records and their rejects, kept in the target database.

Records survive a restart, and every server pointed at the same database can list and serve
them. Only a bounded number of rejects is stored per import; the record's ``failed`` count is
always the total.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Protocol

from antioom.engine.progress import Summary
from antioom.engine.rejects import Reject
from antioom.errors import ConfigError, DatabaseUnavailable
from antioom.sinks import redact
from antioom.sinks.sqlite import sqlite_path

RECORD_FIELDS = (
    "id",
    "status",
    "dataset",
    "table_name",
    "processed",
    "failed",
    "rows_read",  # "rows" is a reserved word in MySQL/MariaDB
    "bytes",
    "batches",
    "started_at",
    "finished_at",
    "duration_s",
    "rows_per_s",
    "peak_rss_mb",
    "error",
)
REJECT_FIELDS = ("record", "line", "column_name", "reason", "raw")


class Store(Protocol):
    """Where the server keeps import records and their rejects."""

    def ping(self) -> None: ...
    def exists(self, import_id: str) -> bool: ...
    def save(self, summary: Summary) -> None: ...
    def get(self, import_id: str) -> dict[str, Any] | None: ...
    def list(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]: ...
    def add_rejects(self, import_id: str, rejects: Sequence[Reject]) -> None: ...
    def rejects(self, import_id: str) -> Iterator[tuple[Any, ...]]: ...
    def close(self) -> None: ...


class ImportStore:
    """A small DB-API store: one connection guarded by a lock (records are tiny and rare).

    A lost connection is reopened on the next call, so the server recovers when the database
    comes back; while it is down, calls raise DatabaseUnavailable.
    """

    placeholder = "?"
    big = "INTEGER"
    real = "REAL"
    inline_index = ""  # MySQL has no CREATE INDEX IF NOT EXISTS: it declares it inline

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._conn: Any = None
        self._lock = threading.Lock()
        self._create()

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
            try:
                cursor = self._conn.cursor()
                try:
                    yield cursor
                    self._conn.commit()
                except BaseException:
                    self._conn.rollback()
                    raise
                finally:
                    cursor.close()
            except DatabaseUnavailable:
                raise
            except Exception as exc:
                if _is_connection_error(exc):
                    self._drop()
                    raise DatabaseUnavailable(f"database unavailable: {exc}") from None
                raise

    def _drop(self) -> None:
        with suppress(Exception):  # already gone
            self._conn.close()
        self._conn = None

    def _create(self) -> None:
        with self._cursor() as cursor:
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS antioom_imports (id VARCHAR(64) PRIMARY KEY, "
                f"status TEXT, dataset TEXT, table_name TEXT, processed {self.big}, "
                f"failed {self.big}, rows_read {self.big}, bytes {self.big}, batches {self.big}, "
                f"started_at TEXT, finished_at TEXT, duration_s {self.real}, "
                f"rows_per_s {self.real}, peak_rss_mb {self.real}, error TEXT)"
            )
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS antioom_rejects (import_id VARCHAR(64), "
                f"record {self.big}, line {self.big}, column_name TEXT, reason TEXT, raw TEXT"
                f"{self.inline_index})"
            )
            if not self.inline_index:
                cursor.execute(
                    "CREATE INDEX IF NOT EXISTS antioom_rejects_import "
                    "ON antioom_rejects (import_id, record)"
                )

    def ping(self) -> None:
        with self._cursor() as cursor:
            cursor.execute("SELECT 1")

    def exists(self, import_id: str) -> bool:
        p = self.placeholder
        with self._cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM antioom_imports WHERE id = {p}", (import_id,))
            return cursor.fetchone() is not None

    def save(self, summary: Summary) -> None:
        values = _record_values(summary)
        p = self.placeholder
        columns = ", ".join(RECORD_FIELDS)
        updates = ", ".join(f"{name} = {p}" for name in RECORD_FIELDS[1:])
        with self._cursor() as cursor:
            cursor.execute(
                f"UPDATE antioom_imports SET {updates} WHERE id = {p}", (*values[1:], values[0])
            )
            if cursor.rowcount == 0:
                marks = ", ".join([p] * len(RECORD_FIELDS))
                cursor.execute(f"INSERT INTO antioom_imports ({columns}) VALUES ({marks})", values)

    def get(self, import_id: str) -> dict[str, Any] | None:
        p = self.placeholder
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join(RECORD_FIELDS)} FROM antioom_imports WHERE id = {p}",
                (import_id,),
            )
            row = cursor.fetchone()
        return None if row is None else _record(row)

    def list(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        p = self.placeholder
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join(RECORD_FIELDS)} FROM antioom_imports "
                f"ORDER BY started_at DESC, id LIMIT {p} OFFSET {p}",
                (limit, offset),
            )
            rows = cursor.fetchall()
            cursor.execute("SELECT COUNT(*) FROM antioom_imports")
            total = cursor.fetchone()[0]
        return [_record(row) for row in rows], int(total)

    def add_rejects(self, import_id: str, rejects: Sequence[Reject]) -> None:
        if not rejects:
            return
        p = self.placeholder
        rows = [(import_id, r.record, r.line, r.column, r.reason, r.raw()) for r in rejects]
        with self._cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO antioom_rejects (import_id, {', '.join(REJECT_FIELDS)}) "
                f"VALUES ({', '.join([p] * 6)})",
                rows,
            )

    def rejects(self, import_id: str) -> Iterator[tuple[Any, ...]]:
        """The stored rejects of an import, in record order, fetched in pages."""
        p = self.placeholder
        after = -1
        while True:
            with self._cursor() as cursor:
                cursor.execute(
                    f"SELECT {', '.join(REJECT_FIELDS)} FROM antioom_rejects "
                    f"WHERE import_id = {p} AND record > {p} ORDER BY record LIMIT 1000",
                    (import_id, after),
                )
                page = cursor.fetchall()
            if not page:
                return
            yield from page
            after = page[-1][0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._drop()


class _PostgresStore(ImportStore):
    placeholder = "%s"
    big = "BIGINT"
    real = "DOUBLE PRECISION"


class _MySQLStore(ImportStore):
    placeholder = "%s"
    big = "BIGINT"
    real = "DOUBLE"
    inline_index = ", INDEX antioom_rejects_import (import_id, record)"


def _record_values(summary: Summary) -> tuple[Any, ...]:
    return (
        summary.import_id,
        summary.status,
        summary.dataset,
        summary.table,
        summary.processed,
        summary.failed,
        summary.rows,
        summary.bytes,
        summary.batches,
        summary.started_at,
        summary.finished_at,
        summary.duration_s,
        summary.rows_per_s,
        summary.peak_rss_mb,
        summary.error,
    )


def _record(row: Sequence[Any]) -> dict[str, Any]:
    record = dict(zip(RECORD_FIELDS, row, strict=True))
    record["table"] = record.pop("table_name")
    record["rows"] = record.pop("rows_read")
    return record


def _is_connection_error(exc: Exception) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return True
    import psycopg
    import pymysql  # type: ignore[import-untyped]

    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg.InterfaceError
        | pymysql.err.OperationalError
        | pymysql.err.InterfaceError,
    )


class MongoStore:
    """Records and rejects as documents in the collections ``antioom_imports`` and
    ``antioom_rejects`` of the target database (pymongo is thread-safe: no lock needed)."""

    def __init__(self, url: str) -> None:
        from pymongo import ASCENDING

        from antioom.sinks.mongo import connect

        self._client, db, _ = connect(url)
        self._imports = db["antioom_imports"]
        self._rejects = db["antioom_rejects"]
        self._guard(
            lambda: self._rejects.create_index([("import_id", ASCENDING), ("record", ASCENDING)])
        )

    def _guard(self, call: Callable[[], Any]) -> Any:
        from pymongo.errors import PyMongoError

        try:
            return call()
        except PyMongoError as exc:
            raise DatabaseUnavailable(f"MongoDB unavailable: {exc}") from None

    def ping(self) -> None:
        self._guard(lambda: self._client.admin.command("ping"))

    def exists(self, import_id: str) -> bool:
        return (
            self._guard(lambda: self._imports.find_one({"_id": import_id}, {"_id": 1})) is not None
        )

    def save(self, summary: Summary) -> None:
        record = dict(zip(RECORD_FIELDS, _record_values(summary), strict=True))
        record["_id"] = record.pop("id")
        self._guard(lambda: self._imports.replace_one({"_id": record["_id"]}, record, upsert=True))

    def get(self, import_id: str) -> dict[str, Any] | None:
        document = self._guard(lambda: self._imports.find_one({"_id": import_id}))
        return None if document is None else self._record(document)

    def list(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        cursor = self._imports.find().sort([("started_at", -1), ("_id", 1)]).skip(offset)
        documents = self._guard(lambda: list(cursor.limit(limit)))
        total = self._guard(lambda: self._imports.count_documents({}))
        return [self._record(d) for d in documents], int(total)

    def add_rejects(self, import_id: str, rejects: Sequence[Reject]) -> None:
        if rejects:
            documents = [
                {
                    "import_id": import_id,
                    "record": r.record,
                    "line": r.line,
                    "column_name": r.column,
                    "reason": r.reason,
                    "raw": r.raw(),
                }
                for r in rejects
            ]
            self._guard(lambda: self._rejects.insert_many(documents, ordered=False))

    def rejects(self, import_id: str) -> Iterator[tuple[Any, ...]]:
        cursor = self._rejects.find({"import_id": import_id}).sort("record", 1)
        for document in self._guard(lambda: cursor):
            yield tuple(document.get(name) for name in REJECT_FIELDS)

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def _record(document: dict[str, Any]) -> dict[str, Any]:
        row = [document.get("_id")] + [document.get(name) for name in RECORD_FIELDS[1:]]
        return _record(row)


def open_store(url: str) -> Store:
    """The store in the database at ``url`` (raises DatabaseUnavailable if unreachable)."""
    scheme = url.split(":", 1)[0].split("+")[0]
    if scheme == "sqlite":
        path = sqlite_path(url)

        def connect_sqlite() -> Any:
            try:
                conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.Error as exc:
                raise DatabaseUnavailable(f"cannot open SQLite database: {exc}") from None
            return conn

        return ImportStore(connect_sqlite)
    if scheme in ("postgresql", "postgres"):
        import psycopg

        def connect_postgres() -> Any:
            try:
                return psycopg.connect(url, connect_timeout=5)
            except psycopg.OperationalError as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreachable"
                raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {reason}") from None

        return _PostgresStore(connect_postgres)
    if scheme in ("mysql", "mariadb"):
        import pymysql

        from antioom.sinks.mysql import connect_args

        args = connect_args(url)

        def connect_mysql() -> Any:
            try:
                return pymysql.connect(**args, charset="utf8mb4", connect_timeout=5)
            except pymysql.Error as exc:
                raise DatabaseUnavailable(f"cannot connect to MySQL: {exc.args[-1]}") from None

        return _MySQLStore(connect_mysql)
    if scheme == "mongodb":
        return MongoStore(url)
    raise ConfigError(f"the server cannot keep import records in {redact(url)!r}")
