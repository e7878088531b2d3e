"""PostgreSQL via COPY: ``postgresql://user:pass@host:port/dbname``.

Each batch is serialised to CSV by Arrow (in the parser thread) and sent with one
``COPY … FROM STDIN`` per batch, in one transaction with its ledger row. Plain inserts COPY
straight into the table. Upserts and keyed inserts COPY into a temporary staging table first:
upsert then runs ``INSERT … SELECT … ON CONFLICT DO
UPDATE`` on rows that ``encode`` reduced to the last occurrence of each key (so the last
occurrence in the file wins, within a batch and across batches); a keyed
insert runs ``ON CONFLICT DO NOTHING RETURNING key`` and rejects the rows that did not land.
"""

from __future__ import annotations

from collections import Counter

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import errors as pg_errors

from antioom.engine.batching import Batch, keep_last
from antioom.engine.datasets import UPDATED_AT, Column, Dataset
from antioom.errors import ConfigError, DatabaseLost, DatabaseUnavailable
from antioom.sinks.base import (
    LEDGER_TABLE,
    RowError,
    Sink,
    WriteResult,
    refused_rows,
    write_isolating,
)

STAGING_TABLE = "antioom_staging"
SEQ = "antioom_seq"
CSV_WRITE = pa_csv.WriteOptions(include_header=False, quoting_style="needed")


def sql_type(column: Column) -> str:
    return {
        "string": "text",
        "integer": "bigint",
        "float": "double precision",
        "decimal": f"numeric({column.precision}, {column.scale})",
        "boolean": "boolean",
        "date": "date",
        "timestamp": "timestamp",
    }[column.type]


class PostgresSink(Sink):
    def __init__(self, url: str) -> None:
        try:
            self.conn = psycopg.connect(url, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {_first_line(exc)}") from None
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"invalid PostgreSQL URL: {exc}") from None

    def prepare(self, dataset: Dataset) -> None:
        self.dataset = dataset
        names = [c.name for c in dataset.columns]
        definitions = [
            f"{c.name} {sql_type(c)}{' NOT NULL' if c.required else ''}" for c in dataset.columns
        ]
        if dataset.updated_at:
            definitions.append(f"{UPDATED_AT} timestamptz NOT NULL DEFAULT now()")
        if dataset.key:
            definitions.append(f"PRIMARY KEY ({', '.join(dataset.key)})")
        self._staged = bool(dataset.key)
        try:
            with self.conn.transaction():
                self.conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {dataset.table} ({', '.join(definitions)})"
                )
                self.conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (import_id text NOT NULL, "
                    "seq bigint NOT NULL, rows integer NOT NULL, "
                    "committed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (import_id, seq))"
                )
                existing = {
                    row[0]
                    for row in self.conn.execute(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = %s AND table_schema = current_schema()",
                        (dataset.table,),
                    )
                }
                if self._staged:
                    staging = [f"{c.name} {sql_type(c)}" for c in dataset.columns]
                    self.conn.execute(f"DROP TABLE IF EXISTS pg_temp.{STAGING_TABLE}")
                    self.conn.execute(
                        f"CREATE TEMP TABLE {STAGING_TABLE} ({', '.join(staging)}, "
                        f"{SEQ} bigint GENERATED ALWAYS AS IDENTITY) ON COMMIT DELETE ROWS"
                    )
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"PostgreSQL failed: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            raise ConfigError(f"cannot prepare table {dataset.table}: {_first_line(exc)}") from None
        wanted = names + ([UPDATED_AT] if dataset.updated_at else [])
        missing = [name for name in wanted if name not in existing]
        if missing:
            raise ConfigError(
                f"table {dataset.table} exists without column(s) {', '.join(missing)}"
            )

    def encode(self, table: pa.Table) -> bytes:
        if self.dataset.mode == "upsert":
            table = keep_last(table, self.dataset.key)
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(table, sink, CSV_WRITE)
        return bytes(sink.getvalue())

    def write(self, batch: Batch) -> WriteResult:
        payload: bytes = batch.payload if batch.payload is not None else self.encode(batch.table)
        duplicates: list[RowError] = []

        def write_range(start: int, stop: int) -> None:
            data = (
                payload
                if (start, stop) == (0, batch.rows)
                else self.encode(batch.table.slice(start, stop - start))
            )
            with self.conn.transaction():
                refused = self._write_rows(data, batch.table.slice(start, stop - start))
            duplicates.extend(RowError(start + row, "duplicate key") for row in refused)

        try:
            with self.conn.transaction():
                claimed = self.conn.execute(
                    f"INSERT INTO {LEDGER_TABLE} (import_id, seq, rows) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (batch.import_id, batch.seq, batch.rows),
                ).rowcount
                if not claimed:
                    return WriteResult([], duplicate=True)
                errors = write_isolating(batch.rows, write_range, _row_error)
        except psycopg.OperationalError as exc:
            raise DatabaseLost(f"PostgreSQL connection failed: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            raise DatabaseLost(f"PostgreSQL refused the batch: {_first_line(exc)}") from None
        return WriteResult(sorted(errors + duplicates, key=lambda error: error.row))

    def _write_rows(self, data: bytes, table: pa.Table) -> list[int]:
        """COPY ``data`` (the CSV of ``table``) into place; returns rows refused as duplicates."""
        dataset = self.dataset
        names = ", ".join(c.name for c in dataset.columns)
        target = STAGING_TABLE if self._staged else dataset.table
        with self.conn.cursor() as cursor:
            with cursor.copy(f"COPY {target} ({names}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(data)
            if not self._staged:
                return []
            key = ", ".join(dataset.key)
            stamp = f", {UPDATED_AT}" if dataset.updated_at else ""
            now = ", now()" if dataset.updated_at else ""
            if dataset.mode == "upsert":
                updates = [f"{c.name} = excluded.{c.name}" for c in dataset.value_columns]
                if dataset.updated_at:
                    updates.append(f"{UPDATED_AT} = excluded.{UPDATED_AT}")
                action = "DO UPDATE SET " + ", ".join(updates) if updates else "DO NOTHING"
                cursor.execute(  # keys are unique: encode() kept each key's last row
                    f"INSERT INTO {dataset.table} ({names}{stamp}) "
                    f"SELECT {names}{now} FROM {STAGING_TABLE} ON CONFLICT ({key}) {action}"
                )
                return []
            cursor.execute(
                f"INSERT INTO {dataset.table} ({names}{stamp}) "
                f"SELECT {names}{now} FROM {STAGING_TABLE} ORDER BY {SEQ} "
                f"ON CONFLICT DO NOTHING RETURNING {key}"
            )
            landed = Counter(tuple(row) for row in cursor.fetchall())
        return refused_rows(table, dataset.key, landed)

    def close(self) -> None:
        self.conn.close()


def _row_error(exc: Exception) -> str | None:
    if isinstance(exc, pg_errors.DataError | pg_errors.IntegrityError):
        return _first_line(exc)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
