"""The sink contract, tested once for every sink: a new sink must pass the same bar.

Every test takes the ``backend`` parameter (sqlite, postgresql, mysql, mongodb) and, except the
unreachable-database test, ``sink_url``: a URL naming a fresh, isolated target for that test
(a SQLite file, a PostgreSQL schema, a MySQL database, a MongoDB database), skipped when the
server is unavailable, or failed when ``ANTIOOM_REQUIRE_SERVICES=1``. The servers come from the
per-database test modules' fixtures (imported below: a separate session instance of SecantusDB).

Rows are read back through a tiny per-backend adapter (``ADAPTERS``) that returns the values
exactly as the driver decodes them, sorted in Python; nothing is normalised. Where a backend
stores a type its own way, the expected values are spelled out per backend (see
``STORED_TYPES``), and rows are compared by ``repr`` so that ``1``/``True``/``1.0`` or
``Decimal('-0.5')``/``Decimal('-0.500')`` cannot pass for one another.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pyarrow as pa
import pymysql
import pytest
from bson import Decimal128, Int64
from pymongo import MongoClient
from test_mongo import mongo_server_url, mongo_url  # noqa: F401 - fixtures used by name
from test_mysql import mysql_url  # noqa: F401 - fixture used by name

from antioom import ConfigError, DatabaseUnavailable, Reject, Summary, TargetError, import_csv
from antioom.engine.batching import Batch
from antioom.engine.datasets import Column, Dataset, parse_dataset
from antioom.sinks import open_sink
from antioom.sinks.mysql import connect_args
from antioom.sinks.sqlite import sqlite_path
from antioom.sinks.sqlite_connection import connect as connect_sqlite

Row = tuple[Any, ...]


# --------------------------------------------------------------------------- reading back


def _sort_key(row: Row) -> tuple[tuple[bool, Any], ...]:
    """Sort rows in Python (nulls last); Decimal128 is not orderable, so order by its value."""
    return tuple(
        (v is None, 0 if v is None else v.to_decimal() if isinstance(v, Decimal128) else v)
        for v in row
    )


def _sorted(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=_sort_key)


class SqlAdapter:
    """Reads a table through ``query(url, sql)``; ``quote`` quotes identifiers."""

    def __init__(self, query: Callable[[str, str], list[Row]], quote: str, tables: str):
        self.query, self.quote, self.tables_sql = query, quote, tables

    def rows(self, url: str, table: str, columns: list[str]) -> list[Row]:
        names = ", ".join(self.quote + c + self.quote for c in columns)
        return _sorted(self.query(url, f"SELECT {names} FROM {self.quote}{table}{self.quote}"))

    def count(self, url: str, table: str) -> int:
        [(count,)] = self.query(url, f"SELECT COUNT(*) FROM {self.quote}{table}{self.quote}")
        return int(count)

    def tables(self, url: str) -> set[str]:
        return {name for (name,) in self.query(url, self.tables_sql)}


class MongoAdapter:
    """Reads a collection's fields (``document[column]``: a missing field is an error, a null
    is ``None``); ``_id`` is left out."""

    def _db(self, url: str) -> Any:
        client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=3000)
        return client, client.get_default_database()

    def rows(self, url: str, table: str, columns: list[str]) -> list[Row]:
        client, db = self._db(url)
        with client:
            return _sorted([tuple(d[c] for c in columns) for d in db[table].find()])

    def count(self, url: str, table: str) -> int:
        client, db = self._db(url)
        with client:
            return int(db[table].count_documents({}))

    def tables(self, url: str) -> set[str]:
        client, db = self._db(url)
        with client:
            return set(db.list_collection_names())


def _sqlite_query(url: str, sql: str) -> list[Row]:
    with connect_sqlite(sqlite_path(url)) as conn:
        return conn.execute(sql).fetchall()


def _pg_query(url: str, sql: str) -> list[Row]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(sql).fetchall()


def _mysql_query(url: str, sql: str) -> list[Row]:
    conn = pymysql.connect(**connect_args(url), charset="utf8mb4", connect_timeout=5)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())
    finally:
        conn.close()


ADAPTERS: dict[str, SqlAdapter | MongoAdapter] = {
    "sqlite": SqlAdapter(_sqlite_query, '"', "SELECT name FROM sqlite_master WHERE type = 'table'"),
    "postgresql": SqlAdapter(
        _pg_query,
        '"',
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
    ),
    "mysql": SqlAdapter(
        _mysql_query,
        "`",
        "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()",
    ),
    "mongodb": MongoAdapter(),
}

# Nothing listens on port 1; the SQLite file would be in a directory that does not exist.
UNREACHABLE: dict[str, Callable[[Path], str]] = {
    "sqlite": lambda tmp: f"sqlite:///{tmp / 'no-such-directory' / 'test.db'}",
    "postgresql": lambda tmp: "postgresql://postgres@127.0.0.1:1/test",
    "mysql": lambda tmp: "mysql://root@127.0.0.1:1/test",
    "mongodb": lambda tmp: "mongodb://127.0.0.1:1/test?serverSelectionTimeoutMS=200",
}


def strict(rows: list[Row]) -> list[tuple[str, ...]]:
    """Rows as the ``repr`` of each value, so types must match too (``1`` is not ``True``)."""
    return [tuple(map(repr, row)) for row in rows]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        "mysql",
        "mongodb",
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def mysql_database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh MySQL database for one test, dropped afterwards (the server's own database, if
    the user may not create databases: tables and import ids are unique per test anyway)."""
    server_url = str(request.getfixturevalue("mysql_url"))  # test_mysql's: skips if down
    name = f"t_{uuid.uuid4().hex[:16]}"
    try:
        _mysql_query(server_url, f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    except pymysql.err.OperationalError as exc:
        if exc.args[0] not in (1044, 1045):  # access denied
            raise
        yield server_url
        return
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    finally:
        _mysql_query(server_url, f"DROP DATABASE IF EXISTS {name}")


SINK_URL_FIXTURES = {
    "sqlite": "sqlite_url",  # conftest: a file in the test's tmp_path
    "postgresql": "pg_url",  # conftest: a schema of its own
    "mysql": "mysql_database_url",  # above: a database of its own
    "mongodb": "mongo_url",  # test_mongo: a database of its own, on SecantusDB
}


@pytest.fixture
def sink_url(backend: str, request: pytest.FixtureRequest) -> str:
    """A URL to a fresh, isolated target for ``backend`` (skipped if its server is down)."""
    return str(request.getfixturevalue(SINK_URL_FIXTURES[backend]))


@pytest.fixture
def adapter(backend: str) -> SqlAdapter | MongoAdapter:
    return ADAPTERS[backend]


@pytest.fixture
def table() -> str:
    """A table (collection) name unique to the test."""
    return f"t_{uuid.uuid4().hex[:12]}"


def products(table: str, mode: str = "upsert") -> Dataset:
    """A products-like dataset: a string key, a required name, a price > 0."""
    return parse_dataset(
        "items",
        {
            "table": table,
            "key": ["sku"],
            "mode": mode,
            "columns": [
                {"name": "sku", "required": True},
                {"name": "name", "required": True},
                {"name": "price", "type": "float", "required": True, "gt": 0},
            ],
        },
    )


def run(path: Path, url: str, dataset: Dataset, **options: Any) -> tuple[Summary, list[Reject]]:
    """Import and collect every reject (the summary keeps only the first few)."""
    rejects: list[Reject] = []
    summary = import_csv(path, url, dataset=dataset, on_reject=rejects.append, **options)
    return summary, rejects


# --------------------------------------------------------------------------- 1. insert


def test_plain_insert_lands_exactly(write_csv, sink_url, adapter, table):
    dataset = parse_dataset(
        "people",
        {"table": table, "columns": [{"name": "name", "required": True}, {"name": "city"}]},
    )
    summary, rejects = run(
        write_csv("name,city\nann,paris\nann,paris\nbob,\ncid,oslo\n"), sink_url, dataset
    )
    assert (summary.status, summary.processed, summary.failed, rejects) == ("completed", 4, 0, [])
    assert summary.rows == summary.processed + summary.failed == 4
    assert strict(adapter.rows(sink_url, table, ["name", "city"])) == strict(
        [("ann", "paris"), ("ann", "paris"), ("bob", None), ("cid", "oslo")]
    )


# --------------------------------------------------------------------------- 2. upsert


def test_upsert_last_occurrence_wins_within_and_across_batches(write_csv, sink_url, adapter, table):
    # batch_size=2 → batches [A B] [A A] [B C] [A]: A repeats within a batch and across them.
    summary, rejects = run(
        write_csv(
            "sku,name,price\nA,first,1\nB,b1,2\nA,second,3\nA,third,4\nB,b2,5\nC,c,6\nA,last,7\n"
        ),
        sink_url,
        products(table),
        batch_size=2,
    )
    assert (summary.status, summary.batches, summary.failed, rejects) == ("completed", 4, 0, [])
    assert summary.rows == summary.processed + summary.failed == 7
    assert strict(adapter.rows(sink_url, table, ["sku", "name", "price"])) == strict(
        [("A", "last", 7.0), ("B", "b2", 5.0), ("C", "c", 6.0)]
    )
    assert adapter.count(sink_url, table) == 3


# --------------------------------------------------------------------------- 3. keyed insert


def test_keyed_insert_rejects_duplicates_and_lands_the_rest_of_the_batch(
    write_csv, sink_url, adapter, table
):
    dataset = products(table, mode="insert")
    first, _ = run(write_csv("sku,name,price\nA,old,1\n"), sink_url, dataset)
    assert (first.processed, first.failed) == (1, 0)
    summary, rejects = run(
        write_csv("sku,name,price\nB,b,2\nA,new,9\nC,c,3\nB,again,4\n", "second.csv"),
        sink_url,
        dataset,
    )
    assert summary.batches == 1  # the refused rows and the landed ones share one batch
    assert [r.record for r in rejects] == [2, 4]  # A: an earlier import's key; B: this file's
    for reject in rejects:
        assert "duplicate" in reject.reason.lower(), reject
    assert (summary.processed, summary.failed, summary.rows) == (2, 2, 4)
    assert strict(adapter.rows(sink_url, table, ["sku", "name", "price"])) == strict(
        [("A", "old", 1.0), ("B", "b", 2.0), ("C", "c", 3.0)]
    )


# --------------------------------------------------------------------------- 4. validation


def test_validation_rejects_never_reach_the_database(write_csv, sink_url, adapter, table):
    summary, rejects = run(
        write_csv("sku,name,price\nA,a,1\nB,b,0\nC,,3\nD,d,-2\n,e,5\nF,f,6\n"),
        sink_url,
        products(table),
    )
    assert summary.status == "completed"
    assert [(r.record, r.column) for r in rejects] == [
        (2, "price"),
        (3, "name"),
        (4, "price"),
        (5, "sku"),
    ]
    assert (summary.processed, summary.failed, summary.rows) == (2, 4, 6)
    assert strict(adapter.rows(sink_url, table, ["sku", "name", "price"])) == strict(
        [("A", "a", 1.0), ("F", "f", 6.0)]
    )
    assert adapter.count(sink_url, table) == 2


# --------------------------------------------------------------------------- 5. types

TYPES_CSV = (
    "id,amount,ratio,active,day,moment,label\n"
    '1,123456789.125,0.1,yes,2024-02-29,2024-02-29 23:59:58.123456,"comma, ""q"""\n'
    "-2,-0.5,-1e-3,N,1970-01-01,1999-12-31T00:00,plain\n"
    "9007199254740993,,,,,,\n"  # 2**53 + 1: not exact as a double
)
TYPE_COLUMNS = ["id", "amount", "ratio", "active", "day", "moment", "label"]

# What each backend stores for TYPES_CSV, as its driver decodes it: the sink's documented
# mapping of each contract type, spelled out rather than normalised away.
STORED_TYPES: dict[str, list[Row]] = {
    # bigint, numeric(12,3), double precision, boolean, date, timestamp, text
    "postgresql": [
        (1, Decimal("123456789.125"), 0.1, True, date(2024, 2, 29),
         datetime(2024, 2, 29, 23, 59, 58, 123456), 'comma, "q"'),
        (-2, Decimal("-0.500"), -0.001, False, date(1970, 1, 1), datetime(1999, 12, 31, 0, 0),
         "plain"),
        (9007199254740993, None, None, None, None, None, None),
    ],
    # BIGINT, DECIMAL(12,3), DOUBLE, TINYINT(1) (booleans read back as 1/0), DATE,
    # DATETIME(6), LONGTEXT
    "mysql": [
        (1, Decimal("123456789.125"), 0.1, 1, date(2024, 2, 29),
         datetime(2024, 2, 29, 23, 59, 58, 123456), 'comma, "q"'),
        (-2, Decimal("-0.500"), -0.001, 0, date(1970, 1, 1), datetime(1999, 12, 31, 0, 0),
         "plain"),
        (9007199254740993, None, None, None, None, None, None),
    ],
    # INTEGER, TEXT (decimal: exact, at the column's scale), REAL, INTEGER 1/0, TEXT ISO date,
    # TEXT timestamp with microseconds, TEXT
    "sqlite": [
        (1, "123456789.125", 0.1, 1, "2024-02-29", "2024-02-29 23:59:58.123456", 'comma, "q"'),
        (-2, "-0.500", -0.001, 0, "1970-01-01", "1999-12-31 00:00:00.000000", "plain"),
        (9007199254740993, None, None, None, None, None, None),
    ],
    # BSON long, decimal (Decimal128 at the column's scale), double, bool, date (a date is
    # midnight UTC; a timestamp is floored to milliseconds, decoded as naive UTC), string
    "mongodb": [
        (Int64(1), Decimal128("123456789.125"), 0.1, True, datetime(2024, 2, 29),
         datetime(2024, 2, 29, 23, 59, 58, 123000), 'comma, "q"'),
        (Int64(-2), Decimal128("-0.500"), -0.001, False, datetime(1970, 1, 1),
         datetime(1999, 12, 31, 0, 0), "plain"),
        (Int64(9007199254740993), None, None, None, None, None, None),
    ],
}  # fmt: skip


def test_types_round_trip(write_csv, backend, sink_url, adapter, table):
    dataset = parse_dataset(
        "things",
        {
            "table": table,
            "columns": [
                {"name": "id", "type": "integer", "required": True},
                {"name": "amount", "type": "decimal", "precision": 12, "scale": 3},
                {"name": "ratio", "type": "float"},
                {"name": "active", "type": "boolean"},
                {"name": "day", "type": "date"},
                {"name": "moment", "type": "timestamp"},
                {"name": "label", "type": "string"},
            ],
        },
    )
    summary, rejects = run(write_csv(TYPES_CSV), sink_url, dataset)
    assert (summary.status, summary.processed, rejects) == ("completed", 3, [])
    assert strict(adapter.rows(sink_url, table, TYPE_COLUMNS)) == strict(
        _sorted(STORED_TYPES[backend])
    )


# --------------------------------------------------------------------------- 6. unicode

UNICODE_ROWS = [
    ("é", "café (NFC)"),
    ("e\u0301", "cafe\u0301 (NFD)"),  # decomposed: a different key, kept as it is
    ("ß", "Grüße"),
    ("日本", "東京タワー"),
    ("𠀋", "CJK extension B (outside the BMP)"),
    ("😀", "smile 🎉"),
    ("👩\u200d💻", "ZWJ sequence 🇫🇷"),
]


def test_unicode_round_trips_exactly_in_keys_and_values(write_csv, sink_url, adapter, table):
    body = "sku,name,price\n" + "".join(
        f"{k},{v},{i + 1}\n" for i, (k, v) in enumerate(UNICODE_ROWS)
    )
    summary, rejects = run(write_csv(body), sink_url, products(table, mode="insert"))
    assert (summary.status, summary.processed, rejects) == ("completed", len(UNICODE_ROWS), [])
    expected = [(k, v, float(i + 1)) for i, (k, v) in enumerate(UNICODE_ROWS)]
    assert strict(adapter.rows(sink_url, table, ["sku", "name", "price"])) == strict(
        _sorted(expected)
    )


# --------------------------------------------------------------------------- 7. empty input


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "unkeyed"])
def test_an_empty_input_completes_and_prepares_the_target(
    write_csv, backend, sink_url, adapter, table, keyed
):
    dataset = (
        products(table)
        if keyed
        else parse_dataset("plain", {"table": table, "columns": [{"name": "v", "type": "integer"}]})
    )
    header = "sku,name,price\n" if keyed else "v\n"
    summary, rejects = run(write_csv(header), sink_url, dataset)
    assert (summary.status, summary.rows, summary.processed, summary.batches, rejects) == (
        "completed",
        0,
        0,
        0,
        [],
    )
    # What each sink guarantees: a SQL sink creates the table. MongoDB creates a collection on
    # its first write, so the sink guarantees it only when it has a key: prepare() creates the
    # unique index, which creates the collection. Without a key nothing is promised (today only
    # the ledger collection exists afterwards).
    if backend != "mongodb" or keyed:
        assert table in adapter.tables(sink_url)
    assert adapter.count(sink_url, table) == 0


# --------------------------------------------------------------------------- 8. exactly once


def test_a_batch_is_committed_exactly_once(backend, sink_url, adapter, table):
    dataset = Dataset(name="plain", table=table, columns=(Column(name="v", type="integer"),))
    batch = Batch(uuid.uuid4().hex, 7, pa.table({"v": pa.array([1, 2, 3], pa.int64())}))
    with open_sink(sink_url) as sink:
        sink.prepare(dataset)
        first = sink.write(batch)
        again = sink.write(batch)
    with open_sink(sink_url) as other_connection:  # the ledger is in the database, not the sink
        other_connection.prepare(dataset)
        third = other_connection.write(batch)
    assert (first.duplicate, again.duplicate, third.duplicate) == (False, True, True)
    assert (first.errors, again.errors, third.errors) == ([], [], [])
    assert adapter.count(sink_url, table) == 3
    assert sorted(int(v) for (v,) in adapter.rows(sink_url, table, ["v"])) == [1, 2, 3]


# --------------------------------------------------------------------------- 9. database gone


class _CountingSource:
    """A binary stream that records whether anything read it."""

    reads = 0

    def read(self, size: int = -1, /) -> bytes:
        self.reads += 1
        return b"v\n1\n"


def test_an_unreachable_database_fails_before_the_input_is_opened(tmp_path, backend):
    # Needs no server: only the ``backend`` parameter, not ``sink_url``.
    url = UNREACHABLE[backend](tmp_path)
    dataset = parse_dataset("plain", {"table": "t", "columns": [{"name": "v"}]})
    missing = tmp_path / "no-such-input.csv"  # opening it would raise InputError
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as raised:
        import_csv(missing, url, dataset=dataset)
    assert "\n" not in str(raised.value)
    source = _CountingSource()
    with pytest.raises(DatabaseUnavailable):
        import_csv(source, url, dataset=dataset)
    assert source.reads == 0
    assert time.monotonic() - started < 10


# --------------------------------------------------------------------------- 10. names

# Reserved in SQL (``Desc`` also in mixed case): every sink must quote them.
RESERVED = ["index", "select", "order", "group", "from", "limit", "Desc"]
RESERVED_CSV = (
    "index,select,order,group,from,limit,Desc\n"
    "1,a,x,g1,here,10,asc\n"
    "2,b,y,g2,there,20,desc\n"
    "1,c,z,g3,again,30,up\n"  # key 1 again: refused by an insert, the winner of an upsert
)


def reserved_words(table: str, mode: str) -> Dataset:
    """A dataset whose every column is a reserved word, keyed by ``index``."""
    integer = {"index", "limit"}
    columns = [{"name": n, "type": "integer" if n in integer else "string"} for n in RESERVED]
    return parse_dataset(
        "reserved",
        {"table": table, "key": ["index"], "mode": mode, "columns": columns, "updated_at": True},
    )


@pytest.mark.parametrize("mode", ["insert", "upsert"])
def test_reserved_words_are_column_names_like_any_other(write_csv, sink_url, adapter, table, mode):
    summary, rejects = run(write_csv(RESERVED_CSV), sink_url, reserved_words(table, mode))
    assert summary.status == "completed"
    assert [r.record for r in rejects] == ([3] if mode == "insert" else [])
    first = (
        (1, "a", "x", "g1", "here", 10, "asc")
        if mode == "insert"
        else (1, "c", "z", "g3", "again", 30, "up")
    )
    expected = [first, (2, "b", "y", "g2", "there", 20, "desc")]
    assert adapter.rows(sink_url, table, RESERVED) == expected  # Int64(1) == 1 for MongoDB


def test_names_differing_only_in_case(write_csv, backend, sink_url, adapter, table):
    columns = [{"name": "order", "source": "a"}, {"name": "Order", "source": "b"}]
    dataset = parse_dataset("cases", {"table": table, "columns": columns})
    path = write_csv("a,b\nlower,upper\n")  # (the reader renames a header repeated in any case)
    if backend in ("sqlite", "mysql"):  # column names are case-insensitive there
        with pytest.raises(TargetError) as raised:
            run(path, sink_url, dataset)
        assert "\n" not in str(raised.value)
        assert "duplicate column" in str(raised.value).lower()
        return
    summary, rejects = run(path, sink_url, dataset)
    assert (summary.processed, rejects) == (1, [])
    assert adapter.rows(sink_url, table, ["order", "Order"]) == [("lower", "upper")]


# More columns than the database allows in a table (SQLite 2000, PostgreSQL 1600, MySQL 4096).
TOO_MANY_COLUMNS = {"sqlite": 2100, "postgresql": 1700, "mysql": 4200}


def test_too_many_columns_is_a_one_line_target_error(write_csv, backend, sink_url, table):
    if backend == "mongodb":
        pytest.skip("a MongoDB document has no column limit")
    count = TOO_MANY_COLUMNS[backend]
    names = [f"c{i}" for i in range(count)]
    dataset = Dataset(
        name="wide", table=table, columns=tuple(Column(name=n, type="integer") for n in names)
    )
    path = write_csv(",".join(names) + "\n" + ",".join(["1"] * count) + "\n")
    with pytest.raises(TargetError) as raised:
        run(path, sink_url, dataset)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"cannot prepare table {table}: ")
    assert "column" in message.lower()


def test_an_existing_table_without_the_columns_is_a_target_error(backend, sink_url, table):
    if backend == "mongodb":
        pytest.skip("a MongoDB collection has no columns to check")
    narrow = Dataset(name="narrow", table=table, columns=(Column(name="a"),))
    wide = Dataset(name="wide", table=table, columns=(Column(name="a"), Column(name="b")))
    with open_sink(sink_url) as sink:
        sink.prepare(narrow)
    with open_sink(sink_url) as sink, pytest.raises(TargetError) as raised:
        sink.prepare(wide)
    assert str(raised.value) == f"table {table} exists without column(s) b (--alter adds them)"
    with open_sink(sink_url) as sink:
        sink.prepare(wide, alter=True)  # adds b
    with open_sink(sink_url) as sink:
        sink.prepare(wide)  # now it fits


def test_clear_empties_or_drops_the_table(backend, sink_url, adapter, table):
    dataset = Dataset(name="plain", table=table, columns=(Column(name="v", type="integer"),))
    batch = Batch(uuid.uuid4().hex, 0, pa.table({"v": pa.array([1, 2, 3], pa.int64())}))
    with open_sink(sink_url) as sink:
        sink.clear(table, drop=False)  # no table yet: nothing to do
        sink.prepare(dataset)
        sink.write(batch)
        sink.clear(table, drop=False)
        assert adapter.count(sink_url, table) == 0
        sink.write(replace(batch, import_id=uuid.uuid4().hex))
        sink.clear(table, drop=True)
        sink.prepare(dataset)  # created anew
        assert adapter.count(sink_url, table) == 0


def _pg_execute(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture
def other_schema(backend: str, sink_url: str) -> Iterator[str]:
    """A schema name; on PostgreSQL a real schema, created for the test and dropped after."""
    schema = f"s_{uuid.uuid4().hex[:12]}"
    if backend != "postgresql":
        yield schema
        return
    _pg_execute(sink_url, f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        _pg_execute(sink_url, f"DROP SCHEMA {schema} CASCADE")


def test_schema_qualified_tables(write_csv, backend, sink_url, adapter, table, other_schema):
    qualified = f"{other_schema}.{table}"
    path = write_csv("sku,name,price\nA,a,1\nB,b,2\n")
    if backend in ("sqlite", "mysql"):  # the URL names the only schema: refused, not guessed
        with pytest.raises(ConfigError) as raised:
            run(path, sink_url, products(qualified))
        assert str(raised.value) == (
            f"invalid table name {qualified!r}: {'SQLite' if backend == 'sqlite' else 'MySQL'} "
            "takes a plain table name (schema.table is for PostgreSQL)"
        )
        return
    if backend == "mongodb":  # a dotted collection name, as MongoDB itself uses them
        run(path, sink_url, products(qualified))
        assert adapter.rows(sink_url, qualified, ["sku", "price"]) == [("A", 1.0), ("B", 2.0)]
        return
    # PostgreSQL: a same-named table in the current schema, with other columns, is not looked at
    _pg_execute(sink_url, f"CREATE TABLE {table} (unrelated integer)")
    summary, rejects = run(path, sink_url, products(qualified))
    assert (summary.processed, summary.table, rejects) == (2, qualified, [])
    assert _pg_query(sink_url, f"SELECT sku, price FROM {qualified} ORDER BY sku") == [
        ("A", 1.0),
        ("B", 2.0),
    ]
    assert adapter.count(sink_url, table) == 0
    assert "antioom_batches" in adapter.tables(sink_url)  # the ledger stays where it was
    # …while the schema's own table is checked
    _pg_execute(sink_url, f"CREATE TABLE {other_schema}.narrow (sku text)")
    with pytest.raises(
        TargetError, match=r"narrow exists without column\(s\) name, price \(--alter"
    ):
        run(path, sink_url, products(f"{other_schema}.narrow"))
    with pytest.raises(TargetError, match=r'schema "no_such_schema" does not exist'):
        run(path, sink_url, products("no_such_schema.t"))
