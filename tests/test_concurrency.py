"""Concurrent imports into one database: a real PostgreSQL and MariaDB/MySQL server, and one
SQLite file shared by writers in one process (all on ADBC's one SQLite, as in the server).

Several writers start at once (a barrier) against the same table: the first imports into a
table that does not exist yet must create it once, and upserts of overlapping keys sent in
different orders must neither deadlock into an error nor lose the last-wins rule. Each test
gets a database of its own (a PostgreSQL schema, a MySQL database), so the batch ledger is
created by the racing writers too. Servers as in test_postgres.py and test_mysql.py.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pymysql
import pytest

from antioom import import_csv
from antioom.engine.datasets import Column, Dataset
from antioom.engine.progress import Summary
from antioom.sinks import open_sink
from antioom.sinks.mysql import connect_args
from antioom.sinks.sqlite import sqlite_path
from antioom.sinks.sqlite_connection import connect as connect_sqlite

DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
WRITERS = 12
DEADLINE_S = 60.0  # a hung writer fails the test instead of the run
Rows = list[tuple[Any, ...]]


@dataclass(frozen=True)
class Database:
    """A database of the test's own: its URL and a way to query it."""

    url: str
    fetch: Callable[..., Rows]


def _mysql_fetch(url: str, sql: str, params: tuple[Any, ...] = ()) -> Rows:
    conn = pymysql.connect(**connect_args(url), charset="utf8mb4", autocommit=True)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    finally:
        conn.close()


def _pg_fetch(url: str, sql: str, params: tuple[Any, ...] = ()) -> Rows:
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def mysql_database() -> Iterator[Database]:
    """A fresh MySQL database (so a fresh ledger), dropped afterwards; or skip."""
    url = os.environ.get("ANTIOOM_TEST_MYSQL_URL") or DEFAULT_MYSQL_URL
    try:
        pymysql.connect(**connect_args(url), connect_timeout=2).close()
    except pymysql.Error as exc:
        reason = f"MySQL not reachable at {url}: {exc}"
        if os.environ.get("ANTIOOM_REQUIRE_SERVICES") == "1":
            pytest.fail(reason + " (ANTIOOM_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    name = f"t_{uuid.uuid4().hex[:16]}"
    _mysql_fetch(url, f"CREATE DATABASE {name}")
    own = urlunsplit(urlsplit(url)._replace(path="/" + name))
    try:
        yield Database(own, lambda sql, params=(): _mysql_fetch(own, sql, params))
    finally:
        _mysql_fetch(url, f"DROP DATABASE {name}")


def _sqlite_fetch(url: str, sql: str, params: tuple[Any, ...] = ()) -> Rows:
    with connect_sqlite(sqlite_path(url)) as conn:
        return conn.execute(sql.replace("%s", "?"), params).fetchall()


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """The test's own database, on each server."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
        return Database(url, lambda sql, params=(): _sqlite_fetch(url, sql, params))
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        return Database(url, lambda sql, params=(): _pg_fetch(url, sql, params))
    database: Database = request.getfixturevalue("mysql_database")
    return database


def run_together(writers: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(i)`` for each writer ``i`` in threads released at once; each one's result or
    exception (a writer still running after the deadline fails the test)."""
    barrier = threading.Barrier(writers)
    outcomes: list[Any] = [None] * writers

    def run(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = work(i)
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(writers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DEADLINE_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        pytest.fail(f"writers still running after {DEADLINE_S}s")
    return outcomes


def failures(outcomes: list[Any]) -> list[str]:
    return [f"writer {i}: {o!r}" for i, o in enumerate(outcomes) if isinstance(o, Exception)]


def key(n: int) -> str:
    """Distinct keys that differ only in case too ('k0001', 'K0001'): a binary key."""
    return f"{'K' if n % 2 else 'k'}{n // 2:04d}"


KV = Dataset(
    name="kv",
    table="kv",
    columns=(Column(name="k", required=True), Column(name="v")),
    key=("k",),
    mode="upsert",
)


# --------------------------------------------------------------------------- a new table


@pytest.mark.parametrize("keep_record", [False, True], ids=["ledger", "records-too"])
def test_concurrent_imports_create_a_new_table_once(
    db: Database, tmp_path: Path, keep_record: bool
) -> None:
    rows = 200

    def work(i: int) -> Summary:
        path = tmp_path / f"part{i}.csv"
        lines = [f"{i * rows + n},writer {i}" for n in range(rows)]
        path.write_text("id,name\n" + "\n".join(lines) + "\n")
        return import_csv(path, db.url, table="fresh", batch_size=50, keep_record=keep_record)

    outcomes = run_together(WRITERS, work)

    assert failures(outcomes) == []
    assert [summary.processed for summary in outcomes] == [rows] * WRITERS
    assert db.fetch("SELECT count(*), count(DISTINCT id) FROM fresh") == [
        (WRITERS * rows, WRITERS * rows)
    ]
    if keep_record:  # the import records' tables are created concurrently too
        assert db.fetch("SELECT status, count(*) FROM antioom_imports GROUP BY status") == [
            ("completed", WRITERS)
        ]


def test_concurrent_upserts_into_a_new_table(db: Database, tmp_path: Path) -> None:
    keys = 100

    def work(i: int) -> Summary:
        path = tmp_path / f"part{i}.csv"
        path.write_text("k,v\n" + "".join(f"{key(n)},w{i}\n" for n in range(keys)))
        return import_csv(path, db.url, dataset=KV, batch_size=25, keep_record=False)

    outcomes = run_together(WRITERS, work)

    assert failures(outcomes) == []
    assert db.fetch("SELECT count(*) FROM kv") == [(keys,)]


# --------------------------------------------------------------------------- the ledger


def test_prepare_takes_no_lock_on_an_up_to_date_ledger(db: Database) -> None:
    # A batch in flight holds the ledger and the table (uncommitted rows in both); preparing
    # another import must not queue behind it for an exclusive lock.
    if db.url.startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time: a prepare waits for the batch in flight")
    with open_sink(db.url) as sink:
        sink.prepare(KV)
    holder = open_sink(db.url)
    try:
        conn: Any = holder.conn  # type: ignore[attr-defined]
        rows = "`rows`" if "mysql" in db.url else "rows"
        with conn.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO antioom_batches (import_id, seq, {rows}) VALUES ('held', 0, 0)"
            )
            cursor.execute("INSERT INTO kv (k, v) VALUES ('held', 'held')")
        finished = _prepare_within(db.url, KV, seconds=5.0)
    finally:
        holder.close()  # rolls back, releasing a prepare still waiting
    assert finished, "prepare waited for the ledger held by a batch in flight"


def _prepare_within(url: str, dataset: Dataset, seconds: float) -> bool:
    """Whether a new sink's ``prepare`` returned within ``seconds`` (it runs in a thread of
    its own, which finishes once whatever it waits for is released)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            with open_sink(url) as sink:
                sink.prepare(dataset)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if outcome and outcome[0] is not None:
        raise outcome[0]
    return bool(outcome)


def test_concurrent_prepares_upgrade_an_old_ledger_once(db: Database) -> None:
    db.fetch(
        "CREATE TABLE antioom_batches (import_id VARCHAR(255) NOT NULL, seq BIGINT NOT NULL, "
        "rows INTEGER NOT NULL, PRIMARY KEY (import_id, seq))".replace(" rows ", " `rows` ")
        if "mysql" in db.url
        else "CREATE TABLE antioom_batches (import_id text NOT NULL, seq bigint NOT NULL, "
        "rows integer NOT NULL, PRIMARY KEY (import_id, seq))"
    )

    def work(_: int) -> None:
        with open_sink(db.url) as sink:
            sink.prepare(KV)

    outcomes = run_together(WRITERS, work)

    assert failures(outcomes) == []
    if db.url.startswith("sqlite"):
        found = db.fetch(
            "SELECT name FROM pragma_table_info('antioom_batches') "
            "WHERE name IN ('end_record', 'refused')"
        )
        assert sorted(found) == [("end_record",), ("refused",)]
        return
    found = db.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'antioom_batches' AND column_name IN ('end_record', 'refused') "
        "AND table_schema = " + ("DATABASE()" if "mysql" in db.url else "current_schema()")
    )
    assert sorted(found) == [("end_record",), ("refused",)]


# --------------------------------------------------------------------------- overlapping keys


def test_concurrent_upserts_of_overlapping_keys_keep_one_last_write(
    db: Database, tmp_path: Path
) -> None:
    # Every writer sends every key twice, each time shuffled with its own seed: first a stale
    # value, then its final one (in the same batch for some keys, a later batch for others).
    keys, writers = 1200, 8
    with open_sink(db.url) as sink:
        sink.prepare(KV)

    def work(i: int) -> Summary:
        shuffle = random.Random(i)
        stale, final = list(range(keys)), list(range(keys))
        shuffle.shuffle(stale)
        shuffle.shuffle(final)
        lines = [f"{key(n)},stale {i}" for n in stale] + [f"{key(n)},w{i}:{n}" for n in final]
        path = tmp_path / f"part{i}.csv"
        path.write_text("k,v\n" + "\n".join(lines) + "\n")
        return import_csv(path, db.url, dataset=KV, batch_size=400, keep_record=False)

    outcomes = run_together(writers, work)

    assert failures(outcomes) == []
    assert [(s.processed, s.failed) for s in outcomes] == [(2 * keys, 0)] * writers
    found = dict(db.fetch("SELECT k, v FROM kv"))
    assert len(found) == keys
    assert db.fetch("SELECT count(*) FROM kv") == [(keys,)]
    for n in range(keys):
        match = re.fullmatch(r"w(\d+):(\d+)", found[key(n)])
        assert match, f"{key(n)} kept {found[key(n)]!r}, not a final value"
        assert int(match[1]) < writers and int(match[2]) == n


def test_concurrent_keyed_inserts_of_overlapping_keys_land_each_key_once(
    db: Database, tmp_path: Path
) -> None:
    # Insert mode with a key: each key lands once, every other occurrence is a refused row.
    # On MySQL, a duplicate found takes a gap lock, and two transactions holding one gap that
    # both insert into it deadlock in any key order: only retries see them through. Every
    # writer here overlaps every other on every key; 8 of them needed up to 8 of the 10
    # attempts a batch gets, so MySQL runs 4.
    keys = 1200
    writers = 4 if db.url.startswith("mysql") else 8
    dataset = KV.model_copy(update={"mode": "insert"})
    with open_sink(db.url) as sink:
        sink.prepare(dataset)

    def work(i: int) -> Summary:
        order = list(range(keys))
        random.Random(i).shuffle(order)
        path = tmp_path / f"part{i}.csv"
        path.write_text("k,v\n" + "".join(f"{key(n)},w{i}\n" for n in order))
        return import_csv(path, db.url, dataset=dataset, batch_size=400, keep_record=False)

    outcomes = run_together(writers, work)

    assert failures(outcomes) == []
    assert sum(s.processed for s in outcomes) == keys
    assert sum(s.failed for s in outcomes) == keys * (writers - 1)
    assert db.fetch("SELECT count(*), count(DISTINCT k) FROM kv") == [(keys, keys)]
