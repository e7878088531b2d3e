"""Datasets and rules: what is accepted, what is rejected and why, and how keys behave.

All imports go into a real SQLite file; rejected rows are reported with their 1-based record
number (the header is not a record), the column and the rule that failed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from antioom import ConfigError, InputError, import_csv
from antioom.engine.batching import Batch
from antioom.engine.datasets import PRODUCTS
from antioom.engine.records import Dialect
from antioom.sinks import open_sink

Rows = list[tuple[Any, ...]]


def products(sqlite_url: str, fetch: Callable[..., Rows]) -> Rows:
    return fetch(sqlite_url, "SELECT sku, name, price FROM products ORDER BY sku")


# --------------------------------------------------------------------------- built-in products


def test_products_dataset_imports_valid_rows(write_csv, sqlite_url, fetch):
    summary = import_csv(
        write_csv("sku,name,price\nSKU-1,Widget,9.99\nSKU-2,Gadget,0.5\n"),
        sqlite_url,
        dataset="products",
    )
    assert (summary.status, summary.processed, summary.failed) == ("completed", 2, 0)
    assert summary.table == "products"
    assert products(sqlite_url, fetch) == [("SKU-1", "Widget", 9.99), ("SKU-2", "Gadget", 0.5)]


def test_products_sets_updated_at(write_csv, sqlite_url, fetch):
    before = datetime.now().astimezone()
    import_csv(write_csv("sku,name,price\nSKU-1,Widget,9.99\n"), sqlite_url, dataset="products")
    [(stamp,)] = fetch(sqlite_url, "SELECT updated_at FROM products")
    assert abs((datetime.fromisoformat(stamp) - before).total_seconds()) < 60


def test_products_sku_is_trimmed(write_csv, sqlite_url, fetch):
    import_csv(write_csv("sku,name,price\n  SKU-1 \t, Widget ,1\n"), sqlite_url, dataset="products")
    assert products(sqlite_url, fetch) == [("SKU-1", "Widget", 1.0)]


def test_products_rejects_carry_record_column_and_reason(write_csv, sqlite_url, fetch):
    summary = import_csv(
        write_csv(
            "sku,name,price\n"
            "SKU-1,Widget,9.99\n"  # 1: fine
            "   ,Blank sku,1\n"  # 2
            "SKU-3,,1\n"  # 3
            "SKU-4,Free,0\n"  # 4
            "SKU-5,Negative,-1\n"  # 5
            "SKU-6,Words,cheap\n"  # 6
            "SKU-7,Missing price,\n"  # 7
            "SKU-8,Fine too,3\n"  # 8
        ),
        sqlite_url,
        dataset="products",
    )
    assert [(r.record, r.column, r.reason) for r in summary.rejects] == [
        (2, "sku", "required value is missing"),
        (3, "name", "required value is missing"),
        (4, "price", "must be > 0"),
        (5, "price", "must be > 0"),
        (6, "price", "not a number"),
        (7, "price", "required value is missing"),
    ]
    assert (summary.processed, summary.failed, summary.rows) == (2, 6, 8)
    assert [row[0] for row in products(sqlite_url, fetch)] == ["SKU-1", "SKU-8"]


def test_rejects_keep_the_raw_values(write_csv, sqlite_url):
    summary = import_csv(
        write_csv("sku,name,price\nSKU-1, Widget ,free\n"), sqlite_url, dataset="products"
    )
    assert summary.rejects[0].values == {"sku": "SKU-1", "name": " Widget ", "price": "free"}


def test_infinite_and_nan_prices_are_rejected(write_csv, sqlite_url):
    summary = import_csv(
        write_csv("sku,name,price\nA,a,inf\nB,b,nan\nC,c,1e400\nD,d,1e3\n"),
        sqlite_url,
        dataset="products",
    )
    assert [r.record for r in summary.rejects] == [1, 2, 3]
    assert summary.processed == 1


# --------------------------------------------------------------------------- header checks


def test_missing_required_header_column_is_an_input_error_and_nothing_is_written(
    write_csv, sqlite_url, fetch
):
    with pytest.raises(InputError, match="name"):
        import_csv(write_csv("sku,price\nSKU-1,1\n"), sqlite_url, dataset="products")
    tables = fetch(sqlite_url, "SELECT name FROM sqlite_master WHERE name = 'products'")
    if tables:
        assert fetch(sqlite_url, "SELECT count(*) FROM products") == [(0,)]


def test_extra_unknown_columns_are_ignored(write_csv, sqlite_url, fetch):
    import_csv(
        write_csv("colour,sku,name,weight,price\nred,SKU-1,Widget,3kg,2\n"),
        sqlite_url,
        dataset="products",
    )
    assert products(sqlite_url, fetch) == [("SKU-1", "Widget", 2.0)]


def test_columns_may_come_in_any_order(write_csv, sqlite_url, fetch):
    import_csv(write_csv("price,name,sku\n2,Widget,SKU-1\n"), sqlite_url, dataset="products")
    assert products(sqlite_url, fetch) == [("SKU-1", "Widget", 2.0)]


def test_a_column_named_twice_in_the_header_is_an_input_error(write_csv, sqlite_url):
    with pytest.raises(InputError, match="more than once"):
        import_csv(write_csv("sku,name,price,sku\nA,a,1,B\n"), sqlite_url, dataset="products")


def test_unknown_dataset_is_a_config_error(write_csv, sqlite_url):
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        import_csv(write_csv("a\n1\n"), sqlite_url, dataset="nope")


# --------------------------------------------------------------------------- TOML datasets

PEOPLE_TOML = """
[datasets.people]
table = "people"
key = ["id"]

[[datasets.people.columns]]
name = "id"
type = "integer"
source = "Person ID"
required = true
gt = 0
lt = 1000

[[datasets.people.columns]]
name = "name"
required = true
min_length = 2
max_length = 10

[[datasets.people.columns]]
name = "email"
pattern = "[^@ ]+@[^@ ]+"

[[datasets.people.columns]]
name = "score"
type = "float"
min = 0
max = 100

[[datasets.people.columns]]
name = "balance"
type = "decimal"
precision = 10
scale = 2

[[datasets.people.columns]]
name = "active"
type = "boolean"

[[datasets.people.columns]]
name = "born"
type = "date"

[[datasets.people.columns]]
name = "seen"
type = "timestamp"

[[datasets.people.columns]]
name = "level"
choices = ["low", "high"]

[[datasets.people.columns]]
name = "code"
trim = false
"""

PEOPLE_HEADER = "Person ID,name,email,score,balance,active,born,seen,level,code\n"


@pytest.fixture
def people_toml(tmp_path: Path) -> Path:
    path = tmp_path / "datasets.toml"
    path.write_text(PEOPLE_TOML)
    return path


def test_toml_dataset_converts_every_type(write_csv, sqlite_url, fetch, people_toml):
    summary = import_csv(
        write_csv(
            PEOPLE_HEADER
            + "1, Ann ,ann@example.com,99.5,12.5,yes,1990-01-31,2024-01-02 03:04:05,low, x \n"
            + "2,Bob,,0,-3.25,FALSE,2000-02-29,2024-01-02T03:04,high,\n"
        ),
        sqlite_url,
        dataset="people",
        datasets_file=people_toml,
    )
    assert (summary.processed, summary.failed) == (2, 0)
    assert fetch(sqlite_url, "SELECT * FROM people ORDER BY id") == [
        (1, "Ann", "ann@example.com", 99.5, "12.50", 1, "1990-01-31",
         "2024-01-02 03:04:05.000000", "low", " x "),
        (2, "Bob", None, 0.0, "-3.25", 0, "2000-02-29",
         "2024-01-02 03:04:00.000000", "high", None),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        ("0,Cid,,,,,,,,", "id", "must be > 0"),
        ("1000,Dan,,,,,,,,", "id", "must be < 1000"),
        ("abc,Eve,,,,,,,,", "id", "not an integer"),
        ("99999999999999999999,Eve,,,,,,,,", "id", "not an integer"),
        (",Eve,,,,,,,,", "id", "required value is missing"),
        ("4,Q,,,,,,,,", "name", "shorter than 2 characters"),
        ("5,Elevenchars,,,,,,,,", "name", "longer than 10 characters"),
        ("6,Fay,not-an-email,,,,,,,", "email", "does not match pattern [^@ ]+@[^@ ]+"),
        ("7,Gus,,100.5,,,,,,", "score", "must be <= 100"),
        ("8,Hal,,-1,,,,,,", "score", "must be >= 0"),
        ("9,Ida,,,1.2.3,,,,,", "balance", "not a decimal number"),
        ("9,Ida,,,12.345,,,,,", "balance", "not a decimal number"),
        ("9,Ida,,,123456789.12,,,,,", "balance", "not a decimal number"),
        ("10,Jo,,,,maybe,,,,", "active", "not a boolean (true/false, yes/no, 1/0)"),
        ("11,Kim,,,,,2023-02-30,,,", "born", "not a date (YYYY-MM-DD)"),
        ("12,Lee,,,,,,yesterday,,", "seen", "not a timestamp (YYYY-MM-DD HH:MM:SS)"),
        ("13,Max,,,,,,,medium,", "level", "not one of: low, high"),
        ("14,,,,,,,,,", "name", "required value is missing"),
    ],
)
def test_toml_dataset_rules(write_csv, sqlite_url, fetch, people_toml, row, column, reason):
    summary = import_csv(
        write_csv(PEOPLE_HEADER + "500,Good,,,,,,,,\n" + row + "\n"),
        sqlite_url,
        dataset="people",
        datasets_file=people_toml,
    )
    assert [(r.record, r.column, r.reason) for r in summary.rejects] == [(2, column, reason)]
    assert fetch(sqlite_url, "SELECT id FROM people") == [(500,)]


def test_toml_dataset_reads_its_source_header_name(write_csv, sqlite_url, people_toml):
    with pytest.raises(InputError, match="Person ID"):
        import_csv(
            write_csv("id,name\n1,Ann\n"), sqlite_url, dataset="people", datasets_file=people_toml
        )


def test_invalid_dataset_definition_is_a_config_error(tmp_path, write_csv, sqlite_url):
    bad = tmp_path / "bad.toml"
    bad.write_text('[datasets.x]\ncolumns = [{ name = "drop table", type = "string" }]\n')
    with pytest.raises(ConfigError, match="dataset 'x'"):
        import_csv(write_csv("a\n1\n"), sqlite_url, dataset="x", datasets_file=bad)


# --------------------------------------------------------------------------- --table inference


def test_table_import_infers_column_types(write_csv, sqlite_url, fetch):
    import_csv(
        write_csv(
            "Count,Ratio,Flag,Day,Moment,Label\n"
            "1,1.5,true,2024-01-05,2024-01-05 10:11:12,alpha\n"
            "-2,3,FALSE,2024-12-31,2024-12-31T23:59:59,beta\n"
        ),
        sqlite_url,
        table="t",
    )
    assert fetch(sqlite_url, "SELECT * FROM t ORDER BY rowid") == [
        (1, 1.5, 1, "2024-01-05", "2024-01-05 10:11:12.000000", "alpha"),
        (-2, 3.0, 0, "2024-12-31", "2024-12-31 23:59:59.000000", "beta"),
    ]
    assert [(row[1], row[2]) for row in fetch(sqlite_url, "PRAGMA table_info(t)")] == [
        ("count", "INTEGER"),
        ("ratio", "REAL"),
        ("flag", "INTEGER"),
        ("day", "TEXT"),
        ("moment", "TEXT"),
        ("label", "TEXT"),
    ]


def test_inference_weighs_every_sampled_value_not_only_the_first(write_csv, sqlite_url, fetch):
    """Types are tried on the first 64 values before the whole sample: a value far down the
    sample still decides (a float, text, a 20-digit number, a non-boolean word)."""
    head = 100
    columns = {
        "floats": ["1"] * head + ["2.5"],
        "texts": ["7"] * head + ["n/a"],
        "big": ["12"] * head + ["12345678901234567890"],
        "words": ["true"] * head + ["maybe"],
        "ints": ["3"] * head + ["4"],
    }
    rows = zip(*columns.values(), strict=True)
    import_csv(
        write_csv(",".join(columns) + "\n" + "".join(",".join(row) + "\n" for row in rows)),
        sqlite_url,
        table="t",
    )
    assert [(row[1], row[2]) for row in fetch(sqlite_url, "PRAGMA table_info(t)")] == [
        ("floats", "REAL"),
        ("texts", "TEXT"),
        ("big", "TEXT"),
        ("words", "TEXT"),
        ("ints", "INTEGER"),
    ]
    assert fetch(sqlite_url, "SELECT big, words FROM t WHERE rowid = 101") == [
        ("12345678901234567890", "maybe")
    ]


def test_header_names_become_safe_column_names(write_csv, sqlite_url, fetch):
    import_csv(write_csv("Unit Price,2nd name,unit price\nx1,x2,x3\n"), sqlite_url, table="t")
    names = [row[1] for row in fetch(sqlite_url, "PRAGMA table_info(t)")]
    assert names == ["unit_price", "c_2nd_name", "unit_price_1"]


def test_a_later_value_breaking_the_inferred_type_is_a_rejected_row(write_csv, sqlite_url, fetch):
    numbers = "".join(f"{i}\n" for i in range(1, 501))
    summary = import_csv(
        write_csv("n\n" + numbers + "many\n501\n"),
        sqlite_url,
        table="t",
        dialect=Dialect(max_record_bytes=1024),  # the type is inferred from the first 1 KiB
    )
    assert summary.status == "completed"
    rejects = [(r.record, r.column, r.reason) for r in summary.rejects]
    assert rejects == [(501, "n", "not an integer")]
    assert fetch(sqlite_url, "SELECT count(*), max(n) FROM t") == [(501, 501)]


# --------------------------------------------------------------------------- keys: upsert


def test_upsert_last_occurrence_of_a_key_wins_within_a_batch(write_csv, sqlite_url, fetch):
    summary = import_csv(
        write_csv("sku,name,price\nA,first,1\nB,only,2\nA,second,3\nA,third,4\n"),
        sqlite_url,
        dataset="products",
    )
    assert summary.batches == 1
    assert products(sqlite_url, fetch) == [("A", "third", 4.0), ("B", "only", 2.0)]
    assert summary.rows == summary.processed + summary.failed == 4


def test_upsert_last_occurrence_of_a_key_wins_across_batches(write_csv, sqlite_url, fetch):
    summary = import_csv(
        write_csv("sku,name,price\nA,first,1\nB,only,2\nA,second,3\nC,c,5\nA,third,4\n"),
        sqlite_url,
        dataset="products",
        batch_size=2,
    )
    assert summary.batches == 3
    assert products(sqlite_url, fetch) == [("A", "third", 4.0), ("B", "only", 2.0), ("C", "c", 5.0)]


def test_upsert_updates_rows_of_an_earlier_import(write_csv, sqlite_url, fetch):
    import_csv(write_csv("sku,name,price\nA,old,1\nB,kept,2\n"), sqlite_url, dataset="products")
    import_csv(write_csv("sku,name,price\nA,new,9\n", "second.csv"), sqlite_url, dataset="products")
    assert products(sqlite_url, fetch) == [("A", "new", 9.0), ("B", "kept", 2.0)]


# --------------------------------------------------------------------------- keys: insert


def test_keyed_insert_rejects_an_existing_key_and_lands_the_rest_of_the_batch(
    write_csv, sqlite_url, fetch
):
    import_csv(write_csv("sku,name,price\nA,old,1\n"), sqlite_url, dataset="products")
    summary = import_csv(
        write_csv("sku,name,price\nB,b,2\nA,new,9\nC,c,3\n", "second.csv"),
        sqlite_url,
        dataset="products",
        mode="insert",
    )
    assert summary.batches == 1
    assert [r.record for r in summary.rejects] == [2]
    assert summary.rejects[0].reason.startswith("duplicate key")
    assert products(sqlite_url, fetch) == [("A", "old", 1.0), ("B", "b", 2.0), ("C", "c", 3.0)]
    assert (summary.processed, summary.failed, summary.rows) == (2, 1, 3)


def test_keyed_insert_keeps_the_first_of_a_key_repeated_in_the_file(write_csv, sqlite_url, fetch):
    summary = import_csv(
        write_csv("sku,name,price\nA,first,1\nA,second,2\nB,b,3\n"),
        sqlite_url,
        dataset="products",
        mode="insert",
    )
    assert [r.record for r in summary.rejects] == [2]
    assert summary.rejects[0].reason.startswith("duplicate key")
    assert products(sqlite_url, fetch) == [("A", "first", 1.0), ("B", "b", 3.0)]


def test_plain_insert_without_key_keeps_every_row(write_csv, sqlite_url, fetch):
    import_csv(write_csv("sku,name,price\nA,x,1\nA,x,1\n"), sqlite_url, table="t")
    assert fetch(sqlite_url, "SELECT count(*) FROM t") == [(2,)]


def test_sqlite_sink_commits_a_batch_once(sqlite_url, fetch):
    table = pa.table({"sku": ["A", "B"], "name": ["a", "b"], "price": [1.0, 2.0]})
    with open_sink(sqlite_url) as sink:
        sink.prepare(PRODUCTS.with_options(mode="insert"))
        first = sink.write(Batch("import-1", 0, table))
        again = sink.write(Batch("import-1", 0, table))
        other = sink.write(Batch("import-1", 1, table.slice(0, 0)))
    assert (first.duplicate, again.duplicate, other.duplicate) == (False, True, False)
    assert first.errors == again.errors == []
    assert fetch(sqlite_url, "SELECT count(*) FROM products") == [(2,)]


# --------------------------------------------------------------------------- rejects file


def test_rejects_file_has_one_line_per_rejected_row(write_csv, tmp_path, run_cli, sqlite_url):
    data = write_csv('sku,name,price\nA,ok,1\nB,bad,-1\nC\nD,"multi\nline",x\n=HYPERLINK(1),f,-2\n')
    rejects = tmp_path / "rejects.csv"
    result = run_cli(
        "import", data, "--dataset", "products", "--db", sqlite_url, "--rejects", rejects
    )
    assert result.code == 0, result.stderr
    with open(rejects, newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["record", "line", "column", "reason", "raw"]
    assert [(line[0], line[2], line[3]) for line in lines[1:]] == [
        ("2", "price", "must be > 0"),
        ("3", "", "expected 3 fields, found 1"),
        ("4", "price", "not a number"),
        ("5", "price", "must be > 0"),
    ]
    assert lines[1][4] == "B,bad,-1"
    assert list(csv.reader(io.StringIO(lines[3][4]))) == [["D", "multi\nline", "x"]]


def test_rejects_file_neutralises_formula_cells(write_csv, tmp_path, run_cli, sqlite_url):
    data = write_csv("sku,name,price\n=cmd|' /C calc'!A0,x,-1\n+SUM(A1),y,0\n@foo,z,-3\n")
    rejects = tmp_path / "rejects.csv"
    result = run_cli(
        "import", data, "--dataset", "products", "--db", sqlite_url, "--rejects", rejects
    )
    assert result.code == 0, result.stderr
    with open(rejects, newline="", encoding="utf-8") as handle:
        raw = [line[4] for line in list(csv.reader(handle))[1:]]
    assert raw == ["'=cmd|' /C calc'!A0,x,-1", "'+SUM(A1),y,0", "'@foo,z,-3"]
