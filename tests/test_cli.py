"""``antioom import`` as a user runs it: exit codes, one-line errors, summary and progress.

Exit codes: 0 done (even with rejected rows), 2 bad options or configuration, 3 bad input,
4 database unreachable at start, 6 the target table cannot take the data. Errors are one line
on stderr, never a traceback.
"""

from __future__ import annotations

import json
import re

import pytest

PRODUCTS_CSV = "sku,name,price\nA,Widget,1.5\nB,Broken,-1\nC,Gadget,2\n"
UNREACHABLE_PG = "postgresql://postgres@127.0.0.1:1/x"
HEARTBEAT = re.compile(r"^\[Progress\] Processed: (\d+) \| Failed: (\d+) \| RSS: (\d+)MB$", re.M)


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("antioom: error: ")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0]


# --------------------------------------------------------------------------- success


def test_completed_import_with_rejects_exits_0(run_cli, write_csv, sqlite_url, fetch):
    result = run_cli("import", write_csv(PRODUCTS_CSV), "--dataset", "products", "--db", sqlite_url)
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("completed: 2 rows written to products, 1 rejected, 3 read")
    assert "record 2 [price]: must be > 0" in result.stdout
    assert fetch(sqlite_url, "SELECT count(*) FROM products") == [(2,)]


def test_json_summary(run_cli, write_csv, sqlite_url):
    result = run_cli(
        "import", write_csv(PRODUCTS_CSV), "--dataset", "products", "--db", sqlite_url, "--json"
    )
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    expected = {"status", "processed", "failed", "rows", "bytes", "duration_s", "rows_per_s"}
    assert expected | {"peak_rss_mb"} <= summary.keys()
    assert (summary["status"], summary["processed"], summary["failed"]) == ("completed", 2, 1)
    assert summary["rows"] == summary["processed"] + summary["failed"]
    assert summary["bytes"] == len(PRODUCTS_CSV)
    assert summary["peak_rss_mb"] > 0


def test_json_output_is_only_the_summary(run_cli, write_csv, sqlite_url):
    result = run_cli("import", write_csv("a\nx1\n"), "--table", "t", "--db", sqlite_url, "--json")
    assert result.code == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1
    assert not HEARTBEAT.search(result.stderr)


def test_heartbeat_lines_on_a_non_tty_stderr(run_cli, write_csv, sqlite_url):
    result = run_cli("import", write_csv(PRODUCTS_CSV), "--dataset", "products", "--db", sqlite_url)
    assert result.code == 0, result.stderr
    beats = HEARTBEAT.findall(result.stderr)
    assert beats, result.stderr
    assert beats[-1][:2] == ("2", "1")  # the last line has the final counts
    assert all(int(rss) > 0 for _, _, rss in beats)


def test_quiet_prints_no_progress(run_cli, write_csv, sqlite_url):
    result = run_cli("import", write_csv(PRODUCTS_CSV), "--dataset", "products", "--db", sqlite_url,
                     "--quiet")  # fmt: skip
    assert result.code == 0
    assert result.stderr == ""


def test_database_url_from_the_environment_default(run_cli, write_csv, tmp_path):
    """Without --db or ANTIOOM_DB_URL the database is ./antioom.db."""
    result = run_cli("import", write_csv("a\nx1\n"), "--table", "t", "--quiet")
    assert result.code == 0, result.stderr
    assert (tmp_path / "antioom.db").exists()


# --------------------------------------------------------------------------- exit code 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--mode", "merge", "--table", "t"], "invalid mode 'merge'"),
        ([], "choose a dataset"),
        (["--table", "bad name"], "invalid table name"),
        (["--table", "t", "--batch-size", "0"], "batch size"),
        (["--table", "t", "--max-record-bytes", "lots"], "invalid size"),
        (["--table", "t", "--encoding", "klingon"], "unknown encoding"),
        (["--table", "t", "--delimiter", ";;"], "delimiter must be one character"),
        (["--table", "t", "--type", "price"], "NAME=TYPE"),
        (["--table", "t", "--type", "price=money"], "unknown type"),
        (["--table", "t", "--type", "colour=string"], "colour"),
        (["--dataset", "products", "--mode", "upsert", "--key", "colour"], "colour"),
    ],
)
def test_bad_options_exit_2(run_cli, write_csv, sqlite_url, args, message):
    result = run_cli("import", write_csv(PRODUCTS_CSV), "--db", sqlite_url, *args)
    assert result.code == 2, result.stderr
    assert_one_line_error(result.stderr, message)


def test_unknown_option_exits_2_without_traceback(run_cli, write_csv):
    result = run_cli("import", write_csv(PRODUCTS_CSV), "--bogus")
    assert result.code == 2
    assert "No such option" in result.stderr
    assert "Traceback" not in result.stderr


def test_unsupported_database_url_exits_2(run_cli, write_csv):
    result = run_cli("import", write_csv(PRODUCTS_CSV), "--table", "t", "--db", "oracle://h/db")
    assert result.code == 2
    assert_one_line_error(result.stderr, "unsupported database URL")


def test_missing_datasets_file_exits_2(run_cli, write_csv, sqlite_url, tmp_path):
    result = run_cli("import", write_csv(PRODUCTS_CSV), "--dataset", "products", "--db",
                     sqlite_url, "--datasets", tmp_path / "nope.toml")  # fmt: skip
    assert result.code == 2
    assert_one_line_error(result.stderr, "nope.toml")


# --------------------------------------------------------------------------- exit code 3


def test_missing_input_file_exits_3(run_cli, sqlite_url):
    result = run_cli("import", "missing.csv", "--dataset", "products", "--db", sqlite_url)
    assert result.code == 3
    assert_one_line_error(result.stderr, "cannot open missing.csv")


def test_missing_header_column_exits_3(run_cli, write_csv, sqlite_url):
    data = write_csv("sku,price\nA,1\n")
    result = run_cli("import", data, "--dataset", "products", "--db", sqlite_url)
    assert result.code == 3
    assert_one_line_error(result.stderr, "name")


def test_empty_input_completes_with_nothing_to_import(run_cli, write_csv, sqlite_url):
    result = run_cli("import", write_csv(b""), "--table", "t", "--db", sqlite_url)
    assert result.code == 0, result.stderr
    assert "completed: 0 rows" in result.stdout
    assert "the input is empty" in result.stdout


def test_input_in_another_encoding_exits_3_naming_the_byte(run_cli, write_csv, sqlite_url):
    latin1 = "name,city\nJosé,Málaga\nRené,Zürich\nAna,Cádiz\n".encode("latin-1")
    result = run_cli("import", write_csv(latin1), "--table", "t", "--db", sqlite_url)
    assert result.code == 3
    assert_one_line_error(result.stderr, "--encoding")
    assert "0xe9" in result.stderr


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"name,city\rann,paris\r", id="cr-line-endings"),
        pytest.param(b"y" * (300 << 10), id="header-longer-than-csv-field-limit"),
        pytest.param(b"name,city\nann,paris\n" + b"z" * (2 << 20), id="record-too-large"),
        pytest.param(b"a\n" + b"ok\n" * 10 + b"x" * (3 << 20) + b"\n", id="record-too-large-later"),
        pytest.param(b"a\n" + b"x" * (20 << 20), id="endless-record"),
    ],
)
def test_awkward_input_is_never_an_internal_error(run_cli, write_csv, sqlite_url, content):
    result = run_cli("import", write_csv(content), "--table", "t", "--db", sqlite_url, "--quiet",
                     timeout=15)  # fmt: skip
    assert "internal error" not in result.stderr
    assert "Fatal Python error" not in result.stderr
    assert "Traceback" not in result.stderr
    assert result.code in (0, 3), result.stderr


# --------------------------------------------------------------------------- exit code 4


def test_unreachable_database_exits_4(run_cli, write_csv):
    result = run_cli("import", write_csv(PRODUCTS_CSV), "--dataset", "products", "--db",
                     UNREACHABLE_PG)  # fmt: skip
    assert result.code == 4
    assert_one_line_error(result.stderr, "cannot connect to PostgreSQL")


def test_unreachable_database_error_says_why(run_cli, write_csv):
    result = run_cli("import", write_csv(PRODUCTS_CSV), "--table", "t", "--db", UNREACHABLE_PG)
    assert result.code == 4
    assert_one_line_error(result.stderr)
    assert "refused" in result.stderr.lower()


def test_unreachable_database_is_reported_before_a_missing_file(run_cli):
    result = run_cli("import", "missing.csv", "--table", "t", "--db", UNREACHABLE_PG)
    assert result.code == 4


def test_sqlite_in_a_missing_directory_exits_4(run_cli, write_csv, tmp_path):
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    result = run_cli("import", write_csv(PRODUCTS_CSV), "--table", "t", "--db", url)
    assert result.code == 4
    assert_one_line_error(result.stderr, "no such directory")


# --------------------------------------------------------------------------- names, exit code 6


def test_reserved_words_in_the_header_are_imported(run_cli, write_csv, sqlite_url, fetch):
    data = write_csv("index,select,order\n1,a,x\n2,b,y\n")
    result = run_cli("import", data, "--table", "t", "--db", sqlite_url)
    assert result.code == 0, result.stderr
    rows = fetch(sqlite_url, 'SELECT "index", "select", "order" FROM t ORDER BY "index"')
    assert rows == [(1, "a", "x"), (2, "b", "y")]


def test_a_table_with_too_many_columns_exits_6(run_cli, write_csv, sqlite_url):
    header = ",".join(f"c{i}" for i in range(2100))  # SQLite allows 2000
    data = write_csv(header + "\n" + ",".join(["1"] * 2100) + "\n")
    result = run_cli("import", data, "--table", "t", "--db", sqlite_url)
    assert result.code == 6, result.stderr
    assert_one_line_error(result.stderr, "cannot prepare table t", "too many columns")


def test_a_schema_qualified_table_in_sqlite_exits_2(run_cli, write_csv, sqlite_url):
    result = run_cli("import", write_csv("a\n1\n"), "--table", "s.t", "--db", sqlite_url)
    assert result.code == 2, result.stderr
    assert_one_line_error(result.stderr, "schema.table is for PostgreSQL")
