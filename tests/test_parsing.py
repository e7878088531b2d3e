"""How CSV text becomes rows: quoting, line endings, encodings, compression, limits, dialects.

Each test imports a small file into a real SQLite database with ``--table`` (columns inferred)
and reads back what landed. Values are chosen so that inference keeps them text.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from antioom import InputError, Summary, import_csv
from antioom.engine.records import Dialect

Rows = list[tuple[Any, ...]]


@pytest.fixture
def load(
    write_csv: Callable[..., Path],
    sqlite_url: str,
    fetch: Callable[..., Rows],
    call_with_deadline: Callable[..., Any],
) -> Callable[..., tuple[Summary, Rows]]:
    """``load(content, **import_csv_kwargs)`` → (summary, rows of table ``t`` in file order).

    Every one of these imports is small: one that takes a minute has hung (the machine may
    be busy with other tests).
    """

    def load(content: bytes | str, **kwargs: Any) -> tuple[Summary, Rows]:
        kwargs.setdefault("table", "t")
        summary = call_with_deadline(60, import_csv, write_csv(content), sqlite_url, **kwargs)
        return summary, fetch(sqlite_url, f"SELECT * FROM {kwargs['table']} ORDER BY rowid")

    return load


# --------------------------------------------------------------------------- quoting


def test_quoted_delimiter_stays_in_the_field(load):
    _, rows = load('name,city\n"Smith, John",Paris\n')
    assert rows == [("Smith, John", "Paris")]


def test_newline_inside_quotes_stays_in_the_field(load):
    _, rows = load('name,note\nann,"line one\nline two"\nbob,plain\n')
    assert rows == [("ann", "line one\nline two"), ("bob", "plain")]


def test_crlf_inside_quotes_is_kept_verbatim(load):
    _, rows = load(b'name,note\r\nann,"one\r\ntwo"\r\n')
    assert rows == [("ann", "one\r\ntwo")]


def test_doubled_quotes_are_one_quote(load):
    _, rows = load('name,quote\nann,"she said ""hi"""\n')
    assert rows == [("ann", 'she said "hi"')]


# --------------------------------------------------------------------------- line endings


def test_crlf_line_endings(load):
    _, rows = load(b"name,city\r\nann,paris\r\nbob,rome\r\n")
    assert rows == [("ann", "paris"), ("bob", "rome")]


def test_cr_only_line_endings(load):
    _, rows = load(b"name,city\rann,paris\rbob,rome\r")
    assert rows == [("ann", "paris"), ("bob", "rome")]


def test_utf8_bom_is_not_part_of_the_first_column_name(load, sqlite_url, fetch):
    _, rows = load(b"\xef\xbb\xbfname,city\nann,paris\n")
    assert rows == [("ann", "paris")]
    columns = [row[1] for row in fetch(sqlite_url, "PRAGMA table_info(t)")]
    assert columns == ["name", "city"]


def test_last_record_without_trailing_newline(load):
    summary, rows = load("name,city\nann,paris\nbob,rome")
    assert rows == [("ann", "paris"), ("bob", "rome")]
    assert summary.rows == 2


def test_blank_lines_are_skipped(load):
    summary, rows = load("name,city\nann,paris\n\n\nbob,rome\n\n")
    assert rows == [("ann", "paris"), ("bob", "rome")]
    assert (summary.rows, summary.failed) == (2, 0)


# --------------------------------------------------------------------------- ragged rows


def test_rows_with_too_few_or_too_many_fields_are_rejected_with_their_record_number(load):
    summary, rows = load("name,city\nann,paris\nbob\ncid,rome,extra\ndan,oslo\n")
    assert rows == [("ann", "paris"), ("dan", "oslo")]
    assert summary.status == "completed"
    assert (summary.processed, summary.failed, summary.rows) == (2, 2, 4)
    assert [(r.record, r.reason) for r in summary.rejects] == [
        (2, "expected 2 fields, found 1"),
        (3, "expected 2 fields, found 3"),
    ]


def test_record_numbers_count_records_not_lines(load):
    """A quoted newline makes a record span two lines; blank lines are not records."""
    summary, _ = load('name,note\nann,"two\nlines"\n\nbob\ncid,ok\n')
    assert [r.record for r in summary.rejects] == [2]


def test_ragged_row_keeps_its_raw_text(load):
    summary, _ = load("name,city\nann,paris\nbob\n")
    assert list(summary.rejects[0].values.values()) == ["bob"]


# --------------------------------------------------------------------------- edge-sized inputs


def test_header_only_imports_zero_rows(load):
    summary, rows = load("name,city\n")
    assert summary.status == "completed"
    assert (summary.rows, summary.processed, summary.failed) == (0, 0, 0)
    assert rows == []


def test_empty_input_completes_and_creates_nothing(write_csv, sqlite_url, fetch):
    summary = import_csv(write_csv(b""), sqlite_url, table="t")
    assert (summary.status, summary.rows, summary.processed) == ("completed", 0, 0)
    assert any("empty" in note for note in summary.notes)
    assert fetch(sqlite_url, "SELECT name FROM sqlite_master WHERE name = 't'") == []


def test_wide_rows_with_2000_columns(load):
    header = ",".join(f"c{i}" for i in range(2000))
    lines = [",".join(f"r{row}v{i}" for i in range(2000)) for row in range(3)]
    summary, rows = load(header + "\n" + "\n".join(lines) + "\n")
    assert summary.processed == 3
    assert rows[2][0] == "r2v0"
    assert rows[2][1999] == "r2v1999"


def test_more_columns_than_max_columns_is_an_input_error(load):
    header = ",".join(f"c{i}" for i in range(20))
    with pytest.raises(InputError, match="limit of 10"):
        load(header + "\n", dialect=Dialect(max_columns=10))


# Oversized records are imported by the CLI in a subprocess: if the engine hangs or crashes at
# exit, that fails these tests (after a timeout) instead of taking the whole test run down.


def test_huge_line_without_newline_fails_fast(run_cli, write_csv, sqlite_url):
    path = write_csv(b"name\n" + b"x" * (20 << 20))
    started = time.monotonic()
    result = run_cli("import", path, "--table", "t", "--db", sqlite_url, "--max-record-bytes",
                     "1MiB", "--quiet", timeout=15)  # fmt: skip
    assert (result.code, result.stderr.count("\n")) == (3, 1), result.stderr
    assert "maximum record size of 1048576 bytes" in result.stderr
    assert time.monotonic() - started < 10


def test_huge_header_without_newline_fails_fast(run_cli, write_csv, sqlite_url):
    path = write_csv(b"x" * (20 << 20))
    started = time.monotonic()
    result = run_cli("import", path, "--table", "t", "--db", sqlite_url, "--max-record-bytes",
                     "1MiB", "--quiet", timeout=15)  # fmt: skip
    assert (result.code, result.stderr.count("\n")) == (3, 1), result.stderr
    assert "maximum record size of 1048576 bytes" in result.stderr
    assert time.monotonic() - started < 10


def test_oversized_record_after_good_rows_is_a_clean_input_error(run_cli, write_csv, sqlite_url):
    path = write_csv(b"name\n" + b"ok\n" * 10 + b"x" * (3 << 20) + b"\nfine\n")
    result = run_cli("import", path, "--table", "t", "--db", sqlite_url, "--quiet", timeout=15)
    assert (result.code, result.stderr.count("\n")) == (3, 1), result.stderr
    assert "record 11 is larger than the maximum record size" in result.stderr


def test_record_somewhat_over_the_limit_is_an_input_error(run_cli, write_csv, sqlite_url):
    path = write_csv(b"name\n" + b"ok\n" * 10 + b"x" * 5000 + b"\nfine\n")
    result = run_cli("import", path, "--table", "t", "--db", sqlite_url, "--quiet",
                     "--max-record-bytes", "1024", timeout=15)  # fmt: skip
    assert result.code == 3, result.stderr
    assert "maximum record size" in result.stderr


# --------------------------------------------------------------------------- text and encodings


def test_non_ascii_text_survives_exactly(load):
    values = ("Crème brûlée", "東京都 渋谷区", "party 🎉🙂 time", "Ωmega ß ﬁ")
    _, rows = load("a,b,c,d\n" + ",".join(values) + "\n")
    assert rows == [values]


def test_latin_1_with_the_encoding_option(run_cli, write_csv, sqlite_url, fetch):
    path = write_csv("name,city\nRené,Zürich\n".encode("latin-1"))
    result = run_cli("import", path, "--table", "t", "--db", sqlite_url, "--encoding", "latin-1",
                     "--quiet", timeout=15)  # fmt: skip
    assert result.code == 0, result.stderr
    assert fetch(sqlite_url, "SELECT * FROM t") == [("René", "Zürich")]


def test_latin_1_gzip_with_the_encoding_option(run_cli, write_csv, sqlite_url, fetch):
    path = write_csv(gzip.compress("name,city\nRené,Zürich\n".encode("latin-1")), "data.csv.gz")
    result = run_cli("import", path, "--table", "t", "--db", sqlite_url, "--encoding", "latin-1",
                     "--quiet", timeout=15)  # fmt: skip
    assert result.code == 0, result.stderr
    assert fetch(sqlite_url, "SELECT * FROM t") == [("René", "Zürich")]


def test_invalid_utf8_is_a_rejected_row_with_its_record_and_bytes(load):
    summary, rows = load(b"name,city\nann,paris\nb\xffb,rome\nbob,oslo\n")
    assert rows == [("ann", "paris"), ("bob", "oslo")]
    (reject,) = summary.rejects
    assert (reject.record, reject.column) == (2, "name")
    assert "--encoding" in reject.reason
    assert reject.values == {"name": "b\\xffb", "city": "rome"}


def test_invalid_utf8_far_into_the_file_names_the_record(load):
    good = "".join(f"name{i},city{i}\n" for i in range(10_000))
    summary, rows = load(("name,city\n" + good).encode() + b"b\xffb,rome\n")
    assert len(rows) == 10_000
    assert [reject.record for reject in summary.rejects] == [10_001]


# --------------------------------------------------------------------------- compression


def test_gzip_input_is_detected_by_its_magic_bytes(load):
    summary, rows = load(gzip.compress(b"name,city\nann,paris\nbob,rome\n"))
    assert rows == [("ann", "paris"), ("bob", "rome")]
    assert summary.processed == 2


def test_zstd_input_is_detected_by_its_magic_bytes(load, tmp_path):
    path = tmp_path / "data.csv.zst"
    with pa.CompressedOutputStream(str(path), "zstd") as out:
        out.write(b"name,city\nann,paris\nbob,rome\n")
    summary, rows = load(path.read_bytes())
    assert rows == [("ann", "paris"), ("bob", "rome")]
    assert summary.bytes == path.stat().st_size  # progress counts compressed bytes


# --------------------------------------------------------------------------- dialects


def test_no_header_with_column_names(load):
    _, rows = load("ann,paris\nbob,rome\n", dialect=Dialect(header=False, columns=("name", "city")))
    assert rows == [("ann", "paris"), ("bob", "rome")]


def test_no_header_infers_types_from_more_than_the_first_row(load):
    summary, rows = load("1,a\n2.5,b\n", dialect=Dialect(header=False, columns=("n", "name")))
    assert summary.failed == 0
    assert rows == [(1.0, "a"), (2.5, "b")]


def test_semicolon_delimiter(load):
    _, rows = load("name;city\nSmith, John;paris\n", dialect=Dialect(delimiter=";"))
    assert rows == [("Smith, John", "paris")]


def test_semicolons_are_detected_by_default(load):
    _, rows = load("name;city\nann;paris\nbob;rome\n")
    assert rows == [("ann", "paris"), ("bob", "rome")]


def test_header_names_are_trimmed_and_text_values_kept_as_written(load, sqlite_url, fetch):
    _, rows = load(" name , city , n \n  ann  ,\tparis , 12 \n")
    assert rows == [("  ann  ", "\tparis ", 12)]
    assert [row[1] for row in fetch(sqlite_url, "PRAGMA table_info(t)")] == ["name", "city", "n"]


def test_empty_fields_become_null(load):
    _, rows = load("name,city\nann,\n,rome\n")
    assert rows == [("ann", None), (None, "rome")]


def test_stdin_input_via_the_cli(run_cli, sqlite_url, fetch):
    result = run_cli(
        "import", "-", "--table", "t", "--db", sqlite_url, input=b"name,city\nann,paris\n"
    )
    assert result.code == 0, result.stderr
    assert fetch(sqlite_url, "SELECT * FROM t") == [("ann", "paris")]
