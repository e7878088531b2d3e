"""Import records and their rejects, kept in the target database beside the data.

Every import — from the CLI or the server — has a record: its status and counts, where its
bytes came from, and which process runs it. Records survive a restart, and every process
pointed at the same database can list, serve and resume them.

Liveness: the process running an import is its ``owner`` (host, pid and process start time)
and refreshes the record's ``heartbeat_at`` every ``HEARTBEAT_S``. A ``running`` record whose
owner is gone — a dead process on this host, or no heartbeat for the lease — was interrupted
(kill -9, power loss, a failed final save): :meth:`Store.recover` marks it ``interrupted`` with
the counts its batch ledger proves, and it can be resumed. Several processes sharing one
database never mark each other's live imports.

Only a bounded number of rejects is stored per import; the record's ``failed`` count is
always the total and ``rejects_kept`` says how many are stored.
"""

from __future__ import annotations

import builtins
import os
import socket
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psutil

from antioom.engine.progress import Summary, utc_now
from antioom.engine.rejects import Reject
from antioom.errors import DatabaseUnavailable, ImportConflict
from antioom.sinks import scheme_of
from antioom.sinks.base import ALL_SEQS, LEDGER_TABLE, LEDGER_TOTALS, Committed, ledger_totals

HEARTBEAT_S = 10.0
DEFAULT_LEASE_S = 60.0
# The owner of a queued import's record: the broker, which redelivers the job of a worker
# that died, so recovery leaves it alone (workers keep its heartbeat while they run it).
QUEUE_OWNER = "queue"
RESUMABLE = ("aborted", "failed", "interrupted")
ACTIVE = ("queued", "running")  # what save_if_active updates
SUMMARY_FIELDS = (
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
ORIGIN_FIELDS = ("source", "source_bytes", "source_key", "owner", "uploaded_by")
RECORD_FIELDS = (*SUMMARY_FIELDS, *ORIGIN_FIELDS, "heartbeat_at", "rejects_kept")
REJECT_FIELDS = ("record", "line", "column_name", "reason", "raw")


@dataclass(frozen=True)
class Origin:
    """Where an import's bytes come from, and the process that runs it."""

    owner: str
    source: str | None = None  # the file name as given, or "-" for stdin
    source_bytes: int | None = None
    source_key: str | None = None  # a regular file's path, size and mtime: what --resume finds
    uploaded_by: str | None = None  # the name of the API key an upload came with


def this_process() -> str:
    """This process as a record's owner: ``host:pid:start`` (the start time tells a reused
    pid from the process that wrote the record)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{int(psutil.Process(pid).create_time())}"


def source_key(path: str) -> str | None:
    """What identifies a regular file's contents for ``--resume``, or None (stdin, a pipe)."""
    if path == "-" or not os.path.isfile(path):
        return None
    stat = os.stat(path)
    return f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


def owner_alive(owner: str | None) -> bool | None:
    """Whether the process ``owner`` still runs: known on this host, None elsewhere."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    if host != socket.gethostname():
        return None
    pid, _, started = rest.partition(":")
    try:
        return int(psutil.Process(int(pid)).create_time()) == int(started)
    except (ValueError, psutil.Error):
        return False


def is_live(record: dict[str, Any], lease_s: float = DEFAULT_LEASE_S) -> bool:
    """Whether a record is being written right now by a live process."""
    if record.get("status") != "running":
        return False
    alive = owner_alive(record.get("owner"))
    if alive is not None:
        return alive
    beat = record.get("heartbeat_at")
    if not beat:
        return False
    age = datetime.now(UTC) - datetime.fromisoformat(str(beat).replace("Z", "+00:00"))
    return age.total_seconds() < lease_s


class Store(Protocol):
    """Where import records and their rejects are kept."""

    def ping(self) -> None: ...
    def exists(self, import_id: str) -> bool: ...
    def save(
        self, summary: Summary, origin: Origin | None = None, rejects_kept: int | None = None
    ) -> None: ...
    def save_if_active(self, summary: Summary, rejects_kept: int | None = None) -> bool: ...
    def heartbeat(self, import_ids: Sequence[str]) -> None: ...
    def get(self, import_id: str) -> dict[str, Any] | None: ...
    def list(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]: ...
    def running(self) -> builtins.list[dict[str, Any]]: ...
    def mark_interrupted(self, record: dict[str, Any], committed: Committed) -> bool: ...
    def last_of_source(self, key: str, table: str) -> dict[str, Any] | None: ...
    def committed(self, import_id: str) -> Committed: ...
    def add_rejects(self, import_id: str, rejects: Sequence[Reject]) -> None: ...
    def drop_rejects_after(self, import_id: str, record: int, upto: int | None = None) -> int: ...
    def close_part(self, import_id: str, seq: int, start_record: int, end_record: int) -> None: ...
    def closed_parts(self, import_id: str, seqs: Sequence[int]) -> int: ...
    def rejects(self, import_id: str) -> Iterator[tuple[Any, ...]]: ...
    def reject_page(
        self, import_id: str, limit: int, offset: int, reason: str | None = None
    ) -> builtins.list[tuple[Any, ...]]: ...
    def reject_reasons(self, import_id: str) -> builtins.list[tuple[str, int]]: ...
    def close(self) -> None: ...


def recover(
    store: Store, lease_s: float = DEFAULT_LEASE_S, running_here: Collection[str] = ()
) -> list[str]:
    """Mark every ``running`` record whose owner is gone as ``interrupted``, with the counts
    its ledger proves; returns their ids. Live imports of other processes are left alone;
    this process's own records count as gone unless they are in ``running_here`` (an import
    whose final save failed)."""
    me = this_process()
    marked = []
    for record in store.running():
        if record.get("owner") == QUEUE_OWNER:  # the broker redelivers its jobs: not ours
            continue
        if record.get("owner") == me:
            gone = record["id"] not in running_here and record["id"] not in _beating
        else:
            gone = not is_live(record, lease_s)
        if gone and store.mark_interrupted(record, store.committed(record["id"])):
            marked.append(record["id"])
    return marked


def interrupt(store: Store, import_id: str) -> Committed:
    """Mark this process's own import ``interrupted`` (Ctrl-C, shutdown) with the counts its
    ledger proves, and return them."""
    committed = store.committed(import_id)
    record = store.get(import_id)
    if record is not None:
        store.mark_interrupted(record, committed)
    return committed


def check_can_run(store: Store, import_id: str, key: str | None) -> None:
    """Refuse an import id that is completed, live elsewhere, or was of other data."""
    record = store.get(import_id)
    if record is None:
        return
    if record["status"] == "completed":
        raise ImportConflict(f"import {import_id} already completed: choose another import id")
    if record.get("owner") == QUEUE_OWNER:  # its ledger is in parts: a single pass would
        raise ImportConflict(  # misread it
            f"import {import_id} was queued for the workers ({record['status']}): it cannot "
            "be run again here; choose another import id"
        )
    if is_live(record):
        raise ImportConflict(f"import {import_id} is running (process {record.get('owner')})")
    if key and record.get("source_key") and record["source_key"] != key:
        raise ImportConflict(
            f"import {import_id} was of another file, or the file changed since: "
            "choose another import id"
        )


def resumable(store: Store, key: str, table: str) -> str | None:
    """The id of the last import of this file into ``table`` if it can be resumed, None if
    there is none; ImportConflict if it completed or is running."""
    record = store.last_of_source(key, table)
    if record is None:
        return None
    import_id: str = record["id"]
    if record["status"] == "completed":
        raise ImportConflict(
            f"this file was imported into {table} completely (import {import_id}): "
            "nothing to resume; leave out --resume to import it again"
        )
    if is_live(record):
        raise ImportConflict(
            f"import {import_id} of this file is running (process {record.get('owner')})"
        )
    return import_id


# Imports of this process that some Heartbeats keeps alive: recover() leaves them alone even
# when the process runs a server's recovery beside its own import_csv calls (an embedding app).
_beating: set[str] = set()


class Heartbeats:
    """A daemon thread refreshing the heartbeat of this process's running imports."""

    def __init__(self, store: Callable[[], Store], interval_s: float = HEARTBEAT_S) -> None:
        self._store = store
        self._interval_s = interval_s
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, import_id: str) -> None:
        with self._lock:
            self._ids.add(import_id)
            _beating.add(import_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="antioom-heartbeat")
                self._thread.daemon = True
                self._thread.start()

    def remove(self, import_id: str) -> None:
        with self._lock:
            self._ids.discard(import_id)
            _beating.discard(import_id)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                ids = sorted(self._ids)
            if ids:
                with suppress(DatabaseUnavailable):  # the next beat tries again
                    self._store().heartbeat(ids)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            _beating.difference_update(self._ids)


class ImportStore:
    """A small DB-API store: one connection guarded by a lock (records are tiny and rare).

    A lost connection is reopened on the next call, so a process recovers when the database
    comes back; while it is down, calls raise DatabaseUnavailable.
    """

    placeholder = "?"
    big = "INTEGER"
    real = "REAL"
    inline_index = ""  # MySQL has no CREATE INDEX IF NOT EXISTS: it declares it inline
    quote = '"'
    now = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"  # SQL for the current time, as ledger rows

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
        big, real = self.big, self.real
        types = {
            "processed": big,
            "failed": big,
            "rows_read": big,
            "bytes": big,
            "batches": big,
            "duration_s": real,
            "rows_per_s": real,
            "peak_rss_mb": real,
            "source_bytes": big,
            "rejects_kept": big,
        }
        if self._up_to_date():
            return
        with self._cursor() as cursor, self._ddl_lock(cursor):
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS antioom_imports (id VARCHAR(64) PRIMARY KEY, "
                + ", ".join(f"{name} {types.get(name, 'TEXT')}" for name in RECORD_FIELDS[1:])
                + ")"
            )
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS antioom_rejects (import_id VARCHAR(64), "
                f"record {big}, line {big}, column_name TEXT, reason TEXT, raw TEXT"
                f"{self.inline_index})"
            )
            if not self.inline_index:
                cursor.execute(
                    "CREATE INDEX IF NOT EXISTS antioom_rejects_import "
                    "ON antioom_rejects (import_id, record)"
                )
            existing = self._columns(cursor)
            for name in RECORD_FIELDS:  # a table made by an older version
                if name not in existing:
                    cursor.execute(
                        f"ALTER TABLE antioom_imports ADD COLUMN {name} {types.get(name, 'TEXT')}"
                    )

    def _columns(self, cursor: Any) -> set[str]:
        cursor.execute("SELECT * FROM antioom_imports WHERE 1 = 0")
        return {column[0].lower() for column in cursor.description}

    def _up_to_date(self) -> bool:
        """Whether both tables exist with every column: then no DDL runs (and takes no lock)."""
        try:
            with self._cursor() as cursor:
                cursor.execute("SELECT 1 FROM antioom_rejects WHERE 1 = 0")
                return set(RECORD_FIELDS) <= self._columns(cursor)
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            if _is_missing_table(exc):
                return False
            raise

    @contextmanager
    def _ddl_lock(self, cursor: Any) -> Iterator[None]:
        """Serialise creating and upgrading the tables between processes (here SQLite's write
        lock, until the commit; PostgreSQL's CREATE TABLE IF NOT EXISTS races on its row type)."""
        cursor.execute("BEGIN IMMEDIATE")
        yield

    def ping(self) -> None:
        with self._cursor() as cursor:
            cursor.execute("SELECT 1")

    def exists(self, import_id: str) -> bool:
        p = self.placeholder
        with self._cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM antioom_imports WHERE id = {p}", (import_id,))
            return cursor.fetchone() is not None

    def save(
        self, summary: Summary, origin: Origin | None = None, rejects_kept: int | None = None
    ) -> None:
        """Insert or update the record of ``summary`` (and refresh its heartbeat), in one
        statement: an UPDATE-then-INSERT deadlocks in MySQL when two new imports start."""
        values = _record_values(summary, origin, rejects_kept)
        names = list(values)
        with self._cursor() as cursor:
            cursor.execute(
                f"INSERT INTO antioom_imports ({', '.join(names)}) "
                f"VALUES ({', '.join([self.placeholder] * len(names))}) " + self._upsert(names[1:]),
                tuple(values.values()),
            )

    def save_if_active(self, summary: Summary, rejects_kept: int | None = None) -> bool:
        """Update the record only while it is queued or running; returns whether it was.
        A queued import's parts, its DELETE and its failure race: a final status stays."""
        values = _record_values(summary, None, rejects_kept)
        import_id = values.pop("id")
        p = self.placeholder
        with self._cursor() as cursor:
            cursor.execute(
                f"UPDATE antioom_imports SET {', '.join(f'{name} = {p}' for name in values)} "
                f"WHERE id = {p} AND status IN ({p}, {p})",
                (*values.values(), import_id, *ACTIVE),
            )
            return bool(cursor.rowcount)

    def _upsert(self, names: Sequence[str]) -> str:
        """The clause that turns the INSERT of a known id into an update of ``names``."""
        return "ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in names)

    def heartbeat(self, import_ids: Sequence[str]) -> None:
        p = self.placeholder
        with self._cursor() as cursor:
            cursor.execute(
                f"UPDATE antioom_imports SET heartbeat_at = {p} "
                f"WHERE status = 'running' AND id IN ({', '.join([p] * len(import_ids))})",
                (utc_now(), *import_ids),
            )

    def _select(self, where: str, params: tuple[Any, ...] = ()) -> builtins.list[dict[str, Any]]:
        """Records ``WHERE …`` (the clause may go on with ORDER BY and LIMIT)."""
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join(RECORD_FIELDS)} FROM antioom_imports WHERE {where}", params
            )
            return [_record(row) for row in cursor.fetchall()]

    def get(self, import_id: str) -> dict[str, Any] | None:
        found = self._select(f"id = {self.placeholder}", (import_id,))
        return found[0] if found else None

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

    def running(self) -> builtins.list[dict[str, Any]]:
        return self._select("status = 'running'")

    def mark_interrupted(self, record: dict[str, Any], committed: Committed) -> bool:
        """Mark ``record`` interrupted unless it changed since it was read (its owner beat)."""
        p = self.placeholder
        beat = record.get("heartbeat_at")
        same_beat = f"heartbeat_at = {p}" if beat is not None else "heartbeat_at IS NULL"
        with self._cursor() as cursor:
            cursor.execute(
                f"UPDATE antioom_imports SET status = 'interrupted', processed = {p}, "
                f"failed = {p}, rows_read = {p}, batches = {p}, finished_at = {p}, error = {p} "
                f"WHERE id = {p} AND status = 'running' AND {same_beat}",
                (
                    *_interrupted_values(committed),
                    record["id"],
                    *([beat] if beat is not None else []),
                ),
            )
            return bool(cursor.rowcount)

    def last_of_source(self, key: str, table: str) -> dict[str, Any] | None:
        p = self.placeholder
        found = self._select(
            f"source_key = {p} AND table_name = {p} ORDER BY started_at DESC LIMIT 1", (key, table)
        )
        return found[0] if found else None

    def committed(self, import_id: str) -> Committed:
        """What the batch ledger holds of ``import_id`` (nothing if there is no ledger yet)."""
        query = LEDGER_TOTALS.format(ledger=LEDGER_TABLE, p=self.placeholder)
        query = query.replace("sum(rows)", f"sum({self.quote}rows{self.quote})")
        try:
            with self._cursor() as cursor:
                cursor.execute(query, (import_id, ALL_SEQS.start, ALL_SEQS.stop))
                return ledger_totals(cursor.fetchone())
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            if _is_missing_table(exc):
                return Committed()
            raise

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

    def drop_rejects_after(self, import_id: str, record: int, upto: int | None = None) -> int:
        """Drop the rejects past ``record`` (up to ``upto``: one part's), which a resumed
        import reports again; returns how many are kept."""
        p = self.placeholder
        with self._cursor() as cursor:
            cursor.execute(
                f"DELETE FROM antioom_rejects WHERE import_id = {p} AND record > {p} "
                f"AND record <= {p}",
                (import_id, record, (1 << 62) if upto is None else upto),
            )
            cursor.execute(
                f"SELECT COUNT(*) FROM antioom_rejects WHERE import_id = {p}", (import_id,)
            )
            return int(cursor.fetchone()[0])

    def close_part(self, import_id: str, seq: int, start_record: int, end_record: int) -> None:
        """Record in the ledger that a part is done: a row of no rows at the part's last seq,
        whose span holds the records after its last batch (rejected ones). Idempotent."""
        p, q = self.placeholder, self.quote
        if self.closed_parts(import_id, [seq]):
            return
        try:
            with self._cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {LEDGER_TABLE} (import_id, seq, {q}rows{q}, committed_at, "
                    f"start_record, end_record) VALUES ({p}, {p}, 0, {self.now}, {p}, {p})",
                    (import_id, seq, start_record, end_record),
                )
        except Exception:
            if not self.closed_parts(import_id, [seq]):  # not closed by another run meanwhile
                raise

    def closed_parts(self, import_id: str, seqs: Sequence[int]) -> int:
        """How many of the parts whose closing seqs are ``seqs`` are done."""
        p = self.placeholder
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT COUNT(*) FROM {LEDGER_TABLE} WHERE import_id = {p} "
                f"AND seq IN ({', '.join([p] * len(seqs))})",
                (import_id, *seqs),
            )
            return int(cursor.fetchone()[0])

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

    def reject_page(
        self, import_id: str, limit: int, offset: int, reason: str | None = None
    ) -> builtins.list[tuple[Any, ...]]:
        """One page of the stored rejects (of one reason, if given), in record order."""
        p = self.placeholder
        where = f"import_id = {p}" + (f" AND reason = {p}" if reason is not None else "")
        params = (import_id, *([reason] if reason is not None else []), limit, offset)
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join(REJECT_FIELDS)} FROM antioom_rejects WHERE {where} "
                f"ORDER BY record LIMIT {p} OFFSET {p}",
                params,
            )
            return [tuple(row) for row in cursor.fetchall()]

    def reject_reasons(self, import_id: str) -> builtins.list[tuple[str, int]]:
        """How many stored rejects each reason has, most frequent first."""
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT reason, COUNT(*) AS n FROM antioom_rejects "
                f"WHERE import_id = {self.placeholder} GROUP BY reason ORDER BY n DESC, reason",
                (import_id,),
            )
            return [(str(reason), int(count)) for reason, count in cursor.fetchall()]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._drop()


class _PostgresStore(ImportStore):
    placeholder = "%s"
    big = "BIGINT"
    real = "DOUBLE PRECISION"
    now = "now()"

    @contextmanager
    def _ddl_lock(self, cursor: Any) -> Iterator[None]:
        from antioom.sinks.postgres import LOCK_CLASS

        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext('antioom_imports'))", (LOCK_CLASS,)
        )
        yield  # released when the transaction ends


class _MySQLStore(ImportStore):
    placeholder = "%s"
    big = "BIGINT"
    real = "DOUBLE"
    inline_index = ", INDEX antioom_rejects_import (import_id, record)"
    quote = "`"
    now = "CURRENT_TIMESTAMP(6)"

    def _upsert(self, names: Sequence[str]) -> str:
        return "ON DUPLICATE KEY UPDATE " + ", ".join(f"{n} = VALUES({n})" for n in names)

    @contextmanager
    def _ddl_lock(self, cursor: Any) -> Iterator[None]:
        lock = "CONCAT('antioom:', SHA1(CONCAT(DATABASE(), '.antioom_imports')))"
        cursor.execute(f"SELECT GET_LOCK({lock}, 30)")
        if cursor.fetchone()[0] != 1:
            raise DatabaseUnavailable("MySQL: another process held the lock on antioom_imports")
        try:
            yield
        finally:
            cursor.execute(f"SELECT RELEASE_LOCK({lock})")


def _record_values(
    summary: Summary, origin: Origin | None, rejects_kept: int | None
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": summary.import_id,
        "status": summary.status,
        "dataset": summary.dataset,
        "table_name": summary.table,
        "processed": summary.processed,
        "failed": summary.failed,
        "rows_read": summary.rows,
        "bytes": summary.bytes,
        "batches": summary.batches,
        "started_at": summary.started_at,
        "finished_at": summary.finished_at,
        "duration_s": summary.duration_s,
        "rows_per_s": summary.rows_per_s,
        "peak_rss_mb": summary.peak_rss_mb,
        "error": summary.error,
        "heartbeat_at": utc_now(),
    }
    if origin is not None:
        values.update(
            source=origin.source,
            source_bytes=origin.source_bytes,
            source_key=origin.source_key,
            owner=origin.owner,
            uploaded_by=origin.uploaded_by,
        )
    if rejects_kept is not None:
        values["rejects_kept"] = rejects_kept
    return values


def _interrupted_values(committed: Committed) -> tuple[Any, ...]:
    return (
        committed.committed_rows,
        committed.rejected,
        committed.records,
        committed.batches,
        utc_now(),
        "interrupted: the process running it stopped; "
        f"{committed.committed_rows} rows were committed (resume with the same import id)",
    )


def _record(row: Sequence[Any]) -> dict[str, Any]:
    record = dict(zip(RECORD_FIELDS, row, strict=True))
    record["table"] = record.pop("table_name")
    record["rows"] = record.pop("rows_read")
    return record


def _is_connection_error(exc: Exception) -> bool:
    if type(exc).__module__.startswith("adbc_driver_manager"):  # SQLite
        from antioom.sinks.sqlite_connection import is_statement_error, row_refusal

        refused = is_statement_error(exc) or row_refusal(exc) is not None
        return not (refused or _is_missing_table(exc))
    import psycopg
    import pymysql  # type: ignore[import-untyped]

    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg.InterfaceError
        | pymysql.err.OperationalError
        | pymysql.err.InterfaceError,
    ) and not _is_missing_table(exc)


def _is_missing_table(exc: Exception) -> bool:
    """The ledger does not exist yet (no batch was ever written to this database)."""
    text = str(exc).lower()
    return (
        "no such table" in text  # SQLite
        or getattr(exc, "sqlstate", None) == "42P01"  # PostgreSQL
        or (bool(getattr(exc, "args", ())) and exc.args[0] == 1146)  # MySQL
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
        self._ledger = db[LEDGER_TABLE]
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

    def save(
        self, summary: Summary, origin: Origin | None = None, rejects_kept: int | None = None
    ) -> None:
        values = _record_values(summary, origin, rejects_kept)
        import_id = values.pop("id")
        self._guard(lambda: self._imports.update_one({"_id": import_id}, {"$set": values}, True))

    def save_if_active(self, summary: Summary, rejects_kept: int | None = None) -> bool:
        values = _record_values(summary, None, rejects_kept)
        import_id = values.pop("id")
        found = self._guard(
            lambda: self._imports.update_one(
                {"_id": import_id, "status": {"$in": list(ACTIVE)}}, {"$set": values}
            )
        )
        return bool(found.matched_count)

    def heartbeat(self, import_ids: Sequence[str]) -> None:
        self._guard(
            lambda: self._imports.update_many(
                {"_id": {"$in": list(import_ids)}, "status": "running"},
                {"$set": {"heartbeat_at": utc_now()}},
            )
        )

    def get(self, import_id: str) -> dict[str, Any] | None:
        document = self._guard(lambda: self._imports.find_one({"_id": import_id}))
        return None if document is None else self._record(document)

    def list(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        cursor = self._imports.find().sort([("started_at", -1), ("_id", 1)]).skip(offset)
        documents = self._guard(lambda: list(cursor.limit(limit)))
        total = self._guard(lambda: self._imports.count_documents({}))
        return [self._record(d) for d in documents], int(total)

    def running(self) -> builtins.list[dict[str, Any]]:
        documents = self._guard(lambda: list(self._imports.find({"status": "running"})))
        return [self._record(d) for d in documents]

    def mark_interrupted(self, record: dict[str, Any], committed: Committed) -> bool:
        processed, failed, rows, batches, finished, error = _interrupted_values(committed)
        result = self._guard(
            lambda: self._imports.update_one(
                {
                    "_id": record["id"],
                    "status": "running",
                    "heartbeat_at": record.get("heartbeat_at"),
                },
                {
                    "$set": {
                        "status": "interrupted",
                        "processed": processed,
                        "failed": failed,
                        "rows_read": rows,
                        "batches": batches,
                        "finished_at": finished,
                        "error": error,
                    }
                },
            )
        )
        return bool(result.modified_count)

    def last_of_source(self, key: str, table: str) -> dict[str, Any] | None:
        document = self._guard(
            lambda: self._imports.find_one(
                {"source_key": key, "table_name": table}, sort=[("started_at", -1)]
            )
        )
        return None if document is None else self._record(document)

    def committed(self, import_id: str) -> Committed:
        from antioom.sinks.mongo import ledger_committed

        return self._guard(lambda: ledger_committed(self._ledger, import_id))  # type: ignore[no-any-return]

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

    def drop_rejects_after(self, import_id: str, record: int, upto: int | None = None) -> int:
        span = {"$gt": record, "$lte": (1 << 62) if upto is None else upto}
        self._guard(lambda: self._rejects.delete_many({"import_id": import_id, "record": span}))
        return int(self._guard(lambda: self._rejects.count_documents({"import_id": import_id})))

    def close_part(self, import_id: str, seq: int, start_record: int, end_record: int) -> None:
        from pymongo.errors import DuplicateKeyError

        entry = {
            "import_id": import_id,
            "seq": seq,
            "rows": 0,
            "refused": 0,
            "start_record": start_record,
            "end_record": end_record,
            "committed_at": datetime.now(UTC),
        }
        with suppress(DuplicateKeyError):  # closed before
            self._guard(lambda: self._ledger.insert_one(entry))

    def closed_parts(self, import_id: str, seqs: Sequence[int]) -> int:
        query = {"import_id": import_id, "seq": {"$in": list(seqs)}}
        return int(self._guard(lambda: self._ledger.count_documents(query)))

    def rejects(self, import_id: str) -> Iterator[tuple[Any, ...]]:
        cursor = self._rejects.find({"import_id": import_id}).sort("record", 1)
        for document in self._guard(lambda: cursor):
            yield tuple(document.get(name) for name in REJECT_FIELDS)

    def reject_page(
        self, import_id: str, limit: int, offset: int, reason: str | None = None
    ) -> builtins.list[tuple[Any, ...]]:
        query: dict[str, Any] = {"import_id": import_id}
        if reason is not None:
            query["reason"] = reason
        cursor = self._rejects.find(query).sort("record", 1).skip(offset).limit(limit)
        documents = self._guard(lambda: list(cursor))
        return [tuple(document.get(name) for name in REJECT_FIELDS) for document in documents]

    def reject_reasons(self, import_id: str) -> builtins.list[tuple[str, int]]:
        pipeline: list[dict[str, Any]] = [
            {"$match": {"import_id": import_id}},
            {"$group": {"_id": "$reason", "n": {"$sum": 1}}},
        ]
        groups = self._guard(lambda: list(self._rejects.aggregate(pipeline)))
        counts = [(str(group["_id"]), int(group["n"])) for group in groups]
        return sorted(counts, key=lambda item: (-item[1], item[0]))

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def _record(document: dict[str, Any]) -> dict[str, Any]:
        row = [document.get("_id")] + [document.get(name) for name in RECORD_FIELDS[1:]]
        return _record(row)


def open_store(url: str) -> Store:
    """The store in the database at ``url`` (raises DatabaseUnavailable if unreachable)."""
    scheme = scheme_of(url)
    if scheme == "sqlite":
        from antioom.sinks.sqlite import sqlite_path
        from antioom.sinks.sqlite_connection import connect

        path = sqlite_path(url)
        return ImportStore(lambda: connect(path, implicit_begin=True))
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
    return MongoStore(url)
