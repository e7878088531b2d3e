"""The sink behaviours on a real MySQL/MariaDB server, each test in its own table.

The server comes from ``ANTIOOM_TEST_MYSQL_URL``, else the local default below if it answers
within two seconds; otherwise these tests are skipped, unless ``ANTIOOM_REQUIRE_SERVICES=1``
(CI), in which case they fail. The ledger table is shared: every test uses fresh import ids.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pymysql
import pytest
from conftest import write_types_dataset
from server_helpers import check_server_keeps_records

from antioom import DatabaseUnavailable, import_csv
from antioom.engine.batching import Batch
from antioom.engine.datasets import PRODUCTS, Column, Dataset, parse_dataset
from antioom.errors import ConfigError, DatabaseLost, TargetError
from antioom.sinks import open_sink
from antioom.sinks.mysql import MySQLSink, connect_args

DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
Rows = list[tuple[Any, ...]]


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """The URL of a reachable MySQL/MariaDB server, or skip (fail if services are required)."""
    url = os.environ.get("ANTIOOM_TEST_MYSQL_URL") or DEFAULT_MYSQL_URL
    try:
        pymysql.connect(**connect_args(url), connect_timeout=2).close()
    except pymysql.Error as exc:
        reason = f"MySQL not reachable at {url}: {exc}"
        if os.environ.get("ANTIOOM_REQUIRE_SERVICES") == "1":
            pytest.fail(reason + " (ANTIOOM_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    return url


def fetch(url: str, sql: str, params: tuple[Any, ...] = ()) -> Rows:
    conn = pymysql.connect(**connect_args(url), charset="utf8mb4")
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    finally:
        conn.close()


@pytest.fixture
def table(mysql_url: str) -> Iterator[str]:
    """A fresh table name for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    fetch(mysql_url, f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def products(mysql_url: str, table: str) -> Callable[[], Rows]:
    """``products()``: the (sku, name, price) rows of the test's products table."""
    return lambda: fetch(mysql_url, f"SELECT sku, name, price FROM {table} ORDER BY sku")


# --------------------------------------------------------------------------- inserts


def test_plain_insert_of_a_declared_dataset(write_csv, mysql_url, table):
    dataset = parse_dataset(
        "people",
        {"table": table, "columns": [{"name": "name", "required": True}, {"name": "city"}]},
    )
    summary = import_csv(
        write_csv("name,city\nann,paris\nann,paris\nbob,\n"), mysql_url, dataset=dataset
    )
    assert (summary.status, summary.processed, summary.failed) == ("completed", 3, 0)
    assert fetch(mysql_url, f"SELECT name, city FROM {table} ORDER BY name, city") == [
        ("ann", "paris"),
        ("ann", "paris"),
        ("bob", None),
    ]


def test_tables_are_utf8mb4_innodb_with_a_varchar_key(write_csv, mysql_url, table):
    import_csv(write_csv("sku,name,price\nA,a,1\n"), mysql_url, dataset="products", table=table)
    [(engine, collation)] = fetch(
        mysql_url,
        "SELECT engine, table_collation FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND table_name = %s",
        (table,),
    )
    assert (engine, collation.split("_")[0]) == ("InnoDB", "utf8mb4")
    types = fetch(
        mysql_url,
        "SELECT column_name, column_type, column_key FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    assert types == [
        ("sku", "varchar(255)", "PRI"),
        ("name", "longtext", ""),
        ("price", "double", ""),
        ("updated_at", "datetime(6)", ""),
    ]


def test_an_empty_file_creates_the_table(write_csv, mysql_url, table):
    summary = import_csv(write_csv("sku,name,price\n"), mysql_url, dataset="products", table=table)
    assert (summary.status, summary.rows, summary.batches) == ("completed", 0, 0)
    assert fetch(mysql_url, f"SELECT COUNT(*) FROM {table}") == [(0,)]


def test_keyed_insert_rejects_duplicates_and_lands_the_rest_of_the_batch(
    write_csv, mysql_url, table, products
):
    import_csv(write_csv("sku,name,price\nA,old,1\n"), mysql_url, dataset="products", table=table)
    summary = import_csv(
        write_csv("sku,name,price\nB,b,2\nA,new,9\nC,c,3\nB,again,4\n", "second.csv"),
        mysql_url,
        dataset="products",
        table=table,
        mode="insert",
    )
    assert summary.batches == 1
    assert [(r.record, r.reason) for r in summary.rejects] == [
        (2, "duplicate key"),
        (4, "duplicate key"),
    ]
    assert products() == [("A", "old", 1.0), ("B", "b", 2.0), ("C", "c", 3.0)]
    assert (summary.processed, summary.failed, summary.rows) == (2, 2, 4)


def test_keys_compare_exactly_not_case_insensitively(write_csv, mysql_url, table, products):
    summary = import_csv(
        write_csv("sku,name,price\nabc,lower,1\nABC,upper,2\n"),
        mysql_url,
        dataset="products",
        table=table,
        mode="insert",
    )
    assert summary.failed == 0
    assert products() == [("ABC", "upper", 2.0), ("abc", "lower", 1.0)]


def test_a_value_the_server_refuses_is_a_rejected_row_with_its_message(
    write_csv, mysql_url, table, products
):
    too_long = "x" * 256  # a string key is VARCHAR(255); strict mode refuses, never truncates
    summary = import_csv(
        write_csv(f"sku,name,price\nA,a,1\n{too_long},long,2\nC,c,3\n"),
        mysql_url,
        dataset="products",
        table=table,
    )
    assert [r.record for r in summary.rejects] == [2]
    assert "Data too long for column 'sku'" in summary.rejects[0].reason
    assert products() == [("A", "a", 1.0), ("C", "c", 3.0)]
    assert (summary.processed, summary.failed) == (2, 1)


# --------------------------------------------------------------------------- upserts


def test_upsert_last_occurrence_wins_within_a_batch(write_csv, mysql_url, table, products):
    summary = import_csv(
        write_csv("sku,name,price\nA,first,1\nB,only,2\nA,second,3\nA,third,4\n"),
        mysql_url,
        dataset="products",
        table=table,
    )
    assert summary.batches == 1
    assert products() == [("A", "third", 4.0), ("B", "only", 2.0)]
    assert summary.rows == summary.processed + summary.failed == 4


def test_upsert_last_occurrence_wins_across_batches(write_csv, mysql_url, table, products):
    summary = import_csv(
        write_csv("sku,name,price\nA,first,1\nB,only,2\nA,second,3\nC,c,5\nA,third,4\n"),
        mysql_url,
        dataset="products",
        table=table,
        batch_size=2,
    )
    assert summary.batches == 3
    assert products() == [("A", "third", 4.0), ("B", "only", 2.0), ("C", "c", 5.0)]


def test_upsert_updates_rows_of_an_earlier_import_and_their_updated_at(
    write_csv, mysql_url, table, products
):
    import_csv(
        write_csv("sku,name,price\nA,old,1\nB,kept,2\n"), mysql_url, dataset="products", table=table
    )
    stamp = f"SELECT updated_at FROM {table} WHERE sku = 'A'"
    [(first_stamp,)] = fetch(mysql_url, stamp)
    import_csv(
        write_csv("sku,name,price\nA,new,9\n", "second.csv"),
        mysql_url,
        dataset="products",
        table=table,
    )
    assert products() == [("A", "new", 9.0), ("B", "kept", 2.0)]
    [(second_stamp,)] = fetch(mysql_url, stamp)
    assert second_stamp > first_stamp


# --------------------------------------------------------------------------- types


@pytest.fixture(params=["load-data", "insert"])
def bulk_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through LOAD DATA and again through the INSERT fallback."""
    if request.param == "insert":
        monkeypatch.setattr(MySQLSink, "_load", lambda self, cursor, payload, rows: False)
    return str(request.param)


def test_types_round_trip(tmp_path: Path, write_csv, mysql_url, table, bulk_path):
    datasets = write_types_dataset(tmp_path / "datasets.toml", table=table)
    summary = import_csv(
        write_csv(
            "id,amount,ratio,active,day,moment,label\n"
            '1,123456789.125,0.1,yes,2024-02-29,2024-02-29 23:59:58.123456,"comma, ""q"""\n'
            "2,-0.5,-1e-3,N,1970-01-01,1999-12-31T00:00,日本\n"
            "3,,,,,,\n"
            '4,0,1e300,1,9999-12-31,2024-01-01 00:00:00,"line\none\\\\ NULL"\n'
            "5,1,2,0,2000-01-01,2000-01-01 00:00,NULL\n"
        ),
        mysql_url,
        dataset="things",
        datasets_file=datasets,
    )
    assert summary.failed == 0
    assert fetch(mysql_url, f"SELECT * FROM {table} ORDER BY id") == [
        (1, Decimal("123456789.125"), 0.1, 1, date(2024, 2, 29),
         datetime(2024, 2, 29, 23, 59, 58, 123456), 'comma, "q"'),
        (2, Decimal("-0.500"), -0.001, 0, date(1970, 1, 1), datetime(1999, 12, 31, 0, 0), "日本"),
        (3, None, None, None, None, None, None),
        (4, Decimal("0.000"), 1e300, 1, date(9999, 12, 31), datetime(2024, 1, 1),
         "line\none\\\\ NULL"),
        (5, Decimal("1.000"), 2.0, 0, date(2000, 1, 1), datetime(2000, 1, 1), "NULL"),
    ]  # fmt: skip


def test_unicode_and_emoji_survive_in_keys_and_values(
    write_csv, mysql_url, table, products, bulk_path
):
    summary = import_csv(
        write_csv("sku,name,price\n😀,smile 🎉,1\nß,Grüße,2\n日本,東京 🗼,3\n"),
        mysql_url,
        dataset="products",
        table=table,
    )
    assert summary.failed == 0
    assert sorted(products()) == [
        ("ß", "Grüße", 2.0),
        ("日本", "東京 🗼", 3.0),
        ("😀", "smile 🎉", 1.0),
    ]


# --------------------------------------------------------------------------- connection & ledger


class _MustNotRead:
    read_calls = 0

    def read(self, size: int = -1, /) -> bytes:
        self.read_calls += 1
        return b"a\n1\n"


def test_unreachable_database_fails_before_reading_the_input():
    source = _MustNotRead()
    with pytest.raises(DatabaseUnavailable, match="cannot connect to MySQL") as raised:
        import_csv(source, "mysql://root@127.0.0.1:1/test", table="t")
    assert "\n" not in str(raised.value)
    assert source.read_calls == 0


def test_a_url_without_a_database_is_a_config_error():
    with pytest.raises(ConfigError, match="name the database"):
        open_sink("mysql://root@127.0.0.1:3306/")


def test_a_key_longer_than_innodb_can_index_is_a_target_error(mysql_url, table):
    # VARCHAR(1000) in utf8mb4 is 4000 bytes; an InnoDB key holds at most 3072.
    dataset = Dataset(
        name="long", table=table, columns=(Column(name="k", max_length=1000),), key=("k",)
    )
    with open_sink(mysql_url) as sink, pytest.raises(TargetError, match="key was too long"):
        sink.prepare(dataset)


@pytest.mark.parametrize("scheme", ["mariadb", "mysql+pymysql", "mariadb+pymysql"])
def test_mariadb_and_driver_schemes_open_the_same_sink(mysql_url, scheme):
    url = scheme + "://" + mysql_url.split("://", 1)[1]
    with open_sink(url) as sink:
        assert isinstance(sink, MySQLSink)
        with sink.conn.cursor() as cursor:
            cursor.execute("SELECT @@SESSION.sql_mode, @@character_set_client")
            sql_mode, charset = cursor.fetchone()
    assert "STRICT_ALL_TABLES" in sql_mode
    assert charset == "utf8mb4"


def test_a_batch_is_committed_exactly_once(mysql_url, table):
    dataset = Dataset(name="plain", table=table, columns=(Column(name="v", type="integer"),))
    import_id = uuid.uuid4().hex
    batch = Batch(import_id, 7, pa.table({"v": pa.array([1, 2, 3], pa.int64())}))
    with open_sink(mysql_url) as sink:
        sink.prepare(dataset)
        first = sink.write(batch)
        again = sink.write(batch)
    with open_sink(mysql_url) as other_connection:
        other_connection.prepare(dataset)
        third = other_connection.write(batch)
    assert (first.duplicate, again.duplicate, third.duplicate) == (False, True, True)
    assert fetch(mysql_url, f"SELECT COUNT(*) FROM {table}") == [(3,)]
    assert fetch(
        mysql_url,
        "SELECT import_id, seq, `rows` FROM antioom_batches WHERE import_id = %s",
        (import_id,),
    ) == [(import_id, 7, 3)]


def test_a_keyed_batch_is_committed_exactly_once(mysql_url, table, products):
    dataset = PRODUCTS.with_options(table=table)
    data = pa.table({"sku": ["A", "B"], "name": ["a", "b"], "price": [1.0, 2.0]})
    import_id = uuid.uuid4().hex
    with open_sink(mysql_url) as sink:
        sink.prepare(dataset)
        first = sink.write(Batch(import_id, 0, data))
        again = sink.write(Batch(import_id, 0, data))
    assert (first.duplicate, again.duplicate) == (False, True)
    assert products() == [("A", "a", 1.0), ("B", "b", 2.0)]


def test_a_lost_connection_is_database_lost_and_the_batch_is_not_committed(mysql_url, table):
    dataset = Dataset(name="plain", table=table, columns=(Column(name="v", type="integer"),))
    batch = Batch(uuid.uuid4().hex, 0, pa.table({"v": pa.array([1], pa.int64())}))
    with open_sink(mysql_url) as sink:
        sink.prepare(dataset)
        assert isinstance(sink, MySQLSink)
        fetch(mysql_url, f"KILL {sink.conn.thread_id()}")
        with pytest.raises(DatabaseLost, match="MySQL connection failed"):
            sink.write(batch)
    assert fetch(mysql_url, f"SELECT COUNT(*) FROM {table}") == [(0,)]


def test_a_failed_upsert_batch_leaves_neither_rows_nor_ledger_row(mysql_url, table, products):
    dataset = PRODUCTS.with_options(table=table)
    batch = Batch(uuid.uuid4().hex, 0, pa.table({"sku": ["A"], "name": ["a"], "price": [1.0]}))
    with open_sink(mysql_url) as sink:
        sink.prepare(dataset)
        assert isinstance(sink, MySQLSink)
        merge = sink._sql["merge"]
        sink._sql["merge"] = "SELECT no_such_column"  # fails after the rows were loaded
        with pytest.raises(DatabaseLost, match="MySQL refused the batch"):
            sink.write(batch)
        assert products() == []
        sink._sql["merge"] = merge
        assert sink.write(batch).duplicate is False
    assert products() == [("A", "a", 1.0)]


def test_the_server_keeps_import_records_in_mysql(mysql_url, table):
    check_server_keeps_records(mysql_url, table)
