"""The MongoDB sink against a MongoDB wire-protocol server, each test in its own database.

The server is SecantusDB (pure Python, on WiredTiger) started in-process for the session, or a
real MongoDB when ``ANTIOOM_TEST_MONGO_URL`` is set. If neither is available the tests are
skipped, or failed when ``ANTIOOM_REQUIRE_SERVICES=1``. SecantusDB upserts about a thousand
documents a second, so the inputs stay small.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pytest
from bson import Decimal128, Int64
from conftest import unavailable, write_types_dataset
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from server_helpers import check_server_keeps_records

from antioom import ConfigError, DatabaseLost, DatabaseUnavailable, TargetError, import_csv
from antioom.engine.batching import Batch
from antioom.engine.datasets import PRODUCTS, Column, Dataset, parse_dataset
from antioom.errors import ImportConflict
from antioom.sinks import open_sink

Db = Database[dict[str, Any]]


# --------------------------------------------------------------------------- the server


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@pytest.fixture(scope="session")
def mongo_server_url() -> Iterator[str]:
    """A reachable MongoDB-compatible server: ANTIOOM_TEST_MONGO_URL, else SecantusDB."""
    url = os.environ.get("ANTIOOM_TEST_MONGO_URL")
    if url:
        client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=3000)
        try:
            client.admin.command("ping")
        except Exception as exc:
            unavailable(f"MongoDB not reachable at {url}: {str(exc).splitlines()[0]}")
        finally:
            client.close()
        yield url
        return
    try:
        from secantus import SecantusDBServer

        # Standalone (no replica set name): like a plain mongod, and no oplog to write.
        server = SecantusDBServer(port=0, storage_path=":memory:", replica_set_name=None)
        server.start()
    except Exception as exc:
        unavailable(f"cannot start SecantusDB: {type(exc).__name__}: {exc}")
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def mongo_url(mongo_server_url: str) -> Iterator[str]:
    """A URL naming a fresh database for this test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield _with_database(mongo_server_url, name)
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server_url)
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture
def db(mongo_url: str) -> Iterator[Db]:
    """The test's database, to look at what the sink wrote."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
    try:
        yield client.get_default_database()
    finally:
        client.close()


def products(db: Db) -> list[tuple[Any, ...]]:
    return [(d["sku"], d["name"], d["price"]) for d in db.products.find().sort("sku", 1)]


def unique_indexes(collection: Collection[dict[str, Any]]) -> list[tuple[tuple[str, Any], ...]]:
    return [tuple(i["key"].items()) for i in collection.list_indexes() if i.get("unique")]


# --------------------------------------------------------------------------- upserts


def test_upsert_last_occurrence_wins_within_a_batch(write_csv, mongo_url, db):
    summary = import_csv(
        write_csv("sku,name,price\nA,first,1\nB,only,2\nA,second,3\nA,third,4\n"),
        mongo_url,
        dataset="products",
    )
    assert (summary.status, summary.batches) == ("completed", 1)
    assert products(db) == [("A", "third", 4.0), ("B", "only", 2.0)]
    assert summary.rows == summary.processed + summary.failed == 4


def test_upsert_last_occurrence_wins_across_batches(write_csv, mongo_url, db):
    summary = import_csv(
        write_csv("sku,name,price\nA,first,1\nB,only,2\nA,second,3\nC,c,5\nA,third,4\n"),
        mongo_url,
        dataset="products",
        batch_size=2,
    )
    assert summary.batches == 3
    assert products(db) == [("A", "third", 4.0), ("B", "only", 2.0), ("C", "c", 5.0)]
    assert db.products.count_documents({}) == 3


def test_upsert_sets_updated_at_and_updates_an_earlier_import(write_csv, mongo_url, db):
    import_csv(write_csv("sku,name,price\nA,old,1\nB,kept,2\n"), mongo_url, dataset="products")
    first = db.products.find_one({"sku": "A"})
    assert first is not None and isinstance(first["updated_at"], datetime)
    now = datetime.now(UTC).replace(tzinfo=None)  # pymongo decodes datetimes as naive UTC
    assert abs(first["updated_at"] - now).total_seconds() < 60
    time.sleep(0.01)
    import_csv(write_csv("sku,name,price\nA,new,9\n", "2.csv"), mongo_url, dataset="products")
    second = db.products.find_one({"sku": "A"})
    assert second is not None and second["updated_at"] > first["updated_at"]
    assert second["_id"] == first["_id"]  # updated in place, not replaced
    assert products(db) == [("A", "new", 9.0), ("B", "kept", 2.0)]


def test_the_key_gets_a_unique_index_and_the_ledger_one_too(write_csv, mongo_url, db):
    import_csv(write_csv("sku,name,price\n"), mongo_url, dataset="products")
    indexes = {tuple(i["key"].items()): i.get("unique", False) for i in db.products.list_indexes()}
    assert indexes[(("sku", 1),)] is True
    ledger = {
        tuple(i["key"].items()): i.get("unique", False) for i in db.antioom_batches.list_indexes()
    }
    assert ledger[(("import_id", 1), ("seq", 1))] is True


# --------------------------------------------------------------------------- inserts


def test_plain_insert_keeps_every_row(write_csv, mongo_url, db):
    summary = import_csv(write_csv("name,city\nann,paris\nann,paris\nbob,\n"), mongo_url, table="t")
    assert (summary.status, summary.processed, summary.failed) == ("completed", 3, 0)
    rows = sorted((d["name"], d["city"]) for d in db.t.find())
    assert rows == [("ann", "paris"), ("ann", "paris"), ("bob", None)]


def test_keyed_insert_rejects_duplicates_with_the_server_reason_and_lands_the_rest(
    write_csv, mongo_url, db
):
    import_csv(write_csv("sku,name,price\nA,old,1\n"), mongo_url, dataset="products")
    summary = import_csv(
        write_csv("sku,name,price\nB,b,2\nA,new,9\nC,c,3\nB,again,4\nB,third,5\n", "2.csv"),
        mongo_url,
        dataset="products",
        mode="insert",
    )
    assert summary.batches == 1
    assert [r.record for r in summary.rejects] == [2, 4, 5]
    for reject in summary.rejects:
        assert reject.reason.startswith("E11000 duplicate key error"), reject.reason
    assert products(db) == [("A", "old", 1.0), ("B", "b", 2.0), ("C", "c", 3.0)]
    assert (summary.processed, summary.failed, summary.rows) == (2, 3, 5)


def test_empty_file_creates_the_collection_and_writes_nothing(write_csv, mongo_url, db):
    summary = import_csv(write_csv("sku,name,price\n"), mongo_url, dataset="products")
    assert (summary.status, summary.rows, summary.processed, summary.batches) == (
        "completed",
        0,
        0,
        0,
    )
    assert "products" in db.list_collection_names()
    assert db.products.count_documents({}) == 0


# --------------------------------------------------------------------------- types


def test_types_round_trip_as_bson_types(tmp_path: Path, write_csv, mongo_url, db):
    datasets = write_types_dataset(tmp_path / "datasets.toml")
    summary = import_csv(
        write_csv(
            "id,amount,ratio,active,day,moment,label\n"
            '1,123456789.125,0.1,yes,2024-02-29,2024-02-29 23:59:58.123456,"comma, ""q"""\n'
            "2,-0.5,-1e-3,N,1969-07-20,1969-07-20 20:17:40.9999,日本 🚀 naïve\n"
            "9007199254740993,0,,,,,\n"
        ),
        mongo_url,
        dataset="things",
        datasets_file=datasets,
    )
    assert summary.failed == 0
    documents = [{k: v for k, v in d.items() if k != "_id"} for d in db.things.find().sort("id")]
    assert documents == [
        {"id": 1, "amount": Decimal128("123456789.125"), "ratio": 0.1, "active": True,
         "day": datetime(2024, 2, 29), "moment": datetime(2024, 2, 29, 23, 59, 58, 123000),
         "label": 'comma, "q"'},
        {"id": 2, "amount": Decimal128("-0.500"), "ratio": -0.001, "active": False,
         "day": datetime(1969, 7, 20), "moment": datetime(1969, 7, 20, 20, 17, 40, 999000),
         "label": "日本 🚀 naïve"},
        {"id": 9007199254740993, "amount": Decimal128("0.000"), "ratio": None, "active": None,
         "day": None, "moment": None, "label": None},
    ]  # fmt: skip
    first, second, third = db.things.find().sort("id")
    assert all(type(d["id"]) is Int64 for d in (first, second, third))  # int64 even if small
    assert str(second["amount"].to_decimal()) == "-0.500"  # the column's scale is kept
    assert type(first["ratio"]) is float and type(first["active"]) is bool
    assert "ratio" in third and third["ratio"] is None  # nulls are stored, not omitted
    for name, bson_type in [
        ("id", "long"),
        ("amount", "decimal"),
        ("ratio", "double"),
        ("active", "bool"),
        ("day", "date"),
        ("moment", "date"),
        ("label", "string"),
    ]:
        count = db.things.count_documents({name: {"$type": bson_type}})
        assert count == (3 if name in ("id", "amount") else 2), name


def test_decimal_with_more_digits_than_decimal128_is_rejected(tmp_path, write_csv, mongo_url, db):
    datasets = tmp_path / "datasets.toml"
    datasets.write_text(
        "[datasets.big]\ncolumns = [\n"
        "  { name = 'n', type = 'integer' },\n"
        "  { name = 'amount', type = 'decimal', precision = 38, scale = 2 },\n"
        "]\n"
    )
    summary = import_csv(
        write_csv(
            "n,amount\n"
            "1,12345678901234567890123456789012.34\n"  # 34 digits: fits
            "2,123456789012345678901234567890123.45\n"  # 35 digits
            "3,-7.10\n"
        ),
        mongo_url,
        dataset="big",
        datasets_file=datasets,
    )
    assert [(r.record, r.reason) for r in summary.rejects] == [
        (2, "amount: more than 34 significant digits (BSON Decimal128)")
    ]
    amounts = {d["n"]: d["amount"] for d in db.big.find()}
    assert amounts == {
        1: Decimal128("12345678901234567890123456789012.34"),
        3: Decimal128("-7.10"),
    }


# --------------------------------------------------------------------------- refused documents


def test_validation_errors_map_to_their_rows_after_keep_last(write_csv, mongo_url, db):
    db.create_collection("products", validator={"price": {"$lt": 100}})
    summary = import_csv(
        write_csv("sku,name,price\nA,a1,1\nB,b,200\nA,a2,2\nC,c,300\nD,d,4\n"),
        mongo_url,
        dataset="products",
    )
    assert summary.batches == 1
    assert [r.record for r in summary.rejects] == [2, 4]
    assert all("validation" in r.reason.lower() for r in summary.rejects), summary.rejects
    assert products(db) == [("A", "a2", 2.0), ("D", "d", 4.0)]
    assert (summary.processed, summary.failed) == (3, 2)


def test_keyed_insert_lands_a_later_occurrence_when_the_first_is_refused(write_csv, mongo_url, db):
    db.create_collection("products", validator={"price": {"$lt": 100}})
    summary = import_csv(
        write_csv("sku,name,price\nA,a1,500\nA,a2,2\nA,a3,3\n"),
        mongo_url,
        dataset="products",
        mode="insert",
    )
    assert [r.record for r in summary.rejects] == [1, 3]
    assert "validation" in summary.rejects[0].reason.lower()
    assert summary.rejects[1].reason.startswith("E11000")
    assert products(db) == [("A", "a2", 2.0)]


@pytest.mark.parametrize("mode", ["insert", "upsert"])
@pytest.mark.parametrize("megabytes", [17, 49])
def test_a_document_too_large_is_refused_and_the_rest_lands(mode, megabytes, mongo_url, db):
    # Over 16 MiB the server refuses the document; over 48 MB pymongo refuses to send it.
    dataset = PRODUCTS.with_options(mode=mode)
    big = "x" * (megabytes * 1024 * 1024)
    table = pa.table({"sku": ["A", "B", "C"], "name": ["a", big, "c"], "price": [1.0, 2.0, 3.0]})
    with open_sink(mongo_url) as sink:
        sink.prepare(dataset)
        result = sink.write(Batch("import-big", 0, table))
    assert [error.row for error in result.errors] == [1]
    assert "large" in result.errors[0].reason
    assert products(db) == [("A", "a", 1.0), ("C", "c", 3.0)]


# --------------------------------------------------------------------------- connection & ledger


class _MustNotRead:
    read_calls = 0

    def read(self, size: int = -1, /) -> bytes:
        self.read_calls += 1
        return b"a\n1\n"


def test_unreachable_database_fails_fast_before_reading_the_input():
    source = _MustNotRead()
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="cannot connect to MongoDB") as raised:
        import_csv(source, "mongodb://127.0.0.1:1/x?serverSelectionTimeoutMS=200", table="t")
    assert time.monotonic() - started < 3
    assert "\n" not in str(raised.value)
    assert source.read_calls == 0


def test_a_url_without_a_database_is_a_config_error():
    with pytest.raises(ConfigError, match="names no database"):
        open_sink("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200")


def test_a_lost_connection_is_database_lost(mongo_server_url: str):
    if os.environ.get("ANTIOOM_TEST_MONGO_URL"):
        pytest.skip("needs a server this test can stop")
    from secantus import SecantusDBServer

    server = SecantusDBServer(port=0, storage_path=":memory:", replica_set_name=None)
    server.start()
    url = _with_database(server.uri, "lost") + "?serverSelectionTimeoutMS=300"
    sink = open_sink(url)
    try:
        sink.prepare(PRODUCTS)
        server.stop()
        table = pa.table({"sku": ["A"], "name": ["a"], "price": [1.0]})
        with pytest.raises(DatabaseLost, match="MongoDB"):
            sink.write(Batch("import-lost", 0, table))
    finally:
        sink.close()
        server.stop()


def test_a_batch_is_committed_exactly_once(mongo_url, db):
    dataset = Dataset(name="plain", table="plain", columns=(Column(name="v", type="integer"),))
    batch = Batch("import-1", 7, pa.table({"v": pa.array([1, 2, 3], pa.int64())}))
    with open_sink(mongo_url) as sink:
        sink.prepare(dataset)
        batch.payload = sink.encode(batch.table)
        first = sink.write(batch)
        again = sink.write(batch)
    with open_sink(mongo_url) as other_connection:
        other_connection.prepare(dataset)
        third = other_connection.write(Batch("import-1", 7, batch.table))
    assert (first.duplicate, again.duplicate, third.duplicate) == (False, True, True)
    assert db.plain.count_documents({}) == 3
    ledger = [(d["import_id"], d["seq"], d["rows"]) for d in db.antioom_batches.find()]
    assert ledger == [("import-1", 7, 3)]


def test_a_keyed_batch_is_committed_exactly_once(mongo_url, db):
    table = pa.table({"sku": ["A", "B"], "name": ["a", "b"], "price": [1.0, 2.0]})
    with open_sink(mongo_url) as sink:
        sink.prepare(PRODUCTS)
        first = sink.write(Batch("import-2", 0, table))
        again = sink.write(Batch("import-2", 0, table))
        other = sink.write(Batch("import-2", 1, table))
    assert (first.duplicate, again.duplicate, other.duplicate) == (False, True, False)
    assert products(db) == [("A", "a", 1.0), ("B", "b", 2.0)]
    assert db.antioom_batches.count_documents({"import_id": "import-2"}) == 2


def test_an_existing_index_that_conflicts_is_a_target_error(mongo_url, db):
    db.products.create_index("sku")  # same key, not unique
    with open_sink(mongo_url) as sink, pytest.raises(TargetError, match="unique index"):
        sink.prepare(PRODUCTS)


@pytest.mark.parametrize("name", ["$set", "a.b", "price\n"])
def test_field_names_mongodb_would_misread_are_refused_up_front(name):
    with pytest.raises(ConfigError, match=r"columns\.0\.name"):
        parse_dataset("odd", {"columns": [{"name": name}]})


def test_a_system_collection_is_refused(mongo_url):
    dataset = Dataset(name="sys", table="system.users", columns=(Column(name="v"),))
    with open_sink(mongo_url) as sink, pytest.raises(TargetError, match="system"):
        sink.prepare(dataset)


def test_replaying_a_recorded_import_writes_nothing(write_csv, mongo_url, db):
    path = write_csv("sku,name,price\nA,a,1\nB,b,2\nC,c,3\n")
    first = import_csv(path, mongo_url, dataset="products", batch_size=2, import_id="same")
    with pytest.raises(ImportConflict, match="already completed"):
        import_csv(path, mongo_url, dataset="products", batch_size=2, import_id="same")
    again = import_csv(  # without the record, the ledger alone: every batch is skipped
        path, mongo_url, dataset="products", batch_size=2, import_id="same", keep_record=False
    )
    assert (first.processed, again.processed, again.batches) == (3, 3, 2)
    assert again.resumed_from == {"records": 3, "rows": 3, "rejected": 0, "batches": 2}
    assert db.products.count_documents({}) == 3


def test_the_server_keeps_import_records_in_mongodb(mongo_url):
    check_server_keeps_records(mongo_url, "items")
