"""PostgreSQL via COPY: ``postgresql://user:pass@host:port/dbname``.

Each batch is serialised to CSV by Arrow (in the parser thread) and sent with one
``COPY … FROM STDIN`` per batch, in one transaction with its ledger row. Inserts COPY
straight into the table — a keyed insert under a savepoint, falling back to staging for a
batch whose COPY hits a taken key. Upserts (and those fallbacks) COPY into a temporary staging
table first: upsert then runs ``INSERT … SELECT … ON CONFLICT DO UPDATE`` on rows that
``encode`` reduced to the last occurrence of each key (so the last occurrence in the file
wins, within a batch and across batches); a keyed insert runs ``ON CONFLICT DO NOTHING
RETURNING key`` and rejects the rows that did not land.

Statements are composed with ``psycopg.sql.Identifier``, so every name is quoted: reserved
words are column names like any other, and a declared ``Order`` keeps its case (it is not
folded to ``order``). A ``schema.table`` dataset writes ``"schema"."table"`` in an existing
schema; the batch ledger stays unqualified, in the connection's current schema.

Concurrent imports: ``CREATE TABLE IF NOT EXISTS`` is not atomic in PostgreSQL (two sessions
creating one new table both insert its row type, and one fails on ``pg_type``'s unique index),
so ``prepare`` creates the table under a transaction-scoped advisory lock on its name, and the
ledger likewise. An up-to-date ledger is only read: ``ALTER TABLE`` would lock it exclusively,
queueing every import behind the batches in flight. Each merge takes its row locks in key
order, so concurrent upserts of overlapping keys do not deadlock; a batch that still hits a
deadlock or serialization failure is rolled back and redone whole, ledger row included.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import errors as pg_errors
from psycopg import sql

from antioom.engine.batching import Batch, keep_last
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
    refused_rows,
    retry_transient,
    write_isolating,
)

STAGING_TABLE = "antioom_staging"
STAGED_AFTER_A_MISS = 4  # batches sent to staging at once after a direct COPY hit a taken key
SEQ = "antioom_seq"
CSV_WRITE = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
LEDGER = sql.Identifier(LEDGER_TABLE)
STAGING = sql.Identifier("pg_temp", STAGING_TABLE)
# What a definition the server refuses raises (42: names and syntax, 3F: no such schema,
# 22: types, 0A: features, 23: a concurrent CREATE by another program), besides class 54 (see
# _definition_error).
DEFINITION_ERRORS = (
    psycopg.ProgrammingError,
    psycopg.DataError,
    psycopg.NotSupportedError,
    psycopg.IntegrityError,
)
# A transaction the server rolled back for colliding with another: deadlock, serialization.
TRANSIENT_SQLSTATES = {"40P01", "40001"}
# The first key of antioom's advisory locks ('anti'), so as not to meet an application's.
LOCK_CLASS = 0x616E7469
LEDGER_DEFINITION = (
    "CREATE TABLE IF NOT EXISTS {} (import_id text NOT NULL, "
    "seq bigint NOT NULL, rows integer NOT NULL, "
    "committed_at timestamptz NOT NULL DEFAULT now(), end_record bigint, start_record bigint, "
    "refused integer NOT NULL DEFAULT 0, PRIMARY KEY (import_id, seq))"
)


def table_identifier(table: str) -> sql.Identifier:
    """``"table"`` or, for ``schema.table``, ``"schema"."table"``."""
    return sql.Identifier(*table.split("."))


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

    def prepare(self, dataset: Dataset, *, alter: bool = False) -> None:
        self.dataset = dataset
        self.table = table_identifier(dataset.table)
        definitions = [
            sql.SQL("{} {}{}").format(
                sql.Identifier(c.name),
                sql.SQL(sql_type(c)),
                sql.SQL(" NOT NULL" if c.required else ""),
            )
            for c in dataset.columns
        ]
        if dataset.updated_at:
            definitions.append(
                sql.SQL("{} timestamptz NOT NULL DEFAULT now()").format(sql.Identifier(UPDATED_AT))
            )
        if dataset.key:
            definitions.append(sql.SQL("PRIMARY KEY ({})").format(_names(dataset.key)))
        self._staged = bool(dataset.key)
        self._staged_in_a_row = 0
        try:
            retry_transient(self._prepare_ledger, _transient)
            existing = retry_transient(lambda: self._prepare_table(definitions), _transient)
        except psycopg.Error as exc:
            if _definition_error(exc):
                message = f"cannot prepare table {dataset.table}: {_first_line(exc)}"
                raise TargetError(message) from None
            raise DatabaseUnavailable(f"PostgreSQL failed: {_first_line(exc)}") from None
        types = {c.name: sql_type(c) for c in dataset.columns} | {UPDATED_AT: "timestamptz"}
        missing = missing_columns(dataset, existing, alter)
        try:
            with self.conn.transaction():
                for name in missing:
                    self.conn.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                            self.table, sql.Identifier(name), sql.SQL(types[name])
                        )
                    )
        except psycopg.Error as exc:
            raise TargetError(
                f"cannot add columns to {dataset.table}: {_first_line(exc)}"
            ) from None

    def clear(self, table: str, *, drop: bool) -> None:
        name = table_identifier(table)
        try:
            with self.conn.transaction():
                if drop:
                    self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
                    return
                found = self.conn.execute(
                    "SELECT to_regclass(%s)", (name.as_string(self.conn),)
                ).fetchone()
                if found is not None and found[0] is not None:
                    self.conn.execute(sql.SQL("TRUNCATE {}").format(name))
        except psycopg.Error as exc:
            raise DatabaseLost(f"PostgreSQL failed: {_first_line(exc)}") from None

    def _prepare_ledger(self) -> None:
        """Create the ledger, or add the columns an older version's lacks, only if needed.

        ALTER TABLE locks the ledger exclusively, which waits for every batch in flight and
        holds up every other: an up-to-date ledger is only read. Otherwise the check is
        repeated under the ledger's advisory lock, so concurrent imports change it once.
        """
        with self.conn.transaction():
            columns = self._ledger_columns()
            if columns and not set(LEDGER_COLUMNS_ADDED) - columns:
                return
            self._lock(LEDGER_TABLE)
            columns = self._ledger_columns()
            if not columns:
                self.conn.execute(sql.SQL(LEDGER_DEFINITION).format(LEDGER))
                return
            for name, definition in LEDGER_COLUMNS_ADDED.items():  # an older version's
                if name not in columns:
                    self.conn.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                            LEDGER, sql.Identifier(name), sql.SQL(definition)
                        )
                    )

    def _ledger_columns(self) -> set[str]:
        """The ledger's columns in the current schema (where CREATE would put it): none if it
        is missing."""
        rows = self.conn.execute(
            "SELECT a.attname FROM pg_class c "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE c.relname = %s AND c.relnamespace = "
            "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())",
            (LEDGER_TABLE,),
        )
        return {row[0] for row in rows}

    def _prepare_table(self, definitions: Sequence[sql.Composable]) -> set[str]:
        """Create the table if missing, under its advisory lock (see the module docstring), and
        the session's staging table; returns the table's columns."""
        with self.conn.transaction():
            self._lock(self.dataset.table)
            self.conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                    self.table, sql.SQL(", ").join(definitions)
                )
            )
            existing = {  # of the table the statements resolve to, in whichever schema
                row[0]
                for row in self.conn.execute(
                    "SELECT attname FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                    (self.table.as_string(self.conn),),
                )
            }
            if self._staged:
                staging = [
                    sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(sql_type(c)))
                    for c in self.dataset.columns
                ]
                self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(STAGING))
                self.conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE {} ({}, {} bigint GENERATED ALWAYS AS IDENTITY) "
                        "ON COMMIT DELETE ROWS"
                    ).format(
                        STAGING,
                        sql.SQL(", ").join(staging),
                        sql.Identifier(SEQ),
                    )
                )
        return existing

    def why_one_writer(self) -> str | None:
        # Collations are all deterministic before PostgreSQL 12 (no collisdeterministic).
        exact_collation = (
            "coalesce((SELECT collisdeterministic FROM pg_collation WHERE oid = {}), true)"
            if self.conn.info.server_version >= 120000
            else "true"
        )
        columns = {c.name: c.type for c in self.dataset.columns}
        params = {
            "table": self.table.as_string(self.conn),
            "key": list(self.dataset.key),
            # Text compared as text; integers as integers, or as their (canonical) text.
            "text": [name for name in self.dataset.key if columns.get(name) == "string"],
            "integer": [name for name in self.dataset.key if columns.get(name) == "integer"],
        }
        checks = [
            (
                "the key is not text or integers compared exactly",
                "SELECT count(*) <> cardinality(%(key)s::text[]) FROM pg_attribute a "
                "JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = %(table)s::regclass "
                "AND (a.attname = ANY(%(text)s::text[]) AND t.typname IN "
                "('text', 'varchar', 'bpchar') OR a.attname = ANY(%(integer)s::text[]) AND "
                "t.typname IN ('int2', 'int4', 'int8', 'text', 'varchar', 'bpchar')) AND "
                + exact_collation.format("a.attcollation"),
            ),
            (
                "it has a unique index beyond the key, or one that compares keys loosely",
                "SELECT count(*) > 0 FROM pg_index i WHERE i.indrelid = %(table)s::regclass "
                "AND i.indisunique AND (i.indexprs IS NOT NULL OR NOT ARRAY("
                "SELECT attnum FROM pg_attribute WHERE attrelid = i.indrelid "
                "AND attname = ANY(%(key)s))::int2[] <@ i.indkey::int2[] OR EXISTS ("
                "SELECT FROM unnest(i.indcollation::oid[]) AS c(oid) WHERE c.oid <> 0 AND NOT "
                + exact_collation.format("c.oid")
                + "))",
            ),
            (
                "it has triggers, exclusion constraints or a foreign key to itself",
                "SELECT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = %(table)s::regclass "
                "AND NOT tgisinternal) OR EXISTS (SELECT FROM pg_constraint WHERE conrelid = "
                "%(table)s::regclass AND (contype = 'x' OR (contype = 'f' AND "
                "confrelid = conrelid)))",
            ),
            (
                "it is partitioned or inherited",
                "SELECT relkind <> 'r' OR EXISTS (SELECT FROM pg_inherits WHERE "
                "inhparent = %(table)s::regclass OR inhrelid = %(table)s::regclass) "
                "FROM pg_class WHERE oid = %(table)s::regclass",
            ),
        ]
        try:
            with self.conn.transaction():
                for why, query in checks:
                    found = self.conn.execute(query, params).fetchone()
                    if found is None or found[0]:
                        return f"{self.dataset.table}: {why}"
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"PostgreSQL failed: {_first_line(exc)}") from None
        return None

    def _lock(self, table: str) -> None:
        """Wait for the advisory lock of ``table`` (a name in the current schema unless
        qualified), until the transaction ends: serialises antioom's DDL on that name."""
        schema, _, name = table.rpartition(".")
        self.conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext("
            "coalesce(nullif(%s, ''), current_schema(), '') || '.' || %s))",
            (LOCK_CLASS, schema, name),
        )

    def encode(self, table: pa.Table) -> bytes:
        if self.dataset.mode == "upsert":
            table = keep_last(table, self.dataset.key)
        elif self.dataset.key:
            # A keyed insert's direct COPY takes its key locks in key order, so concurrent
            # imports of overlapping keys wait for each other instead of deadlocking. The sort
            # is stable: among equal keys the first occurrence stays first (staging path).
            table = table.sort_by([(name, "ascending") for name in self.dataset.key])
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(table, sink, CSV_WRITE)
        return bytes(sink.getvalue())

    def write(self, batch: Batch) -> WriteResult:
        payload: bytes = batch.payload if batch.payload is not None else self.encode(batch.table)
        try:
            return retry_transient(lambda: self._write_batch(batch, payload), _transient)
        except psycopg.OperationalError as exc:
            raise DatabaseLost(f"PostgreSQL connection failed: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            raise DatabaseLost(f"PostgreSQL refused the batch: {_first_line(exc)}") from None

    def _write_batch(self, batch: Batch, payload: bytes) -> WriteResult:
        """One attempt at ``write``: the batch and its ledger row in one transaction."""
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

        with self.conn.transaction():
            claimed = self.conn.execute(
                sql.SQL(
                    "INSERT INTO {} (import_id, seq, rows, start_record, end_record) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
                ).format(LEDGER),
                (batch.import_id, batch.seq, batch.rows, batch.start_record, batch.end_record),
            ).rowcount
            if not claimed:
                recorded = self.conn.execute(
                    sql.SQL("SELECT end_record FROM {} WHERE import_id = %s AND seq = %s").format(
                        LEDGER
                    ),
                    (batch.import_id, batch.seq),
                ).fetchone()
                return claim_conflict(batch, recorded[0] if recorded else None)
            errors = write_isolating(batch.rows, write_range, _row_error)
            if errors or duplicates:
                self.conn.execute(
                    sql.SQL("UPDATE {} SET refused = %s WHERE import_id = %s AND seq = %s").format(
                        LEDGER
                    ),
                    (len(errors) + len(duplicates), batch.import_id, batch.seq),
                )
            before_commit(batch, errors + duplicates)
        return WriteResult(sorted(errors + duplicates, key=lambda error: error.row))

    def _write_rows(self, data: bytes, table: pa.Table) -> list[int]:
        """COPY ``data`` (the CSV of ``table``) into place; returns rows refused as duplicates."""
        dataset = self.dataset
        names = _names(c.name for c in dataset.columns)
        if dataset.mode == "insert" and self._staged and self._copy_directly(names, data):
            return []
        target = STAGING if self._staged else self.table
        with self.conn.cursor() as cursor:
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(target, names)
            with cursor.copy(copy_sql) as copy:
                copy.write(data)
            if not self._staged:
                return []
            key = _names(dataset.key)
            stamped = sql.Identifier(UPDATED_AT)
            columns = sql.SQL(", ").join([names, stamped]) if dataset.updated_at else names
            values = sql.SQL(", ").join([names, sql.SQL("now()")]) if dataset.updated_at else names
            insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                self.table, columns, values, STAGING
            )
            if dataset.mode == "upsert":
                updated = [sql.Identifier(c.name) for c in dataset.value_columns]
                if dataset.updated_at:
                    updated.append(stamped)
                action = (
                    sql.SQL("DO UPDATE SET ")
                    + sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(n) for n in updated)
                    if updated
                    else sql.SQL("DO NOTHING")
                )
                # Keys are unique (encode() kept each key's last row), so any order keeps the
                # last-wins rule: key order is the one in which concurrent merges lock alike.
                cursor.execute(
                    insert + sql.SQL(" ORDER BY {0} ON CONFLICT ({0}) ").format(key) + action
                )
                return []
            # Key order for the locks; within a key, input order: its first occurrence lands.
            cursor.execute(
                insert
                + sql.SQL(" ORDER BY {}, {} ON CONFLICT DO NOTHING RETURNING {}").format(
                    key, sql.Identifier(SEQ), key
                )
            )
            landed = Counter(tuple(row) for row in cursor.fetchall())
        return refused_rows(table, dataset.key, landed)

    def _copy_directly(self, names: sql.Composed, data: bytes) -> bool:
        """A keyed insert: COPY straight into the table under a savepoint, as fast as an
        unkeyed one; False (nothing written) if a key was taken, and the staging path then
        finds which rows. After such a miss, the next few batches go to staging at once: a
        file that repeats existing keys would otherwise send each batch twice."""
        if self._staged_in_a_row:
            self._staged_in_a_row -= 1
            return False
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(self.table, names)
        try:
            with (
                self.conn.transaction(),
                self.conn.cursor() as cursor,
                cursor.copy(copy_sql) as copy,
            ):
                copy.write(data)
        except pg_errors.UniqueViolation:
            self._staged_in_a_row = STAGED_AFTER_A_MISS
            return False
        return True

    def committed(self, import_id: str, seqs: range = ALL_SEQS) -> Committed:
        query = sql.SQL(LEDGER_TOTALS.format(ledger="{}", p="%s")).format(LEDGER)
        try:
            with self.conn.transaction():
                found = self.conn.execute(query, (import_id, seqs.start, seqs.stop)).fetchone()
                return ledger_totals(found)
        except pg_errors.UndefinedTable:  # no batch was ever written here
            return Committed()
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"PostgreSQL failed: {_first_line(exc)}") from None

    def close(self) -> None:
        self.conn.close()


def _names(names: Iterable[str]) -> sql.Composed:
    """Quoted column names, comma-separated."""
    return sql.SQL(", ").join(map(sql.Identifier, names))


def _definition_error(exc: psycopg.Error) -> bool:
    """Whether the server refused the table definition, rather than failed. Class 54 (program
    limit exceeded: too many columns) must be told by its SQLSTATE: psycopg makes it an
    OperationalError, and TooManyColumns does not even derive from ProgramLimitExceeded."""
    return isinstance(exc, DEFINITION_ERRORS) or (exc.sqlstate or "").startswith("54")


def _transient(exc: Exception) -> bool:
    """Whether the server rolled the transaction back for colliding with another one."""
    return isinstance(exc, psycopg.Error) and exc.sqlstate in TRANSIENT_SQLSTATES


def _row_error(exc: Exception) -> str | None:
    if isinstance(exc, pg_errors.DataError | pg_errors.IntegrityError):
        return _first_line(exc)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
