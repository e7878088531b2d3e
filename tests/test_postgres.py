"""The same behaviours on a real PostgreSQL server, each test in its own schema.

Tests that need the server use the ``pg_url`` fixture (skipped when no server answers, failed
when ``ANTIOOM_REQUIRE_SERVICES=1``); the unreachable-database test needs no server.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from conftest import write_types_dataset

from antioom import DatabaseUnavailable, import_csv
from antioom.engine.batching import Batch
from antioom.engine.datasets import PRODUCTS, Column, Dataset
from antioom.sinks import open_sink

Rows = list[tuple[Any, ...]]


def products(pg_url: str, fetch: Callable[..., Rows]) -> Rows:
    return fetch(pg_url, "SELECT sku, name, price FROM products ORDER BY sku")


# --------------------------------------------------------------------------- where tables go


def test_tables_are_created_in_the_current_schema(
    write_csv, pg_url, pg_server_url, pg_schema, fetch
):
    # A same-named table with other columns in another schema must not be looked at.
    other = pg_schema + "_other"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {other}")
        conn.execute(f"CREATE TABLE {other}.products (unrelated int)")
    try:
        import_csv(write_csv("sku,name,price\nA,a,1\n"), pg_url, dataset="products")
        found = fetch(
            pg_server_url,
            "SELECT table_schema FROM information_schema.tables "
            "WHERE table_name IN ('products', 'antioom_batches') AND table_schema IN (%s, %s)",
            (pg_schema, other),
        )
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {other} CASCADE")
    assert sorted(schema for (schema,) in found) == sorted([other, pg_schema, pg_schema])
    assert products(pg_url, fetch) == [("A", "a", 1.0)]


# --------------------------------------------------------------------------- inserts


def test_plain_insert(write_csv, pg_url, fetch):
    summary = import_csv(write_csv("name,city\nann,paris\nann,paris\nbob,\n"), pg_url, table="t")
    assert (summary.status, summary.processed, summary.failed) == ("completed", 3, 0)
    assert fetch(pg_url, "SELECT name, city FROM t ORDER BY name, city") == [
        ("ann", "paris"),
        ("ann", "paris"),
        ("bob", None),
    ]


def test_table_import_infers_column_types(write_csv, pg_url, fetch):
    import_csv(
        write_csv(
            "count,ratio,flag,day,moment,label\n1,1.5,true,2024-01-05,2024-01-05 10:11:12,alpha\n"
        ),
        pg_url,
        table="t",
    )
    types = fetch(
        pg_url,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 't' AND table_schema = current_schema() ORDER BY ordinal_position",
    )
    assert types == [
        ("count", "bigint"),
        ("ratio", "double precision"),
        ("flag", "boolean"),
        ("day", "date"),
        ("moment", "timestamp without time zone"),
        ("label", "text"),
    ]


def test_keyed_insert_rejects_duplicates_and_lands_the_rest_of_the_batch(write_csv, pg_url, fetch):
    import_csv(write_csv("sku,name,price\nA,old,1\n"), pg_url, dataset="products")
    summary = import_csv(
        write_csv("sku,name,price\nB,b,2\nA,new,9\nC,c,3\nB,again,4\n", "second.csv"),
        pg_url,
        dataset="products",
        mode="insert",
    )
    assert summary.batches == 1
    assert [(r.record, r.reason) for r in summary.rejects] == [
        (2, "duplicate key"),
        (4, "duplicate key"),
    ]
    assert products(pg_url, fetch) == [("A", "old", 1.0), ("B", "b", 2.0), ("C", "c", 3.0)]
    assert (summary.processed, summary.failed, summary.rows) == (2, 2, 4)


# --------------------------------------------------------------------------- upserts


def test_upsert_last_occurrence_wins_within_a_batch(write_csv, pg_url, fetch):
    summary = import_csv(
        write_csv("sku,name,price\nA,first,1\nB,only,2\nA,second,3\nA,third,4\n"),
        pg_url,
        dataset="products",
    )
    assert summary.batches == 1
    assert products(pg_url, fetch) == [("A", "third", 4.0), ("B", "only", 2.0)]
    assert summary.rows == summary.processed + summary.failed == 4


def test_upsert_keeps_every_key_when_one_repeats(write_csv, pg_url, fetch):
    summary = import_csv(
        write_csv("sku,name,price\nA,first,1\nA,second,2\nB,only,3\n"), pg_url, dataset="products"
    )
    assert (summary.status, summary.failed) == ("completed", 0)
    assert products(pg_url, fetch) == [("A", "second", 2.0), ("B", "only", 3.0)]


def test_upsert_last_occurrence_wins_across_batches(write_csv, pg_url, fetch):
    summary = import_csv(
        write_csv("sku,name,price\nA,first,1\nB,only,2\nA,second,3\nC,c,5\nA,third,4\n"),
        pg_url,
        dataset="products",
        batch_size=2,
    )
    assert summary.batches == 3
    assert products(pg_url, fetch) == [("A", "third", 4.0), ("B", "only", 2.0), ("C", "c", 5.0)]


def test_upsert_updates_rows_of_an_earlier_import_and_their_updated_at(write_csv, pg_url, fetch):
    import_csv(write_csv("sku,name,price\nA,old,1\nB,kept,2\n"), pg_url, dataset="products")
    [(first_stamp,)] = fetch(pg_url, "SELECT updated_at FROM products WHERE sku = 'A'")
    import_csv(write_csv("sku,name,price\nA,new,9\n", "second.csv"), pg_url, dataset="products")
    assert products(pg_url, fetch) == [("A", "new", 9.0), ("B", "kept", 2.0)]
    [(second_stamp,)] = fetch(pg_url, "SELECT updated_at FROM products WHERE sku = 'A'")
    assert second_stamp > first_stamp


# --------------------------------------------------------------------------- types


def test_types_round_trip(tmp_path: Path, write_csv, pg_url, fetch):
    datasets = write_types_dataset(tmp_path / "datasets.toml")
    summary = import_csv(
        write_csv(
            "id,amount,ratio,active,day,moment,label\n"
            '1,123456789.125,0.1,yes,2024-02-29,2024-02-29 23:59:58.123456,"comma, ""q"""\n'
            "2,-0.5,-1e-3,N,1970-01-01,1999-12-31T00:00,日本\n"
            "3,,,,,,\n"
        ),
        pg_url,
        dataset="things",
        datasets_file=datasets,
    )
    assert summary.failed == 0
    assert fetch(pg_url, "SELECT * FROM things ORDER BY id") == [
        (1, Decimal("123456789.125"), 0.1, True, date(2024, 2, 29),
         datetime(2024, 2, 29, 23, 59, 58, 123456), 'comma, "q"'),
        (2, Decimal("-0.500"), -0.001, False, date(1970, 1, 1),
         datetime(1999, 12, 31, 0, 0), "日本"),
        (3, None, None, None, None, None, None),
    ]  # fmt: skip


def test_nul_byte_is_rejected_with_the_database_reason_and_the_rest_lands(write_csv, pg_url, fetch):
    summary = import_csv(
        write_csv(b"name,city\nann,paris\nbob,ro\x00me\ncid,oslo\n"), pg_url, table="t"
    )
    assert summary.status == "completed"
    assert [r.record for r in summary.rejects] == [2]
    assert "0x00" in summary.rejects[0].reason
    assert fetch(pg_url, "SELECT name FROM t ORDER BY name") == [("ann",), ("cid",)]
    assert (summary.processed, summary.failed) == (2, 1)


# --------------------------------------------------------------------------- connection & ledger


class _MustNotRead:
    read_calls = 0

    def read(self, size: int = -1, /) -> bytes:
        self.read_calls += 1
        return b"a\n1\n"


def test_unreachable_database_fails_before_reading_the_input():
    source = _MustNotRead()
    with pytest.raises(DatabaseUnavailable, match="cannot connect to PostgreSQL"):
        import_csv(source, "postgresql://postgres@127.0.0.1:1/x", table="t")
    assert source.read_calls == 0


def test_a_batch_is_committed_exactly_once(pg_url, fetch):
    dataset = Dataset(name="plain", table="plain", columns=(Column(name="v", type="integer"),))
    batch = Batch("import-1", 7, pa.table({"v": pa.array([1, 2, 3], pa.int64())}))
    with open_sink(pg_url) as sink:
        sink.prepare(dataset)
        first = sink.write(batch)
        again = sink.write(batch)
    with open_sink(pg_url) as other_connection:
        other_connection.prepare(dataset)
        third = other_connection.write(batch)
    assert (first.duplicate, again.duplicate, third.duplicate) == (False, True, True)
    assert fetch(pg_url, "SELECT count(*) FROM plain") == [(3,)]
    assert fetch(pg_url, "SELECT import_id, seq, rows FROM antioom_batches") == [("import-1", 7, 3)]


def test_a_keyed_batch_is_committed_exactly_once(pg_url, fetch):
    table = pa.table({"sku": ["A", "B"], "name": ["a", "b"], "price": [1.0, 2.0]})
    with open_sink(pg_url) as sink:
        sink.prepare(PRODUCTS)
        first = sink.write(Batch("import-2", 0, table))
        again = sink.write(Batch("import-2", 0, table))
    assert (first.duplicate, again.duplicate) == (False, True)
    assert products(pg_url, fetch) == [("A", "a", 1.0), ("B", "b", 2.0)]
