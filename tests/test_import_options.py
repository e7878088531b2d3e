"""The import options users of sqlite-utils and mongoimport expect, run through the real CLI:
--dry-run, --max-rejects / --stop-on-error (exit 7), --limit, --drop / --truncate, --replace,
--alter and --rename. SQLite throughout; --alter and --truncate on PostgreSQL too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from antioom.sinks.sqlite_connection import connect as connect_sqlite

# Records 2 and 5 break the products rules (price <= 0, missing name).
PRODUCTS = "sku,name,price\nA,Widget,1.5\nB,Broken,-1\nC,Gadget,2\nD,Doohickey,3\nE,,4\nF,Thing,5\n"
VALID = {"A", "C", "D", "F"}


def summary(result: Any) -> dict[str, Any]:
    assert result.code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def skus(fetch: Any, url: str, table: str = "products") -> set[str]:
    return {sku for (sku,) in fetch(url, f"SELECT sku FROM {table}")}


def test_dry_run_counts_and_rejects_without_a_database(run_cli, write_csv, tmp_path: Path):
    nowhere = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"  # cannot even be opened
    result = run_cli(
        "import", write_csv(PRODUCTS), "--dataset", "products", "--db", nowhere, "--dry-run",
        "--rejects", tmp_path / "rejects.csv", "--json",
    )  # fmt: skip
    data = summary(result)
    assert (data["dry_run"], data["processed"], data["failed"], data["rows"]) == (True, 4, 2, 6)
    assert (tmp_path / "rejects.csv").read_text().count("\n") == 3  # header + 2
    assert not (tmp_path / "no").exists()


def test_dry_run_says_what_would_be_written(run_cli, write_csv, sqlite_url, fetch):
    result = run_cli("import", write_csv(PRODUCTS), "--dataset", "products", "--db", sqlite_url,
                     "--dry-run")  # fmt: skip
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("dry run completed: 4 rows would be written to products")
    with pytest.raises(Exception, match="no such table"):
        fetch(sqlite_url, "SELECT count(*) FROM products")


def test_max_rejects_stops_with_exit_7(run_cli, write_csv, sqlite_url):
    over = run_cli("import", write_csv(PRODUCTS), "--dataset", "products", "--db", sqlite_url,
                   "--max-rejects", "1")  # fmt: skip
    assert over.code == 7
    assert "2 rows rejected, more than the 1 allowed" in over.stderr
    within = run_cli("import", write_csv(PRODUCTS), "--dataset", "products", "--db", sqlite_url,
                     "--max-rejects", "2", "--json")  # fmt: skip
    assert summary(within)["failed"] == 2


def test_stop_on_error_stops_before_the_rows_after_a_reject(run_cli, write_csv, sqlite_url, fetch):
    lines = "".join(f"S{i},n,{-1 if i == 50 else 1}\n" for i in range(100))
    result = run_cli("import", write_csv("sku,name,price\n" + lines), "--dataset", "products",
                     "--db", sqlite_url, "--stop-on-error", "--batch-size", "10")  # fmt: skip
    assert result.code == 7
    committed = fetch(sqlite_url, "SELECT count(*) FROM products")[0][0]
    assert committed < 100  # the batches after the bad record were never written


def test_limit_imports_the_first_records(run_cli, write_csv, sqlite_url, fetch):
    data = summary(run_cli("import", write_csv(PRODUCTS), "--dataset", "products",
                           "--db", sqlite_url, "--limit", "3", "--json"))  # fmt: skip
    assert (data["rows"], data["processed"], data["failed"]) == (3, 2, 1)
    assert skus(fetch, sqlite_url) == {"A", "C"}


def test_truncate_and_drop_start_from_an_empty_table(run_cli, write_csv, sqlite_url, fetch):
    path = write_csv(PRODUCTS)
    for _ in range(2):
        summary(run_cli("import", path, "--dataset", "products", "--db", sqlite_url,
                        "--mode", "insert", "--truncate", "--json"))  # fmt: skip
    assert fetch(sqlite_url, "SELECT count(*) FROM products") == [(4,)]
    # --drop: a table of another shape is replaced by the dataset's
    other = write_csv("id,label\n1,x\n", "other.csv")
    summary(run_cli("import", other, "--table", "t", "--db", sqlite_url, "--json"))
    summary(run_cli("import", path, "--table", "t", "--db", sqlite_url, "--drop", "--json"))
    assert skus(fetch, sqlite_url, "t") == {"A", "B", "C", "D", "E", "F"}


def test_truncate_cannot_resume(run_cli, write_csv, sqlite_url, fetch):
    path = write_csv(PRODUCTS)
    run_cli("import", path, "--dataset", "products", "--db", sqlite_url, "--import-id", "once")
    # the record says completed; with it gone, the ledger still knows the import
    with connect_sqlite(sqlite_url.removeprefix("sqlite:///")) as conn:
        conn.execute("DELETE FROM antioom_imports")
    again = run_cli("import", path, "--dataset", "products", "--db", sqlite_url,
                    "--import-id", "once", "--truncate")  # fmt: skip
    assert again.code == 2
    assert "cannot truncate the table when resuming once" in again.stderr
    assert fetch(sqlite_url, "SELECT count(*) FROM products") == [(4,)]


def test_replace_is_upsert(run_cli, write_csv, sqlite_url, fetch):
    first = write_csv("sku,name,price\nA,old,1\n", "first.csv")
    second = write_csv("sku,name,price\nA,new,2\n", "second.csv")
    for path in (first, second):
        summary(run_cli("import", path, "--dataset", "products", "--db", sqlite_url,
                        "--replace", "--json"))  # fmt: skip
    assert fetch(sqlite_url, "SELECT name, price FROM products") == [("new", 2.0)]
    both = run_cli("import", first, "--dataset", "products", "--db", sqlite_url,
                   "--replace", "--mode", "insert")  # fmt: skip
    assert both.code == 2


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_alter_adds_missing_columns(run_cli, write_csv, request, fetch, backend):
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    summary(run_cli("import", write_csv("id,a\n1,x\n", "one.csv"), "--table", "t", "--db", url,
                    "--json"))  # fmt: skip
    wider = write_csv("id,a,b\n2,y,z\n", "two.csv")
    refused = run_cli("import", wider, "--table", "t", "--db", url)
    assert refused.code == 6 and "--alter adds them" in refused.stderr
    summary(run_cli("import", wider, "--table", "t", "--db", url, "--alter", "--json"))
    rows = fetch(url, "SELECT id, a, b FROM t ORDER BY id")
    assert [tuple(row) for row in rows] == [(1, "x", None), (2, "y", "z")]


def test_truncate_on_postgres(run_cli, write_csv, pg_url, fetch):
    path = write_csv(PRODUCTS)
    for _ in range(2):
        summary(run_cli("import", path, "--dataset", "products", "--db", pg_url,
                        "--mode", "insert", "--truncate", "--json"))  # fmt: skip
    assert fetch(pg_url, "SELECT count(*) FROM products") == [(4,)]


def test_rename_names_columns_of_a_table_import(run_cli, write_csv, sqlite_url, fetch):
    path = write_csv("Unit Price,Item Name\n1.5,a\n")
    renames = ["--rename", "Unit Price=price", "--rename", "item_name=name"]
    summary(run_cli("import", path, "--table", "items", "--db", sqlite_url, *renames, "--json"))
    assert fetch(sqlite_url, "SELECT price, name FROM items") == [(1.5, "a")]
    unknown = run_cli("import", path, "--table", "x", "--db", sqlite_url, "--rename", "nope=y")
    assert unknown.code == 2 and "--rename names unknown column(s) nope" in unknown.stderr
    dataset = run_cli("import", write_csv(PRODUCTS), "--dataset", "products", "--db", sqlite_url,
                      "--rename", "sku=code")  # fmt: skip
    assert dataset.code == 2 and "--rename is for --table imports" in dataset.stderr
